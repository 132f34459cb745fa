//! Attacks on the health toggle: spoofed `X-Forwarded-For`, address forms
//! that dodge a CIDR match, wrong, missing and smuggled tokens. Every refused
//! `PUT` must be 403 and leave the traffic state as it was.
#![cfg(feature = "health")]

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
    let mut health = Health::builder(MemoryStore::new(10));
    if let Some(acl) = acl {
        health = health.with_acl(acl);
    }
    let health = health.build().expect("health");
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

/// `GET` of the health endpoint from `request`'s caller: the answer's head
/// and its JSON body.
async fn report(app: &Router, request: &Put<'_>) -> (http::response::Parts, serde_json::Value) {
    let response = app
        .clone()
        .oneshot(request.request(http::Method::GET))
        .await
        .expect("infallible");
    let (head, body) = response.into_parts();
    let body = axum::body::to_bytes(body, 4096).await.expect("body");
    (head, serde_json::from_slice(&body).expect("json"))
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
    let (app, state) = toggle(Some(acl(|b| {
        b.with_allowed_network("0.0.0.0/0")
            .with_allowed_network("::/0")
    })));
    let mut request = put("127.0.0.1:1");
    request.peer = None;
    refused(&app, &state, &request, "no ConnectInfo").await;
}

#[tokio::test]
async fn spoofed_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let (app, state) = toggle(Some(acl(|b| b.with_allowed_network("10.0.0.0/8"))));
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
        b.with_allowed_network("192.0.2.0/24")
            .with_trusted_proxy("10.0.0.2")
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
    let (app, state) = toggle(Some(acl(|b| b.with_allowed_network("127.0.0.1/32"))));
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
    let (app, state) = toggle(Some(acl(|b| b.with_allowed_network("::ffff:10.0.0.0/104"))));
    allowed(&app, &state, &put("10.1.2.3:1"), "v4 in mapped range").await;
    refused(&app, &state, &put("11.0.0.1:1"), "v4 outside").await;
}

#[tokio::test]
async fn wrong_missing_and_smuggled_tokens_are_refused() {
    let (app, state) = toggle(Some(acl(|b| {
        b.with_allowed_network("10.0.0.0/8")
            .with_bearer_token(TOKEN)
    })));
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
        b.with_allowed_network("10.0.0.0/8")
            .with_bearer_token(TOKEN)
            .with_network_and_token_required()
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

/// DNS rebinding: a page whose name now resolves to the instance makes a
/// browser on an allowed network send the `PUT` with the page's own name as
/// `Host`. With allowed hosts listed, only a listed `Host` passes.
#[tokio::test]
async fn a_host_outside_the_allowed_hosts_is_refused_from_an_allowed_address() {
    let (app, state) = toggle(Some(acl(|b| {
        b.with_allowed_network("127.0.0.1/32")
            .with_allowed_host("localhost")
            .with_allowed_host("shop-1.internal:8443")
    })));
    for host in [
        "attacker.example",
        "attacker.example:3000",
        "localhost.attacker.example",
        "shop-1.internal",
        "shop-1.internal:3000",
        "127.0.0.1",
    ] {
        let request = put("127.0.0.1:1").header("host", host);
        refused(&app, &state, &request, host).await;
    }
    refused(&app, &state, &put("127.0.0.1:1"), "no Host").await;
    // a listed host next to another is no cover for it
    let two = put("127.0.0.1:1")
        .header("host", "localhost")
        .header("host", "attacker.example");
    refused(&app, &state, &two, "two Hosts").await;

    for host in ["localhost", "LocalHost:3000", "shop-1.internal:8443"] {
        let request = put("127.0.0.1:1").header("host", host);
        allowed(&app, &state, &request, host).await;
    }
    // the address still decides first
    let outsider = put("127.0.0.2:1").header("host", "localhost");
    refused(&app, &state, &outsider, "listed host, address outside").await;
}

#[tokio::test]
async fn a_host_outside_the_allowed_hosts_sees_no_details() {
    let (app, _) = toggle(Some(acl(|b| {
        b.with_allowed_network("127.0.0.1/32")
            .with_allowed_host("localhost")
    })));
    for (host, details) in [("attacker.example", false), ("localhost:3000", true)] {
        let (head, body) = report(&app, &put("127.0.0.1:1").header("host", host)).await;
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(body.get("components").is_some(), details, "{host}: {body}");
    }
}

#[tokio::test]
async fn refused_callers_see_no_details_and_nothing_is_cached() {
    let (app, _) = toggle(Some(acl(|b| {
        b.with_allowed_network("10.0.0.0/8")
            .with_bearer_token(TOKEN)
    })));
    let outsider = put("203.0.113.9:1").header("x-forwarded-for", "10.0.0.1");
    let (head, body) = report(&app, &outsider).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(body, serde_json::json!({ "status": "UP" }));

    let (_, body) = report(&app, &put("10.0.0.1:1")).await;
    assert!(body.get("components").is_some(), "{body}");
}

#[tokio::test]
async fn hostile_bodies_from_an_allowed_caller_are_400_not_5xx() {
    let (app, state) = toggle(Some(acl(|b| b.with_allowed_network("127.0.0.1/32"))));
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

/// Serves `app` on 127.0.0.1:0 with connection info, as a deployment must.
async fn serve(app: Router) -> (SocketAddr, tokio::task::JoinHandle<()>) {
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
    (addr, server)
}

/// Over a real socket the ACL sees the real peer, whatever the headers say.
#[tokio::test]
async fn over_tcp_the_socket_peer_decides() {
    let (app, state) = toggle(Some(acl(|b| {
        b.with_allowed_network("10.0.0.0/8")
            .with_trusted_proxy("10.0.0.2")
    })));
    let (addr, server) = serve(app).await;
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

/// Over a real socket the host is the one the client sends: `Host` in
/// HTTP/1.1, `:authority` in HTTP/2, which has no `Host` header.
#[tokio::test]
async fn over_tcp_the_host_sent_decides_in_http1_and_http2() {
    use http_body_util::{BodyExt as _, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let (app, state) = toggle(Some(acl(|b| {
        b.with_allowed_network("127.0.0.1/32")
            .with_allowed_host("localhost")
    })));
    let (addr, server) = serve(app).await;

    for (host, expected) in [("attacker.example", "403"), ("localhost:1234", "200")] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "PUT /actuator/health HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{OUT}",
            OUT.len()
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {expected}")),
            "{host}: {answer}"
        );
        state.mark_running().expect("back in rotation");
    }

    for (authority, expected) in [
        ("attacker.example", StatusCode::FORBIDDEN),
        ("localhost", StatusCode::OK),
    ] {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("an HTTP/2 connection");
        tokio::spawn(connection);
        let request = Request::put(format!(
            "http://{authority}:{}/actuator/health",
            addr.port()
        ))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes::Bytes::from_static(OUT.as_bytes())))
        .expect("request");
        assert!(request.headers().get(header::HOST).is_none());
        let response = sender.send_request(request).await.expect("response");
        assert_eq!(response.status(), expected, "{authority}");
        response.into_body().collect().await.expect("body");
        state.mark_running().expect("back in rotation");
    }
    server.abort();
}
