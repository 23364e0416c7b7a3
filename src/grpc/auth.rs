//! Bearer-token checks for the mutating admin RPCs (and, when configured, producers).
//! Tokens are compared in constant time and never logged.
use tonic::{metadata::MetadataMap, Status};

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks `authorization: Bearer <token>` against the configured token. With no
/// token configured the call is refused with FAILED_PRECONDITION saying how to
/// enable it.
pub fn require_admin(metadata: &MetadataMap, token: Option<&str>) -> Result<(), Status> {
    let Some(token) = token else {
        return Err(Status::failed_precondition(
            "admin RPCs are disabled: start sales-ingest with ADMIN_TOKEN set (or --admin-token) \
             and send metadata `authorization: Bearer <token>`",
        ));
    };
    require_bearer(metadata, token)
}

/// Checks `authorization: Bearer <token>`; UNAUTHENTICATED when missing or wrong.
pub fn require_bearer(metadata: &MetadataMap, token: &str) -> Result<(), Status> {
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
        Some(p) if constant_time_eq(p.as_bytes(), token.as_bytes()) => Ok(()),
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

    #[test]
    fn right_token_passes() {
        assert!(require_admin(&meta(Some("Bearer s3cret")), Some("s3cret")).is_ok());
    }

    #[test]
    fn missing_or_wrong_token_is_unauthenticated() {
        for m in [
            meta(None),
            meta(Some("Bearer nope")),
            meta(Some("s3cret")),
            meta(Some("Bearer s3cre")),
        ] {
            let err = require_admin(&m, Some("s3cret")).unwrap_err();
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
    fn constant_time_eq_compares_contents() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
