//! The session layer over a real TCP server, with cookie-keeping clients.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{app, bare, browser, config, counting, pair, rewind, serve, set_cookie};
use reqwest::StatusCode;
use reqwest::header::COOKIE;
use tower_httpsession::{MemoryStore, SessionId, SessionLayer, SessionStore};

async fn server_with(store: impl SessionStore) -> String {
    let layer = SessionLayer::with_config(store, config()).expect("config");
    format!("http://{}", serve(app(layer)).await)
}

/// Starts a session holding `name=value` and returns its cookie pair.
async fn started(base: &str, name: &str, value: &str) -> String {
    let response = bare()
        .post(format!("{base}/set/{name}/{value}"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    pair(&set_cookie(&response).expect("a new session sends its cookie"))
}

/// `GET /get/a` with `cookie` as the whole `Cookie` header; asserts a 200.
async fn get_a(
    client: &reqwest::Client,
    base: &str,
    cookie: reqwest::header::HeaderValue,
    what: &str,
) -> reqwest::Response {
    let response = client
        .get(format!("{base}/get/a"))
        .header(COOKIE, cookie)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK, "{what}");
    response
}

#[tokio::test]
async fn no_cookie_until_an_attribute_is_set() {
    let store = counting();
    let base = server_with(store.clone()).await;
    let client = browser();

    let response = client
        .get(format!("{base}/untouched"))
        .send()
        .await
        .unwrap();
    assert!(set_cookie(&response).is_none());
    assert_eq!(
        store.counts(),
        (0, 0),
        "an untouched session costs no store call"
    );

    let response = client.get(format!("{base}/get/x")).send().await.unwrap();
    assert!(set_cookie(&response).is_none());
    let response = client.get(format!("{base}/is_new")).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "true");
    assert_eq!(
        store.counts(),
        (0, 0),
        "no cookie: nothing to load, nothing to write"
    );
    assert!(store.inner.is_empty());

    let response = client.post(format!("{base}/set/x/1")).send().await.unwrap();
    let cookie = set_cookie(&response).expect("cookie once an attribute exists");
    for part in ["SESSION=", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    let response = client.get(format!("{base}/get/x")).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "\"1\"");
    let response = client.get(format!("{base}/is_new")).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "false");
}

#[tokio::test]
async fn writes_only_what_changed() {
    let store = counting();
    let base = server_with(store.clone()).await;
    let cookie = started(&base, "a", "1").await;
    let client = bare();
    let before = store.counts();

    // Read-only inside the touch interval: one load, no write.
    let response = client
        .get(format!("{base}/get/a"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "\"1\"");
    assert_eq!(store.counts(), (before.0 + 1, before.1));

    // Setting a value the request read, unchanged, is no change.
    let response = client
        .post(format!("{base}/read-set/a/1"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert!(set_cookie(&response).is_none());
    assert_eq!(store.counts(), (before.0 + 2, before.1));

    // A real change after a read: one load and one write.
    client
        .post(format!("{base}/read-set/a/2"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(store.counts(), (before.0 + 3, before.1 + 1));

    // A set without a read: no load, one write, and it lands.
    let response = client
        .post(format!("{base}/set/a/3"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert!(set_cookie(&response).is_none());
    assert_eq!(store.counts(), (before.0 + 3, before.1 + 2));
    let response = client
        .get(format!("{base}/get/a"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "\"3\"");
}

#[tokio::test]
async fn a_set_without_a_read_on_a_dead_session_starts_a_new_one() {
    let store = MemoryStore::default();
    let base = server_with(store.clone()).await;
    let cookie = started(&base, "a", "1").await;
    let id =
        SessionId::from_cookie_value(cookie.trim_start_matches("SESSION=")).expect("cookie value");
    let old = id.store_key();
    store.delete(&old, &id.verifier_hash()).await.unwrap();

    let response = bare()
        .post(format!("{base}/set/b/2"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let fresh = pair(&set_cookie(&response).expect("a new session sends its cookie"));
    assert_ne!(fresh, cookie);
    assert!(
        store.load(&old).await.unwrap().is_none(),
        "the dead session came back"
    );
    for (name, expected) in [("a", ""), ("b", "\"2\"")] {
        let response = bare()
            .get(format!("{base}/get/{name}"))
            .header(COOKIE, &fresh)
            .send()
            .await
            .unwrap();
        assert_eq!(response.text().await.unwrap(), expected, "{name}");
    }
}

#[tokio::test]
async fn a_request_reads_only_the_attributes_it_touches() {
    let store = counting();
    let base = server_with(store.clone()).await;
    let cookie = started(&base, "a", "1").await;
    let client = bare();
    for i in 0..20 {
        client
            .post(format!("{base}/set/big{i}/{}", "x".repeat(100)))
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap();
    }
    let whole = |s: &common::Counting| s.whole_loads.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(whole(&store), 0, "get and set read only their attribute");
    let response = client
        .get(format!("{base}/get/big3"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap().len(), 102);
    client
        .post(format!("{base}/incr/n"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(whole(&store), 0, "update reads only its attribute");
    let names = client
        .get(format!("{base}/names"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(names.split(',').count(), 22);
    assert_eq!(
        whole(&store),
        1,
        "listing the names reads the whole session"
    );
}

#[tokio::test]
async fn sixteen_concurrent_writers_keep_all_sixteen() {
    let base = server_with(MemoryStore::default()).await;
    let cookie = started(&base, "base", "0").await;
    let client = bare();
    let writes = (0..16).map(|i| {
        let request = client
            .post(format!("{base}/set/k{i}/{i}"))
            .header(COOKIE, &cookie)
            .send();
        async move { request.await.expect("request").status() }
    });
    for status in futures_util::future::join_all(writes).await {
        assert_eq!(status, StatusCode::OK);
    }
    let names = client
        .get(format!("{base}/names"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let names: Vec<&str> = names.split(',').collect();
    for i in 0..16 {
        assert!(
            names.contains(&format!("k{i}").as_str()),
            "k{i} lost: {names:?}"
        );
    }
}

/// Sends 32 concurrent increments of `n` in the session of `cookie` and
/// returns what `n` holds afterwards.
async fn thirty_two_increments(base: &str, cookie: &str) -> String {
    let client = bare();
    let increments = (0..32).map(|_| {
        let request = client
            .post(format!("{base}/incr/n"))
            .header(COOKIE, cookie)
            .send();
        async move {
            let response = request.await.expect("request");
            assert_eq!(response.status(), StatusCode::OK);
            let body = response.text().await.expect("body");
            body.parse::<u32>().expect("a count")
        }
    });
    // Each update saw the value the one before it produced: every count
    // from 1 to 32 is answered exactly once.
    let mut answered = futures_util::future::join_all(increments).await;
    answered.sort_unstable();
    assert_eq!(answered, (1..=32).collect::<Vec<u32>>());
    client
        .get(format!("{base}/get/n"))
        .header(COOKIE, cookie)
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_in_one_process_are_combined() {
    let store = counting();
    store.latency_us.store(300, Ordering::SeqCst);
    let base = server_with(store.clone()).await;
    let cookie = started(&base, "base", "0").await;
    assert_eq!(thirty_two_increments(&base, &cookie).await, "32");
    // Updates that queued while one was reading and writing were applied
    // in turn to its value and written together: far fewer swaps than
    // updates, none lost (racing swaps would mostly miss and retry, and
    // updates taking turns would take one each).
    let swaps = store.swaps.load(Ordering::SeqCst);
    let loads = store.loads.load(Ordering::SeqCst);
    println!("32 concurrent updates took {swaps} compare-and-sets and {loads} loads");
    assert!(swaps <= 16, "32 updates took {swaps} compare-and-sets");
}

/// 16 clients of one session, each sending its next increment as soon as
/// the last is answered, 8 each, to `bases` in turn (one instance, or
/// several sharing a store): every count from 1 to 128 is answered once.
async fn sustained_increments(bases: &[String], cookie: &str) -> u32 {
    const CLIENTS: usize = 16;
    const EACH: usize = 8;
    let client = bare();
    let clients = (0..CLIENTS).map(|c| {
        let client = client.clone();
        async move {
            let mut answered = Vec::new();
            for i in 0..EACH {
                let base = &bases[(c + i) % bases.len()];
                let response = client
                    .post(format!("{base}/incr/n"))
                    .header(COOKIE, cookie)
                    .send()
                    .await
                    .expect("request");
                assert_eq!(response.status(), StatusCode::OK);
                let body = response.text().await.expect("body");
                answered.push(body.parse::<u32>().expect("a count"));
            }
            answered
        }
    });
    let mut answered: Vec<u32> = futures_util::future::join_all(clients)
        .await
        .into_iter()
        .flatten()
        .collect();
    answered.sort_unstable();
    let total = u32::try_from(CLIENTS * EACH).expect("a small count");
    assert_eq!(answered, (1..=total).collect::<Vec<u32>>());
    total
}

/// Increments one counter through the layer over a [`counting`] store
/// that holds each compare-and-set until the test lets it go: first one
/// request, then, for each `queued[i]`, that many more sent while the
/// `i + 1`-th compare-and-set is held, given 300 ms to queue behind it
/// before it goes on. Answers the counts the requests got, sorted, and the
/// reads and compare-and-sets they took.
async fn increments_queued_behind_held_swaps(queued: &[usize]) -> (Vec<u32>, usize, usize) {
    let store = counting();
    let base = server_with(store.clone()).await;
    let cookie = started(&base, "base", "0").await;
    let (loads_before, _) = store.counts();
    let swaps_before = store.swaps.load(Ordering::SeqCst);
    let client = bare();
    let increment = || {
        let request = client
            .post(format!("{base}/incr/n"))
            .header(COOKIE, &cookie)
            .send();
        tokio::spawn(async move {
            let response = request.await.expect("request");
            assert_eq!(response.status(), StatusCode::OK);
            let body = response.text().await.expect("body");
            body.parse::<u32>().expect("a count")
        })
    };

    store.swaps_one_by_one.store(true, Ordering::SeqCst);
    let mut requests = vec![increment()];
    for (held, &more) in (1..).zip(queued) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.swaps.load(Ordering::SeqCst) - swaps_before < held {
            assert!(
                std::time::Instant::now() < deadline,
                "no compare-and-set {held}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        requests.extend((0..more).map(|_| increment()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        store.swap_permits.0.add_permits(1);
    }
    // The compare-and-sets still to come go through (one may be waiting).
    store.swaps_one_by_one.store(false, Ordering::SeqCst);
    store.swap_permits.0.add_permits(1);

    let mut answered = Vec::new();
    for request in requests {
        answered.push(request.await.expect("the request task"));
    }
    answered.sort_unstable();
    let loads = store.counts().0 - loads_before;
    let swaps = store.swaps.load(Ordering::SeqCst) - swaps_before;
    (answered, loads, swaps)
}

/// A leader that has written its batch writes on for the members that
/// queued meanwhile, against the value it wrote, without reading it again:
/// two updates queued behind a compare-and-set in flight cost one more
/// compare-and-set and no read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_writes_on_for_those_queued_without_reading_again() {
    let (answered, loads, swaps) = increments_queued_behind_held_swaps(&[2]).await;
    assert_eq!(answered, [1, 2, 3], "every count answered once");
    println!("3 increments: {swaps} compare-and-sets, {loads} reads");
    // Before, the queued batch was read again by a new leader: 2 reads.
    assert_eq!((loads, swaps), (1, 2), "(reads, compare-and-sets)");
}

/// A leader writes on for at most three more batches, then hands the lead
/// to the next request queued, with the value it wrote: the new leader
/// starts its compare-and-set from it, without reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_leader_starts_from_what_the_last_one_wrote() {
    // Each request queues while the one before is held: the leader writes
    // its own batch and three more (the most it writes on), and the fifth
    // is queued when it hands the lead on.
    let (answered, loads, swaps) = increments_queued_behind_held_swaps(&[1, 1, 1, 1]).await;
    assert_eq!(answered, [1, 2, 3, 4, 5], "every count answered once");
    // A new leader that read first would make it 2 reads.
    assert_eq!((loads, swaps), (1, 5), "(reads, compare-and-sets)");
}

/// Two instances over one store: their leaders' compare-and-sets meet in
/// the store, and a batch whose value another instance changed goes on
/// alone; no increment is lost or counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_updates_of_two_instances_keep_every_increment() {
    let store = counting();
    store.latency_us.store(300, Ordering::SeqCst);
    let bases = [
        server_with(store.clone()).await,
        server_with(store.clone()).await,
    ];
    // The stores' calls meet at random: three sessions, three chances.
    for round in 0..3 {
        let cookie = started(&bases[0], "base", "0").await;
        let swaps_before = store.swaps.load(Ordering::SeqCst);
        let total = sustained_increments(&bases, &cookie).await;
        let swaps = store.swaps.load(Ordering::SeqCst) - swaps_before;
        println!("round {round}: {total} increments on two instances, {swaps} compare-and-sets");
    }
}

#[tokio::test]
async fn thirty_two_concurrent_updates_keep_every_increment() {
    let base = server_with(MemoryStore::default()).await;
    let cookie = started(&base, "base", "0").await;
    assert_eq!(thirty_two_increments(&base, &cookie).await, "32");
}

#[tokio::test]
async fn invalidate_racing_a_set_leaves_the_session_invalidated() {
    let store = Arc::new(MemoryStore::default());
    let base = server_with(store.clone()).await;
    let client = bare();
    for round in 0..20 {
        let cookie = started(&base, "base", "0").await;
        let set = client
            .post(format!("{base}/set/late/{round}"))
            .header(COOKIE, &cookie)
            .send();
        let invalidate = client
            .post(format!("{base}/invalidate"))
            .header(COOKIE, &cookie)
            .send();
        let (set, invalidate) = tokio::join!(set, invalidate);
        assert_eq!(set.unwrap().status(), StatusCode::OK);
        let invalidate = invalidate.unwrap();
        assert_eq!(invalidate.status(), StatusCode::OK);
        let removal = set_cookie(&invalidate).expect("invalidate removes the cookie");
        assert!(removal.contains("Max-Age=0"), "{removal}");

        let value = cookie.split_once('=').unwrap().1;
        let key = SessionId::from_cookie_value(value).unwrap().store_key();
        assert!(
            store.load(&key).await.unwrap().is_none(),
            "round {round}: the invalidated session came back"
        );
    }
}

#[tokio::test]
async fn malformed_cookies_get_a_fresh_session() {
    let base = server_with(MemoryStore::default()).await;
    let client = bare();
    let forged = format!(
        "SESSION={}",
        SessionId::generate().unwrap().expose_cookie_value()
    );
    let huge = format!("SESSION={}", "A".repeat(60 * 1024));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", b"SESSION=".to_vec()),
        ("no value", b"SESSION".to_vec()),
        ("garbage", b"SESSION=%%%; ;;=;".to_vec()),
        ("huge", huge.into_bytes()),
        ("non-ascii", "SESSION=žluťoučký".as_bytes().to_vec()),
        ("forged", forged.into_bytes()),
        ("duplicate", b"SESSION=x; SESSION=y".to_vec()),
    ];
    for (what, header) in cases {
        let header = reqwest::header::HeaderValue::from_bytes(&header).unwrap();
        let response = client
            .post(format!("{base}/set/a/1"))
            .header(COOKIE, header.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{what}");
        let cookie = set_cookie(&response).unwrap_or_else(|| panic!("{what}: no new cookie"));
        let value = pair(&cookie).split_once('=').unwrap().1.to_owned();
        assert!(SessionId::from_cookie_value(&value).is_some(), "{what}");

        let response = get_a(&client, &base, header, what).await;
        assert_eq!(
            response.text().await.unwrap(),
            "",
            "{what}: must not see a session"
        );
    }
}

#[tokio::test]
async fn odd_bytes_in_other_cookies_never_hide_the_session() {
    let base = server_with(MemoryStore::default()).await;
    let session = started(&base, "a", "1").await;
    let client = bare();
    // What browsers send as-is: cookies set by other apps on the host, with
    // raw UTF-8 or Latin-1 bytes, tabs, empty pairs and pairs without `=`.
    let others: [(&str, &[u8]); 7] = [
        ("UTF-8", "lang=Español".as_bytes()),
        ("Latin-1", b"lang=Espa\xf1ol"),
        ("obs-text name", b"\xc3\xa9t\xe9=\x80\xff"),
        ("tab", b"note=a\tb"),
        ("empty pairs", b";;"),
        ("no equals", b"flag"),
        ("no name", b"=x"),
    ];
    for (what, other) in others {
        for header in [
            [other, b"; ", session.as_bytes()].concat(),
            [session.as_bytes(), b";", other].concat(),
            [other, b";;", session.as_bytes(), b"; ", other].concat(),
        ] {
            let header = reqwest::header::HeaderValue::from_bytes(&header).unwrap();
            let response = get_a(&client, &base, header, what).await;
            assert!(set_cookie(&response).is_none(), "{what}: cookie replaced");
            assert_eq!(response.text().await.unwrap(), "\"1\"", "{what}");
        }
    }
}

#[tokio::test]
async fn unknown_cookie_on_read_is_removed() {
    let base = server_with(MemoryStore::default()).await;
    let forged = format!(
        "SESSION={}",
        SessionId::generate().unwrap().expose_cookie_value()
    );
    let response = bare()
        .get(format!("{base}/get/a"))
        .header(COOKIE, forged)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let removal = set_cookie(&response).expect("stale cookie is removed");
    assert!(
        removal.contains("Max-Age=0") && removal.contains("Path=/"),
        "{removal}"
    );
}

#[tokio::test]
async fn change_id_kills_the_old_cookie() {
    let base = server_with(MemoryStore::default()).await;
    let client = bare();
    let old = started(&base, "cart", "teapot").await;
    let response = client
        .post(format!("{base}/login/alice"))
        .header(COOKIE, &old)
        .send()
        .await
        .unwrap();
    let new = pair(&set_cookie(&response).expect("a new id is sent"));
    assert_ne!(new, old);

    let get = |cookie: String, name: &'static str| {
        let request = client
            .get(format!("{base}/get/{name}"))
            .header(COOKIE, cookie)
            .send();
        async move { request.await.unwrap().text().await.unwrap() }
    };
    assert_eq!(get(new.clone(), "user").await, "\"alice\"");
    assert_eq!(
        get(new, "cart").await,
        "\"teapot\"",
        "attributes survive the id change"
    );
    assert_eq!(
        get(old, "cart").await,
        "",
        "the old cookie must stop working"
    );
}

#[tokio::test]
async fn logout_then_replay_gets_a_fresh_session() {
    let base = server_with(MemoryStore::default()).await;
    let client = bare();
    let cookie = started(&base, "user", "alice").await;
    client
        .post(format!("{base}/invalidate"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    let response = client
        .get(format!("{base}/get/user"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "");
}

#[tokio::test]
async fn idle_sessions_expire() {
    let store = Arc::new(MemoryStore::default());
    let layer = SessionLayer::with_config(
        store.clone(),
        config().with_max_inactive_interval(Duration::from_secs(60)),
    )
    .unwrap();
    let base = format!("http://{}", serve(app(layer)).await);
    let cookie = started(&base, "a", "1").await;
    let client = bare();

    // Idle for less than the timeout: still there, and the read touches it.
    rewind(&*store, &cookie, Duration::from_secs(40)).await;
    let response = get_a(
        &client,
        &base,
        cookie.parse().unwrap(),
        "within the timeout",
    )
    .await;
    assert!(set_cookie(&response).is_none());
    assert_eq!(response.text().await.unwrap(), "\"1\"");

    // Idle for longer than the timeout since that read: gone.
    rewind(&*store, &cookie, Duration::from_secs(70)).await;
    let response = get_a(&client, &base, cookie.parse().unwrap(), "past the timeout").await;
    assert!(set_cookie(&response).is_some_and(|c| c.contains("Max-Age=0")));
    assert_eq!(response.text().await.unwrap(), "");
}

#[tokio::test]
async fn absolute_timeout_ends_an_active_session() {
    let store = Arc::new(MemoryStore::default());
    let layer = SessionLayer::with_config(
        store.clone(),
        config()
            .with_max_inactive_interval(Duration::from_secs(600))
            .with_absolute_timeout(Duration::from_secs(60)),
    )
    .unwrap();
    let base = format!("http://{}", serve(app(layer)).await);
    let cookie = started(&base, "a", "1").await;
    let client = bare();
    // Active every 25 s: the first two writes land in the same session.
    for active in 1..=3 {
        rewind(&*store, &cookie, Duration::from_secs(25)).await;
        let response = client
            .post(format!("{base}/set/b/2"))
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        if active < 3 {
            assert!(set_cookie(&response).is_none(), "write {active}");
        }
    }
    let response = client
        .get(format!("{base}/get/a"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.text().await.unwrap(),
        "",
        "activity must not extend past the absolute timeout"
    );
}

/// Requests dropped while they lead or wait in a combined update (a client
/// that hangs up) leave the others to finish: nobody waits for ever, and
/// the count is at least what the finished requests were told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_updates_leave_the_others_to_finish() {
    let store = counting();
    store.latency_us.store(500, Ordering::SeqCst);
    let layer = SessionLayer::with_config(store.clone(), config()).unwrap();
    let app = app(layer);
    let start = common::oneshot(&app, "POST", "/set/base/0", &[]).await;
    let cookie = pair(&start.set_cookie.unwrap());
    let tasks: Vec<_> = (0..48)
        .map(|_| {
            let (app, cookie) = (app.clone(), cookie.clone());
            tokio::spawn(async move {
                common::oneshot(&app, "POST", "/incr/n", &[(http::header::COOKIE, &cookie)]).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(2)).await;
    for task in tasks.iter().step_by(3) {
        task.abort();
    }
    let mut highest = 0;
    let mut finished = 0;
    for task in tasks {
        let Ok(reply) = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("no update waits for ever")
        else {
            continue;
        };
        assert_eq!(reply.status, http::StatusCode::OK);
        highest = highest.max(reply.body.parse::<u32>().unwrap());
        finished += 1;
    }
    let reply = common::oneshot(&app, "GET", "/get/n", &[(http::header::COOKIE, &cookie)]).await;
    let stored: u32 = reply.body.parse().unwrap();
    assert!(finished >= 32, "{finished} finished");
    assert!(
        stored >= highest && stored <= 48,
        "stored {stored}, highest answer {highest}"
    );
}
