//! The shop demo in a real browser: headless Chromium, driven through
//! ChromeDriver over WebDriver, against the shop as `cargo run --example
//! shop` starts it (a balancer and two instances on the memory store).
//!
//! It logs in, fills the cart and sees pages from both instances; takes one
//! instance out of rotation with the page's own button (the real
//! `PUT /actuator/health`, with the token the shop printed) and sees the
//! balancer send every page to the other; puts it back and sees it answer
//! again; and checks that the cart never lost an item. Screenshots go to
//! `<target>/tmp/browser/` (`CARGO_TARGET_TMPDIR`). A second test closes
//! Chromium and starts it again on the same profile: a shop with
//! persistent cookies ("remember me") still knows the user, one with the
//! default browser-session cookie does not.
//!
//! Chromium and ChromeDriver are Debian's `chromium` and `chromium-driver`,
//! which `scripts/services` installs.
#![cfg(all(feature = "health", feature = "profile"))]

mod shop_support;

use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt as _;
use serde_json::json;
use shop_support::{Proc, shop_command};

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Chromium's profile folder. Dropped, it stops every Chromium process
/// started with it (ChromeDriver, killed, leaves them running) and removes
/// it.
struct Profile(PathBuf);

impl Drop for Profile {
    fn drop(&mut self) {
        // The folder's name is this test run's own, so this matches only
        // the processes this test started.
        let _ = Command::new("pkill")
            .arg("-KILL")
            .arg("-f")
            .arg(format!("--user-data-dir={}", self.0.display()))
            .status();
        std::thread::sleep(Duration::from_millis(200));
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits until `url` answers at all.
async fn wait_until_up(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(url).await.is_err() {
        assert!(Instant::now() < deadline, "{url} never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The shop with two instances, and the health token it printed.
fn start_shop(port: u16) -> (Proc, String) {
    let mut child = shop_command()
        .env("SHOP_INSTANCES", "2")
        .env("PORT", port.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the shop");
    let stdout = child.stdout.take().expect("piped");
    let proc = Proc(child);
    let token = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .map(|line| line.trim().to_owned())
        .find(|line| line.len() == 64 && line.chars().all(|c| c.is_ascii_hexdigit()))
        .expect("the shop prints its health token");
    (proc, token)
}

/// ChromeDriver on a port of its own, up; its process and URL.
async fn start_driver() -> (Proc, String) {
    let driver_port = free_port();
    let process = Proc(
        Command::new("chromedriver")
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver (scripts/services installs it)"),
    );
    let driver = format!("http://127.0.0.1:{driver_port}");
    wait_until_up(&format!("{driver}/status")).await;
    (process, driver)
}

/// Chromium's options: headless, quiet, and a profile of its own.
fn capabilities(profile: &std::path::Path) -> serde_json::Map<String, serde_json::Value> {
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1000,1100",
        &format!("--user-data-dir={}", profile.display()),
    ];
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args },
    });
    match caps {
        serde_json::Value::Object(map) => map,
        _ => unreachable!("an object"),
    }
}

/// The page's `#id` text.
async fn text(browser: &Client, id: &str) -> String {
    browser
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("#{id}: {e}"))
        .text()
        .await
        .expect("text")
}

/// Adds `item` with the page's form; returns the instance that answered
/// the page after it.
async fn add(browser: &Client, item: &str) -> String {
    let input = browser
        .find(Locator::Css("input[name=item]"))
        .await
        .expect("item field");
    input.send_keys(item).await.expect("type");
    browser
        .find(Locator::Css("form[action='/cart'] button"))
        .await
        .expect("add button")
        .click()
        .await
        .expect("click");
    browser
        .wait()
        .for_element(Locator::XPath(&format!(
            "//ul[@id='cart']/li[text()='{item}']"
        )))
        .await
        .expect("the item on the page");
    text(browser, "instance").await
}

/// Clicks what `css` finds. The instances panel redraws its rows as it
/// polls, so a button found can be replaced before the click reaches it
/// (a stale element): then it is found again, at most five times more.
async fn click_fresh(browser: &Client, css: &str) -> Result<(), fantoccini::error::CmdError> {
    let mut retries = 0;
    loop {
        let clicked = match browser.find(Locator::Css(css)).await {
            Ok(button) => button.click().await,
            Err(e) => Err(e),
        };
        match clicked {
            Err(e) if e.is_stale_element_reference() && retries < 5 => retries += 1,
            done => return done,
        }
    }
}

/// Waits until the instances panel shows `name` with `ready`.
async fn wait_for_row(browser: &Client, name: &str, ready: bool) {
    let css = format!("tr[data-name='{name}'][data-ready='{ready}']");
    browser
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(&css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
}

async fn screenshot(browser: &Client, dir: &std::path::Path, name: &str) {
    let png = browser.screenshot().await.expect("screenshot");
    std::fs::write(dir.join(name), png).expect("write screenshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_scales_out_in_a_real_browser() {
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&shots).expect("screenshot folder");
    let profile = Profile(std::env::temp_dir().join(format!(
        "httpsession-chromium-{}-{}",
        std::process::id(),
        free_port()
    )));

    let port = free_port();
    let (_shop, token) = start_shop(port);
    let base = format!("http://127.0.0.1:{port}");
    let (_driver, driver) = start_driver().await;
    wait_until_up(&format!("{base}/balancer/instances")).await;

    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let browser = ClientBuilder::new(connector)
        .capabilities(capabilities(&profile.0))
        .connect(&driver)
        .await
        .expect("a Chromium session");
    // The browser is closed whatever happens, a failed assertion included.
    let outcome = AssertUnwindSafe(drive(&browser, &base, &token, &shots))
        .catch_unwind()
        .await;
    let _ = browser.close().await;
    match outcome {
        Ok(result) => result.expect("the demo works in the browser"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// The scenario; an error closes the browser before the test fails.
async fn drive(
    browser: &Client,
    base: &str,
    token: &str,
    shots: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    browser.goto(base).await?;
    // Both instances in rotation before the first page counts.
    wait_for_row(browser, "shop-1", true).await;
    wait_for_row(browser, "shop-2", true).await;
    browser
        .find(Locator::Css("input[name=user]"))
        .await?
        .send_keys("ada")
        .await?;
    browser
        .find(Locator::Css("form[action='/login'] button"))
        .await?
        .click()
        .await?;
    browser.wait().for_element(Locator::Id("user")).await?;
    assert_eq!(text(browser, "user").await, "ada");

    let mut items = Vec::new();
    let mut answered = std::collections::BTreeSet::new();
    for i in 0..4 {
        let item = format!("teapot-{i}");
        answered.insert(add(browser, &item).await);
        items.push(item);
    }
    assert_eq!(
        answered.into_iter().collect::<Vec<_>>(),
        ["shop-1", "shop-2"],
        "round robin over both instances"
    );
    assert_eq!(text(browser, "store").await, "memory");
    screenshot(browser, shots, "1-both-instances.png").await;

    // Out of rotation, from the page, with the printed token.
    let field = browser.find(Locator::Id("token")).await?;
    field.send_keys(token).await?;
    wait_for_row(browser, "shop-1", true).await;
    click_fresh(browser, "button[data-name='shop-1'][data-action='out']").await?;
    browser
        .wait()
        .for_element(Locator::XPath(
            "//p[@id='toggle-result'][contains(., 'RUNNING') and contains(., 'OUT_OF_SERVICE')]",
        ))
        .await?;
    wait_for_row(browser, "shop-1", false).await;
    screenshot(browser, shots, "2-shop-1-out-of-rotation.png").await;
    for i in 4..8 {
        let item = format!("teapot-{i}");
        assert_eq!(
            add(browser, &item).await,
            "shop-2",
            "only shop-2 in rotation"
        );
        items.push(item);
    }

    // Back in rotation: shop-1 answers again.
    wait_for_row(browser, "shop-1", false).await;
    click_fresh(browser, "button[data-name='shop-1'][data-action='in']").await?;
    wait_for_row(browser, "shop-1", true).await;
    let mut answered = std::collections::BTreeSet::new();
    for i in 8..12 {
        let item = format!("teapot-{i}");
        answered.insert(add(browser, &item).await);
        items.push(item);
    }
    assert!(answered.contains("shop-1"), "shop-1 is back: {answered:?}");
    screenshot(browser, shots, "3-back-in-rotation.png").await;

    // Every item, in order, on the last page.
    let cart = browser.find_all(Locator::Css("ul#cart li")).await?;
    let mut shown = Vec::new();
    for li in cart {
        shown.push(li.text().await?);
    }
    assert_eq!(shown, items);
    assert_eq!(text(browser, "count").await, "12");
    Ok(())
}

/// One plain shop instance with extra settings `env`, its base URL.
async fn start_plain_shop(env: &[(&str, &str)]) -> (Proc, String) {
    let port = free_port();
    let child = shop_command()
        .env("PORT", port.to_string())
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the shop");
    let base = format!("http://127.0.0.1:{port}");
    wait_until_up(&format!("{base}/actuator/health/liveness")).await;
    (Proc(child), base)
}

/// Logs in as `user` on the shop at `base` and adds `item`.
async fn log_in_and_add(browser: &Client, base: &str, user: &str, item: &str) {
    browser.goto(base).await.expect("page");
    browser
        .find(Locator::Css("input[name=user]"))
        .await
        .expect("login field")
        .send_keys(user)
        .await
        .expect("type");
    browser
        .find(Locator::Css("form[action='/login'] button"))
        .await
        .expect("login button")
        .click()
        .await
        .expect("click");
    browser
        .wait()
        .for_element(Locator::Id("user"))
        .await
        .expect("logged in");
    add(browser, item).await;
}

/// Who the shop at `base` says is logged in, `None` for nobody.
async fn logged_in_as(browser: &Client, base: &str) -> Option<String> {
    browser.goto(base).await.expect("page");
    match browser.find(Locator::Id("user")).await {
        Ok(user) => Some(user.text().await.expect("text")),
        Err(_) => None,
    }
}

/// "Remember me": a user of a shop with persistent cookies is still logged
/// in, cart and all, after the browser is closed and started again with
/// the same profile; on a shop with the default browser-session cookie the
/// same restart logs the user out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_cookie_survives_a_browser_restart() {
    let profile = Profile(std::env::temp_dir().join(format!(
        "httpsession-chromium-remember-{}-{}",
        std::process::id(),
        free_port()
    )));
    // Cookies are per host, not per port: each shop has its own name.
    let (_remembering, remembering) = start_plain_shop(&[
        ("SESSION_COOKIE_PERSISTENT", "true"),
        ("SESSION_COOKIE_NAME", "remembered"),
    ])
    .await;
    let (_forgetting, forgetting) = start_plain_shop(&[("SESSION_COOKIE_NAME", "forgotten")]).await;
    let (_driver, driver) = start_driver().await;
    let start_browser = || async {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(capabilities(&profile.0))
            .connect(&driver)
            .await
            .expect("a Chromium session")
    };

    let browser = start_browser().await;
    log_in_and_add(&browser, &remembering, "ada", "teapot").await;
    log_in_and_add(&browser, &forgetting, "bob", "cup").await;
    assert_eq!(
        logged_in_as(&browser, &forgetting).await.as_deref(),
        Some("bob")
    );
    // Closing the session quits Chromium, which writes its cookies to the
    // profile; the next session starts it again on the same profile.
    browser.close().await.expect("close the browser");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let browser = start_browser().await;
    let remembered = logged_in_as(&browser, &remembering).await;
    let cart = text(&browser, "cart").await;
    let forgotten = logged_in_as(&browser, &forgetting).await;
    let _ = browser.close().await;
    assert_eq!(
        remembered.as_deref(),
        Some("ada"),
        "remembered across the restart"
    );
    assert_eq!(cart, "teapot");
    assert_eq!(
        forgotten, None,
        "a browser-session cookie ends with the browser"
    );
}
