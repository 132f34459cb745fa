//! A small round-robin balancer for the demo: it polls each instance's
//! readiness endpoint and sends each page to the next instance that
//! answered 200, as HAProxy or a cloud balancer would send each request.
//!
//! `GET /balancer/instances` lists the instances and whether each is in
//! rotation; `/instances/{name}/…` reaches one instance directly (the
//! page's toggle buttons use it, since a toggle is meant for one instance).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How often the balancer asks each instance whether it is ready.
const CHECK_INTERVAL: Duration = Duration::from_millis(300);
/// How long one readiness check or connection may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// One instance behind the balancer.
#[derive(Debug)]
pub(crate) struct Backend {
    pub(crate) name: String,
    pub(crate) port: u16,
    ready: AtomicBool,
}

impl Backend {
    pub(crate) fn new(name: String, port: u16) -> Self {
        Self {
            name,
            port,
            ready: AtomicBool::new(false),
        }
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct Balancer {
    backends: Vec<Arc<Backend>>,
    next: AtomicUsize,
}

/// The balancer's routes, and a task that checks readiness until the
/// runtime stops.
pub(crate) fn router(backends: Vec<Arc<Backend>>) -> Router {
    for backend in &backends {
        tokio::spawn(check(backend.clone()));
    }
    let balancer = Arc::new(Balancer {
        backends,
        next: AtomicUsize::new(0),
    });
    Router::new()
        .route("/balancer/instances", get(list))
        .fallback(forward)
        .with_state(balancer)
}

/// Polls `backend`'s readiness endpoint for ever.
async fn check(backend: Arc<Backend>) {
    let mut every = tokio::time::interval(CHECK_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let probe = Request::get("/actuator/health/readiness")
            .header(header::HOST, "127.0.0.1")
            .body(Body::empty());
        let ready = match probe {
            Ok(probe) => tokio::time::timeout(CHECK_TIMEOUT, send(backend.port, probe))
                .await
                .is_ok_and(|r| r.is_ok_and(|r| r.status() == StatusCode::OK)),
            Err(_) => false,
        };
        let was = backend.ready.swap(ready, Ordering::Relaxed);
        if was != ready {
            let state = if ready {
                "in rotation"
            } else {
                "out of rotation"
            };
            tracing::info!(instance = %backend.name, "balancer: {state}");
        }
    }
}

/// `GET /balancer/instances`: `[{"name", "port", "ready"}]`.
async fn list(State(balancer): State<Arc<Balancer>>) -> Response {
    let list: Vec<serde_json::Value> = balancer
        .backends
        .iter()
        .map(|b| serde_json::json!({ "name": b.name, "port": b.port, "ready": b.is_ready() }))
        .collect();
    axum::Json(list).into_response()
}

/// Every other request: to the instance a `/instances/{name}/` prefix
/// names, or else to the next ready one. A connection refused (an instance
/// just stopped) is retried on the next ready instance, since the request
/// was not sent.
async fn forward(State(balancer): State<Arc<Balancer>>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    parts.headers.remove(header::CONNECTION);
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let (candidates, path): (Vec<&Arc<Backend>>, String) = if let Some(rest) =
        path.strip_prefix("/instances/")
    {
        let (name, tail) = rest.split_once('/').unwrap_or((rest, ""));
        let named = balancer
            .backends
            .iter()
            .filter(|b| b.name == name)
            .collect();
        (named, format!("/{tail}"))
    } else {
        let ready: Vec<&Arc<Backend>> = balancer.backends.iter().filter(|b| b.is_ready()).collect();
        // Round robin by page: a page view (a GET that accepts HTML) goes
        // to the next instance, anything else (a form's POST, a script's
        // fetch) to the instance of the last page. Per request, each form's
        // POST and the page its redirect loads would take turns, and every
        // page would come from the same instance.
        let page = parts.method == Method::GET
            && parts
                .headers
                .get(header::ACCEPT)
                .and_then(|a| a.to_str().ok())
                .is_some_and(|a| a.contains("text/html"));
        let start = if page {
            balancer
                .next
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_add(1)
        } else {
            balancer.next.load(Ordering::Relaxed)
        };
        let n = ready.len().max(1);
        let turn = (0..ready.len()).map(|i| ready[(start + i) % n]).collect();
        (turn, path)
    };
    if candidates.is_empty() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no instance is in rotation: put one back with PUT /instances/{name}/actuator/health",
        )
            .into_response();
    }
    let Ok(uri) = path.parse::<Uri>() else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    parts.uri = uri;
    // The body can be sent once; a retry is possible only while it was not.
    let mut body = Some(body);
    for backend in candidates {
        let Some(this_body) = body.take() else { break };
        let request = Request::from_parts(parts.clone(), this_body);
        match send(backend.port, request).await {
            Ok(mut response) => {
                if let Ok(name) = HeaderValue::from_str(&backend.name) {
                    response.headers_mut().insert("x-shop-instance", name);
                }
                return response;
            }
            Err(Unsent(returned)) => {
                tracing::warn!(instance = %backend.name, "balancer: instance refused the connection");
                body = returned;
            }
        }
    }
    (StatusCode::BAD_GATEWAY, "no instance answered").into_response()
}

/// A request that did not reach the instance, with its body if it can be
/// sent again.
struct Unsent(Option<Body>);

/// Sends `request` to the instance on `port` over a new connection.
async fn send(port: u16, request: Request) -> Result<Response, Unsent> {
    let (parts, body) = request.into_parts();
    let Ok(Ok(stream)) =
        tokio::time::timeout(CHECK_TIMEOUT, TcpStream::connect(("127.0.0.1", port))).await
    else {
        return Err(Unsent(Some(body)));
    };
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return Err(Unsent(Some(body)));
    };
    tokio::spawn(connection);
    match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(response) => Ok(response.map(Body::new)),
        Err(_) => Err(Unsent(None)),
    }
}
