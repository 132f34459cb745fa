//! What a new user reads when something is set wrong: one line in words
//! that names the setting, what it got (secrets hidden) and what it
//! accepts, from the library's errors and from the shop example's start.
#![cfg(all(feature = "health", feature = "profile"))]

use std::process::Stdio;

use axum::body::Body;
use http::{Request, StatusCode, header};
use tower::ServiceExt as _;
use tower_httpsession::MemoryStore;
use tower_httpsession::health::{Acl, AclError, Health};

mod common;
mod shop_support;

use common::Captured;
use shop_support::shop_command;

#[test]
fn acl_errors_state_the_rule_and_what_to_do() {
    let err = |builder: tower_httpsession::health::AclBuilder| {
        builder.build().expect_err("refused").to_string()
    };
    let short = err(Acl::builder().with_bearer_token("short-secret"));
    assert!(short.contains("at least 16 bytes"), "{short}");
    assert!(!short.contains("short-secret"), "{short}");
    let nobody = err(Acl::builder());
    assert!(
        nobody.contains("with_allowed_network") && nobody.contains("with_bearer_token"),
        "{nobody}"
    );
    let both = err(Acl::builder()
        .with_allowed_network("::1")
        .with_network_and_token_required());
    assert!(
        both.contains("at least one allowed network and a bearer token"),
        "{both}"
    );
    assert_eq!(
        err(Acl::builder().with_bearer_token("has a space in the token")),
        AclError::TokenNotVisibleAscii.to_string()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_put_without_connect_info_logs_the_fix_once() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // The current-thread runtime polls every request on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);

    let acl = Acl::builder()
        .with_allowed_network("127.0.0.1")
        .build()
        .expect("acl");
    let health = Health::builder(MemoryStore::default())
        .with_acl(acl)
        .build()
        .expect("health");
    // Served without `into_make_service_with_connect_info`.
    let app = health.router();
    for _ in 0..3 {
        let put = Request::put("/actuator/health")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::HOST, "127.0.0.1")
            .body(Body::from(r#"{"status": "OUT_OF_SERVICE"}"#))
            .expect("request");
        let response = app.clone().oneshot(put).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }
    let text = captured.text();
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "one error, then warnings:\n{text}");
    assert!(
        errors[0].contains("into_make_service_with_connect_info::<SocketAddr>()"),
        "{text}"
    );
}

/// The shop's standard error and exit code, started with `vars`.
fn start_shop(vars: &[(&str, &str)]) -> (String, Option<i32>) {
    let mut command = shop_command();
    command
        .env("PORT", "18190")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, value) in vars {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("run the shop");
    // A shop that starts instead of stopping is killed, and fails the test.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("piped"), &mut stderr)
        .expect("read");
    (stderr, status.code())
}

#[test]
fn the_shop_refuses_bad_settings_in_one_line_each() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("SESSION_STORE", "mongo")],
            "shop: SESSION_STORE=\"mongo\": expected one of memory, redis, postgres",
        ),
        (
            &[("PORT", "99999")],
            "shop: PORT=\"99999\": expected a TCP port from 1 to 65535",
        ),
        (
            &[("SHOP_INSTANCES", "0")],
            "shop: SHOP_INSTANCES=\"0\": expected a number of instances from 1 to 8",
        ),
        (
            &[("HEALTH_DRAIN_SECS", "soon")],
            "shop: HEALTH_DRAIN_SECS=\"soon\": expected a whole number of seconds from 0 to 3600",
        ),
        (
            &[("HEALTH_TOKEN", "hunter2")],
            "shop: HEALTH_TOKEN (hidden, 7 bytes): the bearer token is too short: it must be at \
             least 16 bytes of visible ASCII, such as the output of `openssl rand -hex 32`",
        ),
        (
            &[("HEALTH_ALLOW", "none")],
            "shop: HEALTH_ALLOW=none without HEALTH_TOKEN: the health toggle would allow no one; \
             set HEALTH_TOKEN (at least 16 bytes of visible ASCII) or HEALTH_ALLOW to the \
             networks allowed",
        ),
        (
            &[("HEALTH_ALLOW", "10.0.0.0/33")],
            "shop: HEALTH_ALLOW=\"10.0.0.0/33\": expected comma-separated CIDR ranges or IP \
             addresses, or `none` for the token alone",
        ),
        (
            &[("SESSION_STORE", "postgres")],
            "shop: DATABASE_URL is required with SESSION_STORE=postgres: set it to a postgres:// \
             URL such as postgres://postgres@127.0.0.1/test",
        ),
    ];
    for (vars, expected) in cases {
        let (stderr, code) = start_shop(vars);
        assert_eq!(stderr, format!("{expected}\n"), "{vars:?}");
        assert_eq!(code, Some(2), "{vars:?}");
    }
}

#[test]
fn the_shop_takes_the_token_alone_when_told() {
    // HEALTH_ALLOW=none with a token is a valid ACL: the shop starts (and
    // is stopped here by a port that is taken, which is the world, exit 1).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let (stderr, code) = start_shop(&[
        ("HEALTH_ALLOW", "none"),
        ("HEALTH_TOKEN", "a-token-of-more-than-sixteen-bytes"),
        ("PORT", &port),
    ]);
    assert!(
        stderr.starts_with(&format!(
            "shop: PORT={port}: 127.0.0.1:{port} cannot be listened on"
        )),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(code, Some(1));
}

#[cfg(feature = "postgres")]
#[test]
fn the_shop_says_in_one_line_that_the_database_is_missing() {
    let (stderr, code) = start_shop(&[
        ("SESSION_STORE", "postgres"),
        (
            "DATABASE_URL",
            "postgres://postgres:pw-not-shown@127.0.0.1:5432/no_such_shop_database",
        ),
    ]);
    assert_eq!(
        stderr,
        "shop: DATABASE_URL: the postgres store refused the settings (database \
         \"no_such_shop_database\" does not exist); check the user, password, database and \
         schema or prefix it is given\n"
    );
    assert!(!stderr.contains("pw-not-shown"));
    assert_eq!(code, Some(1));
}

#[cfg(feature = "redis")]
#[test]
fn the_demo_stops_in_one_line_before_its_instances_start_when_the_store_is_out() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let url = format!("redis://127.0.0.1:{port}");
    let (stderr, code) = start_shop(&[
        ("SHOP_INSTANCES", "2"),
        ("SESSION_STORE", "redis"),
        ("REDIS_URL", &url),
        ("SESSION_CONNECT_TIMEOUT_SECS", "1"),
    ]);
    assert_eq!(
        stderr,
        "shop: REDIS_URL: the redis store could not be reached within 1s; check that it runs \
         at the host and port the URL names, or raise SESSION_CONNECT_TIMEOUT_SECS\n"
    );
    assert_eq!(code, Some(1));
}
