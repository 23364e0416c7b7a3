//! The HTTP side (warp): `GET /metrics` (Prometheus text), `GET /health` (JSON, 200 when
//! serving, 503 when not; the dependencies' error messages, which name hosts, only for
//! a caller with the admin token), `GET /stats` (JSON, GetStats' figures) and `POST /shutdown`
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
    grpc::auth::{self, AuthFailures, Denied},
    health::Health,
    stats::Stats,
};

/// What the routes read and act on.
pub struct Shared {
    pub stats: Arc<Stats>,
    pub health: Arc<Health>,
    /// The token `POST /shutdown` requires; None disables it.
    pub admin_token: Option<SecretString>,
    /// Where refused tokens are logged and counted.
    pub auth_failures: AuthFailures,
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

/// The answer to `POST /shutdown` after this token check (`auth::check`): 202 when the
/// token is right (the caller then starts the shutdown), 401 when it is missing or
/// wrong, 403 when no admin token is configured.
pub fn shutdown_reply(checked: Result<(), Denied>) -> (StatusCode, ShutdownReply) {
    let refused = |message, hint| ShutdownReply {
        status: "refused",
        message,
        hint,
    };
    match checked {
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
        auth_failures,
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
    let health_route = {
        let (token, failures) = (Arc::new(admin_token.clone()), auth_failures.clone());
        warp::path!("health")
            .and(warp::get())
            .and(warp::header::optional::<String>("authorization"))
            .map(move |authorization: Option<String>| {
                let detailed = authorization.is_some_and(|a| {
                    let checked = auth::check(Some(&a), Option::as_ref(&token));
                    if let Err(denied) = checked {
                        failures.refused("http", "GET /health", None, denied);
                    }
                    checked.is_ok()
                });
                let code = if health.published() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                let report = serde_json::to_value(health.report()).expect("a JSON report");
                let body = if detailed { report } else { coarse(report) };
                warp::reply::with_status(warp::reply::json(&body), code).into_response()
            })
    };
    let stats_route = warp::path!("stats")
        .and(warp::get())
        .map(move || warp::reply::json(&stats.snapshot()).into_response());
    let status_page = warp::path::end()
        .and(warp::get())
        .map(|| warp::reply::html(STATUS_PAGE).into_response());
    let shutdown_route = shutdown_route(admin_token, auth_failures, shutdown);
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

/// `/health`'s report without the dependencies' error messages (`*_error`), which can
/// name hosts and users: the states (`up`, `down`, …) are for anyone, the reasons for
/// a caller with the admin token and for the log.
pub fn coarse(mut report: serde_json::Value) -> serde_json::Value {
    if let Some(fields) = report.as_object_mut() {
        fields.retain(|k, _| !k.ends_with("_error"));
    }
    report
}

/// `POST /shutdown`: answers as `shutdown_reply` says and, on 202, cancels `shutdown`.
fn shutdown_route(
    admin_token: Option<SecretString>,
    auth_failures: AuthFailures,
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
            let checked = auth::check(authorization, Option::as_ref(&admin_token));
            if let Err(denied) = checked {
                auth_failures.refused("http", "POST /shutdown", None, denied);
            }
            let (code, body) = shutdown_reply(checked);
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
    fn the_coarse_health_report_keeps_the_states_and_drops_the_reasons() {
        let report = serde_json::json!({
            "status": "not_serving",
            "mongodb": "down",
            "mongodb_error": "connection refused by mongodb-0.mongodb.prod:27017",
            "dead_letter_topic": "ready",
            "dead_letter_topic_error": "x",
            "shutting_down": false,
        });
        assert_eq!(
            coarse(report),
            serde_json::json!({
                "status": "not_serving",
                "mongodb": "down",
                "dead_letter_topic": "ready",
                "shutting_down": false,
            })
        );
    }

    #[test]
    fn shutdown_answers_by_token() {
        let token = SecretString::from("t0k".to_string());
        let reply = |authorization, token| shutdown_reply(auth::check(authorization, token));
        let (code, body) = reply(Some("Bearer t0k"), Some(&token));
        assert_eq!((code, body.status), (StatusCode::ACCEPTED, "shutting_down"));
        for (authorization, message) in [
            (None, "missing header `authorization: Bearer <token>`"),
            (
                Some("t0k"),
                "missing header `authorization: Bearer <token>`",
            ),
            (Some("Bearer t0"), "invalid token"),
        ] {
            let (code, body) = reply(authorization, Some(&token));
            assert_eq!((code, body.message), (StatusCode::UNAUTHORIZED, message));
            assert_eq!(body.status, "refused");
        }
        let (code, body) = reply(Some("Bearer t0k"), None);
        assert_eq!(code, StatusCode::FORBIDDEN);
        assert!(body.hint.unwrap().contains("ADMIN_TOKEN"));
    }
}
