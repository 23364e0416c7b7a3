//! The one shutdown sequence that SIGTERM, SIGINT, the Shutdown RPC, `POST /shutdown` and
//! a failed server share. Each step is a named signal that the component doing it fires
//! when done, and `Shutdown::run` reads top-down in the order they happen:
//!
//! 1. health turns NOT_SERVING, so probes and load balancers stop sending;
//! 2. intake stops (`requested`): the Kafka source stops fetching, producer streams
//!    stop reading, the pipeline closes its channels;
//! 3. the pipeline drains (`pipeline_drained`): every event taken is written, a
//!    duplicate, or dead-lettered, and acked;
//! 4. the Kafka source commits its final offsets and leaves the group
//!    (`source_committed`);
//! 5. the gRPC server sends the acks still owed and ends every stream
//!    (`grpc_closed`); a client that does not read them gets `GRPC_CLOSE_GRACE`;
//! 6. the background tasks stop (`background`): probes, health, HTTP.
//!
//! Steps 3 and 4 are bounded by SHUTDOWN_TIMEOUT; what did not finish is redelivered.
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::health::Health;

/// How long step 5 waits for clients to take their last acks and close.
pub const GRPC_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Everything drained and committed in time.
    Clean,
    /// SHUTDOWN_TIMEOUT passed first; uncommitted events will be redelivered.
    TimedOut,
    /// A server failed while running; the rest was shut down with it.
    Failed(String),
}

/// The signals of the shutdown steps.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    pub requested: CancellationToken,
    pub pipeline_drained: CancellationToken,
    pub source_committed: CancellationToken,
    pub grpc_closed: CancellationToken,
    pub background: CancellationToken,
    failure: Arc<Mutex<Option<String>>>,
}

impl Shutdown {
    /// Fresh signals; without Kafka, step 4 is done from the start.
    pub fn new(kafka: bool) -> Self {
        let s = Self::default();
        if !kafka {
            s.source_committed.cancel();
        }
        s
    }

    /// A part of the service failed for good: shut the rest down and exit 1.
    pub fn fail(&self, why: String) {
        error!(error = %why, "stopping the service: a part of it failed");
        self.failure
            .lock()
            .expect("failure lock")
            .get_or_insert(why);
        self.requested.cancel();
    }

    /// Why the service failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().expect("failure lock").clone()
    }

    /// Waits for a shutdown request, then runs the steps in order.
    pub async fn run(&self, health: &Health, limit: Duration) -> Stopped {
        self.requested.cancelled().await;
        info!("shutting down: NOT_SERVING, draining");
        health.begin_shutdown().await;
        let drained = timeout(limit, async {
            self.pipeline_drained.cancelled().await;
            self.source_committed.cancelled().await;
        })
        .await;
        if timeout(GRPC_CLOSE_GRACE, self.grpc_closed.cancelled())
            .await
            .is_err()
        {
            warn!(
                grace_s = GRPC_CLOSE_GRACE.as_secs(),
                "gRPC clients still connected after the close grace; closing their connections"
            );
        }
        self.background.cancel();
        if let Some(why) = self.failure() {
            return Stopped::Failed(why);
        }
        match drained {
            Ok(()) => Stopped::Clean,
            Err(_) => {
                error!(
                    timeout_s = limit.as_secs_f64(),
                    "shutdown did not finish within SHUTDOWN_TIMEOUT; uncommitted events will be redelivered"
                );
                Stopped::TimedOut
            }
        }
    }
}
