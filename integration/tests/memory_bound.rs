//! The memory store under churn stays within its bounds: many new sessions
//! a second for a bounded time, small or large, and the process's resident
//! memory stays flat once the store is full, and within a bound tied to the
//! store's byte budget all along.
//!
//! Alone in its binary so that nothing else allocates while it measures;
//! its tests take turns.
#![cfg(target_os = "linux")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::post;
use http::{Request, StatusCode, header};
use tokio::sync::Mutex;
use tower::ServiceExt as _;
use tower_httpsession::store::memory::DEFAULT_MAX_BYTES;
use tower_httpsession::{MemoryStore, Session, SessionConfig, SessionError, SessionLayer};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// One measurement at a time: resident memory is the whole process's.
static ALONE: Mutex<()> = Mutex::const_new(());

/// How far resident memory may move during the steady phase.
const FLAT: f64 = 0.10;

/// What the process may hold besides the sessions the budget allows: the
/// sessions written since the cache's last upkeep (up to 64 of them), the
/// requests in flight and the allocator's slack are allowed one more
/// budget; this is the rest (runtime, router, test harness).
const SLACK_KIB: u64 = 32 * 1024;

/// The process's resident memory, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

/// `POST /login/{bytes}` starts a session holding an attribute of that many
/// bytes.
fn app(store: Arc<MemoryStore>) -> Router {
    let config = SessionConfig::default().with_insecure_cookie_over_http();
    let layer = SessionLayer::with_config(store, config).expect("config");
    Router::new()
        .route(
            "/login/{bytes}",
            post(|Path(bytes): Path<usize>, session: Session| async move {
                session.set("profile", &"p".repeat(bytes)).await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .layer(layer)
}

/// Starts one new session holding `bytes` bytes; returns whether it got a
/// cookie.
async fn churn_once(app: &Router, bytes: u64) -> bool {
    let request = Request::post(format!("/login/{bytes}"))
        .body(Body::empty())
        .expect("request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    response.headers().contains_key(header::SET_COOKIE)
}

/// A churn run: sessions of `sizes` bytes in turn, `warm_up` of them, then
/// until they add up to twice the resident memory (enough to tell a store
/// that keeps them), for at most `most` sessions and, once they add up to
/// more than the resident memory (what the check needs), at most `steady`.
struct Churn {
    sizes: &'static [u64],
    warm_up: u64,
    steady: Duration,
    most: u64,
    /// How many sessions between two looks at the store and the memory.
    every: u64,
    /// How far resident memory may rise above where it was before the
    /// store, at any look.
    most_growth_kib: u64,
}

/// What a churn run saw.
#[derive(Debug)]
struct Seen {
    /// Resident memory before the store, at the start and end of the steady
    /// phase, and at its highest, in KiB.
    rss: [u64; 4],
    /// Sessions started in the steady phase, and how many a second.
    created: u64,
    rate: f64,
    /// The most sessions held and the most estimated bytes, at any look.
    peak_len: u64,
    peak_bytes: u64,
    /// Bytes of attribute the steady phase's sessions held in all.
    churned_kib: u64,
}

impl Churn {
    async fn run(&self, store: MemoryStore) -> Seen {
        let before = rss_kib();
        let store = Arc::new(store);
        let app = app(store.clone());
        let mut peak = before;
        let mut peak_len = 0;
        let mut peak_bytes = 0;
        let mut look = |created: u64| {
            peak_len = peak_len.max(store.len());
            peak_bytes = peak_bytes.max(store.estimated_bytes());
            let rss = rss_kib();
            peak = peak.max(rss);
            assert!(
                rss.saturating_sub(before) <= self.most_growth_kib,
                "resident memory rose from {before} KiB to {rss} KiB after {created} sessions \
                 (at most {} KiB allowed); the store: {store:?}",
                self.most_growth_kib
            );
            rss
        };

        // Warm up: fill the store several times over, so the cache, the
        // allocator and the runtime reach their steady sizes.
        let mut sizes = self.sizes.iter().copied().cycle();
        let mut next_size = || sizes.next().expect("sizes to cycle through");
        for n in 1..=self.warm_up {
            assert!(churn_once(&app, next_size()).await);
            if n % self.every == 0 {
                look(n);
            }
        }
        let start = look(self.warm_up);

        let started = Instant::now();
        let mut created: u64 = 0;
        let mut churned: u64 = 0;
        let mut end = start;
        // The time cap shortens a slow run but never below the churn the
        // check needs: a loaded machine makes the run longer, not the
        // check fail.
        let capped = |churned: u64| churned / KIB > start && started.elapsed() >= self.steady;
        while churned / KIB < 2 * start && created < self.most && !capped(churned) {
            for _ in 0..self.every {
                let bytes = next_size();
                assert!(churn_once(&app, bytes).await);
                churned += bytes;
            }
            created += self.every;
            end = look(self.warm_up + created);
        }
        Seen {
            rss: [before, start, end, peak],
            created,
            rate: created as f64 / started.elapsed().as_secs_f64(),
            peak_len,
            peak_bytes,
            churned_kib: churned / KIB,
        }
    }
}

impl Seen {
    /// Checks that the run churned enough to tell, and that resident memory
    /// stayed flat through the steady phase.
    fn assert_flat(&self, name: &str) {
        let [before, start, end, peak] = self.rss;
        let growth = (end as f64 - start as f64) / start as f64;
        println!(
            "{name}: {} sessions at {:.0}/s; at most {} sessions and {} KiB held; RSS {before} KiB \
             before the store, {start} KiB then {end} KiB ({:+.1}%), peak {peak} KiB; \
             unbounded would add {} KiB",
            self.created,
            self.rate,
            self.peak_len,
            self.peak_bytes / KIB,
            growth * 100.0,
            self.churned_kib,
        );
        // Unbounded, the sessions of the steady phase would at least double
        // the starting memory.
        assert!(
            self.churned_kib > start,
            "too little churn to tell: {} sessions at {:.0}/s",
            self.created,
            self.rate
        );
        assert!(
            growth.abs() < FLAT,
            "resident memory moved {:.1}% (from {start} KiB to {end} KiB)",
            growth * 100.0
        );
    }
}

/// Small sessions, bounded by their number well within the byte budget.
#[tokio::test(flavor = "current_thread")]
async fn small_sessions_under_churn_stay_at_the_session_bound() {
    const SESSIONS: u64 = 5_000;
    let _alone = ALONE.lock().await;
    let churn = Churn {
        sizes: &[2 * KIB],
        warm_up: 4 * SESSIONS,
        steady: Duration::from_secs(10),
        most: 1_000_000,
        every: 1_000,
        most_growth_kib: 2 * DEFAULT_MAX_BYTES / KIB + SLACK_KIB,
    };
    let seen = churn.run(MemoryStore::new(SESSIONS)).await;
    seen.assert_flat("2 KiB sessions, 5,000 at most");
    assert!(seen.peak_len <= SESSIONS, "{} sessions held", seen.peak_len);
}

/// Small sessions, bounded by the byte budget.
#[tokio::test(flavor = "current_thread")]
async fn small_sessions_under_churn_stay_within_the_byte_budget() {
    const BUDGET: u64 = 8 * MIB;
    let _alone = ALONE.lock().await;
    let churn = Churn {
        sizes: &[2 * KIB],
        // Each weighs more than its 2 KiB, so this fills the budget 4 times.
        warm_up: 4 * BUDGET / (2 * KIB),
        steady: Duration::from_secs(10),
        most: 1_000_000,
        every: 1_000,
        most_growth_kib: 2 * BUDGET / KIB + SLACK_KIB,
    };
    let store = MemoryStore::builder()
        .with_max_bytes(BUDGET)
        .with_max_sessions(u64::MAX)
        .build();
    let seen = churn.run(store).await;
    seen.assert_flat("2 KiB sessions, 8 MiB at most");
    assert!(seen.peak_bytes <= BUDGET, "{} bytes held", seen.peak_bytes);
    assert!(
        seen.peak_len < BUDGET / (2 * KIB),
        "{} sessions held",
        seen.peak_len
    );
}

/// Large sessions (256 KiB to 1 MiB) at the default bounds: the byte budget
/// holds them to 64 MiB, where the session bound alone would let 100,000 of
/// them take up to 100 GiB.
#[tokio::test(flavor = "current_thread")]
async fn large_sessions_under_churn_stay_within_the_byte_budget() {
    // The largest value whose JSON text is within the default 1 MiB limit.
    const LARGEST: u64 = MIB - 2;
    let _alone = ALONE.lock().await;
    let churn = Churn {
        sizes: &[256 * KIB, 512 * KIB, 768 * KIB, LARGEST],
        // The sessions average 640 KiB: about 100 of them fill the budget.
        warm_up: 200,
        steady: Duration::from_secs(12),
        most: 2_000,
        every: 10,
        most_growth_kib: 2 * DEFAULT_MAX_BYTES / KIB + SLACK_KIB,
    };
    let seen = churn.run(MemoryStore::default()).await;
    seen.assert_flat("256 KiB to 1 MiB sessions, 64 MiB at most");
    assert!(
        seen.peak_bytes <= DEFAULT_MAX_BYTES,
        "{} bytes held",
        seen.peak_bytes
    );
    assert!(
        seen.peak_len <= DEFAULT_MAX_BYTES / (256 * KIB),
        "{} sessions held",
        seen.peak_len
    );
}
