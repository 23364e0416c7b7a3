//! Generates the Protobuf and gRPC code into OUT_DIR (never into the tree), the file
//! descriptor set that server reflection serves, and the server side of
//! `ingest.v1.IngestEvents` over a raw view of its request (each event kept as bytes,
//! decoded one by one by the validator; the wire format is the proto's).
use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if env::var_os("PROTOC").is_none() {
        // A pinned protoc from crates.io, so no system package is needed.
        env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let serialize = "#[derive(serde::Serialize)]";
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("ingest_descriptor.bin"))
        .btree_map(".ingest.v1.GetStatsResponse.rejected_by_reason")
        .type_attribute(".ingest.v1.GetStatsResponse", serialize)
        .type_attribute(".ingest.v1.SourceCounts", serialize)
        .type_attribute(".ingest.v1.PartitionLag", serialize)
        .btree_map(".ingest.v1.RedriveProgress.still_invalid")
        .type_attribute(".ingest.v1.RedriveProgress", serialize)
        .type_attribute(".ingest.v1.PartitionSeek", serialize)
        .compile_protos(
            &[
                "proto/sales/v1/sales_event.proto",
                "proto/ingest/v1/ingest.proto",
            ],
            &["proto"],
        )?;
    let stream = tonic_build::manual::Method::builder()
        .name("stream")
        .route_name("Stream")
        .input_type("crate::grpc::wire::ScannedRequest")
        .output_type("crate::proto::ingest::v1::IngestAck")
        .codec_path("crate::grpc::wire::ScanCodec")
        .client_streaming()
        .server_streaming()
        .build();
    let service = tonic_build::manual::Service::builder()
        .name("IngestEvents")
        .package("ingest.v1")
        .method(stream)
        .build();
    tonic_build::manual::Builder::new()
        .build_client(false)
        .compile(&[service]);
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=build.rs");
    Ok(())
}
