//! Combining for [`Session::update`](super::Session::update): concurrent
//! updates of one attribute of one session, in this process, are written
//! together.
//!
//! The first request to update an attribute *leads*: it reads the value,
//! and every request that queued behind it meanwhile is one *member* of its
//! batch. The leader passes the value it read through the members in
//! order, each applying its own closure in its own task (a closure borrows
//! from its request, so it never leaves it), and writes the last result
//! with one compare-and-set. One read and one write serve the whole batch,
//! where each request used to wait for the one before it to read and write.
//! Once it is written, the leader gathers the members that queued meanwhile
//! and writes for them too, up to three more batches: it knows the stored
//! value, since it wrote it, so each costs a compare-and-set and no read.
//! A batch is linearizable: its members' updates apply one after the other,
//! in queue order, each seeing the value the one before it produced.
//!
//! A slot belongs to one (session, cookie verifier, attribute) triple, so
//! unrelated sessions and attributes never wait on each other, and requests
//! whose cookies differ (one from before a login, one after) never share a
//! write. The table holds an entry only while a leader works. A member
//! whose leader goes away (its request was dropped) finds its channel
//! closed and queues again; a leader that finishes hands the slot to the
//! first member still queued.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{mpsc, oneshot};

use crate::store::{StoreKey, VerifierHash};

/// The most members one batch takes in; later ones wait for the next.
const BATCH_MOST: usize = 256;

/// What a slot is keyed by.
pub(crate) type SlotId = (StoreKey, [u8; 32], String);

/// The slot of attribute `name` of session `key`, for requests carrying a
/// cookie whose verifier hashes to `verifier`.
pub(crate) fn slot_id(key: StoreKey, verifier: &VerifierHash, name: &str) -> SlotId {
    (key, *verifier.as_bytes(), name.to_owned())
}

/// What a leader tells a member.
pub(crate) enum ToMember {
    /// Apply your closure to this stored value (`None`: absent) and answer
    /// the JSON of the result, or `None` if you failed (you then return
    /// your own error).
    Compute {
        input: Option<Arc<str>>,
        reply: oneshot::Sender<Option<String>>,
    },
    /// The batch is written: the attribute now holds this JSON.
    Written(Arc<str>),
    /// The session ended: nothing was written.
    Ended,
    /// The compare-and-set kept losing to other processes.
    Contended,
    /// Update without combining: the leader's session is not the stored
    /// one the cookie names (it is new, or gone).
    Alone,
    /// Lead the slot now. With a value: the leader before wrote it, and
    /// the store held it then, so start from it without reading (the
    /// compare-and-set still checks it in the store).
    Lead(Option<Arc<str>>),
}

/// The variant only: the values it carries are attribute values, which
/// never appear in `Debug` output.
impl fmt::Debug for ToMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Compute { .. } => "Compute",
            Self::Written(_) => "Written",
            Self::Ended => "Ended",
            Self::Contended => "Contended",
            Self::Alone => "Alone",
            Self::Lead(_) => "Lead",
        })
    }
}

type Outbox = mpsc::UnboundedSender<ToMember>;

/// A member's end of its channel. A member dropped (its request cancelled)
/// after the lead was handed to it, but before it took it, passes the lead
/// on: otherwise the slot would have a leader nobody runs, and every
/// request queued behind it would wait for ever.
pub(crate) struct Inbox<'a> {
    rx: mpsc::UnboundedReceiver<ToMember>,
    combiner: &'a Combiner,
    id: SlotId,
}

impl Inbox<'_> {
    /// The leader's next message; `None` if the leader went away.
    pub(crate) async fn recv(&mut self) -> Option<ToMember> {
        self.rx.recv().await
    }
}

impl Drop for Inbox<'_> {
    fn drop(&mut self) {
        // Nothing can arrive after this: the slot no longer holds the
        // sender once the lead was handed over, and a leader's batch
        // drops its senders when it finishes.
        self.rx.close();
        while let Ok(message) = self.rx.try_recv() {
            if let ToMember::Lead(written) = message {
                let mut leader = self.combiner.leader(&self.id);
                leader.hand_over(written);
                drop(leader);
            }
        }
    }
}

#[derive(Default)]
struct Slot {
    queue: VecDeque<Outbox>,
}

/// The combining slots of one layer.
#[derive(Default)]
pub(crate) struct Combiner {
    slots: Mutex<HashMap<SlotId, Slot>>,
}

impl fmt::Debug for Combiner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Combiner")
            .field("in_use", &self.in_use())
            .finish()
    }
}

/// A request's part in a slot.
pub(crate) enum Role<'a> {
    /// It leads: it reads, takes the batch in, and writes.
    Lead(Leader<'a>),
    /// It waits for its leader's messages.
    Member(Inbox<'a>),
}

impl Combiner {
    /// Joins the slot `id`: leads it if nobody does, else queues.
    pub(crate) fn join(&self, id: &SlotId) -> Role<'_> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        match slots.get_mut(id) {
            Some(slot) => {
                let (tx, rx) = mpsc::unbounded_channel();
                slot.queue.push_back(tx);
                Role::Member(Inbox {
                    rx,
                    combiner: self,
                    id: id.clone(),
                })
            }
            None => {
                slots.insert(id.clone(), Slot::default());
                Role::Lead(self.leader(id))
            }
        }
    }

    /// The leader of a slot whose lead was handed over.
    pub(crate) fn leader(&self, id: &SlotId) -> Leader<'_> {
        Leader {
            combiner: self,
            id: id.clone(),
            written: None,
        }
    }

    /// How many slots have a leader.
    pub(crate) fn in_use(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The lead of one slot, handed on when dropped.
pub(crate) struct Leader<'a> {
    combiner: &'a Combiner,
    id: SlotId,
    /// What the next leader is told the store holds.
    written: Option<Arc<str>>,
}

/// The members of a leader's batch, and the value the leader last wrote.
#[derive(Default)]
pub(crate) struct Batch {
    members: Vec<Outbox>,
    written: Option<Arc<str>>,
}

impl Leader<'_> {
    /// Tells the next leader that the store held `written` when this one
    /// last wrote it (`None`: tell it nothing, it reads).
    pub(crate) fn hand_over(&mut self, written: Option<Arc<str>>) {
        self.written = written;
    }

    /// Takes the members queued so far into `batch`.
    pub(crate) fn gather(&self, batch: &mut Batch) {
        let mut slots = self
            .combiner
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get_mut(&self.id) {
            let room = BATCH_MOST.saturating_sub(batch.members.len());
            let take = slot.queue.len().min(room);
            batch.members.extend(slot.queue.drain(..take));
        }
    }
}

impl Drop for Leader<'_> {
    /// Hands the lead to the first member still queued, or frees the slot.
    fn drop(&mut self) {
        let mut slots = self
            .combiner
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(slot) = slots.get_mut(&self.id) else {
            return;
        };
        while let Some(next) = slot.queue.pop_front() {
            if next.send(ToMember::Lead(self.written.clone())).is_ok() {
                return;
            }
        }
        slots.remove(&self.id);
    }
}

impl Batch {
    /// Passes `value` through every member in order; answers the last
    /// result. A member that failed or went away leaves the batch, and the
    /// value passes on unchanged.
    pub(crate) async fn compute(&mut self, value: String) -> String {
        let mut current: Arc<str> = value.into();
        let mut kept = Vec::with_capacity(self.members.len());
        for member in self.members.drain(..) {
            let (reply, answer) = oneshot::channel();
            let asked = member.send(ToMember::Compute {
                input: Some(current.clone()),
                reply,
            });
            if asked.is_err() {
                continue;
            }
            if let Ok(Some(json)) = answer.await {
                current = json.into();
                kept.push(member);
            }
        }
        self.members = kept;
        current.to_string()
    }

    /// Tells every member the same thing; they leave the batch.
    pub(crate) fn finish(&mut self, message: impl Fn() -> ToMember) {
        for member in self.members.drain(..) {
            let _ = member.send(message());
        }
    }

    /// Tells every member the store now holds `json`, and keeps it for the
    /// next leader.
    pub(crate) fn written(&mut self, json: &Arc<str>) {
        self.finish(|| ToMember::Written(json.clone()));
        self.written = Some(json.clone());
    }

    /// What the leader last wrote, or found written.
    pub(crate) fn take_written(&mut self) -> Option<Arc<str>> {
        self.written.take()
    }

    /// Whether the batch has no member.
    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> SlotId {
        let verifier = VerifierHash::random().unwrap();
        slot_id(StoreKey::random().unwrap(), &verifier, "n")
    }

    #[tokio::test]
    async fn the_first_leads_and_the_rest_queue_and_are_handed_the_lead() {
        let combiner = Combiner::default();
        let id = id();
        let Role::Lead(leader) = combiner.join(&id) else {
            panic!("the first request must lead");
        };
        let Role::Member(mut second) = combiner.join(&id) else {
            panic!("the second request must queue");
        };
        let Role::Member(mut third) = combiner.join(&id) else {
            panic!("the third request must queue");
        };
        let mut batch = Batch::default();
        leader.gather(&mut batch);
        assert!(!batch.is_empty());
        let computing = tokio::spawn(async move {
            let value = batch.compute("0".to_owned()).await;
            batch.finish(|| ToMember::Written(Arc::from("2")));
            value
        });
        for inbox in [&mut second, &mut third] {
            let Some(ToMember::Compute { input, reply }) = inbox.recv().await else {
                panic!("a member is asked to compute");
            };
            let n: u32 = input.unwrap().parse().unwrap();
            reply.send(Some((n + 1).to_string())).unwrap();
        }
        assert_eq!(
            computing.await.unwrap(),
            "2",
            "each member saw the one before"
        );
        assert!(matches!(second.recv().await, Some(ToMember::Written(_))));
        drop(leader);
        assert_eq!(combiner.in_use(), 0, "nobody queued: the slot is freed");
    }

    #[tokio::test]
    async fn a_dropped_leader_hands_over_and_skips_members_gone() {
        let combiner = Combiner::default();
        let id = id();
        let Role::Lead(leader) = combiner.join(&id) else {
            panic!("lead");
        };
        let Role::Member(gone) = combiner.join(&id) else {
            panic!("queue");
        };
        let Role::Member(mut next) = combiner.join(&id) else {
            panic!("queue");
        };
        drop(gone);
        drop(leader);
        assert!(matches!(next.recv().await, Some(ToMember::Lead(None))));
        assert_eq!(combiner.in_use(), 1, "the slot now has the new leader");
        drop(combiner.leader(&id));
        assert_eq!(combiner.in_use(), 0);
    }

    #[tokio::test]
    async fn a_member_dropped_with_the_lead_in_its_inbox_passes_it_on() {
        let combiner = Combiner::default();
        let id = id();
        let Role::Lead(leader) = combiner.join(&id) else {
            panic!("lead");
        };
        let Role::Member(cancelled) = combiner.join(&id) else {
            panic!("queue");
        };
        let Role::Member(mut next) = combiner.join(&id) else {
            panic!("queue");
        };
        // The lead goes to the first member, whose request is cancelled
        // before it takes it.
        drop(leader);
        drop(cancelled);
        let handed = tokio::time::timeout(std::time::Duration::from_secs(1), next.recv()).await;
        assert!(
            matches!(handed, Ok(Some(ToMember::Lead(None)))),
            "the lead reached the next member"
        );
        drop(combiner.leader(&id));
        drop(next);
        assert_eq!(combiner.in_use(), 0, "the slot is freed");
    }

    #[test]
    fn a_message_s_debug_output_holds_no_attribute_value() {
        let value: Arc<str> = Arc::from("\"a secret value\"");
        let (reply, _answer) = oneshot::channel();
        let messages = [
            ToMember::Compute {
                input: Some(value.clone()),
                reply,
            },
            ToMember::Written(value.clone()),
            ToMember::Lead(Some(value)),
        ];
        for message in &messages {
            let shown = format!("{message:?}");
            assert!(!shown.contains("secret"), "{shown}");
        }
    }

    #[tokio::test]
    async fn unrelated_slots_never_wait() {
        let combiner = Combiner::default();
        let (a, b) = (id(), id());
        let _lead = combiner.join(&a);
        assert!(matches!(combiner.join(&b), Role::Lead(_)));
        let other_name = (a.0.clone(), a.1, "m".to_owned());
        assert!(matches!(combiner.join(&other_name), Role::Lead(_)));
    }
}
