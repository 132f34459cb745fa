//! A visit counter whose sessions live in Redis, so any number of instances
//! behind a balancer share them.
//!
//! ```text
//! cargo run --features redis --example redis
//! REDIS_URL=redis://:password@10.0.0.5:6379/0 PORT=8080 cargo run --features redis --example redis
//! REDIS_CLUSTER_URLS=redis://127.0.0.1:7000,redis://127.0.0.1:7001 \
//!     cargo run --features redis --example redis
//! curl -c jar -b jar http://127.0.0.1:3000/   # 1, 2, 3, ...
//! ```
//!
//! The cookie is sent without `Secure` so that curl keeps it over plain
//! HTTP; keep the default in production. Stop Redis while it runs: requests
//! get 503 with `Retry-After`, and work again once Redis is back.

#[cfg(not(feature = "redis"))]
fn main() {
    eprintln!("this example needs the redis feature: cargo run --features redis --example redis");
}

#[cfg(feature = "redis")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    app::main()
}

#[cfg(feature = "redis")]
mod app {
    use std::net::SocketAddr;
    use std::time::Duration;

    use axum::Router;
    use axum::routing::get;
    use tower_httpsession::store::redis::RedisStore;
    use tower_httpsession::{Session, SessionConfig, SessionError, SessionLayer};

    async fn visit(session: Session) -> Result<String, SessionError> {
        let n = session
            .update("visits", |n: Option<u64>| n.unwrap_or(0) + 1)
            .await?;
        Ok(format!("visit {n}\n"))
    }

    #[tokio::main]
    pub(crate) async fn main() -> Result<(), Box<dyn std::error::Error>> {
        let builder = RedisStore::builder()
            .with_key_prefix("example:session:")
            .with_command_timeout(Duration::from_millis(500));
        let store = match std::env::var("REDIS_CLUSTER_URLS") {
            Ok(urls) => builder.connect_cluster(urls.split(',')).await?,
            Err(_) => {
                let url = std::env::var("REDIS_URL")
                    .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
                builder.connect(&url).await?
            }
        };
        println!("sessions in {store:?}");

        let config = SessionConfig::default().with_insecure_cookie_over_http();
        let app = Router::new()
            .route("/", get(visit))
            .layer(SessionLayer::with_config(store, config)?);

        let port: u16 = std::env::var("PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(3000);
        let listener =
            tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
        println!("listening on http://{}", listener.local_addr()?);
        axum::serve(listener, app).await?;
        Ok(())
    }
}
