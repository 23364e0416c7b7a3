//! Bearer-token checks for the mutating admin RPCs (and, when configured, producers).
//! Tokens are compared in constant time and never logged.
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use tonic::{metadata::MetadataMap, Status};

/// Compares a presented token with the configured one in constant time.
pub fn token_matches(presented: &str, token: &SecretString) -> bool {
    presented
        .as_bytes()
        .ct_eq(token.expose_secret().as_bytes())
        .into()
}

/// Checks `authorization: Bearer <token>` against the configured token. With no
/// token configured the call is refused with FAILED_PRECONDITION saying how to
/// enable it.
pub fn require_admin(metadata: &MetadataMap, token: Option<&SecretString>) -> Result<(), Status> {
    let Some(token) = token else {
        return Err(Status::failed_precondition(
            "admin RPCs are disabled: start sales-ingest with ADMIN_TOKEN set (or --admin-token) \
             and send metadata `authorization: Bearer <token>`",
        ));
    };
    require_bearer(metadata, token)
}

/// Checks `authorization: Bearer <token>`; UNAUTHENTICATED when missing or wrong.
pub fn require_bearer(metadata: &MetadataMap, token: &SecretString) -> Result<(), Status> {
    let presented = metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match presented {
        None => Err(Status::unauthenticated(
            "missing metadata `authorization: Bearer <token>`",
        )),
        Some(p) if token_matches(p, token) => Ok(()),
        Some(_) => Err(Status::unauthenticated("invalid token")),
    }
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
    fn token_match_compares_contents() {
        assert!(token_matches("abc", &secret("abc")));
        assert!(!token_matches("abd", &secret("abc")));
        assert!(!token_matches("ab", &secret("abc")));
    }
}
