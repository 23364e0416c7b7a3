//! The HTTP side (warp): `GET /metrics` (Prometheus text), `GET /health` (JSON, 200 when
//! serving, 503 when not) and `GET /stats` (JSON, GetStats' figures), as the Python
//! service offered them; plus `GET /`, a self-contained status page (`status.html`)
//! that polls `/stats`.
use std::{future::Future, sync::Arc};

use tokio::net::TcpListener;
use warp::{http::StatusCode, Filter, Reply};

use crate::{health::Health, stats::Stats};

/// The status page, compiled into the binary.
const STATUS_PAGE: &str = include_str!("status.html");

/// The routes.
fn routes(
    stats: Arc<Stats>,
    health: Arc<Health>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
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
    metrics
        .or(health_route)
        .unify()
        .or(stats_route)
        .unify()
        .or(status_page)
        .unify()
}

/// Serves the routes on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    stats: Arc<Stats>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    warp::serve(routes(stats, health))
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
}
