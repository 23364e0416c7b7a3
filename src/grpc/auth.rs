//! Bearer-token checks for the mutating admin RPCs (and, when configured, producers),
//! and the transport-neutral `check` that `POST /shutdown` on the HTTP port uses too.
//! Tokens are compared in constant time over their SHA-256 digests (so neither the
//! contents nor the length of the configured token leak through timing) and never
//! logged. Every refused credential is logged as a warning (port, call, peer, kind;
//! never the token) and counted in `auth_failures_total{port, kind}` by
//! [`AuthFailures`].
use std::net::SocketAddr;

use prometheus::{IntCounterVec, Opts, Registry};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::{metadata::MetadataMap, Request, Status};

/// Compares a presented token with the configured one in constant time, over digests
/// of equal length whatever the tokens' lengths.
pub fn token_matches(presented: &str, token: &SecretString) -> bool {
    let presented = Sha256::digest(presented.as_bytes());
    let token = Sha256::digest(token.expose_secret().as_bytes());
    presented.as_slice().ct_eq(token.as_slice()).into()
}

/// Why a bearer-token check failed, whatever the transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// No token is configured, so the guarded calls are disabled.
    Disabled,
    /// No `Bearer` credential was presented.
    Missing,
    /// The presented token is not the configured one.
    Invalid,
}

/// The token of an `authorization` value: `Bearer <token>` (or `bearer`), trimmed.
pub fn bearer(value: &str) -> Option<&str> {
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}

/// Checks an `authorization` value against the configured token, in constant time.
pub fn check(authorization: Option<&str>, token: Option<&SecretString>) -> Result<(), Denied> {
    let token = token.ok_or(Denied::Disabled)?;
    match authorization.and_then(bearer) {
        None => Err(Denied::Missing),
        Some(p) if token_matches(p, token) => Ok(()),
        Some(_) => Err(Denied::Invalid),
    }
}

/// The refused credentials of both ports, by port (`grpc`, `http`) and kind
/// (`missing`, `invalid`); a call to a disabled endpoint is not a failed
/// authentication and is not counted.
#[derive(Clone, Debug)]
pub struct AuthFailures(IntCounterVec);

impl AuthFailures {
    /// Registers `auth_failures_total` in `registry`, every series at zero.
    pub fn new(registry: &Registry) -> Self {
        let opts = Opts::new(
            "auth_failures_total",
            "Calls refused for a missing or wrong bearer token, by port (grpc, http) and kind (missing, invalid)",
        );
        let counter = IntCounterVec::new(opts, &["port", "kind"]).expect("valid metric");
        registry
            .register(Box::new(counter.clone()))
            .expect("auth_failures_total registered once");
        for port in ["grpc", "http"] {
            for kind in ["missing", "invalid"] {
                counter.with_label_values(&[port, kind]);
            }
        }
        Self(counter)
    }

    /// Logs and counts a refused call to `call` on `port` from `peer`.
    pub fn refused(&self, port: &str, call: &str, peer: Option<SocketAddr>, denied: Denied) {
        let kind = match denied {
            Denied::Disabled => return,
            Denied::Missing => "missing",
            Denied::Invalid => "invalid",
        };
        self.0.with_label_values(&[port, kind]).inc();
        let peer = peer.map(|p| p.to_string()).unwrap_or_default();
        tracing::warn!(
            port,
            call,
            peer,
            kind,
            "a call was refused: bearer token {kind}"
        );
    }

    /// Refused calls so far on `port` of `kind`.
    pub fn count(&self, port: &str, kind: &str) -> u64 {
        self.0.with_label_values(&[port, kind]).get()
    }

    /// Checks a gRPC call's `authorization` metadata, logging and counting a refusal.
    fn check_call<T>(
        &self,
        req: &Request<T>,
        call: &str,
        token: Option<&SecretString>,
    ) -> Result<(), Denied> {
        let checked = check(authorization(req.metadata()), token);
        if let Err(denied) = checked {
            self.refused("grpc", call, req.remote_addr(), denied);
        }
        checked
    }

    /// Checks `authorization: Bearer <token>` against the admin token. With no token
    /// configured the call is refused with FAILED_PRECONDITION saying how to enable it.
    pub fn require_admin<T>(
        &self,
        req: &Request<T>,
        token: Option<&SecretString>,
    ) -> Result<(), Status> {
        // The admin RPC's name, from its request message (`PauseConsumerRequest`).
        let message = std::any::type_name::<T>().rsplit("::").next().unwrap_or("");
        let call = format!(
            "ingest.v1.IngestAdmin/{}",
            message.strip_suffix("Request").unwrap_or(message)
        );
        match self.check_call(req, &call, token) {
            Err(Denied::Disabled) => Err(Status::failed_precondition(
                "admin RPCs are disabled: start sales-ingest with ADMIN_TOKEN set (or --admin-token) \
                 and send metadata `authorization: Bearer <token>`",
            )),
            other => status(other),
        }
    }

    /// Checks a producer's `authorization: Bearer <token>` on IngestEvents/Stream;
    /// UNAUTHENTICATED when missing or wrong.
    pub fn require_bearer<T>(&self, req: &Request<T>, token: &SecretString) -> Result<(), Status> {
        let call = "ingest.v1.IngestEvents/Stream";
        status(self.check_call(req, call, Some(token)))
    }
}

fn authorization(metadata: &MetadataMap) -> Option<&str> {
    metadata.get("authorization").and_then(|v| v.to_str().ok())
}

fn status(checked: Result<(), Denied>) -> Result<(), Status> {
    checked.map_err(|denied| match denied {
        Denied::Missing | Denied::Disabled => {
            Status::unauthenticated("missing metadata `authorization: Bearer <token>`")
        }
        Denied::Invalid => Status::unauthenticated("invalid token"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn meta(value: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(v) = value {
            r.metadata_mut().insert("authorization", v.parse().unwrap());
        }
        r
    }

    fn require_admin(req: &Request<()>, token: Option<&SecretString>) -> Result<(), Status> {
        AuthFailures::new(&Registry::new()).require_admin(req, token)
    }

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_string())
    }

    #[test]
    fn right_token_passes() {
        assert!(require_admin(&meta(Some("Bearer s3cret")), Some(&secret("s3cret"))).is_ok());
    }

    #[test]
    fn missing_or_wrong_token_is_unauthenticated() {
        for m in [
            meta(None),
            meta(Some("Bearer nope")),
            meta(Some("s3cret")),
            meta(Some("Bearer s3cre")),
        ] {
            let err = require_admin(&m, Some(&secret("s3cret"))).unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated);
            assert!(!err.message().contains("s3cret"));
        }
    }

    #[test]
    fn no_configured_token_is_failed_precondition_with_a_hint() {
        let err = require_admin(&meta(Some("Bearer x")), None).unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert!(err.message().contains("ADMIN_TOKEN"));
    }

    #[test]
    fn check_sorts_disabled_missing_and_invalid() {
        let t = secret("s3cret");
        assert_eq!(check(Some("Bearer s3cret"), Some(&t)), Ok(()));
        assert_eq!(check(Some("bearer  s3cret "), Some(&t)), Ok(()));
        assert_eq!(check(Some("Bearer s3cret"), None), Err(Denied::Disabled));
        assert_eq!(check(None, None), Err(Denied::Disabled));
        assert_eq!(check(None, Some(&t)), Err(Denied::Missing));
        assert_eq!(
            check(Some("Basic czNjcmV0"), Some(&t)),
            Err(Denied::Missing)
        );
        assert_eq!(check(Some("Bearer nope"), Some(&t)), Err(Denied::Invalid));
        assert_eq!(check(Some("Bearer "), Some(&t)), Err(Denied::Invalid));
    }

    #[test]
    fn refused_credentials_are_counted_by_port_and_kind() {
        let failures = AuthFailures::new(&Registry::new());
        let t = secret("s3cret-s3cret-s3cret");
        assert!(failures.require_bearer(&meta(None), &t).is_err());
        assert!(failures
            .require_bearer(&meta(Some("Bearer no")), &t)
            .is_err());
        assert!(failures
            .require_bearer(&meta(Some("Bearer no")), &t)
            .is_err());
        assert!(failures
            .require_bearer(&meta(Some("Bearer s3cret-s3cret-s3cret")), &t)
            .is_ok());
        assert!(failures
            .require_admin(&meta(Some("Bearer x")), None)
            .is_err());
        failures.refused("http", "POST /shutdown", None, Denied::Invalid);
        assert_eq!(failures.count("grpc", "missing"), 1);
        assert_eq!(failures.count("grpc", "invalid"), 2);
        assert_eq!(failures.count("http", "invalid"), 1);
        assert_eq!(failures.count("http", "missing"), 0);
    }

    #[test]
    fn token_match_compares_contents() {
        assert!(token_matches("abc", &secret("abc")));
        assert!(!token_matches("abd", &secret("abc")));
        assert!(!token_matches("ab", &secret("abc")));
    }
}
