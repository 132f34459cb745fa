//! The names an app written for tower-sessions calls, where this crate's
//! own differ only in name or shape. MIGRATING.md lists them beside the
//! crate's own, and says where the semantics differ.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Session;
use crate::error::SessionError;

impl Session {
    /// Sets attribute `name` to `value`: [`set`](Self::set) taking the value
    /// by value, as tower-sessions' `insert` does.
    ///
    /// # Errors
    ///
    /// As [`set`](Self::set).
    pub async fn insert(&self, name: &str, value: impl Serialize) -> Result<(), SessionError> {
        self.set(name, &value).await
    }

    /// The value of attribute `name` as JSON, or `None` if there is none.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub async fn get_value(&self, name: &str) -> Result<Option<Value>, SessionError> {
        self.get(name).await
    }

    /// Removes attribute `name` and returns the value it held, deserialized:
    /// what tower-sessions' `remove` returns. ([`remove`](Self::remove)
    /// answers only whether it was there, and reads no value.)
    ///
    /// # Errors
    ///
    /// [`SessionError::Deserialize`] if the value is not a `T` (then
    /// nothing is removed), or as [`get`](Self::get).
    pub async fn take<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, SessionError> {
        let value: Option<T> = self.get(name).await?;
        if value.is_some() {
            self.remove(name).await?;
        }
        Ok(value)
    }

    /// Removes attribute `name` and returns the JSON it held: tower-sessions'
    /// `remove_value`.
    ///
    /// # Errors
    ///
    /// As [`take`](Self::take).
    pub async fn remove_value(&self, name: &str) -> Result<Option<Value>, SessionError> {
        self.take(name).await
    }

    /// Changes the session id: tower-sessions' name for
    /// [`change_id`](Self::change_id).
    ///
    /// # Errors
    ///
    /// As [`change_id`](Self::change_id).
    pub async fn cycle_id(&self) -> Result<(), SessionError> {
        self.change_id().await
    }

    /// Removes every attribute and keeps the session (and its id, and the
    /// principal it is bound to). To end the session, use
    /// [`invalidate`](Self::invalidate).
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the session could not be loaded.
    pub async fn clear(&self) -> Result<(), SessionError> {
        for name in self.attribute_names().await? {
            self.remove(&name).await?;
        }
        Ok(())
    }

    /// Whether the session holds no attribute.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the session could not be loaded.
    pub async fn is_empty(&self) -> Result<bool, SessionError> {
        Ok(self.attribute_names().await?.is_empty())
    }

    /// Ends the session: tower-sessions' name for
    /// [`invalidate`](Self::invalidate).
    ///
    /// # Errors
    ///
    /// As [`invalidate`](Self::invalidate).
    pub async fn flush(&self) -> Result<(), SessionError> {
        self.invalidate().await
    }
}

/// Lets an extractor whose rejection is `(StatusCode, &'static str)`, as
/// tower-sessions' own is, take a [`Session`] with `?`.
impl From<SessionError> for (http::StatusCode, &'static str) {
    fn from(error: SessionError) -> Self {
        let status = error.status();
        tracing::warn!(error = %crate::error::chain(&error), status = status.as_u16(), "session error");
        (status, status.canonical_reason().unwrap_or("session error"))
    }
}

/// Lets an extractor whose rejection is `(StatusCode, String)` take a
/// [`Session`] with `?`. The text is the status's reason: the error's own
/// message is logged, not sent.
impl From<SessionError> for (http::StatusCode, String) {
    fn from(error: SessionError) -> Self {
        let (status, reason): (http::StatusCode, &'static str) = error.into();
        (status, reason.to_owned())
    }
}
