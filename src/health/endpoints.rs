//! The handlers behind the [`Health`](super::Health) router.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt as _;
use http::request::Parts;
use http::{HeaderValue, StatusCode, header};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::acl::{Access, Acl, Refusal};
use super::indicator::{ComponentHealth, HealthIndicator, Status};
use super::state::{TrafficPhase, TrafficState};
use crate::store::HealthStatus;
use crate::store::instrumented::Instrumented;

/// The largest `PUT` body read.
pub(super) const MAX_PUT_BODY: usize = 1024;

/// The name the session store's component has in the report.
pub(super) const STORE_COMPONENT: &str = "sessionStore";

/// What every handler shares.
pub(super) struct Inner {
    /// The store, its health check traced and, with the feature `metrics`,
    /// recorded: the latency and session count the details show are the
    /// ones the metrics hold.
    pub(super) store: Instrumented,
    pub(super) indicators: Vec<(String, Arc<dyn HealthIndicator>)>,
    pub(super) acl: Option<Acl>,
    pub(super) state: TrafficState,
    pub(super) timeout: Duration,
    pub(super) warned_no_connect_info: AtomicBool,
    /// Whether a `PUT` refused for want of `ConnectInfo` was logged as an
    /// error yet: the first one is, since the toggle then cannot work.
    pub(super) put_without_connect_info_logged: AtomicBool,
}

impl Inner {
    /// Asks the ACL about the caller; `None` ACL refuses everyone.
    async fn access(&self, parts: &mut Parts) -> (Access, Option<SocketAddr>) {
        let peer = ConnectInfo::<SocketAddr>::from_request_parts(parts, &())
            .await
            .ok()
            .map(|ConnectInfo(addr)| addr);
        let access = match &self.acl {
            None => Access::Refused {
                client: peer.map(|p| p.ip().to_canonical()),
                reason: Refusal::NoAcl,
            },
            Some(acl) => acl.check_request(peer, parts),
        };
        (access, peer)
    }

    /// Whether the caller may see details; refusals are logged quietly
    /// (balancers poll often), except the first missing `ConnectInfo`.
    async fn details_allowed(&self, parts: &mut Parts) -> bool {
        let (access, peer) = self.access(parts).await;
        match access {
            Access::Allowed { .. } => true,
            Access::Refused {
                reason: Refusal::NoConnectInfo,
                ..
            } if !self.warned_no_connect_info.swap(true, Ordering::Relaxed) => {
                tracing::warn!(reason = %Refusal::NoConnectInfo, "health details hidden from every caller");
                false
            }
            Access::Refused { client, reason } => {
                tracing::debug!(?client, ?peer, %reason, "health details hidden");
                false
            }
        }
    }

    async fn check_store(&self) -> ComponentHealth {
        let store = self.store.clone();
        guarded(self.timeout, async move {
            let h = store.health().await;
            let status = match h.status {
                HealthStatus::Up => Status::Up,
                HealthStatus::Down => Status::Down,
            };
            let mut details = serde_json::Map::new();
            details.insert("backend".into(), h.backend.into());
            details.insert("latencyMs".into(), json!(h.latency.as_secs_f64() * 1000.0));
            if let Some(n) = h.sessions {
                details.insert("sessions".into(), n.into());
            }
            if let Some(e) = h.error {
                details.insert("error".into(), e.into());
            }
            ComponentHealth::new(status).with_details(details.into())
        })
        .await
    }

    /// Runs the store check and, if asked, every indicator, concurrently.
    async fn components(&self, with_indicators: bool) -> Vec<(&str, ComponentHealth)> {
        let indicators =
            self.indicators
                .iter()
                .filter(|_| with_indicators)
                .map(|(name, ind)| async move {
                    (name.as_str(), guarded(self.timeout, ind.check()).await)
                });
        let (store, others) = futures_util::future::join(
            self.check_store(),
            futures_util::future::join_all(indicators),
        )
        .await;
        let mut all = Vec::with_capacity(others.len() + 1);
        all.push((STORE_COMPONENT, store));
        all.extend(others);
        all
    }
}

/// Bounds a check's time and turns a panic into `DOWN`.
async fn guarded<F>(timeout: Duration, check: F) -> ComponentHealth
where
    F: Future<Output = ComponentHealth>,
{
    match tokio::time::timeout(timeout, AssertUnwindSafe(check).catch_unwind()).await {
        Ok(Ok(report)) => report,
        Ok(Err(_)) => ComponentHealth::down().with_details(json!({ "error": "check panicked" })),
        Err(_) => ComponentHealth::down().with_details(json!({
            "error": format!("no answer within {} ms", timeout.as_millis())
        })),
    }
}

fn traffic_status(phase: TrafficPhase) -> Status {
    if phase.is_ready() {
        Status::Up
    } else {
        Status::OutOfService
    }
}

#[derive(Serialize)]
struct Report<'a> {
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    traffic: Option<TrafficPhase>,
    #[serde(skip_serializing_if = "Option::is_none")]
    components: Option<BTreeMap<&'a str, ComponentView<'a>>>,
}

#[derive(Serialize)]
struct ComponentView<'a> {
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a serde_json::Value>,
}

/// A JSON answer that no cache keeps.
fn json_response(status: StatusCode, body: impl Serialize) -> Response {
    let mut response = (status, Json(body)).into_response();
    no_store(&mut response);
    response
}

fn no_store(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// The worst of the traffic state and the components, with the components
/// for callers that may see details.
fn report(phase: TrafficPhase, components: &[(&str, ComponentHealth)], details: bool) -> Response {
    let status = components
        .iter()
        .map(|(_, c)| c.status)
        .fold(traffic_status(phase), Status::max);
    let body = Report {
        status,
        traffic: details.then_some(phase),
        components: details.then(|| {
            components
                .iter()
                .map(|(name, c)| {
                    let view = ComponentView {
                        status: c.status,
                        details: c.details.as_ref(),
                    };
                    (*name, view)
                })
                .collect()
        }),
    };
    json_response(status.http_status(), body)
}

/// `GET /actuator/health`.
pub(super) async fn health(State(inner): State<Arc<Inner>>, request: Request) -> Response {
    let (mut parts, _) = request.into_parts();
    let details = inner.details_allowed(&mut parts).await;
    let components = inner.components(true).await;
    report(inner.state.phase(), &components, details)
}

/// `GET /actuator/health/readiness`: the traffic state and the store.
pub(super) async fn readiness(State(inner): State<Arc<Inner>>, request: Request) -> Response {
    let (mut parts, _) = request.into_parts();
    let details = inner.details_allowed(&mut parts).await;
    let components = inner.components(false).await;
    report(inner.state.phase(), &components, details)
}

/// `GET /actuator/health/liveness`: the process answers.
pub(super) async fn liveness() -> Response {
    json_response(StatusCode::OK, json!({ "status": Status::Up }))
}

/// The plain alias: readiness as a status code and one word.
pub(super) async fn l7_check(State(inner): State<Arc<Inner>>) -> Response {
    let components = inner.components(false).await;
    let status = components
        .iter()
        .map(|(_, c)| c.status)
        .fold(traffic_status(inner.state.phase()), Status::max);
    let mut response = (status.http_status(), status.as_str()).into_response();
    no_store(&mut response);
    response
}

/// The toggle's body: an object with exactly one key, `status`.
///
/// Read by hand rather than derived: a derived struct would also accept
/// `["UP"]`, and reading an object through a map first would let a repeated
/// key through, the last one winning. Here a repeated or unknown key, and
/// anything but an object, is an error.
struct PutBody {
    status: Target,
}

/// The keys [`PutBody`] knows.
const PUT_KEYS: &[&str] = &["status"];

impl<'de> Deserialize<'de> for PutBody {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(PutBodyVisitor)
    }
}

struct PutBodyVisitor;

impl<'de> Visitor<'de> for PutBodyVisitor {
    type Value = PutBody;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object with one key, \"status\"")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PutBody, A::Error> {
        let mut status = None;
        while let Some(key) = map.next_key::<String>()? {
            if key != "status" {
                return Err(de::Error::unknown_field(&key, PUT_KEYS));
            }
            if status.is_some() {
                return Err(de::Error::duplicate_field("status"));
            }
            status = Some(map.next_value()?);
        }
        let status = status.ok_or_else(|| de::Error::missing_field("status"))?;
        Ok(PutBody { status })
    }
}

#[derive(Deserialize)]
enum Target {
    #[serde(rename = "UP")]
    Up,
    #[serde(rename = "DOWN")]
    Down,
    #[serde(rename = "OUT_OF_SERVICE")]
    OutOfService,
}

fn bad_request(message: &str) -> Response {
    json_response(StatusCode::BAD_REQUEST, json!({ "error": message }))
}

fn is_json(parts: &Parts) -> bool {
    let Some(value) = parts.headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// `PUT /actuator/health`: changes the traffic state, for allowed callers.
pub(super) async fn put_state(State(inner): State<Arc<Inner>>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let (access, peer) = inner.access(&mut parts).await;
    let client = match access {
        Access::Allowed { client } => client,
        Access::Refused { client, reason } => {
            if reason == Refusal::NoConnectInfo
                && !inner
                    .put_without_connect_info_logged
                    .swap(true, Ordering::Relaxed)
            {
                tracing::error!(
                    "traffic state change refused: the health ACL cannot see the caller's address, \
                     so it refuses every PUT; serve the app with \
                     `app.into_make_service_with_connect_info::<SocketAddr>()` (axum::serve) \
                     or insert `ConnectInfo<SocketAddr>` into each request"
                );
            } else {
                tracing::warn!(?client, ?peer, %reason, "traffic state change refused");
            }
            return json_response(StatusCode::FORBIDDEN, json!({ "error": "forbidden" }));
        }
    };
    let rejected = |message: String| {
        tracing::warn!(%client, ?peer, error = ?message, "traffic state change rejected");
        bad_request(&message)
    };
    if !is_json(&parts) {
        return rejected("the body must be application/json".to_owned());
    }
    let bytes = match axum::body::to_bytes(body, MAX_PUT_BODY).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return rejected(format!(
                "the body could not be read or is larger than {MAX_PUT_BODY} bytes"
            ));
        }
    };
    let target = match serde_json::from_slice::<PutBody>(&bytes) {
        Ok(PutBody { status }) => status,
        Err(e) => {
            return rejected(format!(
                "the body must be {{\"status\": \"UP\" | \"DOWN\" | \"OUT_OF_SERVICE\"}}: {e}"
            ));
        }
    };
    let outcome = match target {
        Target::Up => inner.state.mark_running(),
        Target::Down | Target::OutOfService => inner.state.mark_out_of_service(),
    };
    match outcome {
        Ok(t) => {
            tracing::info!(%client, from = %t.previous, to = %t.current, "traffic state set over HTTP");
            json_response(
                StatusCode::OK,
                json!({
                    "status": traffic_status(t.current),
                    "traffic": t.current,
                    "previous": t.previous,
                }),
            )
        }
        Err(e) => {
            tracing::warn!(%client, error = %e, "traffic state change conflicts with the state");
            json_response(
                StatusCode::CONFLICT,
                json!({
                    "error": e.to_string(),
                    "status": traffic_status(e.from),
                    "traffic": e.from,
                }),
            )
        }
    }
}
