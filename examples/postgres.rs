//! A visit counter kept in PostgreSQL: run two copies on two ports and the
//! count carries over between them, as it would behind a load balancer.
//!
//! ```text
//! cargo run --example postgres --features postgres              # port 3000
//! PORT=3001 cargo run --example postgres --features postgres
//! DATABASE_URL=postgres://app@db/app cargo run --example postgres --features postgres
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tower_httpsession::store::postgres::PostgresStore;
use tower_httpsession::{Session, SessionConfig, SessionError, SessionLayer};

async fn visit(session: Session) -> Result<String, SessionError> {
    let n = session
        .update("visits", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    Ok(format!("visit number {n}\n"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);

    let store = PostgresStore::connect(&url).await?;
    store.migrate().await?;
    let cleanup = store.spawn_cleanup(Duration::from_secs(60), 1_000);

    // Plain HTTP on loopback for the demo; keep the default Secure cookie
    // behind TLS.
    let config = SessionConfig::default().with_insecure_cookie_over_http();
    let app = Router::new()
        .route("/", get(visit))
        .layer(SessionLayer::with_config(store, config)?);

    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!("listening on http://{addr}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    cleanup.stop().await;
    Ok(())
}
