//! `ingestctl stream`: a load generator over `IngestEvents/Stream`. Requests take
//! consecutive slices of the run's events from one shared counter, so `--streams`
//! concurrent streams split the run between them and `--rate` paces the whole run.
//! Each stream keeps at most `--window` requests unacknowledged; acks arrive in
//! request order, so a queue of send times gives each request's ack latency.
use std::{
    collections::{BTreeMap, VecDeque},
    ops::Range,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use indicatif::ProgressBar;
use sales_ingest::proto::ingest::v1::{
    ingest_events_client::IngestEventsClient, IngestAck, IngestRequest,
};
use tokio::{
    sync::{mpsc, Semaphore},
    task::JoinSet,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::{
    error::CtlError,
    events::Generator,
    latency::Latencies,
    progress,
    report::{rate, StreamSummary},
};

/// What to send.
#[derive(Clone, Debug)]
pub struct StreamPlan {
    pub count: u64,
    pub batch: u64,
    /// Events per second over all streams; 0 = unlimited.
    pub rate: f64,
    pub streams: u32,
    pub window: usize,
    pub generator: Generator,
    /// Sent as `authorization: Bearer <token>` when set.
    pub producer_token: Option<String>,
}

/// State the streams share: the plan, the next event and sequence number to hand out.
struct Shared {
    plan: StreamPlan,
    next_event: AtomicU64,
    next_seq: AtomicU64,
    start: Instant,
    bar: ProgressBar,
}

impl Shared {
    /// The next request's sequence number and event range, until the run is used up.
    fn take(&self) -> Option<(u64, Range<u64>)> {
        let start = self
            .next_event
            .fetch_add(self.plan.batch, Ordering::Relaxed);
        if start >= self.plan.count {
            return None;
        }
        let end = (start + self.plan.batch).min(self.plan.count);
        Some((self.next_seq.fetch_add(1, Ordering::Relaxed), start..end))
    }

    /// Waits until event `first` is due at the planned rate.
    async fn pace(&self, first: u64) {
        if self.plan.rate > 0.0 {
            let due = self.start + Duration::from_secs_f64(first as f64 / self.plan.rate);
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

/// One stream's results.
#[derive(Debug, Default)]
struct Tally {
    requests: u64,
    acked_events: u64,
    accepted: u64,
    duplicates: u64,
    updated: u64,
    rejected_by_reason: BTreeMap<String, u64>,
    latencies: Latencies,
}

impl Tally {
    fn record(&mut self, ack: &IngestAck, events: u64, latency: Duration) {
        self.requests += 1;
        self.acked_events += events;
        self.accepted += u64::from(ack.accepted);
        self.duplicates += u64::from(ack.duplicates);
        self.updated += u64::from(ack.updated);
        for r in &ack.rejected {
            *self.rejected_by_reason.entry(r.reason.clone()).or_default() += 1;
        }
        self.latencies.record(latency);
    }

    fn merge(&mut self, other: Tally) {
        self.requests += other.requests;
        self.acked_events += other.acked_events;
        self.accepted += other.accepted;
        self.duplicates += other.duplicates;
        self.updated += other.updated;
        for (reason, n) in other.rejected_by_reason {
            *self.rejected_by_reason.entry(reason).or_default() += n;
        }
        self.latencies.merge(other.latencies);
    }
}

/// A request on its way: its sequence number, size and send time.
struct Sent {
    seq: u64,
    events: u64,
    at: Instant,
}

/// Runs the plan over `channel`; the summary when every request was acked.
pub async fn run(channel: Channel, plan: StreamPlan) -> Result<StreamSummary, CtlError> {
    let shared = Arc::new(Shared {
        bar: progress::bar(plan.count, "events acked"),
        next_event: AtomicU64::new(0),
        next_seq: AtomicU64::new(1),
        start: Instant::now(),
        plan,
    });
    let mut tasks = JoinSet::new();
    for _ in 0..shared.plan.streams {
        tasks.spawn(one_stream(
            IngestEventsClient::new(channel.clone()),
            shared.clone(),
        ));
    }
    let mut total = Tally::default();
    while let Some(joined) = tasks.join_next().await {
        let tally =
            joined.map_err(|e| CtlError::Protocol(format!("stream task failed: {e}")))??;
        total.merge(tally);
    }
    shared.bar.finish_and_clear();
    let elapsed = shared.start.elapsed().as_secs_f64();
    let plan = &shared.plan;
    if total.acked_events < plan.count {
        return Err(CtlError::Protocol(format!(
            "only {} of {} events were acknowledged: the server ended a stream early",
            total.acked_events, plan.count
        )));
    }
    Ok(StreamSummary {
        run_id: plan.generator.run_id().to_string(),
        streams: plan.streams,
        requests: total.requests,
        events_sent: plan.count,
        events_invalid_generated: plan.generator.invalid_among(plan.count),
        acked_events: total.acked_events,
        accepted: total.accepted,
        duplicates: total.duplicates,
        updated: total.updated,
        rejected: total.rejected_by_reason.values().sum(),
        rejected_by_reason: total.rejected_by_reason,
        elapsed_seconds: elapsed,
        events_per_second: rate(total.acked_events, elapsed),
        ack_latency: total.latencies.summary(),
    })
}

/// Sends requests on one stream until the run is used up; reads its acks.
async fn one_stream(
    mut client: IngestEventsClient<Channel>,
    shared: Arc<Shared>,
) -> Result<Tally, CtlError> {
    let window = shared.plan.window;
    let (tx, rx) = mpsc::channel::<IngestRequest>(window);
    let in_flight = Arc::new(Semaphore::new(window));
    let sent = Arc::new(Mutex::new(VecDeque::<Sent>::new()));
    let sender = tokio::spawn(send_requests(
        tx,
        shared.clone(),
        in_flight.clone(),
        sent.clone(),
    ));
    let result = read_acks(&mut client, rx, &shared, &in_flight, &sent).await;
    sender.abort();
    let tally = result?;
    let unacked = sent.lock().map(|q| q.len()).unwrap_or(0);
    if unacked > 0 {
        return Err(CtlError::Protocol(format!(
            "the server ended the stream with {unacked} requests unacknowledged"
        )));
    }
    Ok(tally)
}

async fn send_requests(
    tx: mpsc::Sender<IngestRequest>,
    shared: Arc<Shared>,
    in_flight: Arc<Semaphore>,
    sent: Arc<Mutex<VecDeque<Sent>>>,
) {
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let Some((seq, range)) = shared.take() else {
            return;
        };
        shared.pace(range.start).await;
        let events: Vec<_> = range
            .clone()
            .map(|i| shared.plan.generator.event(i))
            .collect();
        let n = events.len() as u64;
        if let Ok(mut q) = sent.lock() {
            q.push_back(Sent {
                seq,
                events: n,
                at: Instant::now(),
            });
        }
        if tx.send(IngestRequest { seq, events }).await.is_err() {
            return;
        }
        // Given back when the ack arrives.
        permit.forget();
    }
}

async fn read_acks(
    client: &mut IngestEventsClient<Channel>,
    rx: mpsc::Receiver<IngestRequest>,
    shared: &Shared,
    in_flight: &Semaphore,
    sent: &Mutex<VecDeque<Sent>>,
) -> Result<Tally, CtlError> {
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(token) = &shared.plan.producer_token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| CtlError::Protocol("the producer token is not valid metadata".into()))?;
        request.metadata_mut().insert("authorization", value);
    }
    let mut acks = client
        .stream(request)
        .await
        .map_err(|s| CtlError::from_status("IngestEvents/Stream", s, false))?
        .into_inner();
    let mut tally = Tally::default();
    while let Some(ack) = acks
        .message()
        .await
        .map_err(|s| CtlError::from_status("IngestEvents/Stream", s, false))?
    {
        let Some(req) = sent.lock().ok().and_then(|mut q| q.pop_front()) else {
            return Err(CtlError::Protocol(format!(
                "ack for seq {} with no request outstanding",
                ack.seq
            )));
        };
        if ack.seq != req.seq {
            return Err(CtlError::Protocol(format!(
                "ack for seq {} where seq {} was expected (acks must come in order)",
                ack.seq, req.seq
            )));
        }
        tally.record(&ack, req.events, req.at.elapsed());
        shared.bar.inc(req.events);
        in_flight.add_permits(1);
    }
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sales_ingest::proto::ingest::v1::Rejection;

    fn shared(count: u64, batch: u64) -> Shared {
        Shared {
            plan: StreamPlan {
                count,
                batch,
                rate: 0.0,
                streams: 1,
                window: 1,
                generator: Generator::new("r".into(), Default::default(), chrono::Utc::now()),
                producer_token: None,
            },
            next_event: AtomicU64::new(0),
            next_seq: AtomicU64::new(1),
            start: Instant::now(),
            bar: ProgressBar::hidden(),
        }
    }

    #[test]
    fn the_run_is_cut_into_batches_with_a_short_last_one() {
        let s = shared(1050, 500);
        assert_eq!(s.take(), Some((1, 0..500)));
        assert_eq!(s.take(), Some((2, 500..1000)));
        assert_eq!(s.take(), Some((3, 1000..1050)));
        assert_eq!(s.take(), None);
        assert_eq!(s.take(), None);
    }

    #[test]
    fn tallies_count_outcomes_and_merge() {
        let ack = IngestAck {
            seq: 1,
            accepted: 7,
            duplicates: 1,
            rejected: vec![
                Rejection {
                    index: 3,
                    reason: "invalid_qty".into(),
                    detail: String::new(),
                },
                Rejection {
                    index: 5,
                    reason: "missing_sku".into(),
                    detail: String::new(),
                },
            ],
            updated: 2,
        };
        let mut a = Tally::default();
        a.record(&ack, 10, Duration::from_millis(5));
        let mut b = Tally::default();
        b.record(&ack, 10, Duration::from_millis(7));
        a.merge(b);
        assert_eq!((a.requests, a.acked_events), (2, 20));
        assert_eq!((a.accepted, a.duplicates, a.updated), (14, 2, 4));
        assert_eq!(a.rejected_by_reason["invalid_qty"], 2);
        assert_eq!(a.latencies.summary().max_ms, Some(7.0));
    }
}
