//! Attacks on the health toggle: spoofed `X-Forwarded-For`, address forms
//! that dodge a CIDR match, wrong, missing and smuggled tokens. Every refused
//! `PUT` must be 403 and leave the traffic state as it was.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use http::{Request, StatusCode, header};
use tower::ServiceExt as _;
use tower_httpsession::MemoryStore;
use tower_httpsession::health::{Acl, Health, TrafficPhase, TrafficState};

const TOKEN: &str = "security-test-token-0123456789";
const OUT: &str = r#"{"status": "OUT_OF_SERVICE"}"#;

struct Put<'a> {
    peer: Option<&'a str>,
    headers: Vec<(&'a str, String)>,
    body: &'a str,
}

fn put<'a>(peer: &'a str) -> Put<'a> {
    Put {
        peer: Some(peer),
        headers: Vec::new(),
        body: OUT,
    }
}

impl<'a> Put<'a> {
    fn header(mut self, name: &'a str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn request(&self, method: http::Method) -> Request<Body> {
        let mut request = Request::builder()
            .method(method)
            .uri("/actuator/health")
            .header(header::CONTENT_TYPE, "application/json");
        for (name, value) in &self.headers {
            request = request.header(*name, value.as_str());
        }
        let mut request = request
            .body(Body::from(self.body.to_owned()))
            .expect("request");
        if let Some(peer) = self.peer {
            let addr: SocketAddr = peer.parse().expect("peer address");
            request.extensions_mut().insert(ConnectInfo(addr));
        }
        request
    }
}

/// A health router behind `acl`, and its traffic state.
fn toggle(acl: Option<Acl>) -> (Router, TrafficState) {
    let mut health = Health::new(MemoryStore::new(10));
    if let Some(acl) = acl {
        health = health.with_acl(acl);
    }
    (health.router(), health.traffic_state())
}

/// Sends `request` and asserts a 403 that changed nothing.
async fn refused(app: &Router, state: &TrafficState, request: &Put<'_>, what: &str) {
    let response = app
        .clone()
        .oneshot(request.request(http::Method::PUT))
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "{what}");
    assert_eq!(state.phase(), TrafficPhase::Running, "{what} took effect");
    let body = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .expect("body");
    let body = String::from_utf8_lossy(&body);
    assert!(!body.contains(TOKEN), "{what}: the answer shows the token");
}

/// Sends `request` and asserts a 200 that took the instance out of rotation,
/// then puts it back.
async fn allowed(app: &Router, state: &TrafficState, request: &Put<'_>, what: &str) {
    let response = app
        .clone()
        .oneshot(request.request(http::Method::PUT))
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK, "{what}");
    assert_eq!(state.phase(), TrafficPhase::OutOfService, "{what}");
    state.mark_running().expect("back in rotation");
}

fn acl(
    build: impl FnOnce(tower_httpsession::health::AclBuilder) -> tower_httpsession::health::AclBuilder,
) -> Acl {
    build(Acl::builder()).build().expect("a valid ACL")
}

#[tokio::test]
async fn no_acl_refuses_everyone_even_loopback() {
    let (app, state) = toggle(None);
    for peer in ["127.0.0.1:1", "[::1]:1", "10.0.0.1:1"] {
        refused(&app, &state, &put(peer), peer).await;
        let with_token = put(peer).header("authorization", format!("Bearer {TOKEN}"));
        refused(&app, &state, &with_token, peer).await;
    }
}

#[tokio::test]
async fn missing_connect_info_is_refused() {
    let (app, state) = toggle(Some(acl(|b| b.allow("0.0.0.0/0").allow("::/0"))));
    let mut request = put("127.0.0.1:1");
    request.peer = None;
    refused(&app, &state, &request, "no ConnectInfo").await;
}

#[tokio::test]
async fn spoofed_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let (app, state) = toggle(Some(acl(|b| b.allow("10.0.0.0/8"))));
    for spoof in [
        "10.0.0.1",
        "10.0.0.1, 10.0.0.2",
        "203.0.113.9, 10.0.0.1",
        "::ffff:10.0.0.1",
    ] {
        let request = put("203.0.113.9:1")
            .header("x-forwarded-for", spoof)
            .header("x-real-ip", "10.0.0.1")
            .header("forwarded", "for=10.0.0.1")
            .header("true-client-ip", "10.0.0.1");
        refused(&app, &state, &request, spoof).await;
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_only_the_rightmost_untrusted_hop_counts() {
    let (app, state) = toggle(Some(acl(|b| {
        b.allow("192.0.2.0/24").trust_proxy("10.0.0.2")
    })));
    let proxy = "10.0.0.2:1";
    // The client wrote the allowed address itself, the proxy appended the
    // real one.
    for chain in [
        "192.0.2.7, 203.0.113.9",
        "192.0.2.7,203.0.113.9, 10.0.0.2",
        "192.0.2.7, [2001:db8::1]:443",
    ] {
        let request = put(proxy).header("x-forwarded-for", chain);
        refused(&app, &state, &request, chain).await;
    }
    // Several headers are one list, in order.
    let request = put(proxy)
        .header("x-forwarded-for", "192.0.2.7")
        .header("x-forwarded-for", "203.0.113.9");
    refused(&app, &state, &request, "two headers").await;
    // A chain that does not parse is refused, not skipped over.
    for broken in [
        "192.0.2.7, garbage",
        "192.0.2.7, ",
        "unknown",
        "192.0.2.7;x",
    ] {
        let request = put(proxy).header("x-forwarded-for", broken);
        refused(&app, &state, &request, broken).await;
    }
    // An endless chain is refused.
    let long = vec!["192.0.2.7"; 100].join(", ");
    refused(
        &app,
        &state,
        &put(proxy).header("x-forwarded-for", long),
        "long",
    )
    .await;

    // The trusted proxy reporting an allowed client is let through.
    let request = put(proxy).header("x-forwarded-for", "203.0.113.9, 192.0.2.7");
    allowed(&app, &state, &request, "rightmost allowed").await;
    // Without the header the caller is the proxy, which is not allowed.
    refused(&app, &state, &put(proxy), "proxy itself").await;
}

#[tokio::test]
async fn ipv4_mapped_addresses_match_as_ipv4_and_nothing_else_does() {
    let (app, state) = toggle(Some(acl(|b| b.allow("127.0.0.1/32"))));
    allowed(&app, &state, &put("127.0.0.1:1"), "v4").await;
    allowed(&app, &state, &put("[::ffff:127.0.0.1]:1"), "mapped").await;
    for peer in [
        "[::ffff:127.0.0.2]:1",
        "[::127.0.0.1]:1",     // IPv4-compatible, not mapped
        "[64:ff9b::7f00:1]:1", // NAT64 of 127.0.0.1
        "[2002:7f00:1::1]:1",  // 6to4 of 127.0.0.1
        "[::1]:1",
        "[::ffff:0:7f00:1]:1", // SIIT-translated, not mapped
    ] {
        refused(&app, &state, &put(peer), peer).await;
    }

    // A range written as mapped IPv6 matches the IPv4 peer too.
    let (app, state) = toggle(Some(acl(|b| b.allow("::ffff:10.0.0.0/104"))));
    allowed(&app, &state, &put("10.1.2.3:1"), "v4 in mapped range").await;
    refused(&app, &state, &put("11.0.0.1:1"), "v4 outside").await;
}

#[tokio::test]
async fn wrong_missing_and_smuggled_tokens_are_refused() {
    let (app, state) = toggle(Some(acl(|b| b.allow("10.0.0.0/8").bearer_token(TOKEN))));
    let outsider = "203.0.113.9:1";
    let mut cut = TOKEN.to_owned();
    cut.pop();
    let upper = TOKEN.to_uppercase();
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("missing", vec![]),
        ("empty", vec![("authorization", String::new())]),
        ("scheme only", vec![("authorization", "Bearer".into())]),
        (
            "scheme and blank",
            vec![("authorization", "Bearer  ".into())],
        ),
        ("bare token", vec![("authorization", TOKEN.into())]),
        ("basic", vec![("authorization", format!("Basic {TOKEN}"))]),
        (
            "one short",
            vec![("authorization", format!("Bearer {cut}"))],
        ),
        (
            "one long",
            vec![("authorization", format!("Bearer {TOKEN}x"))],
        ),
        (
            "other case",
            vec![("authorization", format!("Bearer {upper}"))],
        ),
        (
            "two tokens",
            vec![("authorization", format!("Bearer {TOKEN} {TOKEN}"))],
        ),
        ("wrong header", vec![("x-auth-token", TOKEN.into())]),
        (
            "proxy header",
            vec![("proxy-authorization", format!("Bearer {TOKEN}"))],
        ),
        ("cookie", vec![("cookie", format!("token={TOKEN}"))]),
        (
            "right then wrong",
            vec![
                ("authorization", format!("Bearer {TOKEN}")),
                ("authorization", "Bearer nope-nope-nope-nope".into()),
            ],
        ),
        (
            "wrong then right",
            vec![
                ("authorization", "Bearer nope-nope-nope-nope".into()),
                ("authorization", format!("Bearer {TOKEN}")),
            ],
        ),
    ];
    for (what, headers) in cases {
        let mut request = put(outsider);
        request.headers = headers;
        refused(&app, &state, &request, what).await;
    }
    // In the query string it is not a credential either.
    let mut request = put(outsider).request(http::Method::PUT);
    *request.uri_mut() = format!("/actuator/health?access_token={TOKEN}")
        .parse()
        .expect("uri");
    let response = app.clone().oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    // The right token, with the scheme in any case, is enough.
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let request = put(outsider).header("authorization", format!("{scheme} {TOKEN}"));
        allowed(&app, &state, &request, scheme).await;
    }
}

#[tokio::test]
async fn require_both_needs_the_network_and_the_token() {
    let (app, state) = toggle(Some(acl(|b| {
        b.allow("10.0.0.0/8").bearer_token(TOKEN).require_both()
    })));
    let bearer = format!("Bearer {TOKEN}");
    refused(&app, &state, &put("10.0.0.1:1"), "network only").await;
    let request = put("203.0.113.9:1").header("authorization", bearer.clone());
    refused(&app, &state, &request, "token only").await;
    let request = put("10.0.0.1:1").header("authorization", "Bearer nope-nope-nope-nope");
    refused(&app, &state, &request, "network, wrong token").await;
    let request = put("10.0.0.1:1").header("authorization", bearer);
    allowed(&app, &state, &request, "both").await;
}

#[tokio::test]
async fn refused_callers_see_no_details_and_nothing_is_cached() {
    let (app, _) = toggle(Some(acl(|b| b.allow("10.0.0.0/8").bearer_token(TOKEN))));
    let outsider = put("203.0.113.9:1").header("x-forwarded-for", "10.0.0.1");
    let response = app
        .clone()
        .oneshot(outsider.request(http::Method::GET))
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    let body = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .expect("body");
    let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(body, serde_json::json!({ "status": "UP" }));

    let insider = put("10.0.0.1:1");
    let response = app
        .oneshot(insider.request(http::Method::GET))
        .await
        .expect("infallible");
    let body = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .expect("body");
    let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert!(body.get("components").is_some(), "{body}");
}

#[tokio::test]
async fn hostile_bodies_from_an_allowed_caller_are_400_not_5xx() {
    let (app, state) = toggle(Some(acl(|b| b.allow("127.0.0.1/32"))));
    let big = format!(r#"{{"status": "UP", "pad": "{}"}}"#, "x".repeat(64 * 1024));
    let deep = "[".repeat(100_000);
    for body in [
        "",
        "null",
        r#"{"status": "SHUTTING_DOWN"}"#,
        r#"{"status": "STARTING"}"#,
        r#"{"status": ["UP"]}"#,
        big.as_str(),
        deep.as_str(),
    ] {
        let mut request = put("127.0.0.1:1");
        request.body = body;
        let response = app
            .clone()
            .oneshot(request.request(http::Method::PUT))
            .await
            .expect("infallible");
        let what = &body[..body.len().min(40)];
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{what}");
        assert_eq!(state.phase(), TrafficPhase::Running, "{what}");
    }
}

/// Over a real socket the ACL sees the real peer, whatever the headers say.
#[tokio::test]
async fn over_tcp_the_socket_peer_decides() {
    let (app, state) = toggle(Some(acl(|b| b.allow("10.0.0.0/8").trust_proxy("10.0.0.2"))));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .expect("serve");
    });
    let response = reqwest::Client::new()
        .put(format!("http://{addr}/actuator/health"))
        .header("content-type", "application/json")
        .header("x-forwarded-for", "10.0.0.1")
        .body(OUT)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), reqwest::StatusCode::FORBIDDEN);
    assert_eq!(state.phase(), TrafficPhase::Running);
    server.abort();
}
