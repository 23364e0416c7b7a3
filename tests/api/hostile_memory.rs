//! The memory bomb through the producer stream, from outside against the server as a
//! process: every IngestEvents stream the server allows sends its largest request at
//! once, and the server's peak resident memory stays under the
//! Kubernetes Deployment's memory limit while a well-behaved producer is served.
use std::time::Duration;

use bytes::{BufMut, Bytes};
use prost::Message as _;
use sales_ingest::proto::ingest::v1::{
    ingest_events_client::IngestEventsClient, IngestAck, IngestRequest,
};
use tokio_stream::StreamExt;
use tonic::{
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    Code, Status,
};

use crate::{backends::serving_grpc_server, faults::count, helpers::*};

/// The Deployment's memory limit (deploy/kubernetes/deployment.yaml), MiB.
fn pod_memory_limit_mib() -> u64 {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/kubernetes/deployment.yaml"
    );
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let limit = doc["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
        .as_str()
        .expect("a memory limit");
    limit.strip_suffix("Mi").expect("in Mi").parse().unwrap()
}

/// Sends requests as ready-made bytes and reads acks.
#[derive(Clone, Copy, Default)]
struct RawCodec;
struct RawEncoder;
struct AckDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = IngestAck;
    type Encoder = RawEncoder;
    type Decoder = AckDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> AckDecoder {
        AckDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for AckDecoder {
    type Item = IngestAck;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<IngestAck>, Status> {
        IngestAck::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

/// The largest request GRPC_MAX_MESSAGE_BYTES (4 MiB) allows: `seq` and 2,097,151 empty
/// events, 2 bytes each on the wire.
fn bomb() -> Bytes {
    let mut b = vec![0x08, 0x01];
    while b.len() + 2 <= 4 * 1024 * 1024 {
        b.extend([0x12, 0x00]);
    }
    b.into()
}

/// Sends `bomb` on one stream and returns the status the stream ends with.
async fn throw(url: String, bomb: Bytes) -> Status {
    let mut grpc = tonic::client::Grpc::new(channel(&url).await);
    grpc.ready().await.unwrap();
    let path = "/ingest.v1.IngestEvents/Stream".parse().unwrap();
    let req = tonic::Request::new(futures::stream::iter([bomb]));
    let mut acks = match grpc.streaming(req, path, RawCodec).await {
        Ok(r) => r.into_inner(),
        Err(status) => return status,
    };
    match acks.next().await {
        Some(Ok(ack)) => panic!("a bomb was acked: {ack:?}"),
        Some(Err(status)) => status,
        None => Status::ok("ended"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_sending_its_largest_request_at_once_stays_under_the_pod_memory_limit() {
    const MAX_STREAMS: usize = 64;
    const ROUNDS: usize = 1;
    let limit = pod_memory_limit_mib();
    let (server, dbname) =
        serving_grpc_server("bomb", &[("GRPC_MAX_STREAMS", MAX_STREAMS.to_string())]).await;
    let idle = server.memory().unwrap().rss_kib / 1024;

    // The well-behaved producer holds one stream slot and sends a request every 50 ms.
    let url = server.grpc_url.clone();
    let good = tokio::spawn(async move {
        let mut client = IngestEventsClient::new(channel(&url).await);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            for seq in 0..40u64 {
                let events = (0..50).map(|i| valid_event(i, &format!("good-{seq}-{i}")));
                let req = IngestRequest {
                    seq,
                    events: events.collect(),
                };
                if tx.send(req).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let requests = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut acks = client.stream(requests).await.unwrap().into_inner();
        let mut accepted = 0;
        while let Some(ack) = acks.next().await {
            accepted += ack.expect("the good producer is served").accepted;
        }
        accepted
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Every other slot throws the largest request, ROUNDS times.
    let bomb = bomb();
    let mut throwers = Vec::new();
    for _ in 1..MAX_STREAMS {
        let (url, bomb) = (server.grpc_url.clone(), bomb.clone());
        throwers.push(tokio::spawn(async move {
            let mut ends = Vec::new();
            for _ in 0..ROUNDS {
                ends.push(throw(url.clone(), bomb.clone()).await);
            }
            ends
        }));
    }
    let mut peak = 0;
    while !throwers.iter().all(|t| t.is_finished()) || !good.is_finished() {
        peak = peak.max(server.memory().unwrap().rss_kib / 1024);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut refused = 0;
    for t in throwers {
        for status in t.await.unwrap() {
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            assert!(
                status.message().contains("GRPC_MAX_EVENTS_PER_REQUEST"),
                "{status:?}"
            );
            refused += 1;
        }
    }
    assert_eq!(refused, (MAX_STREAMS - 1) * ROUNDS);
    assert_eq!(good.await.unwrap(), 40 * 50);
    let db = mongo_client().await.database(&dbname);
    assert_eq!(count(&db).await, 40 * 50);
    let hwm = server.memory().unwrap().hwm_kib / 1024;
    eprintln!(
        "MEMORY_BOMB streams={MAX_STREAMS} rounds={ROUNDS} request_bytes={} idle_rss={idle}MiB \
         peak_rss_sampled={peak}MiB vmhwm={hwm}MiB pod_limit={limit}MiB",
        bomb.len()
    );
    assert!(
        hwm < limit,
        "peak resident memory {hwm} MiB, the pod's limit {limit} MiB"
    );
    let (status, _) = server.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success());
}
