//! The health router on a real TCP server, where the ACL sees real peers.
//!
//! Linux routes all of 127.0.0.0/8 to loopback, so a client bound to
//! 127.0.0.2 is a different peer than one bound to 127.0.0.1.
#![cfg(feature = "health")]
// helpers outside #[test] fns unwrap too: a test should fail loudly
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::Router;
use http::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower_httpsession::MemoryStore;
use tower_httpsession::health::{Acl, Health, HealthBuilder, TrafficPhase};

const TOKEN: &str = "rolling-deploy-token-7f3a";
const ALLOWED: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const OUTSIDER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// The health endpoints of a rolling deploy, to set up further.
fn configured() -> HealthBuilder {
    let acl = Acl::builder()
        .with_allowed_network("127.0.0.1/32")
        .with_bearer_token(TOKEN)
        .with_network_and_token_required()
        .build()
        .unwrap();
    Health::builder(MemoryStore::default())
        .with_acl(acl)
        .with_l7_check_path("/monitor/l7check")
}

fn health() -> Health {
    configured().build().unwrap()
}

fn app(health: &Health) -> Router {
    Router::new()
        .route("/", axum::routing::get(|| async { "hello" }))
        .merge(health.router())
}

/// Serves `app` on 127.0.0.1:0 with connection info; stops when `stop`
/// resolves.
async fn serve<F>(app: Router, stop: F) -> (String, tokio::task::JoinHandle<()>)
where
    F: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop)
        .await
        .unwrap();
    });
    (base, server)
}

fn client_from(ip: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip)
        .no_proxy()
        .build()
        .unwrap()
}

async fn put(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    status: &str,
) -> (StatusCode, Value) {
    let response = client
        .put(format!("{base}/actuator/health"))
        .bearer_auth(token)
        .json(&json!({ "status": status }))
        .send()
        .await
        .unwrap();
    let code = StatusCode::from_u16(response.status().as_u16()).unwrap();
    (code, response.json().await.unwrap())
}

async fn status_of(client: &reqwest::Client, url: String) -> StatusCode {
    let response = client.get(url).send().await.unwrap();
    StatusCode::from_u16(response.status().as_u16()).unwrap()
}

#[tokio::test]
async fn acl_sees_the_real_peer_and_the_toggle_drives_readiness() {
    let health = health();
    let (base, server) = serve(app(&health), std::future::pending()).await;
    let readiness = || format!("{base}/actuator/health/readiness");
    let allowed = client_from(ALLOWED);
    let outsider = client_from(OUTSIDER);
    assert_eq!(status_of(&allowed, readiness()).await, StatusCode::OK);

    // outside the ACL: refused even with the right token, nothing changes
    let (code, body) = put(&outsider, &base, TOKEN, "OUT_OF_SERVICE").await;
    assert_eq!(
        (code, body),
        (StatusCode::FORBIDDEN, json!({ "error": "forbidden" }))
    );
    assert_eq!(health.traffic_state().phase(), TrafficPhase::Running);
    assert_eq!(status_of(&outsider, readiness()).await, StatusCode::OK);

    // inside the ACL with a wrong token: refused, nothing changes
    let (code, _) = put(
        &allowed,
        &base,
        "rolling-deploy-token-7f3b",
        "OUT_OF_SERVICE",
    )
    .await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert_eq!(status_of(&allowed, readiness()).await, StatusCode::OK);

    // allowed: out of rotation, and back
    let (code, body) = put(&allowed, &base, TOKEN, "OUT_OF_SERVICE").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["traffic"], "OUT_OF_SERVICE");
    assert_eq!(
        status_of(&outsider, readiness()).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let l7 = format!("{base}/monitor/l7check");
    assert_eq!(
        status_of(&outsider, l7.clone()).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // liveness and the app are unaffected
    let liveness = format!("{base}/actuator/health/liveness");
    assert_eq!(status_of(&outsider, liveness).await, StatusCode::OK);
    assert_eq!(
        status_of(&outsider, format!("{base}/")).await,
        StatusCode::OK
    );

    let (code, body) = put(&allowed, &base, TOKEN, "UP").await;
    assert_eq!(
        (code, &body["traffic"]),
        (StatusCode::OK, &json!("RUNNING"))
    );
    assert_eq!(status_of(&outsider, readiness()).await, StatusCode::OK);
    assert_eq!(status_of(&outsider, l7).await, StatusCode::OK);

    server.abort();
}

#[tokio::test]
async fn details_only_for_the_allowed_peer_with_the_token() {
    let health = health();
    let (base, server) = serve(app(&health), std::future::pending()).await;
    let url = format!("{base}/actuator/health");

    let body: Value = client_from(OUTSIDER)
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body, json!({ "status": "UP" }));

    let body: Value = client_from(ALLOWED)
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["components"]["sessionStore"]["details"]["backend"],
        "memory"
    );

    server.abort();
}

#[tokio::test]
async fn shutdown_fails_readiness_while_still_serving_then_stops() {
    // a drain long enough that the test looks while it lasts
    let health = configured()
        .with_drain_period(Duration::from_secs(3600))
        .build()
        .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let signal = async {
        stopped.await.ok();
    };
    let (base, server) = serve(app(&health), health.shutdown_on(signal)).await;
    let client = client_from(ALLOWED);
    let mut changes = health.traffic_state().subscribe();

    stop.send(()).unwrap();
    changes.changed().await.unwrap();
    assert_eq!(*changes.borrow(), TrafficPhase::ShuttingDown);
    let readiness = format!("{base}/actuator/health/readiness");
    assert_eq!(
        status_of(&client, readiness).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(status_of(&client, format!("{base}/")).await, StatusCode::OK);
    let (code, _) = put(&client, &base, TOKEN, "UP").await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert!(!server.is_finished());
    server.abort();

    // with no drain period the server stops once the signal comes
    let health = configured()
        .with_drain_period(Duration::ZERO)
        .build()
        .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let signal = async {
        stopped.await.ok();
    };
    let (_, server) = serve(app(&health), health.shutdown_on(signal)).await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("the server stops after the drain")
        .unwrap();
    assert_eq!(health.traffic_state().phase(), TrafficPhase::ShuttingDown);
}
