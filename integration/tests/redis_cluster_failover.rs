//! A Redis Cluster under load: a primary dies and its replica takes over,
//! and slots move between primaries.
//!
//! The shop example runs on a cluster of three primaries with a replica
//! each while logged-in clients fill their carts. When a primary is killed
//! with SIGKILL, every request must succeed or be answered `503` with
//! `Retry-After`, none may fail later than two seconds after the replica
//! is promoted, and with replica acknowledgement on no acknowledged item
//! may be lost. While slots move (every slot that holds a session, step
//! by step with pauses so that requests meet ASK and MOVED, then a thousand
//! slots with `redis-cli --cluster reshard`), no request may fail at all:
//! the store follows MOVED and ASK. The figures are printed.
#![cfg(all(feature = "redis", feature = "testing"))]
#![allow(clippy::unwrap_used)]

mod redis_support;
mod shop_support;

use std::time::Duration;

use redis_support::replicated_cluster::ReplicatedCluster;
use shop_support::load::{Figures, check_failover, finish, start_shop, start_shoppers, traffic};
use tower_httpsession::store::redis::RedisStore;
use tower_httpsession::store::testing::{fresh_key, record};
use tower_httpsession::store::{Created, SessionStore, Swap};

const CLIENTS: usize = 8;
/// How long after the promotion requests may still fail.
const RECOVERY: Duration = Duration::from_secs(2);

/// One test at a time: two would share the two cores and blur the timing.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn shop_env(cluster: &ReplicatedCluster, acks: Option<u32>) -> Vec<(&'static str, String)> {
    let mut env = vec![("REDIS_CLUSTER_URLS", cluster.urls().join(","))];
    if let Some(acks) = acks {
        env.push(("SESSION_REDIS_REPLICA_ACKS", acks.to_string()));
        env.push(("SESSION_REDIS_REPLICA_ACK_TIMEOUT_MS", "500".to_owned()));
    }
    env
}

async fn failover_under_load(acks: Option<u32>) -> Figures {
    let _turn = ONE_AT_A_TIME.lock().await;
    // With acknowledgement from one replica, a spare keeps writes going
    // once the first replica is promoted.
    let spares = acks.map_or(0, |n| n as usize);
    let cluster = tokio::task::spawn_blocking(move || ReplicatedCluster::start(spares))
        .await
        .unwrap();
    let (_shop, base) = start_shop(&shop_env(&cluster, acks)).await;
    let (shoppers, stop, acked) = start_shoppers(&base, CLIENTS);
    traffic(&acked, CLIENTS * 10, "before the failover").await;

    let (cluster, promoted) = cluster.fail_over().await;
    tokio::time::sleep(RECOVERY).await;
    traffic(&acked, CLIENTS * 10, "after the promotion").await;
    let shoppings = finish(shoppers, &stop).await;
    let figures = check_failover(&base, &shoppings, promoted, RECOVERY).await;
    drop(cluster);
    figures
}

fn print(label: &str, figures: &Figures) {
    eprintln!(
        "cluster failover ({label}): {} items acknowledged by {CLIENTS} clients, \
         {} answered 503, last failure {:?} after the promotion, {} acknowledged items lost",
        figures.acknowledged, figures.outages, figures.recovery, figures.lost,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_with_replica_acknowledgement_loses_no_item() {
    let figures = failover_under_load(Some(1)).await;
    print("replica acknowledgement on", &figures);
    assert_eq!(figures.lost, 0, "acknowledged items were lost");
    assert!(figures.outages > 0, "the failover went unnoticed: no 503");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_without_replica_acknowledgement_counts_the_loss() {
    let figures = failover_under_load(None).await;
    print("replica acknowledgement off", &figures);
    assert!(figures.outages > 0, "the failover went unnoticed: no 503");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_under_load_fails_no_request() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let cluster = tokio::task::spawn_blocking(|| ReplicatedCluster::start(0))
        .await
        .unwrap();
    let (_shop, base) = start_shop(&shop_env(&cluster, None)).await;
    let (shoppers, stop, acked) = start_shoppers(&base, CLIENTS);
    traffic(&acked, CLIENTS * 10, "before resharding").await;

    let started = std::time::Instant::now();
    let (cluster, keys) = tokio::task::spawn_blocking(move || {
        // Every slot that holds a session, each left half moved for a
        // while: requests meet ASK, then MOVED.
        let from = cluster.busiest_primary();
        let to = (from + 1) % 3;
        let keys = cluster.move_keyed_slots(from, to, Duration::from_millis(200));
        // And a thousand slots as an operator moves them.
        let third = (to + 1) % 3;
        let resharded = cluster.reshard(to, third, 1000);
        assert!(resharded, "redis-cli --cluster reshard failed");
        (cluster, keys)
    })
    .await
    .unwrap();
    let took = started.elapsed();
    assert!(
        keys > 0,
        "no session sat on the first primary: nothing moved"
    );
    traffic(&acked, CLIENTS * 10, "after resharding").await;
    let shoppings = finish(shoppers, &stop).await;

    let failures: Vec<_> = shoppings
        .iter()
        .flat_map(|s| s.outcomes.iter())
        .filter(|o| !o.succeeded())
        .collect();
    let mut lost = 0;
    for shopping in &shoppings {
        lost += shop_support::load::lost_items(&base, shopping).await.len();
    }
    let acknowledged: usize = shoppings.iter().map(|s| s.added.len()).sum();
    eprintln!(
        "cluster resharding: {keys} sessions' slots moved key by key and 1000 slots by \
         redis-cli in {took:?} under load, {acknowledged} items acknowledged by {CLIENTS} \
         clients, {} requests failed, {lost} items lost",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "requests failed while slots moved: {failures:?}"
    );
    assert_eq!(lost, 0, "items were lost while slots moved");
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_in_a_slot_being_moved_is_read_and_written() {
    slot_moves_under_a_session(false).await;
}

/// With replica acknowledgement, a write and its `WAIT` travel together
/// in one pipeline, which follows ASK and MOVED as a whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_replica_acknowledgement_a_session_in_a_slot_being_moved_is_written() {
    slot_moves_under_a_session(true).await;
}

/// Reads and writes a session while its slot is marked as moving, once
/// its key is on the target (ASK), and once the slot has moved (MOVED).
async fn slot_moves_under_a_session(acks: bool) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let cluster = tokio::task::spawn_blocking(|| ReplicatedCluster::start(0))
        .await
        .unwrap();
    let mut builder = RedisStore::builder_for_cluster(cluster.urls()).with_key_prefix("moving:");
    if acks {
        builder = builder.with_replica_acknowledgement(1, Duration::from_millis(500));
    }
    let store = builder.connect().await.unwrap();
    let (verifier, key) = fresh_key();
    let stored = record(&verifier, Duration::from_secs(60), &[("n", "0")]);
    assert_eq!(
        store.create(&key, &stored, None).await.unwrap(),
        Created::Stored
    );
    let slot = cluster.slot_of(&format!("moving:{{{}}}", key.as_str()));
    let from = cluster.owner(slot);
    let to = (from + 1) % 3;

    let mut n = 0;
    let mut step = async |when: &str| {
        let swap = store
            .compare_and_set(
                &key,
                &verifier,
                "n",
                Some(&n.to_string()),
                Some(&(n + 1).to_string()),
            )
            .await;
        assert!(matches!(swap, Ok(Swap::Swapped)), "{when}: {swap:?}");
        n += 1;
        let loaded = store.load(&key).await.unwrap().expect("the session");
        assert_eq!(loaded.attributes.get("n"), Some(&n.to_string()), "{when}");
        let some = store
            .load_some(&key, &["n"])
            .await
            .unwrap()
            .expect("the session");
        assert_eq!(
            some.record.attributes.get("n"),
            Some(&n.to_string()),
            "{when}"
        );
    };
    cluster.mark_moving(slot, from, to);
    step("MIGRATING, key on the source").await;
    assert_eq!(cluster.migrate_keys(slot, from, to), 1);
    step("MIGRATING, key on the target (ASK)").await;
    cluster.assign(slot, to);
    step("moved (MOVED)").await;
    store.delete(&key, &verifier).await.unwrap();
    assert!(store.load(&key).await.unwrap().is_none());
}
