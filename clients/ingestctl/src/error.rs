//! What can go wrong talking to sales-ingest, as messages an operator can act on, and
//! the exit code each maps to (documented in the README):
//! 0 success; 1 failure (unreachable server, failed RPC, not serving, undelivered
//! messages, partitions no instance owns); 2 usage error (clap, or options that do not
//! fit together); 3 an admin call refused by the server (UNAUTHENTICATED: the token;
//! FAILED_PRECONDITION: admin RPCs disabled or not applicable).
use tonic::{Code, Status};

/// Generic failure.
pub const EXIT_FAILURE: u8 = 1;
/// Options that do not fit together (clap uses the same code for its errors).
pub const EXIT_USAGE: u8 = 2;
/// The server refused an admin call (token or precondition).
pub const EXIT_REFUSED: u8 = 3;

/// A failure at the boundary between ingestctl and the server or broker.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("invalid address {addr:?}: {message}")]
    BadAddress { addr: String, message: String },
    #[error("cannot reach sales-ingest at {addr}: {message}")]
    Unreachable { addr: String, message: String },
    #[error(
        "no admin token given (--token or ADMIN_TOKEN) and the server requires one \
         (UNAUTHENTICATED): {0}"
    )]
    TokenMissing(String),
    #[error("the server refused the admin token (UNAUTHENTICATED): {0}")]
    TokenRefused(String),
    #[error("the admin token is not valid metadata: {0}")]
    TokenInvalid(String),
    #[error("the server refused the call (FAILED_PRECONDITION): {0}")]
    Refused(String),
    #[error("{rpc} failed ({code:?}): {message}")]
    Rpc {
        rpc: &'static str,
        code: Code,
        message: String,
    },
    #[error("{0}")]
    Protocol(String),
    #[error("kafka: {0}")]
    Kafka(String),
    #[error("{0}")]
    Usage(String),
    #[error(
        "partitions {0:?} are owned by none of the instances asked; pass every group \
         member with --addr"
    )]
    NotOwned(Vec<i32>),
}

impl CtlError {
    /// Maps a failed RPC's status; `token_given` tells a missing token from a wrong one.
    pub fn from_status(rpc: &'static str, status: Status, token_given: bool) -> Self {
        let message = status.message().to_string();
        match status.code() {
            Code::Unauthenticated if token_given => CtlError::TokenRefused(message),
            Code::Unauthenticated => CtlError::TokenMissing(message),
            Code::FailedPrecondition => CtlError::Refused(message),
            code => CtlError::Rpc { rpc, code, message },
        }
    }

    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::TokenMissing(_) | CtlError::TokenRefused(_) | CtlError::Refused(_) => {
                EXIT_REFUSED
            }
            CtlError::Usage(_) => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }
}

/// An error and its sources, joined with ": " (transport errors hide the cause, such
/// as "Connection refused", in their sources).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_statuses_are_refusals_with_their_own_exit_code() {
        let wrong = CtlError::from_status("Shutdown", Status::unauthenticated("invalid"), true);
        assert!(matches!(wrong, CtlError::TokenRefused(_)));
        assert!(wrong.to_string().contains("UNAUTHENTICATED"));
        assert_eq!(wrong.exit_code(), EXIT_REFUSED);
        let missing = CtlError::from_status("Shutdown", Status::unauthenticated("m"), false);
        assert!(missing.to_string().contains("ADMIN_TOKEN"));
        let disabled = CtlError::from_status("Pause", Status::failed_precondition("off"), true);
        assert!(disabled.to_string().contains("(FAILED_PRECONDITION): off"));
        assert_eq!(disabled.exit_code(), EXIT_REFUSED);
    }

    #[test]
    fn other_statuses_name_the_rpc_and_fail_with_1() {
        let e = CtlError::from_status("GetStats", Status::internal("boom"), true);
        assert_eq!(e.to_string(), "GetStats failed (Internal): boom");
        assert_eq!(e.exit_code(), EXIT_FAILURE);
    }

    #[test]
    fn chain_joins_sources_without_repeats() {
        #[derive(Debug, thiserror::Error)]
        #[error("transport error")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused",
        ));
        assert_eq!(chain(&e), "transport error: Connection refused");
    }
}
