//! The Redis store over TLS against TLS-only servers this binary starts on
//! loopback ports 16400-16499: a single node and a Redis Cluster, each with
//! server-only TLS and with mutual TLS, run the whole store suite; and every
//! TLS mistake stops `connect` with one message naming it.
#![cfg(all(feature = "redis", feature = "testing", feature = "tls"))]
// helpers outside #[test] fns unwrap too: a test should fail loudly
#![allow(clippy::unwrap_used)]

mod redis_support;
#[path = "tls_support/redis.rs"]
mod tls_servers;
mod tls_support;

use std::sync::OnceLock;
use std::time::Duration;

use redis_support::unique_prefix;
use tls_servers::{ClientAuth, TlsCluster, TlsRedis};
use tls_support::{chain, names, shared_pki, tls_cause};
use tower_httpsession::StoreError;
use tower_httpsession::store::StoreErrorKind;
use tower_httpsession::store::redis::{RedisStore, RedisStoreBuilder};
use tower_httpsession::store::tls::TlsError;

/// Starts `start` once for the binary, off the async runtime.
async fn shared<T: Send + Sync>(cell: &'static OnceLock<T>, start: fn() -> T) -> &'static T {
    tokio::task::spawn_blocking(move || cell.get_or_init(start))
        .await
        .unwrap()
}

async fn server() -> &'static TlsRedis {
    static S: OnceLock<TlsRedis> = OnceLock::new();
    shared(&S, || TlsRedis::start(shared_pki(), ClientAuth::No)).await
}

async fn mutual_server() -> &'static TlsRedis {
    static S: OnceLock<TlsRedis> = OnceLock::new();
    shared(&S, || TlsRedis::start(shared_pki(), ClientAuth::Required)).await
}

async fn cluster() -> &'static TlsCluster {
    static C: OnceLock<TlsCluster> = OnceLock::new();
    shared(&C, || TlsCluster::start(shared_pki(), ClientAuth::No)).await
}

async fn mutual_cluster() -> &'static TlsCluster {
    static C: OnceLock<TlsCluster> = OnceLock::new();
    shared(&C, || TlsCluster::start(shared_pki(), ClientAuth::Required)).await
}

/// `builder` trusting the test CA, under a fresh prefix.
fn trusting(builder: RedisStoreBuilder) -> RedisStoreBuilder {
    builder
        .with_tls_ca_file(&shared_pki().ca)
        .with_key_prefix(unique_prefix("tls"))
}

/// `builder` with the client certificate too.
fn identified(builder: RedisStoreBuilder) -> RedisStoreBuilder {
    let pki = shared_pki();
    trusting(builder).with_tls_client_identity(&pki.client_cert, &pki.client_key)
}

mod single {
    use super::*;

    async fn make_store() -> RedisStore {
        trusting(RedisStore::builder(&server().await.url()))
            .connect()
            .await
            .expect("connect over TLS")
    }

    tower_httpsession::store_suite!(make_store);
}

mod single_mutual {
    use super::*;

    async fn make_store() -> RedisStore {
        identified(RedisStore::builder(&mutual_server().await.url()))
            .connect()
            .await
            .expect("connect over mutual TLS")
    }

    tower_httpsession::store_suite!(make_store);
}

mod cluster {
    use super::*;

    async fn make_store() -> RedisStore {
        trusting(RedisStore::builder_for_cluster(cluster().await.urls()))
            .connect()
            .await
            .expect("connect to the cluster over TLS")
    }

    tower_httpsession::store_suite!(make_store);
}

mod cluster_mutual {
    use super::*;

    async fn make_store() -> RedisStore {
        identified(RedisStore::builder_for_cluster(
            mutual_cluster().await.urls(),
        ))
        .connect()
        .await
        .expect("connect to the cluster over mutual TLS")
    }

    tower_httpsession::store_suite!(make_store);
}

/// The error of a connect that must fail, and its whole text.
async fn refused(builder: RedisStoreBuilder) -> (StoreError, String) {
    let connecting = builder
        .with_connect_timeout(Duration::from_secs(3))
        .connect();
    tls_support::refused(connecting.await)
}

#[tokio::test]
async fn a_certificate_of_another_ca_is_refused_naming_the_ca_file() {
    let pki = shared_pki();
    let url = server().await.url();
    let (error, text) = refused(RedisStore::builder(&url).with_tls_ca_file(&pki.other_ca)).await;
    assert_eq!(error.kind(), StoreErrorKind::Config, "{text}");
    assert!(
        matches!(tls_cause(&error), TlsError::ServerNotTrusted { .. }),
        "{text}"
    );
    assert!(
        text.contains("did not verify against the CA file"),
        "{text}"
    );
    assert!(names(&text, &pki.other_ca), "{text}");
    assert!(text.contains("signed by an unknown CA"), "{text}");
}

#[tokio::test]
async fn a_private_ca_is_not_among_the_platform_roots() {
    let (error, text) = refused(RedisStore::builder(&server().await.url())).await;
    assert_eq!(error.kind(), StoreErrorKind::Config, "{text}");
    assert!(
        text.contains("did not verify against the platform's root certificates"),
        "{text}"
    );
}

#[tokio::test]
async fn the_cluster_checks_the_certificate_too() {
    let pki = shared_pki();
    let urls = cluster().await.urls();
    let (error, text) =
        refused(RedisStore::builder_for_cluster(urls).with_tls_ca_file(&pki.other_ca)).await;
    assert_eq!(error.kind(), StoreErrorKind::Config, "{text}");
    assert!(
        text.contains("did not verify against the CA file"),
        "{text}"
    );
}

#[tokio::test]
async fn tls_against_a_plain_port_says_so() {
    let plain = redis_support::RedisServer::start();
    let url = format!("rediss://127.0.0.1:{}", plain.port);
    let (_, text) = refused(trusting(RedisStore::builder(&url))).await;
    // The server waits for the end of a command line, or answers one in
    // plain text: either way the message says what to check.
    assert!(text.contains("check that the port serves TLS"), "{text}");
}

#[tokio::test]
async fn a_missing_ca_file_is_named() {
    let pki = shared_pki();
    let (error, text) =
        refused(RedisStore::builder(&server().await.url()).with_tls_ca_file(pki.missing())).await;
    assert_eq!(error.kind(), StoreErrorKind::Config, "{text}");
    assert!(text.contains("cannot read the CA file"), "{text}");
    assert!(names(&text, &pki.missing()), "{text}");
}

#[tokio::test]
async fn a_ca_file_without_certificates_is_named() {
    let pki = shared_pki();
    let empty = pki.file("not-a-ca.pem", "hello\n");
    let (_, text) =
        refused(RedisStore::builder(&server().await.url()).with_tls_ca_file(&empty)).await;
    assert!(text.contains("holds no certificate in PEM form"), "{text}");
    assert!(names(&text, &empty), "{text}");
}

#[tokio::test]
async fn a_key_file_without_a_key_is_named() {
    let pki = shared_pki();
    let builder = RedisStore::builder(&mutual_server().await.url())
        .with_tls_ca_file(&pki.ca)
        .with_tls_client_identity(&pki.client_cert, &pki.ca);
    let (_, text) = refused(builder).await;
    assert!(
        text.contains("the client key file") && text.contains("holds no private key"),
        "{text}"
    );
}

#[tokio::test]
async fn a_server_that_wants_a_client_certificate_refuses_none() {
    let url = mutual_server().await.url();
    let (error, text) = refused(trusting(RedisStore::builder(&url))).await;
    assert_eq!(error.kind(), StoreErrorKind::Config, "{text}");
    assert!(
        matches!(tls_cause(&error), TlsError::ClientRefused { .. }),
        "{text}"
    );
    assert!(text.contains("refused the client certificate"), "{text}");
}

#[tokio::test]
async fn a_client_certificate_of_another_ca_is_refused() {
    let pki = shared_pki();
    let builder = trusting(RedisStore::builder(&mutual_server().await.url()))
        .with_tls_client_identity(&pki.stranger_cert, &pki.stranger_key);
    let (error, text) = refused(builder).await;
    assert!(
        matches!(tls_cause(&error), TlsError::ClientRefused { .. }),
        "{text}"
    );
}

#[tokio::test]
async fn tls_settings_need_a_rediss_url() {
    let (error, text) = refused(trusting(RedisStore::builder("redis://127.0.0.1:6379"))).await;
    assert_eq!(error.kind(), StoreErrorKind::Config, "{text}");
    assert!(text.contains("need a URL that asks for TLS"), "{text}");
}

#[tokio::test]
async fn no_message_echoes_the_password() {
    let pki = shared_pki();
    let url = format!("rediss://:hunter2-secret@127.0.0.1:{}", server().await.port);
    let (_, text) = refused(RedisStore::builder(&url).with_tls_ca_file(&pki.other_ca)).await;
    assert!(!text.contains("hunter2"), "{text}");
    let (_, debug) = (
        0,
        format!("{:?}", RedisStore::builder(&url).with_tls_ca_file(&pki.ca)),
    );
    assert!(!debug.contains("hunter2"), "{debug}");
}

/// A profile from `vars` alone, connected.
#[cfg(feature = "profile")]
async fn profile(
    vars: &[(&str, &str)],
) -> Result<tower_httpsession::profile::Sessions, tower_httpsession::profile::ProfileError> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    tower_httpsession::profile::Profile::from_lookup(move |name| {
        vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    })?
    .connect()
    .await
}

#[cfg(feature = "profile")]
#[tokio::test]
async fn a_profile_reads_the_tls_files_from_the_environment() {
    use tower_httpsession::store::HealthStatus;

    let pki = shared_pki();
    let path = |p: &std::path::Path| p.display().to_string();
    let (url, ca, cert, key) = (
        mutual_server().await.url(),
        path(&pki.ca),
        path(&pki.client_cert),
        path(&pki.client_key),
    );
    let mut vars = vec![
        ("SESSION_STORE", "redis"),
        ("REDIS_URL", url.as_str()),
        ("SESSION_REDIS_TLS_CA_FILE", ca.as_str()),
        ("SESSION_REDIS_TLS_CLIENT_CERT", cert.as_str()),
        ("SESSION_REDIS_TLS_CLIENT_KEY", key.as_str()),
    ];
    let sessions = profile(&vars).await.expect("connect over mutual TLS");
    let health = sessions.store().health().await;
    assert_eq!(health.status, HealthStatus::Up);

    vars.pop();
    let error = profile(&vars)
        .await
        .expect_err("a certificate without its key");
    assert_eq!(
        error.to_string(),
        "SESSION_REDIS_TLS_CLIENT_CERT is set but SESSION_REDIS_TLS_CLIENT_KEY is not: set both"
    );
    vars.pop();
    let error = profile(&vars).await.expect_err("no client certificate");
    let text = chain(&error);
    assert!(
        text.starts_with("REDIS_URL: the redis store refused the settings")
            && text.contains("refused the client certificate"),
        "{text}"
    );
}
