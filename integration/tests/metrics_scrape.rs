//! The shop's `/metrics`, scraped over HTTP after a known sequence of
//! requests: the counts in Prometheus' text format are exactly the
//! sequence's.
//!
//! The shop runs as a process of its own, over a redis-server of the test's
//! own that the test stops for a store outage: two logins of one browser
//! (a new session, then a rotation), two items added with `update`, a
//! logout, a login of a second user, and a request while Redis is down.
#![cfg(all(
    feature = "metrics",
    feature = "redis",
    feature = "testing",
    feature = "health",
    feature = "profile"
))]

mod redis_support;
mod shop_support;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use redis_support::{RedisServer, free_port};
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use shop_support::{Proc, shop_command};

fn spawn_shop(port: u16, redis_url: &str) -> Proc {
    let child = shop_command()
        .env("PORT", port.to_string())
        .env("SESSION_STORE", "redis")
        .env("REDIS_URL", redis_url)
        .env("SESSION_COOKIE_SECURE", "false")
        .env("HEALTH_ALLOW", "127.0.0.1/32")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the shop");
    Proc(child)
}

async fn wait_live(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let live = client
            .get(format!("{base}/actuator/health/liveness"))
            .send()
            .await;
        if live.is_ok_and(|r| r.status() == StatusCode::OK) {
            return;
        }
        assert!(Instant::now() < deadline, "the shop never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `name{labels} value` lines of a scrape, by `name{labels}`.
fn samples(scrape: &str) -> HashMap<String, f64> {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or_else(|| {
        let mut known: Vec<&String> = samples.keys().collect();
        known.sort();
        panic!("no sample {series} in the scrape; it has {known:#?}")
    })
}

#[tokio::test]
async fn a_scrape_counts_exactly_what_the_requests_did() {
    let mut redis = RedisServer::start();
    let port = free_port();
    let _shop = spawn_shop(port, &redis.url());
    let base = format!("http://127.0.0.1:{port}");
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .build()
        .expect("client");
    wait_live(&browser, &base).await;

    let post =
        |path: &str, form: &[(&str, &str)]| browser.post(format!("{base}{path}")).form(form).send();
    let mut cookies = Vec::new();
    let mut remember = |response: &reqwest::Response| {
        for value in response.headers().get_all(reqwest::header::SET_COOKIE) {
            cookies.push(value.to_str().expect("ascii").to_owned());
        }
    };
    for (path, form) in [
        // A new session: created, one commit.
        ("/login", &[("user", "alice")][..]),
        // An item by `update`: one compare-and-set, no commit.
        ("/cart", &[("item", "teapot")][..]),
        // A login on the stored session: rotated, a second commit.
        ("/login", &[("user", "alice")][..]),
        ("/cart", &[("item", "kettle")][..]),
        // Logout: invalidated.
        ("/logout", &[][..]),
        // A new session for another user: created, a third commit.
        ("/login", &[("user", "bob")][..]),
    ] {
        let response = post(path, form).await.expect("request");
        assert!(
            response.status().is_redirection(),
            "{path}: {}",
            response.status()
        );
        remember(&response);
    }
    // The store goes away: the next request that needs it answers 503.
    redis.stop();
    let response = browser
        .get(format!("{base}/cart.json"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);

    let response = browser
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), StatusCode::OK);
    let scrape = response.text().await.expect("text");
    let samples = samples(&scrape);
    for (series, expected) in [
        ("httpsession_sessions_created", 2.0),
        ("httpsession_sessions_rotated", 1.0),
        ("httpsession_sessions_invalidated", 1.0),
        ("httpsession_sessions_expired", 0.0),
        ("httpsession_commits", 3.0),
        ("httpsession_commit_size_count", 3.0),
        ("httpsession_compare_and_set_attempts", 2.0),
        ("httpsession_compare_and_set_losses", 0.0),
        ("httpsession_responses_unavailable", 1.0),
        (
            r#"httpsession_store_errors{db_system_name="redis",db_operation_name="load_some",error_type="unavailable"}"#,
            1.0,
        ),
        (
            r#"db_client_operation_duration_count{db_system_name="redis",db_operation_name="create"}"#,
            2.0,
        ),
        (
            r#"db_client_operation_duration_count{db_system_name="redis",db_operation_name="compare_and_set"}"#,
            2.0,
        ),
        (
            r#"db_client_operation_duration_count{db_system_name="redis",db_operation_name="delete"}"#,
            1.0,
        ),
    ] {
        assert_eq!(value(&samples, series), expected, "{series}\n{scrape}");
    }
    // No cookie value and no user name is ever a label.
    for cookie in &cookies {
        let pair = cookie.split(';').next().expect("pair");
        let value = pair.split_once('=').map_or("", |(_, v)| v);
        if !value.is_empty() {
            assert!(!scrape.contains(value), "a cookie value in the scrape");
        }
    }
    for user in ["alice", "bob"] {
        assert!(!scrape.contains(user), "a user name in the scrape");
    }
}

#[tokio::test]
async fn a_caller_outside_the_acl_gets_no_scrape() {
    let redis = RedisServer::start();
    let port = free_port();
    let _shop = spawn_shop(port, &redis.url());
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    wait_live(&client, &base).await;
    // Allowed by address, but naming a host that is not listed.
    let response = client
        .get(format!("{base}/metrics"))
        .header(reqwest::header::HOST, "attacker.example")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(
        !response
            .text()
            .await
            .expect("text")
            .contains("httpsession_")
    );
}
