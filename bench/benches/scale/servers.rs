//! The servers the scale bench stores its sessions on: private Redis
//! servers it starts and stops itself, a PostgreSQL database of its own on
//! the shared server, and the apps it serves on loopback ports.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use tower_sessions_sqlx_store::sqlx::{self, PgPool, postgres::PgPoolOptions};

use crate::BoxError;

/// The most one command of the bench's own to a private Redis may take.
const BULK_TIMEOUT: Duration = Duration::from_secs(300);

/// A `redis-server` of the bench's own on a free loopback port, with no
/// persistence, stopped when dropped.
pub(crate) struct RedisServer {
    child: Child,
    pub(crate) port: u16,
}

impl RedisServer {
    /// Starts `redis-server` with `extra` settings (pairs of name and
    /// value) on top of its defaults, and waits until it answers.
    pub(crate) async fn start(extra: &[(&str, &str)]) -> Result<Self, BoxError> {
        let port = free_port()?;
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"]);
        for (name, value) in extra {
            command.arg(format!("--{name}")).arg(value);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting redis-server (is it installed?): {e}"))?;
        let server = Self { child, port };
        let began = Instant::now();
        loop {
            match server.connection(0).await {
                Ok(mut conn) => {
                    let _: String = redis::cmd("PING").query_async(&mut conn).await?;
                    return Ok(server);
                }
                Err(error) if began.elapsed() > Duration::from_secs(10) => {
                    return Err(
                        format!("redis-server on port {port} did not answer: {error}").into(),
                    );
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    pub(crate) fn url(&self, db: u8) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }

    pub(crate) async fn connection(
        &self,
        db: u8,
    ) -> Result<redis::aio::MultiplexedConnection, BoxError> {
        let client = redis::Client::open(self.url(db))?;
        // A pipeline of big `RESTORE`s, or a `FLUSHDB` of a million keys,
        // takes far longer than the client's default of 500 ms.
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(BULK_TIMEOUT));
        Ok(client
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }

    /// `used_memory` from `INFO memory`, in bytes.
    pub(crate) async fn used_memory(&self) -> Result<u64, BoxError> {
        let mut conn = self.connection(0).await?;
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut conn)
            .await?;
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| "INFO memory has no used_memory".into())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // The bench's own child: stop it and reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> Result<u16, BoxError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The database the bench creates, fills and drops again.
pub(crate) const SCALE_DATABASE: &str = "httpsession_scale";
const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The PostgreSQL server, from `DATABASE_URL` at run time.
pub(crate) struct Postgres {
    admin_url: String,
    pub(crate) url: String,
}

impl Postgres {
    pub(crate) fn from_environment() -> Self {
        let admin_url =
            std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.into());
        let url = database_url(&admin_url, SCALE_DATABASE);
        Self { admin_url, url }
    }

    /// Drops the bench database if a run before left it, and creates it
    /// empty.
    pub(crate) async fn create(&self) -> Result<(), BoxError> {
        self.drop_database().await?;
        let admin = connect(&self.admin_url, 1).await?;
        sqlx::raw_sql(&format!("CREATE DATABASE {SCALE_DATABASE}"))
            .execute(&admin)
            .await?;
        admin.close().await;
        Ok(())
    }

    /// Drops the bench database, closing whatever connection is left.
    pub(crate) async fn drop_database(&self) -> Result<(), BoxError> {
        let admin = connect(&self.admin_url, 1).await?;
        sqlx::raw_sql(&format!(
            "DROP DATABASE IF EXISTS {SCALE_DATABASE} WITH (FORCE)"
        ))
        .execute(&admin)
        .await?;
        admin.close().await;
        Ok(())
    }
}

/// `url` pointing at `database` instead of the database it names.
fn database_url(url: &str, database: &str) -> String {
    let (rest, query) = match url.split_once('?') {
        Some((rest, query)) => (rest, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority_start = rest.find("://").map_or(0, |i| i + 3);
    let path_start = rest[authority_start..]
        .find('/')
        .map_or(rest.len(), |i| authority_start + i);
    format!("{}/{database}{query}", &rest[..path_start])
}

pub(crate) async fn connect(url: &str, connections: u32) -> Result<PgPool, BoxError> {
    Ok(PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_secs(30))
        .connect(url)
        .await?)
}

/// An app served on a loopback port of the server runtime.
pub(crate) struct Served {
    pub(crate) addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Served {
    /// Serves `router`; call on the server runtime.
    pub(crate) async fn start(router: Router) -> Result<Self, BoxError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Self {
            addr,
            stop,
            serving,
        })
    }

    /// Stops serving; the load generator's connections are closed by then.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), self.serving).await;
    }
}
