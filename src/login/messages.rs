//! Flash messages: a note for the user's next page ("Logged in.",
//! "Wrong password."), kept in the session until it is shown once.

use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use http::request::Parts;
use http::{Request, StatusCode};
use serde::{Deserialize, Serialize};
use tower_layer::Layer;
use tower_service::Service;

use crate::session::Session;

/// The attribute that holds the messages not shown yet.
const PENDING: &str = "login.messages";

/// How much a message matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Level {
    /// Debugging detail.
    Debug,
    /// For information.
    Info,
    /// Something went right.
    Success,
    /// Something may be wrong.
    Warning,
    /// Something went wrong.
    Error,
}

/// One flash message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Message {
    /// How much it matters.
    pub level: Level,
    /// Its text.
    pub message: String,
}

/// The flash messages of a request: those left by earlier requests (shown,
/// and so removed, when iterated) and those this request adds for the next
/// page. Behind [`MessagesManagerLayer`], inside the session layer.
///
/// ```ignore
/// async fn login(messages: Messages) -> Redirect {
///     messages.success("Logged in.");
///     Redirect::to("/")
/// }
/// async fn home(messages: Messages) -> String {
///     messages.into_iter().map(|m| m.message).collect::<Vec<_>>().join("\n")
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Messages {
    shown: Vec<Message>,
    queue: Queue,
}

type Queue = Arc<Mutex<Vec<Message>>>;

impl Messages {
    fn add(self, level: Level, message: impl Into<String>) -> Self {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Message {
                level,
                message: message.into(),
            });
        self
    }

    /// Adds a debug message for the next page.
    #[must_use = "returns the messages for chaining"]
    pub fn debug(self, message: impl Into<String>) -> Self {
        self.add(Level::Debug, message)
    }

    /// Adds an informational message for the next page.
    #[must_use = "returns the messages for chaining"]
    pub fn info(self, message: impl Into<String>) -> Self {
        self.add(Level::Info, message)
    }

    /// Adds a success message for the next page.
    #[must_use = "returns the messages for chaining"]
    pub fn success(self, message: impl Into<String>) -> Self {
        self.add(Level::Success, message)
    }

    /// Adds a warning for the next page.
    #[must_use = "returns the messages for chaining"]
    pub fn warning(self, message: impl Into<String>) -> Self {
        self.add(Level::Warning, message)
    }

    /// Adds an error message for the next page.
    #[must_use = "returns the messages for chaining"]
    pub fn error(self, message: impl Into<String>) -> Self {
        self.add(Level::Error, message)
    }
}

impl IntoIterator for Messages {
    type Item = Message;
    type IntoIter = std::vec::IntoIter<Message>;

    /// The messages left for this page, oldest first.
    fn into_iter(self) -> Self::IntoIter {
        self.shown.into_iter()
    }
}

/// The queue of this request's new messages, as the layer put it in.
#[derive(Clone)]
struct QueueSlot(Queue);

impl<S: Send + Sync> FromRequestParts<S> for Messages {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let session = Session::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Some(QueueSlot(queue)) = parts.extensions.get::<QueueSlot>().cloned() else {
            tracing::error!("a handler takes Messages but no MessagesManagerLayer wraps its route");
            return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response());
        };
        let shown: Vec<Message> = session
            .take(PENDING)
            .await
            .map_err(IntoResponse::into_response)?
            .unwrap_or_default();
        Ok(Self { shown, queue })
    }
}

/// Keeps each request's new flash messages in its session for the next
/// page. Put it inside the session layer (added before it, with
/// `.layer(MessagesManagerLayer).layer(session_layer)`).
#[derive(Debug, Clone, Copy, Default)]
pub struct MessagesManagerLayer;

impl<S> Layer<S> for MessagesManagerLayer {
    type Service = MessagesManager<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MessagesManager { inner }
    }
}

/// The service of [`MessagesManagerLayer`].
#[derive(Debug, Clone)]
pub struct MessagesManager<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for MessagesManager<S>
where
    S: Service<Request<ReqBody>, Response = http::Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let queue: Queue = Arc::default();
        request.extensions_mut().insert(QueueSlot(queue.clone()));
        let session = request.extensions().get::<Session>().cloned();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let added = std::mem::take(&mut *queue.lock().unwrap_or_else(PoisonError::into_inner));
            if let (false, Some(session)) = (added.is_empty(), session) {
                // Appended to those no page has shown yet.
                let result = session
                    .update(PENDING, |pending: Option<Vec<Message>>| {
                        let mut pending = pending.unwrap_or_default();
                        pending.extend(added.iter().cloned());
                        pending
                    })
                    .await;
                if let Err(error) = result {
                    tracing::warn!(%error, "flash messages could not be kept");
                }
            }
            Ok(response)
        })
    }
}
