//! The apps under load: the same routes on bare axum, on this crate and on
//! tower-sessions, over each store.

use std::fmt;

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::{get, post};

/// The value every read returns: the size of one attribute of the read
/// scenario's session.
pub(crate) const READ_BYTES: usize = 100;

/// Which session implementation answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Crate {
    /// Plain axum, no session layer: the ceiling.
    Bare,
    /// This crate.
    Ours,
    /// tower-sessions 0.14, the peer.
    Peer,
}

/// Where the sessions live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// No store (bare axum).
    None,
    /// In the server's process.
    Memory,
    /// Redis.
    Redis,
    /// PostgreSQL.
    Postgres,
}

impl Backend {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::None => "-",
            Self::Memory => "memory",
            Self::Redis => "redis",
            Self::Postgres => "postgres",
        }
    }
}

/// One app of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AppSpec {
    pub(crate) krate: Crate,
    pub(crate) backend: Backend,
    /// This crate with a metrics recorder installed (feature `metrics`):
    /// run only when `BENCH_APP` names it, beside the app without one.
    pub(crate) metered: bool,
}

impl AppSpec {
    /// Every app, in table order.
    pub(crate) const ALL: [Self; 7] = [
        Self::new(Crate::Bare, Backend::None),
        Self::new(Crate::Ours, Backend::Memory),
        Self::new(Crate::Peer, Backend::Memory),
        Self::new(Crate::Ours, Backend::Redis),
        Self::new(Crate::Peer, Backend::Redis),
        Self::new(Crate::Ours, Backend::Postgres),
        Self::new(Crate::Peer, Backend::Postgres),
    ];

    /// This crate with a Prometheus recorder installed, over the stores
    /// whose overhead is measured: the memory store's reads and Redis'
    /// writes.
    #[cfg(feature = "metrics")]
    pub(crate) const METERED: [Self; 2] = [
        Self::with_metrics(Backend::Memory),
        Self::with_metrics(Backend::Redis),
    ];

    const fn new(krate: Crate, backend: Backend) -> Self {
        Self {
            krate,
            backend,
            metered: false,
        }
    }

    #[cfg(feature = "metrics")]
    const fn with_metrics(backend: Backend) -> Self {
        Self {
            krate: Crate::Ours,
            backend,
            metered: true,
        }
    }

    pub(crate) fn crate_label(self) -> &'static str {
        if self.metered {
            return "tower-httpsession + metrics";
        }
        match self.krate {
            Crate::Bare => "axum (no session)",
            Crate::Ours => "tower-httpsession",
            Crate::Peer => "tower-sessions 0.14",
        }
    }

    /// The Redis database this app's sessions live in, so that apps never
    /// see each other's keys.
    pub(crate) fn redis_db(self) -> u8 {
        match self.krate {
            Crate::Ours if self.metered => 12,
            Crate::Ours => 13,
            Crate::Bare | Crate::Peer => 14,
        }
    }
}

impl fmt::Display for AppSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.backend {
            Backend::None => f.write_str(self.crate_label()),
            backend => write!(f, "{} / {}", self.crate_label(), backend.label()),
        }
    }
}

/// The attribute value of index `i`: `size` bytes of letters and digits that
/// look random, so that no store's compression (PostgreSQL's TOAST) makes a
/// big session small.
pub(crate) fn attribute_value(i: usize, size: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    // xorshift64*, seeded by the index: the same value on every run.
    let mut state = 0x9E37_79B9_7F4A_7C15_u64 ^ (i as u64 + 1);
    (0..size)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let n = state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 58;
            char::from(ALPHABET[usize::try_from(n).unwrap_or(0) % ALPHABET.len()])
        })
        .collect()
}

/// The routes on bare axum: the same paths, answered without a session.
pub(crate) fn bare() -> Router {
    let value = attribute_value(7, READ_BYTES);
    Router::new()
        .route("/bare", get(|| async { "ok" }))
        .route("/read", get(move || async move { value }))
        .route("/write/{n}", post(|Path(_n): Path<u64>| async { "ok" }))
}

/// The routes on this crate; `layer` holds the store.
pub(crate) fn ours(layer: tower_httpsession::SessionLayer) -> Router {
    use tower_httpsession::{Session, SessionError};
    Router::new()
        .route("/bare", get(|| async { "ok" }))
        .route(
            "/seed/{count}/{size}",
            post(
                |session: Session, Path((count, size)): Path<(usize, usize)>| async move {
                    for i in 0..count {
                        session
                            .set(&format!("a{i}"), &attribute_value(i, size))
                            .await?;
                    }
                    Ok::<_, SessionError>("ok")
                },
            ),
        )
        .route(
            "/read",
            get(|session: Session| async move {
                let value: Option<String> = session.get("a7").await?;
                Ok::<_, SessionError>(value.unwrap_or_default())
            }),
        )
        .route(
            "/write/{n}",
            post(|session: Session, Path(n): Path<u64>| async move {
                session.set("n", &n).await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/set/{key}/{n}",
            post(
                |session: Session, Path((key, n)): Path<(String, u64)>| async move {
                    session.set(&key, &n).await?;
                    Ok::<_, SessionError>("ok")
                },
            ),
        )
        .route(
            "/get/{key}",
            get(|session: Session, Path(key): Path<String>| async move {
                let n: Option<u64> = session.get(&key).await?;
                Ok::<_, SessionError>(n.map_or_else(|| "-".to_owned(), |n| n.to_string()))
            }),
        )
        .route(
            "/incr",
            post(|session: Session| async move {
                let n = session
                    .update("counter", |n: Option<u64>| n.unwrap_or(0) + 1)
                    .await?;
                Ok::<_, SessionError>(n.to_string())
            }),
        )
        .layer(layer)
}

type PeerResult<T> = Result<T, (StatusCode, String)>;

#[allow(
    clippy::needless_pass_by_value,
    reason = "takes the error as map_err hands it over"
)]
fn peer_error(error: tower_sessions::session::Error) -> (StatusCode, String) {
    (StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
}

/// The routes on tower-sessions; `layer` holds the store.
pub(crate) fn peer<S>(layer: tower_sessions::SessionManagerLayer<S>) -> Router
where
    S: tower_sessions::SessionStore + Clone,
{
    use tower_sessions::Session;
    Router::new()
        .route("/bare", get(|| async { "ok" }))
        .route(
            "/seed/{count}/{size}",
            post(
                |session: Session, Path((count, size)): Path<(usize, usize)>| async move {
                    for i in 0..count {
                        session
                            .insert(&format!("a{i}"), attribute_value(i, size))
                            .await
                            .map_err(peer_error)?;
                    }
                    PeerResult::Ok("ok")
                },
            ),
        )
        .route(
            "/read",
            get(|session: Session| async move {
                let value: Option<String> = session.get("a7").await.map_err(peer_error)?;
                PeerResult::Ok(value.unwrap_or_default())
            }),
        )
        .route(
            "/write/{n}",
            post(|session: Session, Path(n): Path<u64>| async move {
                session.insert("n", n).await.map_err(peer_error)?;
                PeerResult::Ok("ok")
            }),
        )
        .route(
            "/set/{key}/{n}",
            post(
                |session: Session, Path((key, n)): Path<(String, u64)>| async move {
                    session.insert(&key, n).await.map_err(peer_error)?;
                    PeerResult::Ok("ok")
                },
            ),
        )
        .route(
            "/get/{key}",
            get(|session: Session, Path(key): Path<String>| async move {
                let n: Option<u64> = session.get(&key).await.map_err(peer_error)?;
                PeerResult::Ok(n.map_or_else(|| "-".to_owned(), |n| n.to_string()))
            }),
        )
        .route(
            "/incr",
            post(|session: Session| async move {
                // The peer has no atomic update: read, add one, write back.
                let n: u64 = session
                    .get("counter")
                    .await
                    .map_err(peer_error)?
                    .unwrap_or(0);
                session.insert("counter", n + 1).await.map_err(peer_error)?;
                PeerResult::Ok((n + 1).to_string())
            }),
        )
        .layer(layer)
}
