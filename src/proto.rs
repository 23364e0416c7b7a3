//! Code generated from `proto/` by build.rs (into OUT_DIR, never into the tree).
#![allow(missing_docs, clippy::all)]

/// `sales.v1`: the SalesEvent wire format.
pub mod sales {
    pub mod v1 {
        tonic::include_proto!("sales.v1");
    }
}

/// `ingest.v1`: IngestAdmin and IngestEvents.
pub mod ingest {
    pub mod v1 {
        tonic::include_proto!("ingest.v1");
    }
}

/// The encoded file descriptor set server reflection serves.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ingest_descriptor");

/// The server side of `ingest.v1.IngestEvents` over `grpc::wire::RawIngestRequest`.
pub mod raw_ingest_events {
    include!(concat!(env!("OUT_DIR"), "/ingest.v1.IngestEvents.rs"));
}
