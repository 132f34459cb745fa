//! A visit counter whose sessions live in Redis, so any number of instances
//! behind a balancer share them. The store comes from the profile, with
//! Redis on 127.0.0.1:6379 as this example's default.
//!
//! ```text
//! cargo run --features redis --example redis
//! REDIS_URL=redis://:password@redis.internal:6379/0 PORT=8080 cargo run --features redis --example redis
//! REDIS_CLUSTER_URLS=redis://127.0.0.1:7000,redis://127.0.0.1:7001 \
//!     cargo run --features redis --example redis
//! curl -c jar -b jar http://127.0.0.1:3000/   # 1, 2, 3, ...
//! ```
//!
//! The cookie is sent without `Secure` so that curl keeps it over plain
//! HTTP; keep the default in production. Stop Redis while it runs: requests
//! get 503 with `Retry-After`, and work again once Redis is back.

#[path = "start/mod.rs"]
mod start;

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use tower_httpsession::profile::Profile;
use tower_httpsession::{Session, SessionError};

const DEFAULTS: &[(&str, &str)] = &[
    ("SESSION_STORE", "redis"),
    ("REDIS_URL", "redis://127.0.0.1:6379"),
    ("SESSION_REDIS_PREFIX", "example:session:"),
    ("SESSION_COOKIE_SECURE", "false"),
];

async fn visit(session: Session) -> Result<String, SessionError> {
    let n = session
        .update("visits", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    Ok(format!("visit {n}\n"))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    start::exit("redis", run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let port = start::port(3000)?;
    let profile = Profile::from_env_or(DEFAULTS)?;
    // Without the redis feature this fails at start, saying so.
    let sessions = profile.connect().await?;
    println!("sessions in {:?}", sessions.store());
    let app = Router::new().route("/", get(visit)).layer(sessions.layer());
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
