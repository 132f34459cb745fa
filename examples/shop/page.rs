//! The shop's pages and forms: log in with any name, fill a cart, log out.
//! Every page says which instance answered, over which store, and that
//! instance's rotation state, with buttons for the real health toggle, and
//! lists the user's sessions ("your sessions"), with this device marked, a
//! button to end each other one or all of them, and the session limit.

use std::sync::Arc;

use axum::extract::{Form, Path, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use tower_httpsession::health::Health;
use tower_httpsession::store::{Label, LimitPolicy, SessionLimit, SessionRef};
use tower_httpsession::{Session, SessionError, SessionLayer};

/// What a page says about the instance that rendered it.
pub(crate) struct Instance {
    pub(crate) name: String,
    pub(crate) port: u16,
    pub(crate) store: &'static str,
    pub(crate) health: Health,
    /// The most sessions one user may hold, if the profile sets a limit.
    pub(crate) limit: Option<SessionLimit>,
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
    let your_sessions = if user.is_some() {
        your_sessions(&session, instance.limit).await?
    } else {
        String::new()
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
{your_sessions}
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

/// The "your sessions" panel: the user's live sessions, this one marked,
/// each other one with a button that ends it, and the limit.
async fn your_sessions(
    session: &Session,
    limit: Option<SessionLimit>,
) -> Result<String, SessionError> {
    let rfc3339 = |t: time::OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
    let listed = session.principal_sessions().await?;
    let rows: String = listed
        .iter()
        .map(|s| {
            let action = if s.current {
                "<b>this device</b>".to_owned()
            } else {
                format!(
                    r#"<form method="post" action="/sessions/{r}/end"><button class="quiet">End</button></form>"#,
                    r = s.reference
                )
            };
            format!(
                r#"<tr class="{class}"><td>{label}</td><td>{created}</td><td>{accessed}</td><td>{action}</td></tr>"#,
                class = if s.current { "current" } else { "other" },
                label = escape(s.label.as_deref().unwrap_or("unknown device")),
                created = rfc3339(s.created),
                accessed = rfc3339(s.last_accessed),
            )
        })
        .collect();
    let limit = match limit {
        None => "No limit on sessions per user (set <code>SESSION_LIMIT</code>).".to_owned(),
        Some(limit) => format!(
            "At most {max} sessions per user; past it, {what}.",
            max = limit.max(),
            what = match limit.policy() {
                LimitPolicy::RefuseNewLogin => "a new login is refused",
                _ => "the least recently used session ends",
            }
        ),
    };
    Ok(format!(
        r#"<section id="your-sessions"><h2>Your sessions (<span id="session-count">{count}</span>)</h2>
<p class="muted">{limit}</p>
<table><thead><tr><th>device</th><th>signed in</th><th>last seen</th><th></th></tr></thead>
<tbody id="session-rows">{rows}</tbody></table>
<form method="post" action="/sessions/end-others"><button id="end-others" class="quiet">Sign out other sessions</button></form>
</section>"#,
        count = listed.len(),
    ))
}

async fn login(
    session: Session,
    headers: HeaderMap,
    Form(login): Form<Login>,
) -> Result<Redirect, SessionError> {
    let user = login.user.trim();
    if user.is_empty() || user.len() > 64 {
        return Ok(Redirect::to("/"));
    }
    // A new id at login (a session id planted before it is worthless
    // after), and the session bound to the user, in one write.
    session.login(user).await?;
    let agent = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(Label::lossy);
    if let Some(agent) = agent {
        session.set_label(agent.as_str()).await?;
    }
    session.set("user", user).await?;
    Ok(Redirect::to("/"))
}

async fn end_session(
    session: Session,
    Path(reference): Path<String>,
) -> Result<Redirect, SessionError> {
    if let Ok(reference) = reference.parse::<SessionRef>() {
        session.revoke_session(&reference).await?;
    }
    Ok(Redirect::to("/"))
}

async fn end_others(session: Session) -> Result<Redirect, SessionError> {
    session.revoke_other_sessions().await?;
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
        .route("/sessions/{reference}/end", post(end_session))
        .route("/sessions/end-others", post(end_others))
        .layer(layer)
        .with_state(instance)
        .merge(health)
}
