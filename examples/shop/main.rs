//! A small shop, several instances behind a balancer: log in with any name,
//! add items to a cart, log out, and see on every page which instance
//! answered. Take an instance out of rotation from the page and the
//! balancer stops sending to it; the cart stays, since the instances share
//! the session store.
//!
//! ```text
//! cargo run --example shop                        # memory, http://127.0.0.1:3000
//! SESSION_STORE=redis REDIS_URL=redis://127.0.0.1:6379 \
//!     cargo run --features redis --example shop
//! SESSION_STORE=postgres DATABASE_URL=postgres://postgres@127.0.0.1/test \
//!     cargo run --features postgres --example shop
//! PORT=8080 SHOP_INSTANCES=3 cargo run --example shop
//! SHOP_INSTANCES=1 cargo run --example shop       # one plain instance on PORT
//! ```
//!
//! With `SHOP_INSTANCES` above 1 (default 2) the shop starts a round-robin
//! balancer on `PORT` (default 3000) that polls each instance's readiness
//! endpoint, and the instances on the ports after it, named `shop-1`,
//! `shop-2`, …. On the memory store they are tasks of this process sharing
//! one store (a memory store cannot be shared between processes); on Redis
//! or PostgreSQL they are child processes of their own, and killing one
//! (`kill` with the pid it logs) loses no session. `SHOP_INSTANCES=1` runs
//! one plain instance on `PORT`, as a deploy would.
//!
//! Each instance serves the health endpoints a balancer polls. The toggle
//! (`PUT /actuator/health`) is allowed from `HEALTH_ALLOW` (comma-separated
//! CIDR ranges, default loopback only; `none` for no network) and, if
//! `HEALTH_TOKEN` is set (at least 16 bytes of visible ASCII), with that
//! bearer token: with both, a caller needs both; with the token alone
//! (`HEALTH_ALLOW=none`), the token from anywhere. With several instances
//! and no `HEALTH_TOKEN`, the shop makes a token and prints it: the page's
//! buttons need it. Against DNS rebinding the toggle must also name one of
//! `HEALTH_HOSTS` in its `Host` header (comma-separated host names or
//! addresses, each with an optional port; default
//! `127.0.0.1,localhost,[::1]`, any port). On SIGTERM an instance leaves
//! rotation, waits `HEALTH_DRAIN_SECS` (default 5) and stops after
//! in-flight requests.
//!
//! A bad setting stops start-up with one line that names it, what it got
//! and what it accepts, and exit code 2; a store that cannot be reached,
//! exit code 1.
//!
//! Built with the feature `metrics` (`cargo run --features metrics --example
//! shop`), each instance also serves `GET /metrics` in Prometheus' text
//! format, to the callers the same ACL allows to use the toggle.
//!
//! Each instance is served with the limits a server in front of the
//! internet needs (`serve/mod.rs`): a 10 s header read timeout, a 64 KiB
//! body limit, at most 1,024 connections at once, a 60 s idle timeout, a
//! 30 s request timeout and a graceful shutdown.

mod balancer;
#[cfg(feature = "metrics")]
mod metrics;
mod page;
#[path = "../serve/mod.rs"]
mod serve;
mod settings;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tower_httpsession::health::{Acl, Health};
use tower_httpsession::profile::{Profile, Sessions};

use crate::balancer::Backend;
use crate::page::Instance;
use crate::settings::{Settings, StartError, new_token};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_httpsession=debug".into()),
        )
        .init();
    let settings = match Settings::from_lookup(|name| std::env::var(name).ok()) {
        Ok(settings) => settings,
        Err(e) => return fail(&e, 2),
    };
    // SESSION_STORE picks the store; browsers accept the Secure cookie from
    // http://127.0.0.1, other clients over plain HTTP need
    // SESSION_COOKIE_SECURE=false.
    let profile = match Profile::from_env() {
        Ok(profile) => profile,
        Err(e) => return fail(&StartError::from(e), 2),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&StartError::Other(format!("no tokio runtime: {e}")), 1),
    };
    match runtime.block_on(run(settings, profile)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_setting() => fail(&e, 2),
        Err(e) => fail(&e, 1),
    }
}

/// Prints `error` as the one line it is, and returns `code`.
fn fail(error: &StartError, code: u8) -> ExitCode {
    eprintln!("shop: {error}");
    ExitCode::from(code)
}

async fn run(mut settings: Settings, profile: Profile) -> Result<(), StartError> {
    // The recorder goes in before the store is connected and the layer is
    // built: they register their metrics with the recorder installed then.
    #[cfg(feature = "metrics")]
    metrics::install()?;
    if settings.instances == 1 {
        let sessions = connect(&profile).await?;
        let name = settings.name.clone();
        return instance(&settings, &sessions, name, settings.port).await;
    }
    if settings.token.is_none() {
        settings.token = Some(new_token()?);
    }
    // Checked before anything starts, so that a bad setting is one line.
    settings.acl()?;
    let backends: Vec<Arc<Backend>> = (1..=settings.instances)
        .map(|i| Arc::new(Backend::new(format!("shop-{i}"), settings.port + i)))
        .collect();
    let listener = bind(settings.port).await?;
    let balancer = balancer::router(backends.clone());
    let _children = if profile.store.name() == "memory" {
        // One store for every instance: the tasks share it as processes
        // sharing Redis or PostgreSQL would.
        let sessions = connect(&profile).await?;
        for backend in &backends {
            let settings = settings.clone();
            let sessions = sessions.clone();
            let (name, port) = (backend.name.clone(), backend.port);
            tokio::spawn(async move {
                if let Err(e) = instance(&settings, &sessions, name, port).await {
                    eprintln!("shop: {e}");
                    std::process::exit(1);
                }
            });
        }
        Vec::new()
    } else {
        // Connected once here first, so that a store that cannot be used
        // stops the shop with its one line before any instance starts
        // (and PostgreSQL's schema is migrated once).
        drop(connect(&profile).await?);
        spawn_children(&settings, &backends)?
    };
    let token = settings.token.as_deref().unwrap_or_default();
    println!(
        "\nshop: http://127.0.0.1:{port}/ balances over {names}\n\
         shop: health token for the page's rotation buttons (and curl -H 'Authorization: Bearer …'):\n\
         \n    {token}\n",
        port = settings.port,
        names = backends
            .iter()
            .map(|b| format!("{} (port {})", b.name, b.port))
            .collect::<Vec<_>>()
            .join(", "),
    );
    tracing::info!("balancer on http://127.0.0.1:{}", settings.port);
    axum::serve(listener, balancer)
        .with_graceful_shutdown(tower_httpsession::health::terminate_signal())
        .await
        .map_err(|e| StartError::Other(format!("the balancer stopped: {e}")))?;
    Ok(())
}

/// Connects the profile's store, with a message that says what to do.
async fn connect(profile: &Profile) -> Result<Sessions, StartError> {
    let sessions = profile.connect().await?;
    tracing::info!(profile = sessions.profile(), "session store ready");
    Ok(sessions)
}

async fn bind(port: u16) -> Result<tokio::net::TcpListener, StartError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        StartError::Other(format!(
            "PORT={port}: 127.0.0.1:{port} cannot be listened on ({e}); stop what uses it or set PORT to a free port"
        ))
    })
}

/// One shop instance named `name` on `port`, until SIGTERM.
async fn instance(
    settings: &Settings,
    sessions: &Sessions,
    name: String,
    port: u16,
) -> Result<(), StartError> {
    let acl = settings.acl()?;
    let health = Health::builder(sessions.store())
        .with_acl(acl.clone())
        .with_l7_check_path("/monitor/l7check")
        .with_drain_period(Duration::from_secs(settings.drain_secs))
        .build()
        .map_err(|e| StartError::Other(format!("health endpoints: {e}")))?;
    let listener = bind(port).await?;
    tracing::info!(
        instance = %name,
        pid = std::process::id(),
        toggle = %settings.describe_acl(),
        "shop on http://127.0.0.1:{port}"
    );
    let info = Arc::new(Instance {
        name,
        port,
        store: sessions.profile(),
        health: health.clone(),
        limit: sessions.layer().config().session_limit(),
    });
    let app = page::app(sessions.layer(), info);
    let app = with_metrics(app, acl)?;
    // Not `axum::serve`: it sets no header read timeout, connection limit
    // or idle timeout (see serve/mod.rs).
    serve::serve(
        listener,
        app,
        serve::Limits::default(),
        health.shutdown_signal(),
    )
    .await
    .map_err(|e| StartError::Other(format!("the server stopped: {e}")))?;
    tracing::info!("shop stopped");
    Ok(())
}

/// Child processes of this program, one per instance, killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts each instance as a process of its own, sharing the store.
fn spawn_children(
    settings: &Settings,
    backends: &[Arc<Backend>],
) -> Result<Vec<Child>, StartError> {
    let exe = std::env::current_exe()
        .map_err(|e| StartError::Other(format!("cannot find the shop's own program: {e}")))?;
    let mut children = Vec::new();
    for backend in backends {
        let child = std::process::Command::new(&exe)
            .env("SHOP_INSTANCES", "1")
            .env("SHOP_INSTANCE_NAME", &backend.name)
            .env("PORT", backend.port.to_string())
            .env(
                "HEALTH_TOKEN",
                settings.token.as_deref().unwrap_or_default(),
            )
            .spawn()
            .map_err(|e| StartError::Other(format!("cannot start {}: {e}", backend.name)))?;
        tracing::info!(instance = %backend.name, pid = child.id(), "instance started");
        children.push(Child(child));
    }
    Ok(children)
}

/// `GET /metrics`: the Prometheus scrape, for the callers `acl` allows.
#[cfg(feature = "metrics")]
fn with_metrics(app: Router, acl: Acl) -> Result<Router, StartError> {
    Ok(app.merge(metrics::route(acl)?))
}

#[cfg(not(feature = "metrics"))]
#[allow(
    clippy::unnecessary_wraps,
    reason = "the same signature with the feature"
)]
fn with_metrics(app: Router, acl: Acl) -> Result<Router, StartError> {
    drop(acl);
    Ok(app)
}
