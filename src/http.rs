//! The HTTP side (warp): `GET /metrics` (Prometheus text), `GET /health` (JSON, 200 when
//! serving, 503 when not), `GET /stats` (JSON, GetStats' figures) and `POST /shutdown`
//! (the graceful shutdown, guarded by `authorization: Bearer <ADMIN_TOKEN>`), as the
//! Python service offered them; plus `GET /`, a self-contained status page
//! (`status.html`) that polls `/stats`.
use std::{future::Future, sync::Arc};

use secrecy::SecretString;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;
use warp::{
    http::{header, HeaderMap, StatusCode},
    Filter, Reply,
};

mod serve;

use crate::{
    conn::Gate,
    grpc::auth::{self, Denied},
    health::Health,
    stats::Stats,
};

/// What the routes read and act on.
pub struct Shared {
    pub stats: Arc<Stats>,
    pub health: Arc<Health>,
    /// The token `POST /shutdown` requires; None disables it.
    pub admin_token: Option<SecretString>,
    /// Cancelling it starts the graceful shutdown (the `requested` signal).
    pub shutdown: CancellationToken,
}

/// The JSON body of a `POST /shutdown` answer.
#[derive(Debug, PartialEq, Serialize)]
pub struct ShutdownReply {
    /// `shutting_down`, or `refused`.
    pub status: &'static str,
    pub message: &'static str,
    /// How to enable the endpoint, when it is disabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<&'static str>,
}

/// The answer to `POST /shutdown` with this `authorization` value: 202 when the token
/// is right (the caller then starts the shutdown), 401 when it is missing or wrong, 403
/// when no admin token is configured.
pub fn shutdown_reply(
    authorization: Option<&str>,
    token: Option<&SecretString>,
) -> (StatusCode, ShutdownReply) {
    let refused = |message, hint| ShutdownReply {
        status: "refused",
        message,
        hint,
    };
    match auth::check(authorization, token) {
        Ok(()) => (
            StatusCode::ACCEPTED,
            ShutdownReply {
                status: "shutting_down",
                message: "draining, flushing and committing; the process exits when done \
                          (within SHUTDOWN_TIMEOUT)",
                hint: None,
            },
        ),
        Err(Denied::Disabled) => (
            StatusCode::FORBIDDEN,
            refused(
                "POST /shutdown is disabled: no admin token is configured",
                Some(
                    "start sales-ingest with ADMIN_TOKEN set (or --admin-token) and send \
                     the header `authorization: Bearer <token>`",
                ),
            ),
        ),
        Err(Denied::Missing) => (
            StatusCode::UNAUTHORIZED,
            refused("missing header `authorization: Bearer <token>`", None),
        ),
        Err(Denied::Invalid) => (StatusCode::UNAUTHORIZED, refused("invalid token", None)),
    }
}

/// The status page, compiled into the binary.
const STATUS_PAGE: &str = include_str!("status.html");

/// The routes.
fn routes(
    shared: Shared,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    let Shared {
        stats,
        health,
        admin_token,
        shutdown,
    } = shared;
    let metrics = {
        let stats = stats.clone();
        warp::path!("metrics").and(warp::get()).map(move || {
            warp::reply::with_header(
                stats.render(),
                "content-type",
                "text/plain; version=0.0.4; charset=utf-8",
            )
            .into_response()
        })
    };
    let health_route = warp::path!("health").and(warp::get()).map(move || {
        let code = if health.published() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        warp::reply::with_status(warp::reply::json(&health.report()), code).into_response()
    });
    let stats_route = warp::path!("stats")
        .and(warp::get())
        .map(move || warp::reply::json(&stats.snapshot()).into_response());
    let status_page = warp::path::end()
        .and(warp::get())
        .map(|| warp::reply::html(STATUS_PAGE).into_response());
    let shutdown_route = shutdown_route(admin_token, shutdown);
    metrics
        .or(health_route)
        .unify()
        .or(stats_route)
        .unify()
        .or(status_page)
        .unify()
        .or(shutdown_route)
        .unify()
}

/// `POST /shutdown`: answers as `shutdown_reply` says and, on 202, cancels `shutdown`.
fn shutdown_route(
    admin_token: Option<SecretString>,
    shutdown: CancellationToken,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    let admin_token = Arc::new(admin_token);
    warp::path!("shutdown")
        .and(warp::post())
        .and(warp::header::headers_cloned())
        .map(move |headers: HeaderMap| {
            let authorization = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            let (code, body) = shutdown_reply(authorization, Option::as_ref(&admin_token));
            let reply = warp::reply::with_status(warp::reply::json(&body), code);
            if code == StatusCode::ACCEPTED {
                info!("shutdown requested over HTTP");
                // The HTTP server stops last, so this answer is sent while draining.
                shutdown.cancel();
            }
            if code == StatusCode::UNAUTHORIZED {
                warp::reply::with_header(reply, header::WWW_AUTHENTICATE, "Bearer").into_response()
            } else {
                reply.into_response()
            }
        })
}

/// Serves the routes on `listener`, its connections admitted by `gate`, until `stop`
/// resolves.
pub async fn serve(
    listener: TcpListener,
    shared: Shared,
    gate: Arc<Gate>,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    serve::serve(listener, routes(shared), gate, stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_answers_by_token() {
        let token = SecretString::from("t0k".to_string());
        let (code, body) = shutdown_reply(Some("Bearer t0k"), Some(&token));
        assert_eq!((code, body.status), (StatusCode::ACCEPTED, "shutting_down"));
        for (authorization, message) in [
            (None, "missing header `authorization: Bearer <token>`"),
            (
                Some("t0k"),
                "missing header `authorization: Bearer <token>`",
            ),
            (Some("Bearer t0"), "invalid token"),
        ] {
            let (code, body) = shutdown_reply(authorization, Some(&token));
            assert_eq!((code, body.message), (StatusCode::UNAUTHORIZED, message));
            assert_eq!(body.status, "refused");
        }
        let (code, body) = shutdown_reply(Some("Bearer t0k"), None);
        assert_eq!(code, StatusCode::FORBIDDEN);
        assert!(body.hint.unwrap().contains("ADMIN_TOKEN"));
    }
}
