//! `ingest.v1.IngestAdmin`: GetStats (open), PauseConsumer, ResumeConsumer and Shutdown
//! (bearer token required).
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::info;

use crate::{
    grpc::auth::require_admin,
    proto::ingest::v1::{self as pb, ingest_admin_server::IngestAdmin},
    stats::{self, Stats},
};

/// The admin service.
pub struct Admin {
    pub stats: Arc<Stats>,
    pub admin_token: Option<String>,
    pub paused: watch::Sender<bool>,
    pub shutdown: CancellationToken,
}

impl Admin {
    fn authorize<T>(&self, req: &Request<T>) -> Result<(), Status> {
        require_admin(req.metadata(), self.admin_token.as_deref())
    }

    fn set_paused(&self, paused: bool) -> Result<bool, Status> {
        if !self.stats.kafka_enabled {
            return Err(Status::failed_precondition(
                "Kafka consumption is disabled (KAFKA_ENABLED=false): there is no consumer to pause or resume",
            ));
        }
        let changed = self
            .paused
            .send_if_modified(|p| std::mem::replace(p, paused) != paused);
        self.stats.set_paused(paused);
        info!(paused, changed, "consumer pause state set by admin RPC");
        Ok(changed)
    }
}

fn counts(c: stats::SourceCounts) -> pb::SourceCounts {
    pb::SourceCounts {
        stored: c.stored,
        duplicate: c.duplicate,
        rejected: c.rejected,
        failed: c.failed,
    }
}

impl From<stats::Snapshot> for pb::GetStatsResponse {
    fn from(s: stats::Snapshot) -> Self {
        pb::GetStatsResponse {
            uptime_seconds: s.uptime_seconds,
            events_stored: s.events_stored,
            events_duplicate: s.events_duplicate,
            events_rejected: s.events_rejected,
            events_failed: s.events_failed,
            kafka: Some(counts(s.kafka)),
            grpc: Some(counts(s.grpc)),
            batches_written: s.batches_written,
            queue_depth: s.queue_depth,
            events_per_second: s.events_per_second,
            consumer_paused: s.consumer_paused,
            kafka_connected: s.kafka_connected,
            mongodb_connected: s.mongodb_connected,
            consumer_lag: s.consumer_lag,
            partitions: s
                .partitions
                .into_iter()
                .map(|p| pb::PartitionLag {
                    partition: p.partition,
                    committed_offset: p.committed_offset,
                    high_watermark: p.high_watermark,
                    lag: p.lag,
                })
                .collect(),
            kafka_enabled: s.kafka_enabled,
            rejected_by_reason: s.rejected_by_reason.into_iter().collect(),
        }
    }
}

#[tonic::async_trait]
impl IngestAdmin for Admin {
    async fn get_stats(
        &self,
        _req: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::GetStatsResponse>, Status> {
        Ok(Response::new(self.stats.snapshot().into()))
    }

    async fn pause_consumer(
        &self,
        req: Request<pb::PauseConsumerRequest>,
    ) -> Result<Response<pb::PauseConsumerResponse>, Status> {
        self.authorize(&req)?;
        let changed = self.set_paused(true)?;
        Ok(Response::new(pb::PauseConsumerResponse {
            paused: true,
            changed,
        }))
    }

    async fn resume_consumer(
        &self,
        req: Request<pb::ResumeConsumerRequest>,
    ) -> Result<Response<pb::ResumeConsumerResponse>, Status> {
        self.authorize(&req)?;
        let changed = self.set_paused(false)?;
        Ok(Response::new(pb::ResumeConsumerResponse {
            paused: false,
            changed,
        }))
    }

    async fn shutdown(
        &self,
        req: Request<pb::ShutdownRequest>,
    ) -> Result<Response<pb::ShutdownResponse>, Status> {
        self.authorize(&req)?;
        info!("shutdown requested over gRPC");
        self.shutdown.cancel();
        Ok(Response::new(pb::ShutdownResponse {
            message: "shutting down: draining, flushing and committing".into(),
        }))
    }
}
