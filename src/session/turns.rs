//! Turns for [`Session::update`](super::Session::update): requests of this
//! process that update one attribute of one session go one at a time.
//!
//! Without turns, dozens of concurrent compare-and-sets of one counter
//! mostly lose and retry; with them, each starts from the value the last one
//! wrote and wins at once. Requests of other processes still meet at the
//! store's compare-and-set.
//!
//! A turn belongs to one (session, attribute) pair, so unrelated sessions
//! and attributes never wait on each other, and the table holds an entry
//! only while a request holds or awaits that turn. A turn is held across
//! one read and one compare-and-set; [`Session::update`] gives it up before
//! it backs off, so no turn is held across a sleep.
//!
//! [`Session::update`]: super::Session::update

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::store::StoreKey;

type Slot = Arc<AsyncMutex<()>>;

/// The table size from which unused entries are swept.
const SWEEP_FROM: usize = 64;

/// The turns of one layer.
#[derive(Default)]
pub(crate) struct Turns {
    slots: Mutex<HashMap<(StoreKey, String), Slot>>,
}

impl fmt::Debug for Turns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Turns")
            .field("in_use", &self.in_use())
            .finish()
    }
}

/// A turn, held until dropped.
pub(crate) struct Turn<'a> {
    turns: &'a Turns,
    key: Option<(StoreKey, String)>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Turns {
    /// Waits for the turn of attribute `name` of session `key`.
    pub(crate) async fn take(&self, key: &StoreKey, name: &str) -> Turn<'_> {
        let id = (key.clone(), name.to_owned());
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            // A take cancelled while it waited (its request was dropped)
            // leaves an entry nobody uses: sweep those whenever the table
            // has doubled, so it stays as small as the turns in use.
            if slots.len() >= SWEEP_FROM && slots.len().is_power_of_two() {
                slots.retain(|_, slot| Arc::strong_count(slot) > 1);
            }
            slots.entry(id.clone()).or_default().clone()
        };
        let guard = slot.lock_owned().await;
        Turn {
            turns: self,
            key: Some(id),
            guard: Some(guard),
        }
    }

    /// How many (session, attribute) pairs have a request holding or
    /// awaiting their turn.
    pub(crate) fn in_use(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let Some(id) = self.key.take() else {
            return;
        };
        let mut slots = self
            .turns
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Clones are made under this lock, so the count is exact: only the
        // table's own reference left means nobody holds or awaits the turn.
        if slots
            .get(&id)
            .is_some_and(|slot| Arc::strong_count(slot) == 1)
        {
            slots.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    fn key() -> StoreKey {
        StoreKey::random().unwrap()
    }

    #[tokio::test]
    async fn one_pair_goes_one_at_a_time_and_leaves_nothing_behind() {
        let turns = Arc::new(Turns::default());
        let key = key();
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (turns, key, inside, most) =
                    (turns.clone(), key.clone(), inside.clone(), most.clone());
                tokio::spawn(async move {
                    let _turn = turns.take(&key, "n").await;
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 1);
        assert_eq!(turns.in_use(), 0, "an entry outlived its turns");
    }

    #[tokio::test(start_paused = true)]
    async fn unrelated_sessions_and_attributes_never_wait() {
        let turns = Turns::default();
        let (a, b) = (key(), key());
        let _held = turns.take(&a, "n").await;
        // Another session, and another attribute of the same session, get
        // their turns at once while the first is held.
        tokio::time::timeout(Duration::from_millis(1), turns.take(&b, "n"))
            .await
            .expect("another session waited");
        tokio::time::timeout(Duration::from_millis(1), turns.take(&a, "m"))
            .await
            .expect("another attribute waited");
        assert!(
            tokio::time::timeout(Duration::from_millis(1), turns.take(&a, "n"))
                .await
                .is_err(),
            "the same attribute did not wait"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_waits_leave_no_lasting_entries() {
        let turns = Turns::default();
        let held = key();
        let _turn = turns.take(&held, "n").await;
        for _ in 0..1_000 {
            let other = key();
            let _first = turns.take(&other, "n").await;
            // Waits for a turn someone holds, then gives up.
            let waited =
                tokio::time::timeout(Duration::from_millis(1), turns.take(&other, "n")).await;
            assert!(waited.is_err());
        }
        assert!(turns.in_use() <= 2 * SWEEP_FROM, "{}", turns.in_use());
    }
}
