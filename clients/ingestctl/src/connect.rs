//! Opening the gRPC channel: `--addr` may be a URL or `host:port`. The connection is
//! made eagerly so an unreachable server is reported once, clearly, before any RPC.
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::error::{chain, CtlError};

/// How long to wait for the TCP/HTTP2 connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Timeout for one unary RPC.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(15);

/// `addr` as a URL (`http://` is added when no scheme is given).
pub fn url(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// `--addr`'s value parser: an `http://` or `https://` URL with a host, or `host:port`,
/// that a channel can be opened to; clap reports the error with exit code 2.
pub fn address(addr: &str) -> Result<String, String> {
    let url = url(addr);
    let uri = Endpoint::from_shared(url.clone())
        .map_err(|e| format!("not a URL or host:port ({})", chain(&e)))?
        .uri()
        .clone();
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(host)) if !host.is_empty() => Ok(addr.to_string()),
        (Some("http" | "https"), _) => Err(format!("{url} has no host")),
        _ => Err(format!("{url} is not an http:// or https:// URL")),
    }
}

/// Connects to sales-ingest at `addr`.
pub async fn connect(addr: &str) -> Result<Channel, CtlError> {
    let url = url(addr);
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| CtlError::BadAddress {
            addr: addr.to_string(),
            message: chain(&e),
        })?
        .connect_timeout(CONNECT_TIMEOUT);
    endpoint.connect().await.map_err(|e| CtlError::Unreachable {
        addr: url,
        message: chain(&e),
    })
}

/// A unary request with the RPC timeout set.
pub fn request<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(RPC_TIMEOUT);
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_gets_a_scheme_and_urls_are_kept() {
        assert_eq!(url("127.0.0.1:50051"), "http://127.0.0.1:50051");
        assert_eq!(url("http://h:1"), "http://h:1");
        assert_eq!(url("https://h:1"), "https://h:1");
    }

    #[tokio::test]
    async fn a_closed_port_is_reported_as_unreachable() {
        // Bind then drop a listener: nothing listens on that port any more.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let err = connect(&format!("127.0.0.1:{port}")).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "cannot reach sales-ingest at http://127.0.0.1:{port}: "
            )),
            "{text}"
        );
        assert_eq!(err.exit_code(), crate::error::EXIT_FAILURE);
    }

    #[test]
    fn the_addr_parser_takes_urls_and_host_port_and_refuses_the_rest() {
        for ok in [
            "127.0.0.1:50051",
            "http://h:1",
            "https://ingest.example:443",
            "[::1]:50051",
        ] {
            assert_eq!(address(ok).as_deref(), Ok(ok));
        }
        for bad in ["not a url", "http://exa mple:1", "ftp://h:1", "http://", ""] {
            assert!(address(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_malformed_address_is_a_bad_address() {
        let err = connect("http://exa mple:1").await.unwrap_err();
        assert!(matches!(err, CtlError::BadAddress { .. }), "{err}");
    }
}
