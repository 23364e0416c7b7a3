//! `ingest.v1.IngestAdmin`: GetStats (open); PauseConsumer, ResumeConsumer, Shutdown,
//! SeekConsumer (`source::seek`) and RedriveDeadLetters (`redrive`), which need the
//! bearer token.
use std::sync::Arc;

use secrecy::SecretString;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::info;

use crate::{
    grpc::auth::AuthFailures,
    proto::ingest::v1::{self as pb, ingest_admin_server::IngestAdmin},
    redrive::Redriver,
    source::seek::SeekHandle,
    stats::Stats,
};

const KAFKA_DISABLED: &str = "Kafka consumption is disabled (KAFKA_ENABLED=false)";

/// The admin service.
pub struct Admin {
    pub stats: Arc<Stats>,
    pub admin_token: Option<SecretString>,
    /// Where refused tokens are logged and counted.
    pub auth_failures: AuthFailures,
    pub paused: watch::Sender<bool>,
    pub shutdown: CancellationToken,
    /// The Kafka source's seek handle; None when Kafka is disabled.
    pub seek: Option<SeekHandle>,
    /// Re-drives dead letters.
    pub redrive: Arc<Redriver>,
}

impl Admin {
    fn authorize<T>(&self, req: &Request<T>) -> Result<(), Status> {
        self.auth_failures
            .require_admin(req, self.admin_token.as_ref())
    }

    fn set_paused(&self, paused: bool) -> Result<bool, Status> {
        if !self.stats.kafka_enabled() {
            return Err(Status::failed_precondition(format!(
                "{KAFKA_DISABLED}: there is no consumer to pause or resume"
            )));
        }
        let changed = self
            .paused
            .send_if_modified(|p| std::mem::replace(p, paused) != paused);
        info!(paused, changed, "consumer pause state set by admin RPC");
        Ok(changed)
    }
}

#[tonic::async_trait]
impl IngestAdmin for Admin {
    async fn get_stats(
        &self,
        _req: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::GetStatsResponse>, Status> {
        Ok(Response::new(self.stats.snapshot()))
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

    async fn seek_consumer(
        &self,
        req: Request<pb::SeekConsumerRequest>,
    ) -> Result<Response<pb::SeekConsumerResponse>, Status> {
        self.authorize(&req)?;
        let Some(seek) = &self.seek else {
            return Err(Status::failed_precondition(format!(
                "{KAFKA_DISABLED}: there is no consumer to seek"
            )));
        };
        seek.seek(req.into_inner()).await.map(Response::new)
    }

    type RedriveDeadLettersStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<pb::RedriveProgress, Status>> + Send + 'static>,
    >;

    async fn redrive_dead_letters(
        &self,
        req: Request<pb::RedriveRequest>,
    ) -> Result<Response<Self::RedriveDeadLettersStream>, Status> {
        self.authorize(&req)?;
        let progress = self.redrive.start(req.into_inner())?;
        Ok(Response::new(Box::pin(progress)))
    }
}
