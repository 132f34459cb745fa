//! Group commit: concurrent `apply` calls share one transaction, so one WAL
//! flush, instead of waiting for one flush each.
//!
//! A call queues its change and, if fewer batches are in flight than the
//! pool has connections, starts a task that runs batches until the queue is
//! empty. A call that finds nothing in flight therefore goes at once, alone,
//! as the single `apply` statement in autocommit: no added latency. Calls
//! that arrive while batches are in flight wait in the queue and go together
//! in the next batch, at most `max_batch` of them.
//!
//! A batch of several runs `BEGIN`, each member's own `apply` statement (the
//! same text and parameters as alone, so the same guards and answers), then
//! `COMMIT`; every caller gets its answer only after the commit succeeded.
//! Within a batch the sessions go in key order, so two batches never wait
//! for each other in a cycle. Changes of one session keep their arrival
//! order: a batch takes several changes of one session, one after the other
//! (each statement sees the ones before it, as if they had committed in
//! turn), but none of a session that a batch in flight holds, nor one
//! behind a change of its session left for a later batch. So concurrent
//! requests of one session (a page's parallel calls) share a flush too,
//! instead of waiting for the session's row lock and a flush each. If a
//! member's statement fails, the transaction is rolled back and every
//! member runs alone, in the batch's order, each getting its own answer or
//! error; if the `COMMIT` fails, nobody knows whether it committed, and
//! every member gets that error. Only the plain statement is batched: the
//! principal-binding one takes advisory locks and goes alone.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use sqlx::postgres::PgArguments;
use sqlx::query::QueryScalar;
use sqlx::{Postgres, Transaction};
use tokio::sync::oneshot;

use super::error::{from_sqlx, kind_of, timed_out};
use super::principals::BindParams;
use super::rows::millis;
use super::{BACKEND, PostgresStore};
use crate::store::{ChangeSet, Operation, StoreError, StoreKey, duration_millis};

/// The largest batch unless the builder says otherwise.
pub const DEFAULT_GROUP_COMMIT_BATCH: usize = 32;

/// A member's answer: the `apply` statement's code, or its error.
type Answer = Result<i32, StoreError>;

/// The queue of one store's plain applies.
pub(super) struct Group {
    max_batch: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Member>,
    /// Tasks running batches.
    running: usize,
    /// The sessions of the batches in flight.
    busy: HashSet<StoreKey>,
}

struct Member {
    key: StoreKey,
    changes: ChangeSet,
    reply: oneshot::Sender<Answer>,
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("max_batch", &self.max_batch)
            .finish_non_exhaustive()
    }
}

impl Group {
    pub(super) fn new(max_batch: usize) -> Self {
        Self {
            max_batch: max_batch.max(2),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the next batch: up to `max_batch` queued members, none of a
    /// session in flight, in key order and, within a session, in arrival
    /// order. The members passed over keep their places.
    fn take(&self, state: &mut State) -> Vec<Member> {
        let mut batch: Vec<Member> = Vec::new();
        let mut kept = VecDeque::with_capacity(state.queue.len());
        // Sessions with a change left for a later batch: their later
        // changes must not overtake it.
        let mut held_back = HashSet::new();
        while let Some(member) = state.queue.pop_front() {
            if batch.len() < self.max_batch
                && !state.busy.contains(&member.key)
                && !held_back.contains(&member.key)
            {
                batch.push(member);
            } else {
                held_back.insert(member.key.clone());
                kept.push_back(member);
            }
        }
        state.queue = kept;
        state.busy.extend(batch.iter().map(|m| m.key.clone()));
        // A stable sort: changes of one session stay in arrival order.
        batch.sort_by(|a, b| a.key.cmp(&b.key));
        batch
    }
}

/// The `apply` statement with its parameters: $1 to $11, and $12 to $15 for
/// the binding variant.
pub(super) fn apply_query<'q>(
    statement: &'q str,
    key: &'q StoreKey,
    changes: &'q ChangeSet,
    bind: Option<BindParams<'q>>,
) -> QueryScalar<'q, Postgres, i32, PgArguments> {
    let (set_names, set_values): (Vec<&str>, Vec<&str>) = changes.attributes_set().unzip();
    let removed: Vec<&str> = changes.attributes_removed().collect();
    let touch = changes.touch();
    let query = sqlx::query_scalar(statement)
        .bind(key.as_str())
        .bind(touch.map(|t| millis(t.last_accessed)))
        .bind(touch.and_then(|t| t.absolute_timeout).map(duration_millis))
        .bind(changes.max_inactive().map(duration_millis))
        .bind(changes.new_verifier().map(|h| h.as_bytes().as_slice()))
        .bind(set_names)
        .bind(set_values)
        .bind(removed)
        .bind(changes.required_verifier().map(|h| h.as_bytes().as_slice()))
        .bind(
            changes
                .attribute_limit()
                .map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
        )
        .bind(touch.and_then(|t| t.interval).map(duration_millis));
    match bind {
        Some(bind) => query
            .bind(bind.principal)
            .bind(bind.label)
            .bind(bind.max)
            .bind(bind.evict),
        None => query,
    }
}

impl PostgresStore {
    /// The plain `apply` of `changes`, through the group if the store has
    /// one.
    pub(super) async fn apply_plain(&self, key: &StoreKey, changes: &ChangeSet) -> Answer {
        if self.inner.group.is_none() {
            return self.apply_alone(key, changes).await;
        }
        let (reply, answer) = oneshot::channel();
        let member = Member {
            key: key.clone(),
            changes: changes.clone(),
            reply,
        };
        if self.enqueue(member) {
            let store = self.clone();
            tokio::spawn(async move { store.run_batches().await });
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::new(
                BACKEND,
                Operation::Apply,
                crate::store::StoreErrorKind::Backend,
                "the group commit task ended without an answer",
            ))
        })
    }

    /// Queues `member`; answers whether the caller should start a task to
    /// run batches.
    fn enqueue(&self, member: Member) -> bool {
        let Some(group) = &self.inner.group else {
            return false;
        };
        let mut state = group.state();
        state.queue.push_back(member);
        let limit = usize::try_from(self.pool().options().get_max_connections()).unwrap_or(1);
        if state.running < limit.max(1) {
            state.running += 1;
            true
        } else {
            false
        }
    }

    /// Runs batches until the queue holds none this task may take.
    async fn run_batches(self) {
        let Some(group) = &self.inner.group else {
            return;
        };
        let mut running = Running {
            store: &self,
            group,
            batch: Vec::new(),
            done: false,
        };
        loop {
            let batch = {
                let mut state = group.state();
                for key in running.batch.drain(..) {
                    state.busy.remove(&key);
                }
                let batch = group.take(&mut state);
                if batch.is_empty() {
                    state.running -= 1;
                    running.done = true;
                    return;
                }
                batch
            };
            running.batch = batch.iter().map(|m| m.key.clone()).collect();
            let answers = self.run_batch(&batch).await;
            for (member, answer) in batch.into_iter().zip(answers) {
                let _ = member.reply.send(answer);
            }
        }
    }

    /// One answer per member, in order, within the operation timeout.
    async fn run_batch(&self, batch: &[Member]) -> Vec<Answer> {
        let op = Operation::Apply;
        let limit = self.inner.operation_timeout;
        tokio::time::timeout(limit, self.run_unbounded(batch))
            .await
            // A write may have been under way, or its commit.
            .unwrap_or_else(|_| batch.iter().map(|_| Err(timed_out(op, limit))).collect())
    }

    async fn run_unbounded(&self, batch: &[Member]) -> Vec<Answer> {
        if let [alone] = batch {
            return vec![self.apply_alone(&alone.key, &alone.changes).await];
        }
        match self.apply_together(batch).await {
            Ok(states) => states.into_iter().map(Ok).collect(),
            Err(Failure::Commit(error)) => {
                let error = Arc::new(error);
                batch
                    .iter()
                    .map(|_| {
                        Err(StoreError::new(
                            BACKEND,
                            Operation::Apply,
                            kind_of(&error),
                            CommitFailed(Arc::clone(&error)),
                        ))
                    })
                    .collect()
            }
            // Nothing committed: each member alone, one after the other, so
            // that changes of one session keep their order.
            Err(Failure::Member) => {
                let mut answers = Vec::with_capacity(batch.len());
                for member in batch {
                    answers.push(self.apply_alone(&member.key, &member.changes).await);
                }
                answers
            }
        }
    }

    /// The batch in one transaction: the members' codes once committed.
    async fn apply_together(&self, batch: &[Member]) -> Result<Vec<i32>, Failure> {
        let plain = self.inner.sql.apply.as_str();
        let mut tx: Transaction<'_, Postgres> =
            self.pool().begin().await.map_err(|_| Failure::Member)?;
        let mut states = Vec::with_capacity(batch.len());
        for member in batch {
            let state = apply_query(plain, &member.key, &member.changes, None)
                .fetch_one(&mut *tx)
                .await
                .map_err(|_| Failure::Member)?;
            states.push(state);
        }
        tx.commit().await.map_err(Failure::Commit)?;
        Ok(states)
    }

    /// The plain `apply` statement alone, in autocommit.
    async fn apply_alone(&self, key: &StoreKey, changes: &ChangeSet) -> Answer {
        apply_query(&self.inner.sql.apply, key, changes, None)
            .fetch_one(self.pool())
            .await
            .map_err(|e| from_sqlx(Operation::Apply, e))
    }
}

/// A task running batches. Should it end any other way than by finding
/// nothing to take (a panic), its sessions are freed and, if writes are
/// queued, another task takes its place.
struct Running<'a> {
    store: &'a PostgresStore,
    group: &'a Group,
    /// The sessions of the batch in hand.
    batch: Vec<StoreKey>,
    done: bool,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.group.state();
        for key in self.batch.drain(..) {
            state.busy.remove(&key);
        }
        if state.queue.is_empty() {
            state.running -= 1;
        } else {
            drop(state);
            let store = self.store.clone();
            tokio::spawn(async move { store.run_batches().await });
        }
    }
}

/// Why a batch's transaction did not commit.
enum Failure {
    /// Beginning it or a member's statement failed: rolled back.
    Member,
    /// `COMMIT` failed: perhaps committed, perhaps not.
    Commit(sqlx::Error),
}

/// The `COMMIT` of a batch this write was part of failed; the write may or
/// may not have committed.
#[derive(Debug)]
struct CommitFailed(Arc<sqlx::Error>);

impl fmt::Display for CommitFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the commit of a group of writes failed; this write may not have committed")
    }
}

impl std::error::Error for CommitFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

#[cfg(feature = "testing")]
impl PostgresStore {
    /// The plain `apply` statement exactly as the store sends it, for the
    /// load benchmark's measurement of what the server alone can commit
    /// (pgbench running this statement). Not part of the API.
    #[doc(hidden)]
    #[must_use]
    pub fn apply_statement_text(&self) -> &str {
        &self.inner.sql.apply
    }
}
