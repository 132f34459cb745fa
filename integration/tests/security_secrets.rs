//! Store passwords stay out of errors, `Debug`, logs and health details: a
//! store URL with a password that points at nothing must fail without the
//! password in any text the failure produces.
#![cfg(all(
    feature = "health",
    feature = "profile",
    any(feature = "postgres", feature = "redis")
))]

use std::error::Error as _;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use http::Request;
use tower::ServiceExt as _;
use tower_httpsession::health::{Acl, Health};
use tower_httpsession::profile::Profile;
use tower_httpsession::store::StoreKey;
use tower_httpsession::{SessionId, SessionStore, StoreError};

const PASSWORD: &str = "pw-d41d8cd98f00b204e980";

/// A loopback port nothing listens on.
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Every text an error offers: `Display`, `Debug`, each source.
fn texts(error: &StoreError) -> String {
    let mut text = format!("{error} {error:?}");
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(" {cause} {cause:?}"));
        source = cause.source();
    }
    text
}

fn key() -> StoreKey {
    SessionId::generate().expect("rng").store_key()
}

/// The health report an allowed caller sees for `store`.
async fn details(store: impl SessionStore) -> String {
    let acl = Acl::builder()
        .with_allowed_network("127.0.0.1/32")
        .build()
        .expect("acl");
    let app = Health::builder(store)
        .with_acl(acl)
        .build()
        .expect("health")
        .router();
    let mut request = Request::get("/actuator/health")
        .body(Body::empty())
        .expect("request");
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 4000))));
    let response = app.oneshot(request).await.expect("infallible");
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .expect("body");
    String::from_utf8_lossy(&body).into_owned()
}

fn assert_hidden(what: &str, text: &str) {
    assert!(
        !text.contains(PASSWORD),
        "{what} shows the password: {text}"
    );
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_password_stays_hidden() {
    use tower_httpsession::store::redis::RedisStore;
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}", dead_port());
    match RedisStore::connect(&url).await {
        Ok(_) => panic!("nothing listens there"),
        Err(e) => assert_hidden("connect error", &texts(&e)),
    }
    let store = RedisStore::builder(&url).connect_lazy().expect("lazy");
    assert_hidden("Debug", &format!("{store:?}"));
    let error = store.load(&key()).await.expect_err("nothing listens there");
    assert!(error.is_unavailable());
    assert_hidden("load error", &texts(&error));
    assert_hidden("health details", &details(store).await);

    let profile = Profile::from_lookup(|name| match name {
        "SESSION_STORE" => Some("redis".to_owned()),
        "REDIS_URL" => Some(url.clone()),
        _ => None,
    })
    .expect("a valid profile");
    assert_hidden("profile Debug", &format!("{profile:?}"));
    let error = profile.connect().await.expect_err("nothing listens there");
    assert_hidden("profile error", &format!("{error} {error:?}"));
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_password_stays_hidden() {
    use tower_httpsession::store::postgres::PostgresStore;
    let url = format!(
        "postgres://postgres:{PASSWORD}@127.0.0.1:{}/test",
        dead_port()
    );
    match PostgresStore::connect(&url).await {
        Ok(_) => panic!("nothing listens there"),
        Err(e) => assert_hidden("connect error", &texts(&e)),
    }
    let store = PostgresStore::builder(url.clone())
        .connect_lazy()
        .expect("lazy");
    assert_hidden("Debug", &format!("{store:?}"));
    let error = store.load(&key()).await.expect_err("nothing listens there");
    assert!(error.is_unavailable());
    assert_hidden("load error", &texts(&error));
    assert_hidden("health details", &details(store).await);

    let profile = Profile::from_lookup(|name| match name {
        "SESSION_STORE" => Some("postgres".to_owned()),
        "DATABASE_URL" => Some(url.clone()),
        _ => None,
    })
    .expect("a valid profile");
    assert_hidden("profile Debug", &format!("{profile:?}"));
    let error = profile.connect().await.expect_err("nothing listens there");
    assert_hidden("profile error", &format!("{error} {error:?}"));
}
