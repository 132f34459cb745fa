//! The principal index on Redis: which sessions each principal holds.
//! The layout, the order of writes, tombstones and pruning are described
//! in the [store's module docs](super).

use std::collections::HashSet;
use std::time::Duration;

use ::redis::Value;

use super::index_ttl::index_deadline;
use super::members::{Settle, listed, scored, strings};
use super::{RedisStore, codec, index_scripts, scripts, unexpected};
use crate::store::{
    Applied, ChangeSet, Created, LimitPolicy, Operation, Principal, PrincipalSession, Record,
    Revocation, SessionLimit, StoreError, StoreKey, duration_millis, now, unix_millis,
};

/// How long a binding may take between entering the index and writing the
/// session: a listing leaves younger entries whose session it does not
/// find alone.
pub(super) const GRACE: Duration = Duration::from_secs(30);
/// How long a tombstone keeps a binding still on its way from writing.
pub(super) const TOMBSTONE_TTL: Duration = Duration::from_secs(60);
/// How many times a binding under a refusing limit checks a full index's
/// members, retrying the admission without those found ended.
const ADMIT_ATTEMPTS: usize = 3;
/// How many times a binding apply raises its index's expiry and writes
/// again (once is enough unless the index expired meanwhile).
const RAISE_ATTEMPTS: usize = 2;

/// What [`ADMIT`](index_scripts::ADMIT) answered.
enum Admission {
    Entered,
    Over(Vec<String>),
    Full(Vec<String>),
    PruneDue(Vec<String>),
}

impl RedisStore {
    pub(super) fn index_keys(&self, principal: &Principal) -> [String; 2] {
        let index = format!(
            "{}principal:{{{}}}",
            self.inner.key_prefix,
            principal.digest_hex()
        );
        let mark = format!("{index}:mark");
        [index, mark]
    }

    pub(super) fn tombstone(&self, key: &StoreKey) -> String {
        format!("{}:evicted", self.key(key))
    }

    /// Creates a bound record: see the [module docs](self).
    pub(super) async fn create_bound(
        &self,
        key: &StoreKey,
        record: &Record,
        principal: &Principal,
        limit: Option<&SessionLimit>,
    ) -> Result<Created, StoreError> {
        let op = Operation::Create;
        let deadline = index_deadline(record.expires_at, record.max_inactive);
        self.note_deadline(deadline, record.last_accessed);
        let Some((admission, _)) = self.enter(op, principal, key, limit, deadline).await? else {
            return Ok(Created::LimitReached);
        };
        let args = codec::create_args(record, self.split());
        let keys = [self.key(key), self.tombstone(key)];
        match self
            .invoke_keys(op, &scripts::CREATE_BOUND, &keys, &args)
            .await?
        {
            Value::Int(1) => {}
            Value::Int(0) => return Ok(Created::KeyTaken),
            Value::Int(2) => return Ok(Created::Evicted),
            _ => return Err(unexpected(op)),
        }
        if self
            .after_write(op, principal, key, limit, admission)
            .await?
        {
            return Ok(Created::Evicted);
        }
        Ok(Created::Stored)
    }

    /// Applies a change set that binds the session: see the
    /// [module docs](self).
    pub(super) async fn apply_bound(
        &self,
        key: &StoreKey,
        changes: &ChangeSet,
        principal: &Principal,
        limit: Option<&SessionLimit>,
    ) -> Result<Applied, StoreError> {
        let op = Operation::Apply;
        // The expiry the session will have is known only when the change
        // set touches it and sets its idle timeout.
        let accessed = changes.touch().map_or_else(now, |t| t.last_accessed);
        let deadline = match changes.max_inactive() {
            Some(idle) if changes.touch().is_some() => {
                index_deadline(accessed, idle.saturating_mul(2))
            }
            _ => self.binding_target(accessed),
        };
        let Some((admission, mut expiry)) = self.enter(op, principal, key, limit, deadline).await?
        else {
            return Ok(Applied::LimitReached);
        };
        let mut args = codec::apply_args(changes, self.split());
        args.push(Vec::new());
        args.push(principal.digest_hex().into_bytes());
        let keys = [self.key(key), self.tombstone(key)];
        let mut raised = 0;
        let reply = loop {
            let at = args.len() - 2;
            // A persistent index outlives any session.
            args[at] = if expiry == -1 { i64::MAX } else { expiry }
                .to_string()
                .into_bytes();
            let reply = self
                .invoke_keys(op, &scripts::APPLY_BOUND, &keys, &args)
                .await?;
            match &reply {
                // The index would expire too early: raise it, write again.
                Value::Array(items) if raised < RAISE_ATTEMPTS => match items.as_slice() {
                    [Value::Int(4), Value::Int(wanted)] => {
                        self.note_deadline(*wanted, accessed);
                        expiry = self.extend_index(op, principal, *wanted, false).await?;
                        raised += 1;
                    }
                    _ => break reply,
                },
                _ => break reply,
            }
        };
        let previous = match reply {
            Value::Int(0) => return Ok(Applied::Gone),
            Value::Int(2) => return Ok(Applied::TooManyAttributes),
            Value::Int(3) => return Ok(Applied::Stale),
            Value::Array(items) => match items.as_slice() {
                [Value::Int(1)] | [Value::Int(1), Value::Nil] => None,
                [Value::Int(1), Value::BulkString(name)] => Some(name.clone()),
                _ => return Err(unexpected(op)),
            },
            _ => return Err(unexpected(op)),
        };
        if let Some(previous) = previous.filter(|name| name != principal.as_str().as_bytes()) {
            // The session moved: the previous principal's list no longer
            // holds it.
            if let Ok(previous) = Principal::from_bytes(&previous) {
                self.drop_members(op, &previous, None, &[key.as_str().to_owned()])
                    .await?;
            }
        }
        if self
            .after_write(op, principal, key, limit, admission)
            .await?
        {
            return Ok(Applied::Gone);
        }
        Ok(Applied::Written)
    }

    /// Takes a deleted session out of its principal's index.
    pub(super) async fn forget(&self, principal: &[u8], key: &StoreKey) -> Result<(), StoreError> {
        if let Ok(principal) = Principal::from_bytes(principal) {
            self.drop_members(
                Operation::Delete,
                &principal,
                None,
                &[key.as_str().to_owned()],
            )
            .await?;
        }
        Ok(())
    }

    /// Enters `key` in the index under `limit`, making the index live at
    /// least until `deadline`; `None` if a refusing limit is full of live
    /// sessions. Answers the admission and when the index expires (-1:
    /// never).
    async fn enter(
        &self,
        op: Operation,
        principal: &Principal,
        key: &StoreKey,
        limit: Option<&SessionLimit>,
        deadline: i64,
    ) -> Result<Option<(Admission, i64)>, StoreError> {
        let mut ended = Vec::new();
        let mut checks = 0;
        loop {
            match self
                .admit(op, principal, key, limit, deadline, &ended)
                .await?
            {
                // Whatever a check tombstones, the next admission drops:
                // so no check after the last admission.
                (Admission::Full(_), _) if checks == ADMIT_ATTEMPTS => return Ok(None),
                (Admission::Full(members), _) => {
                    checks += 1;
                    ended = self.ended(op, principal, key, members).await?;
                    if ended.is_empty() {
                        return Ok(None);
                    }
                }
                // An index written before indexes expired.
                (admission, -1) => {
                    let expiry = self.migrate_index(op, principal, deadline).await?;
                    return Ok(Some((admission, expiry)));
                }
                entered => return Ok(Some(entered)),
            }
        }
    }

    async fn admit(
        &self,
        op: Operation,
        principal: &Principal,
        key: &StoreKey,
        limit: Option<&SessionLimit>,
        deadline: i64,
        ended: &[String],
    ) -> Result<(Admission, i64), StoreError> {
        let mut args: Vec<Vec<u8>> = vec![
            key.as_str().as_bytes().to_vec(),
            unix_millis(now()).to_string().into_bytes(),
            limit.map_or_else(Vec::new, |l| l.max().to_string().into_bytes()),
            match limit.map(SessionLimit::policy) {
                Some(LimitPolicy::RefuseNewLogin) => b"r".to_vec(),
                _ => b"e".to_vec(),
            },
            deadline.to_string().into_bytes(),
        ];
        args.extend(ended.iter().map(|m| m.as_bytes().to_vec()));
        let reply = self
            .invoke_keys(
                op,
                &index_scripts::ADMIT,
                &self.index_keys(principal),
                &args,
            )
            .await?;
        let Value::Array(items) = reply else {
            return Err(unexpected(op));
        };
        let mut items = items.into_iter();
        let (code, expiry) = (items.next(), items.next());
        let Some(Value::Int(expiry)) = expiry else {
            return Err(unexpected(op));
        };
        let members = items.next().map(|v| strings(v, op)).transpose()?;
        let admission = match (code, members) {
            (Some(Value::Int(0)), None) => Admission::Entered,
            (Some(Value::Int(1)), Some(m)) => Admission::Over(m),
            (Some(Value::Int(2)), Some(m)) => Admission::Full(m),
            (Some(Value::Int(3)), Some(m)) => Admission::PruneDue(m),
            _ => return Err(unexpected(op)),
        };
        Ok((admission, expiry))
    }

    /// Checks the members other than `key`, and answers those that are not
    /// live sessions of the principal (tombstoned, so they stay so).
    async fn ended(
        &self,
        op: Operation,
        principal: &Principal,
        key: &StoreKey,
        members: Vec<String>,
    ) -> Result<Vec<String>, StoreError> {
        let (keys, mut ended) = parse_members(members, key);
        let bound = self.settle(op, principal, Settle::Check, &keys).await?;
        ended.extend(
            keys.iter()
                .zip(bound)
                .filter(|(_, bound)| !bound)
                .map(|(k, _)| k.as_str().to_owned()),
        );
        Ok(ended)
    }

    /// What a binding does once its session is written: evict past the
    /// limit, or prune. Answers whether the bound session itself was
    /// evicted (by a concurrent login that is more recent).
    async fn after_write(
        &self,
        op: Operation,
        principal: &Principal,
        key: &StoreKey,
        limit: Option<&SessionLimit>,
        admission: Admission,
    ) -> Result<bool, StoreError> {
        match (admission, limit) {
            (Admission::Over(members), Some(limit)) => {
                self.evict(op, principal, key, limit.max(), members).await
            }
            (Admission::PruneDue(members), _) => {
                let ended = self.ended(op, principal, key, members).await?;
                if !ended.is_empty() {
                    self.drop_members(op, principal, None, &ended).await?;
                }
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    async fn evict(
        &self,
        op: Operation,
        principal: &Principal,
        key: &StoreKey,
        max: u32,
        members: Vec<String>,
    ) -> Result<bool, StoreError> {
        let (keys, unparsable) = parse_members(members, key);
        let metas = self.read_meta(op, &keys).await?;
        let t = unix_millis(now()).to_string().into_bytes();
        let mut args: Vec<Vec<u8>> = vec![
            max.to_string().into_bytes(),
            cutoff(),
            key.as_str().as_bytes().to_vec(),
            b"L".to_vec(),
            t.clone(),
            t,
        ];
        let name = principal.as_str().as_bytes();
        for (k, meta) in keys.iter().zip(metas) {
            args.push(k.as_str().as_bytes().to_vec());
            match meta.filter(|m| m.principal.as_deref() == Some(name)) {
                Some(m) => args.extend([
                    b"L".to_vec(),
                    m.accessed.to_string().into_bytes(),
                    m.created.to_string().into_bytes(),
                ]),
                None => args.extend([b"D".to_vec(), b"0".to_vec(), b"0".to_vec()]),
            }
        }
        for member in unparsable {
            args.extend([
                member.into_bytes(),
                b"D".to_vec(),
                b"0".to_vec(),
                b"0".to_vec(),
            ]);
        }
        let reply = self
            .invoke_keys(
                op,
                &index_scripts::EVICT,
                &self.index_keys(principal),
                &args,
            )
            .await?;
        let victims: Vec<StoreKey> = strings(reply, op)?
            .iter()
            .filter_map(|m| StoreKey::parse(m))
            .collect();
        self.settle(op, principal, Settle::Evict, &victims).await?;
        Ok(victims.contains(key))
    }

    /// The live sessions of `principal`.
    pub(super) async fn list(
        &self,
        principal: &Principal,
    ) -> Result<Vec<PrincipalSession>, StoreError> {
        let op = Operation::ListPrincipal;
        let [index, _] = self.index_keys(principal);
        let mut connection = self.inner.connection.clone();
        let command = ::redis::cmd("ZRANGE")
            .arg(&index)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .to_owned();
        let reply: Value = self
            .run_once(op, command.query_async(&mut connection))
            .await?;
        let entries = scored(reply).ok_or_else(|| unexpected(op))?;
        let keys: Vec<Option<StoreKey>> = entries.iter().map(|(m, _)| StoreKey::parse(m)).collect();
        let found: Vec<StoreKey> = keys.iter().flatten().cloned().collect();
        let mut metas = self.read_meta(op, &found).await?.into_iter();
        let name = principal.as_str().as_bytes();
        let t = unix_millis(now());
        let grace = t.saturating_sub(duration_millis(GRACE));
        let mut sessions = Vec::with_capacity(found.len());
        let mut ended = Vec::new();
        for ((member, score), key) in entries.into_iter().zip(keys) {
            let meta = key.as_ref().and_then(|_| metas.next()).flatten();
            let session = match (key, meta) {
                (Some(key), Some(m)) if m.principal.as_deref() == Some(name) && m.expires > t => {
                    listed(key, m)
                }
                _ => None,
            };
            match session {
                Some(session) => sessions.push(session),
                None if score < grace => ended.push(member),
                None => {}
            }
        }
        if !ended.is_empty() {
            self.drop_members(op, principal, Some(grace), &ended)
                .await?;
        }
        Ok(sessions)
    }

    /// Deletes the sessions of `principal` that `which` names.
    pub(super) async fn revoke_sessions(
        &self,
        principal: &Principal,
        which: Revocation<'_>,
    ) -> Result<u64, StoreError> {
        let op = Operation::Revoke;
        let targets: Vec<StoreKey> = match which {
            Revocation::Only(keys) => {
                let unique: HashSet<&StoreKey> = keys.iter().collect();
                unique.into_iter().cloned().collect()
            }
            _ => self
                .members(op, principal)
                .await?
                .into_iter()
                .filter(|k| which.includes(k))
                .collect(),
        };
        let deleted = self.settle(op, principal, Settle::Revoke, &targets).await?;
        let revoked: Vec<String> = targets
            .iter()
            .zip(deleted)
            .filter(|(_, deleted)| *deleted)
            .map(|(k, _)| k.as_str().to_owned())
            .collect();
        if !revoked.is_empty() {
            self.drop_members(op, principal, None, &revoked).await?;
        }
        Ok(u64::try_from(revoked.len()).unwrap_or(u64::MAX))
    }

    /// The members of `principal`'s index that are store keys.
    pub(super) async fn members(
        &self,
        op: Operation,
        principal: &Principal,
    ) -> Result<Vec<StoreKey>, StoreError> {
        let [index, _] = self.index_keys(principal);
        let mut connection = self.inner.connection.clone();
        let command = ::redis::cmd("ZRANGE").arg(&index).arg(0).arg(-1).to_owned();
        let reply: Value = self
            .run_once(op, command.query_async(&mut connection))
            .await?;
        Ok(strings(reply, op)?
            .iter()
            .filter_map(|m| StoreKey::parse(m))
            .collect())
    }

    /// Drops `members` from the index (only those bound before `before`,
    /// if given).
    async fn drop_members(
        &self,
        op: Operation,
        principal: &Principal,
        before: Option<i64>,
        members: &[String],
    ) -> Result<(), StoreError> {
        let mut args = vec![before.map_or_else(Vec::new, |t| t.to_string().into_bytes())];
        args.extend(members.iter().map(|m| m.as_bytes().to_vec()));
        self.invoke_keys(
            op,
            &index_scripts::PRUNE,
            &self.index_keys(principal),
            &args,
        )
        .await?;
        Ok(())
    }
}

/// The grace cutoff: now less [`GRACE`], in Unix ms.
fn cutoff() -> Vec<u8> {
    unix_millis(now())
        .saturating_sub(duration_millis(GRACE))
        .to_string()
        .into_bytes()
}

/// The members other than `key` as store keys, and those that are no store
/// key at all (which the index drops).
fn parse_members(members: Vec<String>, key: &StoreKey) -> (Vec<StoreKey>, Vec<String>) {
    let mut keys = Vec::with_capacity(members.len());
    let mut unparsable = Vec::new();
    for member in members {
        match StoreKey::parse(&member) {
            Some(k) if k == *key => {}
            Some(k) => keys.push(k),
            None => unparsable.push(member),
        }
    }
    (keys, unparsable)
}
