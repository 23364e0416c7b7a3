//! Phase 11, the same faults for every JSON rival: (a) the MongoDB server stopped for
//! 10 s then restarted, (b) the rival SIGKILLed and started again, (c) a poison record:
//! the malformed values of [`kafka::MALFORMED`] in the middle of the topic. Each fault
//! gets a fresh topic of `n` events; the fault is applied once a third of them are
//! stored; then the bench waits until all are stored or nothing moves for
//! [`SETTLE`], and counts: valid events lost, documents beyond the valid ones
//! (duplicates, or malformed values stored as documents), messages on the rival's
//! dead-letter topic, and whether it got there by itself.
use std::time::{Duration, Instant};

use anyhow::Result;
use mongodb::bson::{doc, Document};
use serde::Serialize;
use test_support::servers::LocalServers;

use crate::{
    kafka,
    rival::{self, Job, Rival},
    rivals_phase::{count_exact, drop_database, ensure_indexes, wait_count},
    Ctx, Settings,
};

/// With no new document for this long after a fault, the rival has not recovered.
const SETTLE: Duration = Duration::from_secs(75);

/// A fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Fault {
    MongoDown,
    Killed,
    Poison,
}

impl Fault {
    pub const ALL: [Fault; 3] = [Fault::MongoDown, Fault::Killed, Fault::Poison];

    pub fn label(self) -> &'static str {
        match self {
            Fault::MongoDown => "(a) MongoDB stopped 10 s",
            Fault::Killed => "(b) peer SIGKILLed, restarted",
            Fault::Poison => "(c) poison records",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Fault::MongoDown => "mongo",
            Fault::Killed => "kill",
            Fault::Poison => "poison",
        }
    }
}

/// What a rival did through one fault.
#[derive(Clone, Debug, Serialize)]
pub struct FaultResult {
    pub fault: Fault,
    /// Valid events produced.
    pub events: u64,
    /// Valid events with no document at the end.
    pub lost: u64,
    /// Documents beyond the valid events' (with `_id` = event id, a duplicate of a valid
    /// event cannot be a second document: these are malformed values stored).
    pub extra_documents: u64,
    /// Messages on the rival's dead-letter topic.
    pub dead_letters: Option<i64>,
    /// All valid events stored with no hand from the bench.
    pub recovered: bool,
    /// Fault → last valid document, seconds.
    pub seconds_to_complete: Option<f64>,
    pub error: Option<String>,
}

/// Runs every fault for `r`; `servers` is the run's servers (fault (a) restarts MongoDB).
pub async fn run(ctx: &Ctx, servers: &mut LocalServers, r: Rival, n: u64) -> Vec<FaultResult> {
    let mut out = Vec::new();
    for fault in Fault::ALL {
        eprintln!("bench: phase 11, {} under {}", r.name(), fault.label());
        let result = match one(ctx, servers, r, fault, n).await {
            Ok(res) => res,
            Err(e) => FaultResult {
                fault,
                events: n,
                lost: 0,
                extra_documents: 0,
                dead_letters: None,
                recovered: false,
                seconds_to_complete: None,
                error: Some(format!("{e:#}")),
            },
        };
        eprintln!(
            "bench: {} {}: lost {}, extra {}, dead letters {:?}, recovered {}{}",
            r.key(),
            fault.key(),
            result.lost,
            result.extra_documents,
            result.dead_letters,
            result.recovered,
            result
                .error
                .as_deref()
                .map(|e| format!(", error {e}"))
                .unwrap_or_default()
        );
        out.push(result);
    }
    out
}

async fn one(
    ctx: &Ctx,
    servers: &mut LocalServers,
    r: Rival,
    fault: Fault,
    n: u64,
) -> Result<FaultResult> {
    let topic = format!(
        "bench-fault-{}-{}-{}",
        fault.key(),
        r.key(),
        std::process::id()
    );
    kafka::create_topic(&ctx.backends.kafka, &topic, ctx.tuning.partitions).await?;
    let (brokers, t) = (ctx.backends.kafka.clone(), topic.clone());
    let poison = fault == Fault::Poison;
    tokio::task::spawn_blocking(move || kafka::pre_produce_json(&brokers, &t, "f", n, poison))
        .await??;
    let run = format!("fault_{}", fault.key());
    let job = Job {
        topic: &topic,
        run: &run,
        settings: Settings::Bench,
    };
    let database = r.database(&run);
    if r != Rival::SalesIngest {
        ensure_indexes(ctx, &database).await?;
    }
    let mut child = rival::start(ctx, r, &job)?;
    wait_count(ctx, &database, n / 3, Duration::from_secs(180)).await?;
    let at = Instant::now();
    match fault {
        Fault::MongoDown => {
            tokio::task::block_in_place(|| servers.restart_mongodb(Duration::from_secs(10)))?;
        }
        Fault::Killed => {
            child.kill()?;
            child = rival::start(ctx, r, &job)?;
        }
        Fault::Poison => {}
    }
    let (mut last, mut last_change, mut done) = (0, Instant::now(), None);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let count = match valid(ctx, &database).await {
            Ok(c) => c,
            Err(_) => continue,
        };
        if count >= n {
            done = Some(at.elapsed().as_secs_f64());
            break;
        }
        if count != last {
            (last, last_change) = (count, Instant::now());
        } else if last_change.elapsed() > SETTLE {
            break;
        }
    }
    // Anything still on its way (a malformed value stored late) lands first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let valid_docs = valid(ctx, &database).await?;
    let total = count_exact(ctx, &database).await?;
    let alive = child.running();
    let _ = child.stop();
    drop_database(ctx, &database).await?;
    let dead_letters = match r.dead_letter_topic(&topic) {
        Some(dlq) => {
            let b = ctx.backends.kafka.clone();
            Some(tokio::task::spawn_blocking(move || kafka::message_count(&b, &dlq)).await??)
        }
        None => None,
    };
    Ok(FaultResult {
        fault,
        events: n,
        lost: n.saturating_sub(valid_docs),
        extra_documents: total.saturating_sub(valid_docs),
        dead_letters,
        recovered: done.is_some() && alive,
        seconds_to_complete: done,
        error: None,
    })
}

/// Documents of the valid events (`_id` `f-<n>`).
async fn valid(ctx: &Ctx, database: &str) -> Result<u64> {
    let client = sales_ingest::sink::mongo::client(&ctx.backends.mongodb).await?;
    Ok(client
        .database(database)
        .collection::<Document>("raw_sales")
        .count_documents(doc! { "_id": { "$regex": "^f-" } })
        .await?)
}
