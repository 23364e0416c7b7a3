//! `ingestctl pause | resume | shutdown`: the admin RPCs that need
//! `authorization: Bearer <token>`. Refusals become `CtlError`s that say whether the
//! token was missing, wrong, or admin RPCs are disabled.
use sales_ingest::proto::ingest::v1::{
    ingest_admin_client::IngestAdminClient, PauseConsumerRequest, ResumeConsumerRequest,
    ShutdownRequest,
};
use tonic::{metadata::MetadataValue, transport::Channel, Request};

use crate::{connect::request, error::CtlError};

/// Which admin RPC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Pause,
    Resume,
    Shutdown,
}

/// A request carrying the bearer token, when there is one.
pub fn authed<T>(msg: T, token: Option<&str>) -> Result<Request<T>, CtlError> {
    let mut req = request(msg);
    if let Some(token) = token {
        let value: MetadataValue<_> = format!("Bearer {token}")
            .parse()
            .map_err(|_| CtlError::TokenInvalid("it contains characters not allowed".into()))?;
        req.metadata_mut().insert("authorization", value);
    }
    Ok(req)
}

/// The line to print for a pause or resume answer.
fn state_message(paused: bool, changed: bool) -> String {
    match (paused, changed) {
        (true, true) => "consumer paused".into(),
        (true, false) => "consumer was already paused".into(),
        (false, true) => "consumer resumed".into(),
        (false, false) => "consumer was not paused".into(),
    }
}

/// Performs `action`; returns what to print.
pub async fn run(
    channel: Channel,
    token: Option<&str>,
    action: Action,
) -> Result<String, CtlError> {
    let mut client = IngestAdminClient::new(channel);
    let given = token.is_some();
    match action {
        Action::Pause => {
            let r = client
                .pause_consumer(authed(PauseConsumerRequest {}, token)?)
                .await
                .map_err(|s| CtlError::from_status("PauseConsumer", s, given))?
                .into_inner();
            Ok(state_message(r.paused, r.changed))
        }
        Action::Resume => {
            let r = client
                .resume_consumer(authed(ResumeConsumerRequest {}, token)?)
                .await
                .map_err(|s| CtlError::from_status("ResumeConsumer", s, given))?
                .into_inner();
            Ok(state_message(r.paused, r.changed))
        }
        Action::Shutdown => {
            let r = client
                .shutdown(authed(ShutdownRequest {}, token)?)
                .await
                .map_err(|s| CtlError::from_status("Shutdown", s, given))?
                .into_inner();
            Ok(format!("shutdown accepted: {}", r.message))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_goes_in_the_authorization_header() {
        let req = authed((), Some("s3cret")).unwrap();
        assert_eq!(
            req.metadata().get("authorization").unwrap(),
            "Bearer s3cret"
        );
        assert!(authed((), None)
            .unwrap()
            .metadata()
            .get("authorization")
            .is_none());
        assert!(matches!(
            authed((), Some("bad\ntoken")),
            Err(CtlError::TokenInvalid(_))
        ));
    }

    #[test]
    fn pause_and_resume_messages() {
        assert_eq!(state_message(true, true), "consumer paused");
        assert_eq!(state_message(true, false), "consumer was already paused");
        assert_eq!(state_message(false, true), "consumer resumed");
    }
}
