//! The types that travel through the service, free of tonic and rdkafka: an event as
//! received (`Incoming`), the handle that acknowledges it to its source (`Ack`), its
//! final `Outcome`, a valid event waiting to be written (`Pending`) and a refused one on
//! its way to a dead-letter destination (`DeadLetter`, which carries the bytes received).
//! Kafka acks report to the source that owns the offsets (`KafkaAcked`, on the channel
//! each ack holds); gRPC acks fill in their request's `IngestAck` (`request`), which is
//! sent when the request's last event is resolved; re-drive acks do the same for a
//! chunk of re-driven dead letters, and carry the dead letter's original origin.
//!
//! Every ack ends in one of two ways: `resolve` with an outcome, or `release` when the
//! server stops before the event is handled (its source delivers it again). An ack
//! dropped without either is lost: it is reported (an error log and
//! `ingest_acks_lost_total{source}`) and resolved as a failure the owner acts on — the
//! Kafka source keeps the offset unresolved, so no commit passes it and the message is
//! delivered again; a gRPC request or re-drive chunk is abandoned, so the producer
//! resends it.
mod request;

use std::{sync::Arc, time::Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::{
    doc_id::Coordinates,
    validate::{Rejection, ValidEvent},
};

pub use request::{LostAcks, RequestAck, RequestResult};

/// The reason code of a document MongoDB refused for good (acks, dead letters, metrics).
pub const WRITE_FAILED: &str = "write_failed";

/// Where an event came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "lowercase")]
pub enum Source {
    Kafka,
    Grpc,
}

impl Source {
    /// Label value and stored `source` field.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// How an event ended: the ack every source waits for.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Newly stored in MongoDB.
    Stored,
    /// Its `_id` was already stored (`WRITE_MODE=insert`, or an event without an id).
    Duplicate,
    /// It replaced the stored document of its id (`WRITE_MODE=upsert`), or a later event
    /// of the same id in the same write superseded it.
    Updated,
    /// Refused by the validator and dead-lettered.
    Rejected(Rejection),
    /// Refused for good by MongoDB (not a duplicate, not transient) and dead-lettered,
    /// with the server's message.
    Failed(String),
}

impl Outcome {
    /// The reason code and detail of a refused event; None for stored and duplicates.
    pub fn refusal(&self) -> Option<(&'static str, &str)> {
        match self {
            Outcome::Rejected(r) => Some((r.reason.into(), &r.detail)),
            Outcome::Failed(detail) => Some((WRITE_FAILED, detail)),
            Outcome::Stored | Outcome::Duplicate | Outcome::Updated => None,
        }
    }
}

/// One event entering the pipeline: the bytes received (a Kafka message value, one
/// event of an IngestEvents request, or a re-driven dead letter's payload), the ack,
/// when it arrived, and the trace it belongs to (only while traces are exported).
#[derive(Debug)]
pub struct Incoming {
    pub payload: Bytes,
    /// The payload as already validated: a re-driven dead letter, which the re-drive
    /// validates (it counts the ones still invalid). None: the pipeline validates
    /// `payload`.
    pub valid: Option<ValidEvent>,
    pub ack: Ack,
    pub received: Instant,
    pub trace: Option<opentelemetry::Context>,
}

/// A valid event waiting to be written.
#[derive(Debug)]
pub struct Pending {
    /// The document `_id` (`doc_id::document_id`).
    pub id: String,
    pub event: ValidEvent,
    /// The bytes received, for the dead letter if MongoDB refuses the document.
    pub payload: Bytes,
    pub ack: Ack,
    pub received: Instant,
    /// The trace of the request or message it came in (only while traces are exported).
    pub trace: Option<opentelemetry::Context>,
}

/// Where a refused event came from, for the dead-letter record.
#[derive(Clone, Debug, PartialEq)]
pub enum Origin {
    Kafka {
        topic: Arc<str>,
        partition: i32,
        offset: i64,
    },
    Grpc,
}

impl Origin {
    /// The Kafka coordinates; None for a gRPC event.
    pub fn coordinates(&self) -> Option<Coordinates<'_>> {
        match self {
            Origin::Kafka {
                topic,
                partition,
                offset,
            } => Some((topic, *partition, *offset)),
            Origin::Grpc => None,
        }
    }
}

/// A refused event on its way to a dead-letter destination.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// The bytes that were received.
    pub payload: Bytes,
    /// The reason code (a validation reason or `write_failed`).
    pub reason: &'static str,
    pub detail: String,
    pub origin: Origin,
}

impl DeadLetter {
    /// The dead letter of an event refused with `outcome` (a validation rejection or a
    /// permanent write refusal): the bytes received, the outcome's reason code and
    /// detail, and where the event came from. None when `outcome` is no refusal.
    pub fn of(payload: Bytes, origin: Origin, outcome: &Outcome) -> Option<Self> {
        let (reason, detail) = outcome.refusal()?;
        Some(DeadLetter {
            payload,
            reason,
            detail: detail.to_string(),
            origin,
        })
    }
}

/// Resolves an event's outcome back to its source.
#[derive(Debug)]
pub enum Ack {
    Kafka(KafkaAck),
    Grpc(GrpcAck),
    Redrive(RedriveAck),
}

/// What Kafka acks tell the source that owns the offsets.
#[derive(Debug, PartialEq)]
pub enum KafkaAcked {
    /// Offsets done (durable, a duplicate or dead-lettered): (partition, generation,
    /// offset), in the order resolved.
    Resolved(Vec<(i32, u64, i64)>),
    /// An ack dropped without an outcome.
    Lost {
        partition: i32,
        generation: u64,
        offset: i64,
    },
}

/// A consumed Kafka message's coordinates and the channel to the source owning its
/// partition's offsets.
#[derive(Debug)]
pub struct KafkaAck {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub generation: u64,
    to: mpsc::UnboundedSender<KafkaAcked>,
    open: bool,
}

impl KafkaAck {
    /// The ack of a consumed message, reporting to `to`.
    pub fn new(
        topic: Arc<str>,
        (partition, offset, generation): (i32, i64, u64),
        to: mpsc::UnboundedSender<KafkaAcked>,
    ) -> Self {
        Self {
            topic,
            partition,
            offset,
            generation,
            to,
            open: true,
        }
    }

    fn done(&mut self) -> (i32, u64, i64) {
        self.open = false;
        (self.partition, self.generation, self.offset)
    }
}

impl Drop for KafkaAck {
    /// A source that has stopped needs no report.
    fn drop(&mut self) {
        if self.open {
            let _ = self.to.send(KafkaAcked::Lost {
                partition: self.partition,
                generation: self.generation,
                offset: self.offset,
            });
        }
    }
}

/// An event's position in a gRPC request.
#[derive(Debug)]
pub struct GrpcAck {
    pub request: Arc<RequestAck>,
    pub index: u32,
    open: bool,
}

impl GrpcAck {
    /// The ack of event `index` of `request`.
    pub fn new(request: Arc<RequestAck>, index: u32) -> Self {
        Self {
            request,
            index,
            open: true,
        }
    }
}

impl Drop for GrpcAck {
    fn drop(&mut self) {
        if self.open {
            self.request.lost(self.index, Source::Grpc);
        }
    }
}

/// A re-driven dead letter: where the event originally came from (its `_id`, stored
/// `source` and any new dead letter follow from it) and its place in the re-drive's
/// chunk, whose `RequestAck` collects the outcomes.
#[derive(Debug)]
pub struct RedriveAck {
    pub origin: Origin,
    pub request: Arc<RequestAck>,
    pub index: u32,
    open: bool,
}

impl RedriveAck {
    /// The ack of dead letter `index` of a re-drive chunk, first received from `origin`.
    pub fn new(origin: Origin, request: Arc<RequestAck>, index: u32) -> Self {
        Self {
            origin,
            request,
            index,
            open: true,
        }
    }

    fn source(&self) -> Source {
        match self.origin {
            Origin::Kafka { .. } => Source::Kafka,
            Origin::Grpc => Source::Grpc,
        }
    }
}

impl Drop for RedriveAck {
    fn drop(&mut self) {
        if self.open {
            self.request.lost(self.index, self.source());
        }
    }
}

impl Ack {
    /// Which source the event came from (for a re-driven one, its original source).
    pub fn source(&self) -> Source {
        match self {
            Ack::Kafka(_) => Source::Kafka,
            Ack::Grpc(_) => Source::Grpc,
            Ack::Redrive(r) => r.source(),
        }
    }

    /// The Kafka coordinates the event was first read at (for a re-driven one, its
    /// original ones); None for a gRPC event.
    pub fn coordinates(&self) -> Option<Coordinates<'_>> {
        match self {
            Ack::Kafka(k) => Some((&k.topic, k.partition, k.offset)),
            Ack::Grpc(_) => None,
            Ack::Redrive(r) => r.origin.coordinates(),
        }
    }

    /// The event's origin, for its dead letter.
    pub fn origin(&self) -> Origin {
        match self {
            Ack::Kafka(k) => Origin::Kafka {
                topic: k.topic.clone(),
                partition: k.partition,
                offset: k.offset,
            },
            Ack::Grpc(_) => Origin::Grpc,
            Ack::Redrive(r) => r.origin.clone(),
        }
    }

    /// Hands the final outcome back to the source.
    pub fn resolve(self, outcome: Outcome) {
        match self {
            Ack::Kafka(mut k) => {
                let done = KafkaAcked::Resolved(vec![k.done()]);
                let _ = k.to.send(done);
            }
            Ack::Grpc(mut g) => {
                g.open = false;
                g.request.resolve(g.index, outcome)
            }
            Ack::Redrive(mut r) => {
                r.open = false;
                r.request.resolve(r.index, outcome)
            }
        }
    }

    /// Leaves the event unresolved on purpose: the server stops before handling it,
    /// and its source delivers it again (Kafka redelivers the uncommitted offset; the
    /// request's abandon tells a producer to resend).
    pub fn release(self) {
        match self {
            Ack::Kafka(mut k) => k.open = false,
            Ack::Grpc(mut g) => g.open = false,
            Ack::Redrive(mut r) => r.open = false,
        }
    }
}

/// Resolves many acks (a written batch), sending each source one report for its run
/// of Kafka acks instead of one per event.
pub fn resolve_all(acks: impl IntoIterator<Item = (Ack, Outcome)>) {
    let mut kafka: Vec<KafkaAck> = Vec::new();
    for (ack, outcome) in acks {
        match ack {
            Ack::Kafka(k) => kafka.push(k),
            other => other.resolve(outcome),
        }
    }
    let mut rest = kafka.as_mut_slice();
    while !rest.is_empty() {
        let to = rest[0].to.clone();
        let run = rest.iter().take_while(|k| k.to.same_channel(&to)).count();
        let (done, later) = rest.split_at_mut(run);
        let _ = to.send(KafkaAcked::Resolved(
            done.iter_mut().map(KafkaAck::done).collect(),
        ));
        rest = later;
    }
}

#[cfg(test)]
mod tests;
