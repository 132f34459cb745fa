//! The primary dies under load, and the sentinels promote its replica.
//!
//! The shop example runs on a store that finds its primary through three
//! Redis Sentinels, while logged-in clients fill their carts. The primary
//! is killed with SIGKILL. Every request must succeed or be answered `503`
//! with `Retry-After`; no request may fail later than two seconds after
//! the sentinels promote a replica (with replica acknowledgement on, after
//! the promoted replica has a replica in sync, which the writes wait for);
//! with replica acknowledgement on, no item the shop acknowledged may be
//! lost. Should the sentinels fail over twice (a loaded machine can make
//! them mark the new primary down too), the two seconds count from their
//! last change. The figures are printed.
#![cfg(all(feature = "redis", feature = "testing"))]
#![allow(clippy::unwrap_used)]

mod redis_support;
mod shop_support;

use std::time::Duration;

use redis_support::sentinel::{PRIMARY, Sentinels};
use shop_support::load::{Figures, check_failover, finish, start_shop, start_shoppers, traffic};

const CLIENTS: usize = 8;
/// How long after the promotion requests may still fail.
const RECOVERY: Duration = Duration::from_secs(2);

/// Runs the load, kills the primary, waits for the promotion and more
/// load, and checks what every request got.
async fn failover_under_load(acks: Option<u32>) -> Figures {
    // One failover at a time: two at once would share the two cores and
    // blur the recovery time.
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;

    // With acknowledgement from one replica, a second one keeps writes
    // going once the first is promoted.
    let replicas = 1 + acks.map_or(0, |n| n as usize);
    let sentinels = tokio::task::spawn_blocking(move || Sentinels::start_with_replicas(replicas))
        .await
        .unwrap();
    let mut env = vec![
        ("SESSION_REDIS_SENTINELS", sentinels.urls().join(",")),
        ("SESSION_REDIS_SENTINEL_PRIMARY", PRIMARY.to_owned()),
    ];
    if let Some(acks) = acks {
        env.push(("SESSION_REDIS_REPLICA_ACKS", acks.to_string()));
        env.push(("SESSION_REDIS_REPLICA_ACK_TIMEOUT_MS", "500".to_owned()));
    }
    let (_shop, base) = start_shop(&env).await;
    let (shoppers, stop, acked) = start_shoppers(&base, CLIENTS);
    traffic(&acked, CLIENTS * 10, "before the failover").await;

    let watch = sentinels.watch();
    let (sentinels, mut promoted) = sentinels.fail_over().await;
    let sentinels = if acks.is_some() {
        // Writes that wait for a replica can succeed only once the sentinels
        // have pointed the other replica at the new primary: recovery is
        // measured from then, not from the promotion.
        let (sentinels, synced) = sentinels.wait_for_new_replica().await;
        promoted = promoted.max(synced);
        sentinels
    } else {
        sentinels
    };
    tokio::time::sleep(RECOVERY).await;
    traffic(&acked, CLIENTS * 10, "after the promotion").await;
    let shoppings = finish(shoppers, &stop).await;
    // Should the sentinels have failed over a second time, the clock starts
    // at their last change: of roles, and with replica acknowledgement also
    // of the replicas in sync, which the writes wait for.
    let (roles, synced) = watch.last_changes();
    promoted = promoted.max(if acks.is_some() { synced } else { roles });
    let figures = check_failover(&base, &shoppings, promoted, RECOVERY).await;
    drop(sentinels);
    figures
}

fn print(label: &str, figures: &Figures) {
    eprintln!(
        "sentinel failover ({label}): {} items acknowledged by {CLIENTS} clients, \
         {} answered 503, last failure {:?} after the promotion, {} acknowledged items lost",
        figures.acknowledged, figures.outages, figures.recovery, figures.lost,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_replica_acknowledgement_no_acknowledged_item_is_lost() {
    let figures = failover_under_load(Some(1)).await;
    print("replica acknowledgement on", &figures);
    assert_eq!(figures.lost, 0, "acknowledged items were lost");
    assert!(figures.outages > 0, "the failover went unnoticed: no 503");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_replica_acknowledgement_the_loss_is_counted() {
    let figures = failover_under_load(None).await;
    print("replica acknowledgement off", &figures);
    assert!(figures.outages > 0, "the failover went unnoticed: no 503");
}
