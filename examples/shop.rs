//! A small shop: log in with any name, add items to a cart, see the cart,
//! log out. The page shows what the session knows about itself.
//!
//! The store comes from the profile (see `tower_httpsession::profile`):
//!
//! ```text
//! cargo run --example shop                                   # memory, http://127.0.0.1:3000
//! SESSION_STORE=redis REDIS_URL=redis://127.0.0.1:6379 \
//!     cargo run --features redis --example shop
//! SESSION_STORE=postgres DATABASE_URL=postgres://postgres@127.0.0.1/test \
//!     cargo run --features postgres --example shop
//! PORT=8080 cargo run --example shop
//! ```
//!
//! It also serves the health endpoints a load balancer polls. The toggle
//! (`PUT /actuator/health`) is allowed from `HEALTH_ALLOW` (comma-separated
//! CIDR ranges, default loopback only) and, if `HEALTH_TOKEN` is set, only
//! with that bearer token too. Against DNS rebinding it must also name one
//! of `HEALTH_HOSTS` in its `Host` header (comma-separated host names or
//! addresses, each with an optional port; default
//! `127.0.0.1,localhost,[::1]`, any port): list the names the balancer and
//! the deploy scripts use. On SIGTERM the shop leaves rotation, waits
//! `HEALTH_DRAIN_SECS` (default 5) and stops after in-flight requests.
//!
//! Built with the feature `metrics` (`cargo run --features metrics --example
//! shop`), it also serves `GET /metrics` in Prometheus' text format, to the
//! callers the same ACL allows to use the toggle.
//!
//! It is served with the limits a server in front of the internet needs
//! (`serve/mod.rs`): a 10 s header read timeout, a 64 KiB body limit, at
//! most 1,024 connections at once (more wait in the kernel's backlog), a
//! 60 s idle timeout, a 30 s request timeout and a graceful shutdown.

mod serve;

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::Form;
use axum::response::{Html, IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use tower_httpsession::health::{Acl, Health};
use tower_httpsession::profile::Profile;
use tower_httpsession::{Session, SessionError, SessionLayer};

#[derive(Deserialize)]
struct Login {
    user: String,
}

#[derive(Deserialize)]
struct Item {
    item: String,
}

/// Escapes text for HTML: user input never becomes markup.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

async fn page(session: Session) -> Result<Html<String>, SessionError> {
    let user: Option<String> = session.get("user").await?;
    let cart: Vec<String> = session.get("cart").await?.unwrap_or_default();
    let created = session
        .creation_time()
        .await?
        .format(&Rfc3339)
        .unwrap_or_default();
    let accessed = session
        .last_accessed_time()
        .await?
        .format(&Rfc3339)
        .unwrap_or_default();
    let idle = session.max_inactive_interval().await?.as_secs();
    let new = session.is_new().await?;

    let body = match user {
        None => r#"<form method="post" action="/login">
  <label>Name <input name="user" required maxlength="64"></label>
  <button>Log in</button>
</form>"#
            .to_owned(),
        Some(user) => {
            let items: String = cart
                .iter()
                .map(|item| format!("<li>{}</li>", escape(item)))
                .collect();
            format!(
                r#"<p>Logged in as <b>{user}</b>.</p>
<h2>Cart ({count} items)</h2>
<ul>{items}</ul>
<form method="post" action="/cart">
  <input name="item" required maxlength="64" placeholder="teapot">
  <button>Add to cart</button>
</form>
<form method="post" action="/logout"><button>Log out</button></form>"#,
                user = escape(&user),
                count = cart.len(),
            )
        }
    };
    Ok(Html(format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Shop</title></head>
<body>
<h1>Shop</h1>
{body}
<h2>Session</h2>
<table>
  <tr><td>new</td><td id="new">{new}</td></tr>
  <tr><td>created</td><td id="created">{created}</td></tr>
  <tr><td>last access</td><td id="accessed">{accessed}</td></tr>
  <tr><td>idle timeout</td><td id="idle">{idle} s</td></tr>
</table>
</body></html>"#
    )))
}

async fn login(session: Session, Form(login): Form<Login>) -> Result<Redirect, SessionError> {
    let user = login.user.trim();
    if user.is_empty() || user.len() > 64 {
        return Ok(Redirect::to("/"));
    }
    // A new id at login: a session id planted before it is worthless after.
    session.change_id().await?;
    session.set("user", user).await?;
    Ok(Redirect::to("/"))
}

async fn add(session: Session, Form(item): Form<Item>) -> Result<impl IntoResponse, SessionError> {
    if session.get::<String>("user").await?.is_none() {
        return Ok(Redirect::to("/"));
    }
    let item = item.item.trim().to_owned();
    if !item.is_empty() && item.len() <= 64 {
        // Atomic append: two tabs adding at once both keep their item.
        session
            .update("cart", |cart: Option<Vec<String>>| {
                let mut cart = cart.unwrap_or_default();
                cart.push(item.clone());
                cart
            })
            .await?;
    }
    Ok(Redirect::to("/"))
}

async fn cart(session: Session) -> Result<Json<Vec<String>>, SessionError> {
    Ok(Json(session.get("cart").await?.unwrap_or_default()))
}

async fn logout(session: Session) -> Result<Redirect, SessionError> {
    session.invalidate().await?;
    Ok(Redirect::to("/"))
}

fn app(layer: SessionLayer, health: &Health) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/login", post(login))
        .route("/cart", post(add))
        .route("/cart.json", get(cart))
        .route("/logout", post(logout))
        .layer(layer)
        .merge(health.router())
}

/// `GET /metrics`: the Prometheus scrape, for the callers `acl` allows.
#[cfg(feature = "metrics")]
fn metrics_route(
    acl: tower_httpsession::health::Acl,
    scrape: metrics_exporter_prometheus::PrometheusHandle,
) -> Router {
    use axum::extract::{ConnectInfo, Request};
    use http::{StatusCode, header};

    let serve_scrape = move |request: Request| async move {
        let (parts, _) = request.into_parts();
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| *peer);
        let access = acl.check_request(peer, &parts);
        if !access.is_allowed() {
            tracing::warn!(?peer, "metrics scrape refused");
            return (StatusCode::FORBIDDEN, "forbidden").into_response();
        }
        // Histograms are kept as summaries that upkeep ages.
        scrape.run_upkeep();
        let text_format = "text/plain; version=0.0.4; charset=utf-8";
        ([(header::CONTENT_TYPE, text_format)], scrape.render()).into_response()
    };
    Router::new().route("/metrics", get(serve_scrape))
}

/// The entries of a comma-separated environment variable, or of `default`
/// when it is not set.
fn env_list(name: &str, default: &str) -> Vec<String> {
    let value = std::env::var(name).unwrap_or_else(|_| default.to_owned());
    value
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The health endpoints' ACL from `HEALTH_ALLOW`, `HEALTH_TOKEN` and
/// `HEALTH_HOSTS`.
fn acl() -> Result<Acl, Box<dyn std::error::Error>> {
    let mut acl = Acl::builder();
    for cidr in env_list("HEALTH_ALLOW", "127.0.0.1/32,::1/128") {
        acl = acl.with_allowed_network(cidr);
    }
    if let Ok(token) = std::env::var("HEALTH_TOKEN") {
        acl = acl
            .with_bearer_token(token)
            .with_network_and_token_required();
    }
    let hosts = env_list("HEALTH_HOSTS", "127.0.0.1,localhost,[::1]");
    if hosts.is_empty() {
        return Err("HEALTH_HOSTS lists no host; give the names the shop is reached by".into());
    }
    for host in hosts {
        acl = acl.with_allowed_host(host);
    }
    Ok(acl.build()?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_httpsession=debug".into()),
        )
        .init();
    // The recorder goes in before the store is connected and the layer is
    // built: they register their metrics with the recorder installed then.
    #[cfg(feature = "metrics")]
    let scrape = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    // SESSION_STORE picks the store; browsers accept the Secure cookie from
    // http://127.0.0.1, other clients over plain HTTP need
    // SESSION_COOKIE_SECURE=false.
    let sessions = Profile::from_env()?.connect().await?;
    tracing::info!(profile = sessions.profile(), "session store ready");
    let drain: u64 = std::env::var("HEALTH_DRAIN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let acl = acl()?;
    let health = Health::builder(sessions.store())
        .with_acl(acl.clone())
        .with_l7_check_path("/monitor/l7check")
        .with_drain_period(Duration::from_secs(drain))
        .build()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!("shop on http://{addr}");
    // Not `axum::serve`: it sets no header read timeout, connection limit
    // or idle timeout (see serve/mod.rs).
    let app = app(sessions.layer(), &health);
    #[cfg(feature = "metrics")]
    let app = app.merge(metrics_route(acl, scrape));
    #[cfg(not(feature = "metrics"))]
    drop(acl);
    serve::serve(
        listener,
        app,
        serve::Limits::default(),
        health.shutdown_signal(),
    )
    .await?;
    tracing::info!("shop stopped");
    Ok(())
}
