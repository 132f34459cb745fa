//! Sending commands: one command or script under the command timeout,
//! sent again when a cluster node redirected it, and pipelines and fans of
//! commands sent once.

use std::time::Duration;

use ::redis::{Cmd, ErrorKind, RedisError, Script, ServerErrorKind, Value};

use super::connection::Connection;
use super::{
    BACKEND, Operation, Problem, REDIRECT_PAUSE, REDIRECT_RETRIES, RedisStore, StoreError,
    StoreErrorKind, StoreKey, redis_error, replicas,
};

impl RedisStore {
    /// Runs one command (or script), sent by `command` on a clone of the
    /// connection, under the command timeout.
    ///
    /// A command a cluster node refused with MOVED or ASK did not run, so
    /// it is sent again, up to [`REDIRECT_RETRIES`] times: the `redis`
    /// crate follows an ASK with `ASKING` and the command as two separate
    /// requests on a connection that other requests share, and one of
    /// theirs can take the `ASKING` meant for it while a slot moves.
    pub(super) async fn run<T, F, Fut>(
        &self,
        operation: Operation,
        command: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut(Connection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        self.run_within(operation, self.inner.command_timeout, command)
            .await
    }

    /// As [`run`](Self::run), bounded by `limit`.
    pub(super) async fn run_within<T, F, Fut>(
        &self,
        operation: Operation,
        limit: Duration,
        mut command: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut(Connection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let attempts = async {
            let mut redirected = 0;
            loop {
                match command(self.inner.connection.clone()).await {
                    Err(error) if redirected < REDIRECT_RETRIES && is_redirect(&error) => {
                        redirected += 1;
                        tokio::time::sleep(REDIRECT_PAUSE * redirected).await;
                    }
                    outcome => return outcome,
                }
            }
        };
        self.bounded(operation, limit, attempts).await
    }

    /// Runs a pipeline, or several commands sent at once, under the command
    /// timeout, without sending anything again.
    pub(super) async fn run_once<T, F>(
        &self,
        operation: Operation,
        command: F,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, RedisError>>,
    {
        self.bounded(operation, self.inner.command_timeout, command)
            .await
    }

    async fn bounded<T, F>(
        &self,
        operation: Operation,
        limit: Duration,
        command: F,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, RedisError>>,
    {
        match tokio::time::timeout(limit, command).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(redis_error(operation, error)),
            Err(_) => Err(StoreError::new(
                BACKEND,
                operation,
                StoreErrorKind::Unavailable,
                Problem::NoAnswer(limit),
            )),
        }
    }

    pub(super) async fn invoke(
        &self,
        operation: Operation,
        script: &Script,
        key: &StoreKey,
        args: &[Vec<u8>],
    ) -> Result<Value, StoreError> {
        self.invoke_keys(operation, script, &[self.key(key)], args)
            .await
    }

    /// Runs `script` on `keys` (all in one slot) with `args`, and waits for
    /// the replicas' acknowledgement if the store asks for it.
    pub(super) async fn invoke_keys(
        &self,
        operation: Operation,
        script: &Script,
        keys: &[String],
        args: &[Vec<u8>],
    ) -> Result<Value, StoreError> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(arg.as_slice());
        }
        let invocation = &invocation;
        let (Some((wait, limit)), Some(slot_key)) = (self.wait_command(), keys.first()) else {
            return self
                .run(operation, |mut c| async move {
                    invocation.invoke_async(&mut c).await
                })
                .await;
        };
        let eval = evalsha(script, keys, args);
        let (eval, wait) = (&eval, &wait);
        let (reply, acknowledged) = self
            .run_within(operation, limit, |c| {
                replicas::write_then_wait(c, script, eval, wait, slot_key)
            })
            .await?;
        self.check_acknowledgement(operation, acknowledged)?;
        Ok(reply)
    }
}

/// `EVALSHA` of `script` on `keys` with `args`.
fn evalsha(script: &Script, keys: &[String], args: &[Vec<u8>]) -> Cmd {
    let mut eval = ::redis::cmd("EVALSHA");
    eval.arg(script.get_hash()).arg(keys.len());
    for key in keys {
        eval.arg(key);
    }
    for arg in args {
        eval.arg(arg.as_slice());
    }
    eval
}

/// Whether a cluster node refused the command, sending it elsewhere.
pub(super) fn is_redirect(error: &RedisError) -> bool {
    matches!(
        error.kind(),
        ErrorKind::Server(ServerErrorKind::Moved | ServerErrorKind::Ask)
    )
}
