//! The shop's "your sessions" panel, through the real shop process on the
//! memory store: two devices of one user are listed, this one marked and
//! labelled by its browser, the other can be ended from the page, and the
//! limit the profile sets is shown and enforced.
#![cfg(all(feature = "health", feature = "profile"))]

mod shop_support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::redirect::Policy;
use shop_support::{Proc, shop_command};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn start(limit: &[(&str, &str)]) -> (Proc, String) {
    let port = free_port();
    let child = shop_command()
        .env("PORT", port.to_string())
        .env("SESSION_COOKIE_SECURE", "false")
        .env("RUST_LOG", "error")
        .envs(limit.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the shop");
    let shop = Proc(child);
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let live = reqwest::get(format!("{base}/actuator/health/liveness")).await;
        if live.is_ok_and(|r| r.status() == StatusCode::OK) {
            break;
        }
        assert!(Instant::now() < deadline, "the shop never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (shop, base)
}

fn device(agent: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .user_agent(agent)
        .redirect(Policy::none())
        .build()
        .expect("client")
}

async fn page(client: &reqwest::Client, base: &str) -> String {
    client
        .get(format!("{base}/"))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("body")
}

async fn login(client: &reqwest::Client, base: &str, user: &str) -> StatusCode {
    client
        .post(format!("{base}/login"))
        .form(&[("user", user)])
        .send()
        .await
        .expect("login")
        .status()
}

#[tokio::test]
async fn your_sessions_lists_devices_and_ends_the_others() {
    let (_shop, base) = start(&[("SESSION_LIMIT", "3")]).await;
    let laptop = device("Firefox on Linux");
    let phone = device("Safari on iPhone");
    assert_eq!(login(&laptop, &base, "ada").await, StatusCode::SEE_OTHER);
    assert_eq!(login(&phone, &base, "ada").await, StatusCode::SEE_OTHER);

    let seen = page(&laptop, &base).await;
    assert!(
        seen.contains(r#"<span id="session-count">2</span>"#),
        "{seen}"
    );
    assert!(seen.contains("At most 3 sessions per user"), "{seen}");
    assert!(
        seen.contains(r#"<tr class="current"><td>Firefox on Linux</td>"#),
        "{seen}"
    );
    assert!(
        seen.contains(r#"<tr class="other"><td>Safari on iPhone</td>"#),
        "{seen}"
    );
    let end = seen
        .split(r#"action="/sessions/"#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("an End button");
    let ended = laptop
        .post(format!("{base}/sessions/{end}"))
        .send()
        .await
        .expect("end");
    assert_eq!(ended.status(), StatusCode::SEE_OTHER);
    assert!(
        page(&phone, &base).await.contains("Log in</button>"),
        "the phone is signed out"
    );
    let seen = page(&laptop, &base).await;
    assert!(
        seen.contains(r#"<span id="session-count">1</span>"#),
        "{seen}"
    );

    // A third and fourth device: the limit of three ends the least
    // recently used, and "sign out other sessions" ends the rest.
    for agent in ["Chrome", "Edge", "Opera"] {
        assert_eq!(
            login(&device(agent), &base, "ada").await,
            StatusCode::SEE_OTHER
        );
    }
    assert!(
        page(&laptop, &base).await.contains("Log in</button>"),
        "evicted: least recently used"
    );
    let tablet = device("Tablet");
    login(&tablet, &base, "ada").await;
    let others = tablet
        .post(format!("{base}/sessions/end-others"))
        .send()
        .await
        .expect("end others");
    assert_eq!(others.status(), StatusCode::SEE_OTHER);
    let seen = page(&tablet, &base).await;
    assert!(
        seen.contains(r#"<span id="session-count">1</span>"#),
        "{seen}"
    );
}
