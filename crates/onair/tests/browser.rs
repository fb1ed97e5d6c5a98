//! The web app in a real browser: `web/tests/browser.mjs` drives Debian's
//! headless Chromium (with playwright-core) against `onair demo` started
//! here on free ports: the guide, the video across a program boundary, a
//! channel switch from the keyboard, a comment from one page in another's
//! list and overlay (as text, never markup), share links, and a held comment
//! approved in the console. `scripts/test.sh` installs Chromium and builds
//! the app (`scripts/build-web.sh`, which installs its npm packages).
//!
//! With `ONAIR_SCREENSHOTS=<dir>` the browser saves the screenshots the
//! README shows (`docs/`).

use std::process::Command;

use onair_testkit::{OnairProcess, assert_eventually, workspace_root};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_app_and_the_console_work_in_a_browser() {
    let web = workspace_root().join("web");
    assert!(
        web.join("node_modules/playwright-core").is_dir(),
        "the web app's npm packages are missing: run scripts/build-web.sh"
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Chromium is missing: apt-get install chromium (scripts/test.sh does it)"
    );
    let dir = tempfile::tempdir().unwrap();
    let demo = OnairProcess::spawn(
        Command::new(env!("CARGO_BIN_EXE_onair"))
            .args(["demo", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path())
            .env("ONAIR_LOG_LEVEL", "info"),
        "start onair demo",
    );
    let (http, _) = demo.addresses().await;
    let ready = format!("http://{http}/readyz");
    assert_eventually!(
        reqwest::get(&ready)
            .await
            .is_ok_and(|response| response.status() == 200),
        "the demo is ready"
    );
    let mut browser = Command::new("node");
    browser
        .current_dir(&web)
        .arg("tests/browser.mjs")
        .arg(format!("http://{http}"))
        .arg(dir.path().join("operator.key"));
    if let Ok(screenshots) = std::env::var("ONAIR_SCREENSHOTS") {
        browser.arg(screenshots);
    }
    let output = tokio::task::spawn_blocking(move || browser.output())
        .await
        .unwrap()
        .expect("node runs (Node.js 20 or later)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{report}");
    assert!(
        output.status.success(),
        "the browser checks failed:\n{report}"
    );
    drop(demo);
}
