//! A leaked store holds no usable cookie: the raw rows and hashes a store
//! keeps, read around the crate (SQL, Redis commands), contain neither the
//! cookie value nor its verifier, and what they do contain opens no session.
#![cfg(all(feature = "testing", any(feature = "postgres", feature = "redis")))]

mod common;
#[cfg(feature = "postgres")]
mod postgres_support;
#[cfg(feature = "redis")]
mod redis_support;

use axum::Router;
use axum::body::Body;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::{Request, header};
use sha2::{Digest as _, Sha256};
use tower::ServiceExt as _;
use tower_httpsession::{SessionId, SessionLayer};

/// Logs in through the layer and returns the cookie pair.
async fn login(app: &Router) -> String {
    let request = Request::post("/login/alice")
        .body(Body::empty())
        .expect("request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    let set = response.headers()[header::SET_COOKIE]
        .to_str()
        .expect("ascii");
    set.split(';').next().expect("pair").to_owned()
}

async fn user(app: &Router, cookie: &str) -> String {
    let request = Request::get("/get/user")
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .expect("request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    let body = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .expect("body");
    String::from_utf8(body.to_vec()).expect("utf-8")
}

/// The cookie's secret in every encoding a dump could show it in.
fn secrets(cookie: &str) -> Vec<String> {
    let value = cookie.split_once('=').expect("pair").1;
    let token = URL_SAFE_NO_PAD.decode(value).expect("base64url");
    let verifier = &token[16..];
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    vec![
        value.to_owned(),
        value[22..].to_owned(),
        URL_SAFE_NO_PAD.encode(verifier),
        STANDARD.encode(verifier),
        STANDARD.encode(&token),
        hex(verifier),
        hex(&token),
    ]
}

/// Asserts the dump holds no secret of `cookie`, and that the hash it holds
/// is SHA-256 of the verifier, not the verifier.
fn assert_no_secret(dump: &str, cookie: &str) {
    assert!(!dump.is_empty());
    for secret in secrets(cookie) {
        assert!(
            !dump.to_lowercase().contains(&secret.to_lowercase()),
            "the store holds {secret}:\n{dump}"
        );
    }
}

/// What an attacker with the dump can build: the key alone, or the key with
/// the stored hash in the verifier's place. Neither may open the session.
async fn assert_dump_opens_nothing(app: &Router, cookie: &str, key: &str, hash: &[u8]) {
    let value = cookie.split_once('=').expect("pair").1;
    let token = URL_SAFE_NO_PAD.decode(value).expect("base64url");
    let mut forged = token[..16].to_vec();
    forged.extend_from_slice(hash);
    for attempt in [
        format!("SESSION={key}"),
        format!("SESSION={}", URL_SAFE_NO_PAD.encode(&forged)),
    ] {
        assert_eq!(
            user(app, &attempt).await,
            "",
            "{attempt} opened the session"
        );
    }
    assert_eq!(user(app, cookie).await, "\"alice\"");
    let expected: [u8; 32] = Sha256::digest(&token[16..]).into();
    assert_eq!(hash, expected, "the store keeps SHA-256 of the verifier");
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_rows_hold_no_usable_cookie() {
    let (store, schema) = postgres_support::store().await;
    let layer = SessionLayer::with_config(store, common::config()).expect("config");
    let app = common::app(layer);
    let cookie = login(&app).await;
    // Change the id once, so a rotated verifier is checked too.
    let request = Request::post("/login/alice")
        .header(header::COOKIE, &cookie)
        .body(Body::empty())
        .expect("request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    let rotated = response.headers()[header::SET_COOKIE]
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("pair")
        .to_owned();

    let mut conn = postgres_support::connect().await;
    let name = &schema.name;
    let mut dump = String::new();
    for table in ["sessions", "attributes"] {
        let rows: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT row_to_json(t)::text FROM {name}.{table} t"
        ))
        .fetch_all(&mut conn)
        .await
        .expect("select");
        dump.extend(rows.into_iter().map(|r| r + "\n"));
    }
    let encoded: Vec<(String, String, String, Vec<u8>)> = sqlx::query_as(&format!(
        "SELECT key, encode(verifier, 'hex'), encode(verifier, 'base64'), verifier \
         FROM {name}.sessions"
    ))
    .fetch_all(&mut conn)
    .await
    .expect("select");
    for (_, hex, base64, _) in &encoded {
        dump.push_str(&format!("{hex} {base64}\n"));
    }
    assert_no_secret(&dump, &cookie);
    assert_no_secret(&dump, &rotated);

    let key = SessionId::from_cookie_value(rotated.split_once('=').expect("pair").1)
        .expect("id")
        .store_key();
    let (_, _, _, hash) = encoded
        .iter()
        .find(|(k, ..)| k == key.as_str())
        .expect("the session's row");
    assert_dump_opens_nothing(&app, &rotated, key.as_str(), hash).await;
    assert_eq!(
        user(&app, &cookie).await,
        "",
        "the pre-rotation cookie is dead"
    );
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_hashes_hold_no_usable_cookie() {
    let store = redis_support::clean_store("dump").await;
    let prefix = store.store().key_prefix().to_owned();
    let layer = SessionLayer::with_config(store.store().clone(), common::config()).expect("config");
    let app = common::app(layer);
    let cookie = login(&app).await;
    let request = Request::post("/login/alice")
        .header(header::COOKIE, &cookie)
        .body(Body::empty())
        .expect("request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    let rotated = response.headers()[header::SET_COOKIE]
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("pair")
        .to_owned();

    // Everything under the prefix, as raw bytes: key names and every field
    // and value of every hash, shown as text, hex and base64.
    let client = redis::Client::open(redis_support::local_url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .expect("keys");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let mut dump = String::new();
    let mut hash = Vec::new();
    for key in &keys {
        dump.push_str(key);
        dump.push('\n');
        let fields: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("hgetall");
        for (field, value) in fields {
            let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
            dump.push_str(&format!(
                "{} = {} | {hex} | {}\n",
                String::from_utf8_lossy(&field),
                String::from_utf8_lossy(&value),
                STANDARD.encode(&value)
            ));
            if field == b"m:verifier" {
                hash = value;
            }
        }
        let serialized: Vec<u8> = redis::cmd("DUMP")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("dump");
        dump.push_str(&String::from_utf8_lossy(&serialized));
        dump.push('\n');
    }
    assert_no_secret(&dump, &cookie);
    assert_no_secret(&dump, &rotated);

    let key = SessionId::from_cookie_value(rotated.split_once('=').expect("pair").1)
        .expect("id")
        .store_key();
    assert!(keys[0].contains(key.as_str()), "the key is the selector");
    assert_dump_opens_nothing(&app, &rotated, key.as_str(), &hash).await;
    assert_eq!(
        user(&app, &cookie).await,
        "",
        "the pre-rotation cookie is dead"
    );
}
