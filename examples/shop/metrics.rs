//! `GET /metrics` in Prometheus' text format (feature `metrics`).

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::response::IntoResponse as _;
use axum::routing::get;
use http::{StatusCode, header};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tower_httpsession::health::Acl;

use crate::settings::StartError;

/// The process's one recorder; its instances share it.
static SCRAPE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder, before any store or layer registers a metric.
pub(crate) fn install() -> Result<(), StartError> {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| StartError::Other(format!("metrics recorder: {e}")))?;
    let _ = SCRAPE.set(handle);
    Ok(())
}

/// `GET /metrics`, for the callers `acl` allows.
pub(crate) fn route(acl: Acl) -> Result<Router, StartError> {
    let scrape = SCRAPE
        .get()
        .cloned()
        .ok_or_else(|| StartError::Other("the metrics recorder is not installed".to_owned()))?;
    let serve_scrape = move |request: Request| async move {
        let (parts, _) = request.into_parts();
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| *peer);
        let access = acl.check_request(peer, &parts);
        if !access.is_allowed() {
            tracing::warn!(?peer, "metrics scrape refused");
            return (StatusCode::FORBIDDEN, "forbidden").into_response();
        }
        // Histograms are kept as summaries that upkeep ages.
        scrape.run_upkeep();
        let text_format = "text/plain; version=0.0.4; charset=utf-8";
        ([(header::CONTENT_TYPE, text_format)], scrape.render()).into_response()
    };
    Ok(Router::new().route("/metrics", get(serve_scrape)))
}
