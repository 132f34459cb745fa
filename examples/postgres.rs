//! A visit counter kept in PostgreSQL: run two copies on two ports and the
//! count carries over between them, as it would behind a load balancer. The
//! store comes from the profile (which also migrates the schema and starts
//! the expiry cleanup), with the local `test` database as this example's
//! default.
//!
//! ```text
//! cargo run --example postgres --features postgres              # port 3000
//! PORT=3001 cargo run --example postgres --features postgres
//! DATABASE_URL=postgres://app@db/app cargo run --example postgres --features postgres
//! ```

#[path = "start/mod.rs"]
mod start;

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use tower_httpsession::profile::Profile;
use tower_httpsession::{Session, SessionError};

const DEFAULTS: &[(&str, &str)] = &[
    ("SESSION_STORE", "postgres"),
    ("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"),
    // Plain HTTP on loopback for the demo; keep the Secure default behind TLS.
    ("SESSION_COOKIE_SECURE", "false"),
];

async fn visit(session: Session) -> Result<String, SessionError> {
    let n = session
        .update("visits", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    Ok(format!("visit number {n}\n"))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    start::exit("postgres", run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let port = start::port(3000)?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let profile = Profile::from_env_or(DEFAULTS)?;
    let sessions = profile.connect().await?;
    let app = Router::new().route("/", get(visit)).layer(sessions.layer());
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!("listening on http://{addr}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
