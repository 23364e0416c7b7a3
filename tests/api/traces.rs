//! OpenTelemetry traces from the server as a process to an OTLP/gRPC receiver started
//! here: a producer's W3C trace context, sent in gRPC metadata or a Kafka header,
//! reaches the MongoDB write with the parent chain intact.
use std::time::Duration;

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        trace_service_server::{TraceService, TraceServiceServer},
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    },
    trace::v1::Span,
};
use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
    ClientConfig,
};
use sales_ingest::proto::ingest::v1::{ingest_events_client::IngestEventsClient, IngestRequest};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use test_support::service::server_env;

use crate::{
    backends::{backends, start_server},
    helpers::*,
};

/// Collects every exported span.
struct Receiver(mpsc::UnboundedSender<Span>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        for rs in req.into_inner().resource_spans {
            for ss in rs.scope_spans {
                for span in ss.spans {
                    let _ = self.0.send(span);
                }
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Starts the receiver on a free port; its URL and the spans it gets.
async fn receiver() -> (String, mpsc::UnboundedReceiver<Span>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Receiver(tx)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (url, rx)
}

/// Waits for the spans of trace `trace_id`: `first` whose parent is `parent`, then an
/// `mongodb.insert_many` whose parent is that span.
async fn chain(
    spans: &mut mpsc::UnboundedReceiver<Span>,
    seen: &mut Vec<Span>,
    trace_id: &[u8],
    parent: &[u8],
    first: &str,
) {
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let hop = seen
                .iter()
                .find(|s| s.trace_id == trace_id && s.name == first && s.parent_span_id == parent);
            if let Some(hop) = hop {
                if seen.iter().any(|s| {
                    s.trace_id == trace_id
                        && s.name == "mongodb.insert_many"
                        && s.parent_span_id == hop.span_id
                }) {
                    return;
                }
            }
            seen.push(spans.recv().await.expect("the receiver runs"));
        }
    })
    .await;
    let names: Vec<_> = seen.iter().map(|s| (&s.name, hex(&s.trace_id))).collect();
    assert!(
        found.is_ok(),
        "no {first} → mongodb.insert_many chain in trace {}: {names:?}",
        hex(trace_id)
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producers_trace_reaches_the_mongodb_write_over_grpc_and_kafka() {
    let (url, mut spans) = receiver().await;
    let (topic, group, dbname) = (unique("traced"), unique("traced_g"), unique("traced_db"));
    create_topic(&topic, 1).await;
    let env = server_env(
        backends(),
        &topic,
        &group,
        &dbname,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", url),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ],
    );
    let mut server = start_server("traced", &env);
    server.wait_serving(Duration::from_secs(90)).await.unwrap();
    let mut seen = Vec::new();

    // gRPC: the trace context rides in the stream's metadata.
    let (grpc_trace, grpc_parent) = ([0x4bu8; 16], [0x11u8; 8]);
    let mut req = Request::new(futures::stream::iter(vec![IngestRequest {
        seq: 1,
        events: vec![valid_event(1, "traced-grpc")],
    }]));
    let traceparent = format!("00-{}-{}-01", hex(&grpc_trace), hex(&grpc_parent));
    req.metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    let mut acks = IngestEventsClient::new(server.channel())
        .stream(req)
        .await
        .unwrap()
        .into_inner();
    let ack = acks.message().await.unwrap().expect("an ack");
    assert_eq!(ack.accepted, 1);
    chain(
        &mut spans,
        &mut seen,
        &grpc_trace,
        &grpc_parent,
        "ingest.request",
    )
    .await;

    // Kafka: the trace context rides in the message's headers.
    let (kafka_trace, kafka_parent) = ([0x7cu8; 16], [0x22u8; 8]);
    let traceparent = format!("00-{}-{}-01", hex(&kafka_trace), hex(&kafka_parent));
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &backends().kafka)
        .create()
        .unwrap();
    let payload = encode(&valid_event(2, "traced-kafka"));
    producer
        .send(
            FutureRecord::<(), [u8]>::to(&topic)
                .payload(&payload)
                .headers(OwnedHeaders::new().insert(Header {
                    key: "traceparent",
                    value: Some(&traceparent),
                })),
            Duration::from_secs(30),
        )
        .await
        .expect("delivered");
    chain(
        &mut spans,
        &mut seen,
        &kafka_trace,
        &kafka_parent,
        "kafka.message",
    )
    .await;

    let (status, _) = server.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "exit 0 with the exporter flushed");
}
