//! The shop's pages and forms: log in with any name, fill a cart, log out.
//! Every page says which instance answered, over which store, and that
//! instance's rotation state, with buttons for the real health toggle.

use std::sync::Arc;

use axum::extract::{Form, State};
use axum::response::{Html, IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use tower_httpsession::health::Health;
use tower_httpsession::{Session, SessionError, SessionLayer};

/// What a page says about the instance that rendered it.
pub(crate) struct Instance {
    pub(crate) name: String,
    pub(crate) port: u16,
    pub(crate) store: &'static str,
    pub(crate) health: Health,
}

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

/// The page's style: small, plain CSS.
const STYLE: &str = include_str!("page.css");
/// The instances panel: plain JS, no framework.
const SCRIPT: &str = include_str!("page.js");

async fn page(
    State(instance): State<Arc<Instance>>,
    session: Session,
) -> Result<Html<String>, SessionError> {
    let user: Option<String> = session.get("user").await?;
    let cart: Vec<String> = session.get("cart").await?.unwrap_or_default();
    let rfc3339 = |t: time::OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
    let created = rfc3339(session.creation_time().await?);
    let accessed = rfc3339(session.last_accessed_time().await?);
    let idle = session.max_inactive_interval().await?.as_secs();
    let new = session.is_new().await?;

    let you = match &user {
        None => r#"<form method="post" action="/login" class="row">
  <input name="user" required maxlength="64" placeholder="any name" aria-label="Name">
  <button>Log in</button>
</form>"#
            .to_owned(),
        Some(user) => format!(
            r#"<p>Logged in as <b id="user">{user}</b>.</p>
<form method="post" action="/logout"><button class="quiet">Log out</button></form>"#,
            user = escape(user),
        ),
    };
    let cart_html = if user.is_some() {
        let items: String = cart
            .iter()
            .map(|item| format!("<li>{}</li>", escape(item)))
            .collect();
        format!(
            r#"<h2>Cart (<span id="count">{count}</span> items)</h2>
<ul id="cart">{items}</ul>
<form method="post" action="/cart" class="row">
  <input name="item" required maxlength="64" placeholder="teapot" aria-label="Item">
  <button>Add to cart</button>
</form>"#,
            count = cart.len(),
        )
    } else {
        "<h2>Cart</h2><p class=\"muted\">Log in to fill a cart.</p>".to_owned()
    };
    let phase = instance.health.traffic_state().phase();
    let (phase, phase_class) = if phase.is_ready() {
        ("in rotation".to_owned(), "badge")
    } else {
        (format!("out of rotation ({phase})"), "badge down")
    };
    Ok(Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Shop · {name}</title>
<style>{STYLE}</style></head>
<body data-instance="{name}">
<header>
  <h1>Shop</h1>
  <p>answered by <b id="instance">{name}</b> on port <span id="port">{port}</span>,
     sessions in <b id="store">{store}</b>;
     this instance is <b id="phase" class="{phase_class}">{phase}</b></p>
</header>
<main>
<section id="you"><h2>You</h2>
{you}
</section>
<section>
{cart_html}
</section>
<section id="instances"><h2>Instances</h2>
<p class="muted">The balancer sends each page to the next instance whose
<code>/actuator/health/readiness</code> answers 200. Take one out of
rotation and the pages come only from the others; the cart stays, since the
instances share the store.</p>
<table><thead><tr><th>instance</th><th>rotation</th><th></th></tr></thead>
<tbody id="instance-rows"><tr><td colspan="3" class="muted">loading…</td></tr></tbody></table>
<p class="row"><input id="token" type="password" autocomplete="off"
  placeholder="health token, printed at start" aria-label="Health token">
<button id="reload" class="quiet" type="button">Reload page</button></p>
<p id="toggle-result" class="muted" role="status"></p>
</section>
<!-- YOUR SESSIONS: a panel listing this user's sessions, with a button to
     end each, goes here once the store keeps the sessions of a user. -->
<section id="your-sessions" hidden></section>
<section><h2>Session</h2>
<table>
  <tr><td>new</td><td id="new">{new}</td></tr>
  <tr><td>created</td><td id="created">{created}</td></tr>
  <tr><td>last access</td><td id="accessed">{accessed}</td></tr>
  <tr><td>idle timeout</td><td id="idle">{idle} s</td></tr>
</table>
</section>
</main>
<script>{SCRIPT}</script>
</body></html>"#,
        name = escape(&instance.name),
        port = instance.port,
        store = instance.store,
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

/// The shop's routes over `layer`, with the health endpoints of
/// `instance`.
pub(crate) fn app(layer: SessionLayer, instance: Arc<Instance>) -> Router {
    let health = instance.health.router();
    Router::new()
        .route("/", get(page))
        .route("/login", post(login))
        .route("/cart", post(add))
        .route("/cart.json", get(cart))
        .route("/logout", post(logout))
        .layer(layer)
        .with_state(instance)
        .merge(health)
}
