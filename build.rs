//! Generates the Protobuf and gRPC code into OUT_DIR (never into the tree) and the
//! file descriptor set that server reflection serves.
use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if env::var_os("PROTOC").is_none() {
        // A pinned protoc from crates.io, so no system package is needed.
        env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    let out = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("ingest_descriptor.bin"))
        .compile_protos(
            &[
                "proto/sales/v1/sales_event.proto",
                "proto/ingest/v1/ingest.proto",
            ],
            &["proto"],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
