//! Bearer-token checks for the mutating admin RPCs (and, when configured, producers),
//! and the transport-neutral `check` that `POST /shutdown` on the HTTP port uses too.
//! Tokens are compared in constant time over their SHA-256 digests (so neither the
//! contents nor the length of the configured token leak through timing), never
//! logged, and every refused token is logged as a warning.
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::{metadata::MetadataMap, Status};

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
    let checked = match authorization.and_then(bearer) {
        None => Err(Denied::Missing),
        Some(p) if token_matches(p, token) => Ok(()),
        Some(_) => Err(Denied::Invalid),
    };
    if let Err(denied) = checked {
        tracing::warn!(?denied, "a call was refused: bearer token missing or wrong");
    }
    checked
}

/// Checks `authorization: Bearer <token>` against the configured token. With no
/// token configured the call is refused with FAILED_PRECONDITION saying how to
/// enable it.
pub fn require_admin(metadata: &MetadataMap, token: Option<&SecretString>) -> Result<(), Status> {
    match check(authorization(metadata), token) {
        Err(Denied::Disabled) => Err(Status::failed_precondition(
            "admin RPCs are disabled: start sales-ingest with ADMIN_TOKEN set (or --admin-token) \
             and send metadata `authorization: Bearer <token>`",
        )),
        other => status(other),
    }
}

/// Checks `authorization: Bearer <token>`; UNAUTHENTICATED when missing or wrong.
pub fn require_bearer(metadata: &MetadataMap, token: &SecretString) -> Result<(), Status> {
    status(check(authorization(metadata), Some(token)))
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

    fn meta(value: Option<&str>) -> MetadataMap {
        let mut m = MetadataMap::new();
        if let Some(v) = value {
            m.insert("authorization", v.parse().unwrap());
        }
        m
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
    fn token_match_compares_contents() {
        assert!(token_matches("abc", &secret("abc")));
        assert!(!token_matches("abd", &secret("abc")));
        assert!(!token_matches("ab", &secret("abc")));
    }
}
