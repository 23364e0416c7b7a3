//! A gRPC producer that keeps one IngestEvents stream full until the server ends it:
//! the work in flight that shutdown tests drain. It counts its acks as they arrive, so a
//! test can start a shutdown mid-stream and then check every acked event is stored.
use std::{
    collections::BTreeSet,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use mongodb::{
    bson::{doc, Document},
    Database,
};
use sales_ingest::proto::ingest::v1::{
    ingest_events_client::IngestEventsClient, IngestAck, IngestRequest,
};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;

use super::{channel, valid_event};

/// What the stream got: each ack with its arrival time, and how the stream ended.
pub struct Pumped {
    pub prefix: String,
    pub per_request: usize,
    pub acks: Vec<(Instant, IngestAck)>,
    /// The status that ended the stream (None: it ended cleanly).
    pub end: Option<tonic::Status>,
}

impl Pumped {
    /// The ids of every event whose request was acked.
    pub fn acked_ids(&self) -> Vec<String> {
        self.acks
            .iter()
            .flat_map(|(_, ack)| {
                (0..self.per_request).map(move |i| format!("{}-{}-{i}", self.prefix, ack.seq))
            })
            .collect()
    }

    /// Acks that arrived after `t`.
    pub fn acks_after(&self, t: Instant) -> usize {
        self.acks.iter().filter(|(at, _)| *at > t).count()
    }

    /// Checks a drain at shutdown: every acked event is stored, and the only events
    /// stored without an ack are of the one request the server was taking when intake
    /// stopped, which the end of the stream names for the producer to resend.
    pub async fn check_drained(&self, db: &Database) {
        let acked = self.acks.len() * self.per_request;
        assert_eq!(
            self.acked_stored(db).await,
            acked,
            "every acked event stored"
        );
        let acked_seqs: BTreeSet<u64> = self.acks.iter().map(|(_, a)| a.seq).collect();
        let mut ids = db
            .collection::<Document>("raw_sales")
            .find(doc! { "_id": { "$regex": format!("^{}-", self.prefix) } })
            .projection(doc! { "_id": 1 })
            .await
            .expect("find");
        let mut unacked = BTreeSet::new();
        while let Some(d) = ids.next().await {
            let d = d.expect("a document");
            let id = d.get_str("_id").expect("a string id");
            let seq: u64 = id[self.prefix.len() + 1..]
                .split('-')
                .next()
                .and_then(|s| s.parse().ok())
                .expect("<prefix>-<seq>-<i>");
            if !acked_seqs.contains(&seq) {
                unacked.insert(seq);
            }
        }
        assert!(
            unacked.len() <= 1,
            "events stored without an ack from requests {unacked:?}"
        );
        if let Some(seq) = unacked.first() {
            let end = self.end.as_ref().map(|s| s.message()).unwrap_or_default();
            assert!(
                end.contains(&format!("request {seq} was not fully taken")),
                "request {seq} partly stored without an ack, yet the stream ended with: {end}"
            );
        }
    }

    /// How many of the acked events `db` holds.
    async fn acked_stored(&self, db: &Database) -> usize {
        let coll = db.collection::<Document>("raw_sales");
        let mut found = 0;
        for chunk in self.acked_ids().chunks(5_000) {
            found += coll
                .count_documents(doc! { "_id": { "$in": chunk.to_vec() } })
                .await
                .expect("count acked ids");
        }
        found as usize
    }
}

/// A running producer: `acked` counts its acks so far.
pub struct Pump {
    pub acked: Arc<AtomicU64>,
    pub handle: JoinHandle<Pumped>,
}

impl Pump {
    /// Waits until at least `n` requests are acked; panics after `timeout`.
    pub async fn wait_acked(&self, n: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.acked.load(Ordering::Relaxed) < n {
            assert!(
                !self.handle.is_finished(),
                "the stream ended after {} acks",
                self.acked.load(Ordering::Relaxed)
            );
            assert!(
                Instant::now() < deadline,
                "only {} of {n} acks after {timeout:?}",
                self.acked.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The stream's record once the server ended it; panics after `timeout`.
    pub async fn ended(self, timeout: Duration) -> Pumped {
        tokio::time::timeout(timeout, self.handle)
            .await
            .expect("the server ends the stream")
            .expect("the producer task")
    }
}

/// Streams requests of `per_request` valid events with ids `<prefix>-<seq>-<i>` to the
/// server at `url`, as fast as it reads them, until it ends the stream.
pub fn pump(url: &str, prefix: &str, per_request: usize) -> Pump {
    let acked = Arc::new(AtomicU64::new(0));
    let (url, prefix, count) = (url.to_string(), prefix.to_string(), acked.clone());
    let handle = tokio::spawn(async move {
        let mut client = IngestEventsClient::new(channel(&url).await);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let p = prefix.clone();
        let sender = tokio::spawn(async move {
            for seq in 0.. {
                let events = (0..per_request)
                    .map(|i| valid_event(i, &format!("{p}-{seq}-{i}")))
                    .collect();
                if tx.send(IngestRequest { seq, events }).await.is_err() {
                    break;
                }
            }
        });
        let mut run = Pumped {
            prefix,
            per_request,
            acks: Vec::new(),
            end: None,
        };
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        match client.stream(stream).await {
            Ok(resp) => {
                let mut acks = resp.into_inner();
                while let Some(ack) = acks.next().await {
                    match ack {
                        Ok(ack) => {
                            assert_eq!(ack.accepted as usize, per_request, "{ack:?}");
                            run.acks.push((Instant::now(), ack));
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(status) => {
                            run.end = Some(status);
                            break;
                        }
                    }
                }
            }
            Err(status) => run.end = Some(status),
        }
        sender.abort();
        run
    });
    Pump { acked, handle }
}
