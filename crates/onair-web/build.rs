//! Embeds the built web app (`web/dist`, made by `scripts/build-web.sh`) in
//! the crate. A build where the app was not built fails and says what to
//! run, rather than making a binary without its face.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let dist = crate_dir.join("../../web/dist");
    let manifest = dist.join("manifest.json");
    println!("cargo:rerun-if-changed={}", manifest.display());
    let text = match std::fs::read_to_string(&manifest) {
        Ok(text) => text,
        Err(error) => {
            panic!(
                "\n\nthe web app is not built ({}: {error}).\n\
                 Run scripts/build-web.sh (npm ci and the app's build, in web/) first; \
                 scripts/test.sh and scripts/demo.sh run it for you.\n\n",
                manifest.display()
            );
        }
    };
    let parsed: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|error| {
        panic!(
            "{} is not JSON: {error}; run scripts/build-web.sh again",
            manifest.display()
        )
    });
    let files = parsed["files"].as_array().unwrap_or_else(|| {
        panic!(
            "{} lists no files; run scripts/build-web.sh again",
            manifest.display()
        )
    });
    let mut code = String::from(
        "/// Every file of the built app: its path under `web/dist` and its bytes.\npub static FILES: &[(&str, &[u8])] = &[\n",
    );
    for file in files {
        let name = file.as_str().expect("file names are strings");
        let path = dist.join(name);
        let path = path.canonicalize().unwrap_or_else(|error| {
            panic!(
                "{} is listed but missing ({error}); run scripts/build-web.sh again",
                path.display()
            )
        });
        println!("cargo:rerun-if-changed={}", path.display());
        writeln!(
            code,
            "    ({name:?}, include_bytes!({:?})),",
            path.display().to_string()
        )
        .expect("write to a string");
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it")).join("files.rs");
    std::fs::write(out, code).expect("write the file list");
}
