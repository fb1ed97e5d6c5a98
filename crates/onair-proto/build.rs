//! Compiles the contracts in `proto/` with protox (no system `protoc`) and writes
//! the descriptor set that the gateway and server reflection read.

use std::path::PathBuf;

const PROTO_FILES: &[&str] = &[
    "google/rpc/status.proto",
    "onair/user/v1/user.proto",
    "onair/media/v1/media.proto",
    "onair/playout/v1/playout.proto",
    "onair/comment/v1/comment.proto",
    "onair/audience/v1/audience.proto",
    "onair/share/v1/share.proto",
    "onair/events/v1/events.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", proto_root.display());

    let mut compiler = protox::Compiler::new([&proto_root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTO_FILES)?;

    // `encode_file_descriptor_set` keeps extension options such as google.api.http;
    // re-encoding through prost_types would drop them.
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("onair_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::codec::OnairCodec")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
