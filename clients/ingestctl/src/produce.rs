//! `ingestctl produce`: publishes the run's events, keyed by event id and encoded in
//! one of the server's Kafka value formats (bare Protobuf, Confluent framing, JSON), to
//! a Kafka topic, and waits for every delivery report. When librdkafka's
//! queue is full it waits for earlier deliveries instead of failing.
use std::time::{Duration, Instant};

use futures::channel::oneshot::Canceled;
use futures::{stream::FuturesUnordered, FutureExt as _, StreamExt as _};
use prost::Message as _;
use rdkafka::{
    error::{KafkaError, RDKafkaErrorCode},
    producer::{future_producer::OwnedDeliveryResult, FutureProducer, FutureRecord},
    ClientConfig,
};

use sales_ingest::{format::confluent, proto::sales::v1::SalesEvent};

use crate::{
    error::CtlError,
    events::Generator,
    progress,
    report::{rate, ProduceSummary},
};

/// What to produce, and where.
#[derive(Clone, Debug)]
pub struct ProducePlan {
    pub count: u64,
    pub brokers: String,
    pub topic: String,
    pub timeout_secs: u64,
    pub generator: Generator,
    pub format: ValueFormat,
    /// The schema id written into Confluent framing.
    pub schema_id: u32,
    /// A value sent as it is instead of each generated event (to try refusals by hand).
    pub raw_value: Option<String>,
}

/// How each event is encoded: the Kafka value formats the server reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ValueFormat {
    /// A bare serialized SalesEvent.
    Protobuf,
    /// Confluent Schema Registry framing (magic byte, schema id, index [0]) around one.
    Confluent,
    /// The proto3 JSON mapping (`eventId`).
    Json,
}

impl ValueFormat {
    /// The event as a Kafka value in this format.
    pub fn encode(self, event: &SalesEvent, schema_id: u32) -> Vec<u8> {
        match self {
            ValueFormat::Protobuf => event.encode_to_vec(),
            ValueFormat::Confluent => confluent::frame(schema_id, &[0], &event.encode_to_vec()),
            ValueFormat::Json => serde_json::to_vec(&serde_json::json!({
                "sku": event.sku,
                "qty": event.qty,
                "price": event.price,
                "ts": event.ts,
                "eventId": event.event_id,
            }))
            .expect("a JSON object serializes"),
        }
    }
}

fn producer(plan: &ProducePlan) -> Result<FutureProducer, CtlError> {
    ClientConfig::new()
        .set("bootstrap.servers", &plan.brokers)
        .set("message.timeout.ms", (plan.timeout_secs * 1000).to_string())
        .set("linger.ms", "5")
        .create()
        .map_err(|e| {
            CtlError::Kafka(format!(
                "cannot create a producer for {}: {e}",
                plan.brokers
            ))
        })
}

/// Counts delivery outcomes.
#[derive(Default)]
struct Deliveries {
    delivered: u64,
    failed: u64,
    first_error: Option<String>,
}

impl Deliveries {
    fn record(&mut self, result: Result<OwnedDeliveryResult, Canceled>) {
        let error = match result {
            Ok(Ok(_)) => {
                self.delivered += 1;
                return;
            }
            Ok(Err((e, _))) => e.to_string(),
            Err(Canceled) => "the producer went away before delivery".to_string(),
        };
        self.failed += 1;
        self.first_error.get_or_insert(error);
    }
}

/// Produces the plan's events; the summary once every delivery is reported.
pub async fn run(plan: ProducePlan) -> Result<ProduceSummary, CtlError> {
    let producer = producer(&plan)?;
    let bar = progress::bar(plan.count, "messages delivered");
    let start = Instant::now();
    let mut pending = FuturesUnordered::new();
    let mut done = Deliveries::default();
    for i in 0..plan.count {
        let event = plan.generator.event(i);
        let payload = match &plan.raw_value {
            Some(raw) => raw.clone().into_bytes(),
            None => plan.format.encode(&event, plan.schema_id),
        };
        loop {
            let record = FutureRecord::to(&plan.topic)
                .key(event.event_id.as_str())
                .payload(payload.as_slice());
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    match pending.next().await {
                        Some(r) => {
                            done.record(r);
                            bar.inc(1);
                        }
                        None => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
                Err((e, _)) => {
                    return Err(CtlError::Kafka(format!(
                        "cannot enqueue a message for {}: {e}",
                        plan.topic
                    )))
                }
            }
        }
        // Count deliveries that are already reported, without waiting.
        while let Some(Some(r)) = pending.next().now_or_never() {
            done.record(r);
            bar.inc(1);
        }
    }
    while let Some(r) = pending.next().await {
        done.record(r);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let elapsed = start.elapsed().as_secs_f64();
    Ok(ProduceSummary {
        run_id: plan.generator.run_id().to_string(),
        topic: plan.topic.clone(),
        messages: plan.count,
        delivered: done.delivered,
        failed: done.failed,
        invalid_generated: plan.generator.invalid_among(plan.count),
        first_error: done.first_error,
        elapsed_seconds: elapsed,
        messages_per_second: rate(done.delivered, elapsed),
    })
}

#[cfg(test)]
mod tests {
    use sales_ingest::format::{self, json};

    use super::*;

    #[test]
    fn each_format_is_read_back_by_the_server_as_that_format() {
        let e = SalesEvent {
            sku: "SKU-1".into(),
            qty: 2,
            price: 9.99,
            ts: "2026-11-25T10:00:00Z".into(),
            event_id: "ev-1".into(),
        };
        let pb = ValueFormat::Protobuf.encode(&e, 7);
        assert_eq!(format::detect(&pb), format::ValueFormat::Protobuf);
        let framed = ValueFormat::Confluent.encode(&e, 7);
        assert_eq!(format::detect(&framed), format::ValueFormat::Confluent);
        let f = confluent::parse(&framed).unwrap();
        assert_eq!((f.schema_id, f.indexes, f.payload), (7, vec![0], &pb[..]));
        let text = ValueFormat::Json.encode(&e, 7);
        assert_eq!(format::detect(&text), format::ValueFormat::Json);
        assert_eq!(json::parse(&text).unwrap(), e);
    }
}
