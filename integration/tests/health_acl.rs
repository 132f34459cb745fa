//! The ACL through its public API and behind a balancer.
#![cfg(feature = "health")]
// helpers outside #[test] fns unwrap too: a test should fail loudly
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use tower::ServiceExt;
use tower_httpsession::MemoryStore;
use tower_httpsession::health::{Access, Acl, Health, Refusal, TrafficPhase};

const TOKEN: &str = "acl-test-token-0123456789";

fn peer(ip: &str) -> Option<SocketAddr> {
    Some(SocketAddr::new(ip.parse().unwrap(), 1234))
}

fn xff(value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("x-forwarded-for", HeaderValue::from_str(value).unwrap());
    headers
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn ipv6_proxies_and_clients() {
    let acl = Acl::builder()
        .with_allowed_network("2001:db8:a::/48")
        .with_trusted_proxy("2001:db8:ff::/64")
        .with_trusted_proxy("10.0.0.0/8")
        .build()
        .unwrap();
    // v6 proxy reporting a v6 client
    let access = acl.check(peer("2001:db8:ff::1"), &xff("2001:db8:a::42"));
    assert_eq!(
        access,
        Access::Allowed {
            client: ip("2001:db8:a::42")
        }
    );
    // v4 proxy (seen as a mapped address on a dual-stack socket) behind a v6 one
    let access = acl.check(
        peer("::ffff:10.1.2.3"),
        &xff("2001:db8:a::42, 2001:db8:ff::9"),
    );
    assert_eq!(
        access,
        Access::Allowed {
            client: ip("2001:db8:a::42")
        }
    );
    // a v6 client outside the range, behind a trusted proxy
    let access = acl.check(peer("2001:db8:ff::1"), &xff("2001:db8:b::1"));
    assert_eq!(
        access,
        Access::Refused {
            client: Some(ip("2001:db8:b::1")),
            reason: Refusal::AddressNotAllowed
        }
    );
}

#[test]
fn both_mode_applies_to_the_forwarded_client() {
    let acl = Acl::builder()
        .with_allowed_network("192.0.2.0/24")
        .with_trusted_proxy("10.0.0.1")
        .with_bearer_token(TOKEN)
        .with_network_and_token_required()
        .build()
        .unwrap();
    let mut headers = xff("192.0.2.10");
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {TOKEN}")).unwrap(),
    );
    assert!(acl.check(peer("10.0.0.1"), &headers).is_allowed());
    // the proxy itself, with the token, is not in the allowed range
    headers.remove("x-forwarded-for");
    let access = acl.check(peer("10.0.0.1"), &headers);
    assert_eq!(access.client(), Some(ip("10.0.0.1")));
    assert!(!access.is_allowed());
}

fn app(health: &Health) -> Router {
    Router::new().merge(health.router())
}

fn put_through_balancer(forwarded_for: &str) -> Request<Body> {
    let mut request = Request::put("/actuator/health")
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-forwarded-for", forwarded_for)
        .body(Body::from(r#"{"status": "OUT_OF_SERVICE"}"#))
        .unwrap();
    // the balancer is the socket peer
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 1], 5000))));
    request
}

#[tokio::test]
async fn toggle_behind_a_trusted_balancer() {
    let acl = Acl::builder()
        .with_allowed_network("192.0.2.0/24")
        .with_trusted_proxy("10.0.0.1")
        .build()
        .unwrap();
    let health = Health::builder(MemoryStore::default())
        .with_acl(acl)
        .build()
        .unwrap();
    let app = app(&health);

    // a client that claims to be an operator: the balancer appended its
    // real address, which is the one that counts
    let spoofed = put_through_balancer("192.0.2.10, 198.51.100.7");
    let response = app.clone().oneshot(spoofed).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(health.traffic_state().phase(), TrafficPhase::Running);

    let malformed = put_through_balancer("192.0.2.10, garbage");
    let response = app.clone().oneshot(malformed).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(health.traffic_state().phase(), TrafficPhase::Running);

    let operator = put_through_balancer("192.0.2.10");
    let response = app.clone().oneshot(operator).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(health.traffic_state().phase(), TrafficPhase::OutOfService);
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let acl = Acl::builder()
        .with_allowed_network("192.0.2.0/24")
        .build()
        .unwrap();
    let health = Health::builder(MemoryStore::default())
        .with_acl(acl)
        .build()
        .unwrap();
    // 10.0.0.1 is not trusted here, so its header is the client's word
    let response = app(&health)
        .oneshot(put_through_balancer("192.0.2.10"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(health.traffic_state().phase(), TrafficPhase::Running);
}
