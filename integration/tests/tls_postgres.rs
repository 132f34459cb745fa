//! The PostgreSQL store over TLS against a TLS-only server this binary
//! starts (`ssl = on`, only `hostssl` in pg_hba.conf) on a loopback port of
//! 5440-5449: the whole store suite with `sslmode=verify-full`, what each
//! `sslmode` checks, and every TLS mistake stopping `connect` with one
//! message naming it.
#![cfg(all(feature = "postgres", feature = "testing", feature = "tls"))]
// helpers outside #[test] fns unwrap too: a test should fail loudly
#![allow(clippy::unwrap_used)]

#[path = "tls_support/postgres.rs"]
mod tls_servers;
mod tls_support;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tls_servers::{PgServer, Tls};
use tls_support::{chain, names, shared_pki, tls_cause};
use tower_httpsession::StoreError;
use tower_httpsession::store::StoreErrorKind;
use tower_httpsession::store::postgres::{PostgresStore, PostgresStoreBuilder, SslMode};
use tower_httpsession::store::tls::TlsError;

async fn server() -> &'static PgServer {
    static S: OnceLock<PgServer> = OnceLock::new();
    tokio::task::spawn_blocking(|| S.get_or_init(|| PgServer::start(shared_pki(), Tls::Only)))
        .await
        .unwrap()
}

/// A schema no other test of this binary uses.
fn schema() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("tls_{}", N.fetch_add(1, Ordering::Relaxed))
}

/// The URL that verifies the server fully against the test CA.
async fn verify_full_url() -> String {
    let ca = shared_pki().ca.display().to_string();
    server()
        .await
        .url(&format!("sslmode=verify-full&sslrootcert={ca}"))
}

async fn make_store() -> PostgresStore {
    let store = PostgresStore::builder(verify_full_url().await)
        .with_schema(schema())
        .with_max_connections(4)
        .connect()
        .await
        .expect("connect with sslmode=verify-full");
    store.migrate().await.expect("migrate over TLS");
    store
}

tower_httpsession::store_suite!(make_store);

/// The error of a connect that must fail, and its whole text.
async fn refused(builder: PostgresStoreBuilder) -> (StoreError, String) {
    let connecting = builder
        .with_acquire_timeout(Duration::from_secs(3))
        .connect();
    tls_support::refused(connecting.await)
}

#[tokio::test]
async fn the_builder_sets_what_the_url_does_not() {
    let pki = shared_pki();
    let store = PostgresStore::builder(server().await.url(""))
        .with_ssl_mode(SslMode::VerifyFull)
        .with_ssl_root_cert(&pki.ca)
        .with_schema(schema())
        .connect()
        .await
        .expect("connect with the builder's TLS settings");
    store.migrate().await.unwrap();
}

#[tokio::test]
async fn the_server_refuses_plain_connections() {
    let url = server().await.url("sslmode=disable");
    let (error, text) = refused(PostgresStore::builder(url)).await;
    assert_eq!(error.kind(), StoreErrorKind::Config, "{text}");
    assert!(text.contains("no encryption"), "{text}");
}

#[tokio::test]
async fn a_certificate_of_another_ca_is_refused_naming_the_ca_file() {
    let pki = shared_pki();
    let url = server().await.url("sslmode=verify-full");
    let (error, text) =
        refused(PostgresStore::builder(url).with_ssl_root_cert(&pki.other_ca)).await;
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
}

#[tokio::test]
async fn a_private_ca_is_not_among_the_platform_roots() {
    let url = server().await.url("sslmode=verify-ca");
    let (error, text) = refused(PostgresStore::builder(url)).await;
    assert_eq!(error.kind(), StoreErrorKind::Config, "{text}");
    assert!(
        text.contains("did not verify against the platform's root certificates"),
        "{text}"
    );
}

#[tokio::test]
async fn verify_full_checks_the_host_and_require_checks_nothing() {
    // The certificate names 127.0.0.1 and localhost; 127.0.0.2 reaches the
    // same loopback server under a name it does not hold.
    let pki = shared_pki();
    let port = server().await.port;
    let other_host = format!("postgres://postgres@127.0.0.2:{port}/postgres");
    let (error, text) = refused(
        PostgresStore::builder(format!("{other_host}?sslmode=verify-full"))
            .with_ssl_root_cert(&pki.ca),
    )
    .await;
    assert!(
        matches!(tls_cause(&error), TlsError::ServerNotTrusted { .. }),
        "{text}"
    );
    assert!(text.contains("not issued for the URL's host"), "{text}");
    // `require` without a root certificate encrypts and checks nothing;
    // `verify-ca` checks the chain (and, on sqlx 0.8 with rustls 0.23.24
    // and later, the host too: README, Limits).
    for url in [
        format!("{other_host}?sslmode=require"),
        server().await.url(&format!(
            "sslmode=verify-ca&sslrootcert={}",
            pki.ca.display()
        )),
    ] {
        let store = PostgresStore::builder(&url)
            .with_schema(schema())
            .connect()
            .await;
        if let Err(error) = store {
            panic!("{}", chain(&error));
        }
    }
}

#[tokio::test]
async fn a_missing_root_certificate_from_the_url_is_named() {
    let pki = shared_pki();
    let missing = pki.missing().display().to_string();
    let url = server()
        .await
        .url(&format!("sslmode=verify-full&sslrootcert={missing}"));
    let (error, text) = refused(PostgresStore::builder(url)).await;
    assert_eq!(error.kind(), StoreErrorKind::Config, "{text}");
    assert!(text.contains("cannot read the CA file"), "{text}");
    assert!(names(&text, &pki.missing()), "{text}");
}

#[tokio::test]
async fn tls_against_a_server_without_it_says_so() {
    let pki = shared_pki();
    let plain = tokio::task::spawn_blocking(|| PgServer::start(shared_pki(), Tls::Off))
        .await
        .unwrap();
    let url = plain.url("sslmode=verify-full");
    let (error, text) = refused(PostgresStore::builder(url).with_ssl_root_cert(&pki.ca)).await;
    assert_eq!(error.kind(), StoreErrorKind::Config, "{text}");
    assert!(
        text.contains("does not offer TLS, which sslmode=verify-full requires"),
        "{text}"
    );
}

#[tokio::test]
async fn no_message_echoes_the_password() {
    let pki = shared_pki();
    let url = format!(
        "postgres://postgres:hunter2-secret@127.0.0.1:{}/postgres?sslmode=verify-full",
        server().await.port
    );
    let (_, text) = refused(PostgresStore::builder(url).with_ssl_root_cert(&pki.other_ca)).await;
    assert!(!text.contains("hunter2"), "{text}");
}

#[cfg(feature = "profile")]
#[tokio::test]
async fn a_profile_reads_sslmode_and_sslrootcert_from_the_environment() {
    use tower_httpsession::profile::Profile;

    let pki = shared_pki();
    let url = server().await.url("");
    let ca = pki.ca.display().to_string();
    let schema = schema();
    let vars = |mode: &'static str| {
        let vars = [
            ("SESSION_STORE", "postgres".to_owned()),
            ("DATABASE_URL", url.clone()),
            ("SESSION_PG_SCHEMA", schema.clone()),
            ("SESSION_PG_SSLMODE", mode.to_owned()),
            ("SESSION_PG_SSLROOTCERT", ca.clone()),
        ];
        Profile::from_lookup(move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        })
    };
    let sessions = vars("verify-full")
        .unwrap()
        .connect()
        .await
        .expect("connect with verify-full");
    assert_eq!(sessions.profile(), "postgres");
    let error = vars("verify_full").expect_err("not an sslmode");
    assert_eq!(
        error.to_string(),
        "SESSION_PG_SSLMODE=\"verify_full\": expected one of disable, allow, prefer, \
         require, verify-ca, verify-full"
    );
}
