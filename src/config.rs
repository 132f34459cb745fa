//! Cookie attributes, timeouts and limits.

use std::time::Duration;

pub use cookie::SameSite;

/// The longest idle timeout a session may have: 400 days, the longest a
/// browser keeps a cookie.
pub const MAX_INACTIVE_LIMIT: Duration = Duration::from_secs(400 * 24 * 60 * 60);

/// How sessions behave: the cookie, the timeouts, the limits.
///
/// Every setter documents its default. The defaults are the secure choice:
/// a `HttpOnly`, `Secure`, `SameSite=Lax` cookie on path `/` with no domain,
/// a 30-minute idle timeout. The configuration is checked when the layer is
/// built ([`SessionLayer::with_config`](crate::SessionLayer::with_config)).
///
/// ```
/// use std::time::Duration;
/// use tower_httpsession::{MemoryStore, SessionConfig, SessionLayer};
///
/// let config = SessionConfig::default()
///     .with_cookie_name("__Host-session")
///     .with_max_inactive_interval(Duration::from_secs(15 * 60))
///     .with_absolute_timeout(Duration::from_secs(8 * 60 * 60));
/// let layer = SessionLayer::with_config(MemoryStore::default(), config).unwrap();
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct SessionConfig {
    pub(crate) cookie_name: String,
    pub(crate) path: String,
    pub(crate) domain: Option<String>,
    pub(crate) secure: bool,
    pub(crate) http_only: bool,
    pub(crate) same_site: SameSite,
    pub(crate) max_inactive: Duration,
    pub(crate) absolute_timeout: Option<Duration>,
    pub(crate) touch_interval: Option<Duration>,
    pub(crate) retry_after: Duration,
    pub(crate) max_attribute_bytes: usize,
    pub(crate) max_name_bytes: usize,
    pub(crate) max_attributes: usize,
    pub(crate) session_limit: Option<crate::store::SessionLimit>,
    pub(crate) principal_index: bool,
    pub(crate) persistent_cookie: bool,
    pub(crate) commit_on_server_error: bool,
    /// The first setting given a negative duration, if any.
    pub(crate) negative: Option<&'static str>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            cookie_name: "SESSION".to_owned(),
            path: "/".to_owned(),
            domain: None,
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            max_inactive: Duration::from_secs(30 * 60),
            absolute_timeout: None,
            touch_interval: None,
            retry_after: Duration::from_secs(1),
            max_attribute_bytes: 1024 * 1024,
            max_name_bytes: 256,
            max_attributes: 1024,
            session_limit: None,
            principal_index: false,
            persistent_cookie: false,
            commit_on_server_error: true,
            negative: None,
        }
    }
}

impl SessionConfig {
    /// The cookie's name. Default: `SESSION`.
    ///
    /// A name that starts with `__Host-` asks the browser to accept the
    /// cookie only if it is `Secure`, has path `/` and no domain; the layer
    /// refuses a configuration that breaks those rules.
    ///
    /// ```
    /// # use tower_httpsession::SessionConfig;
    /// let config = SessionConfig::default().with_cookie_name("__Host-sid");
    /// # let _ = config;
    /// ```
    pub fn with_cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie_name = name.into();
        self
    }

    /// The cookie's `Path`. Default: `/`.
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// The cookie's `Domain`, which sends it to every subdomain of `domain`
    /// too. Default: none, so the cookie goes back only to the host that set
    /// it, the safer choice.
    pub fn with_domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// Sends the cookie without the `Secure` attribute, so browsers also send
    /// it over plain HTTP, where anyone on the path can read it. Default:
    /// `Secure` is set. Only for local development and tests over HTTP;
    /// browsers already accept `Secure` cookies from `http://localhost`.
    pub fn with_insecure_cookie_over_http(mut self) -> Self {
        self.secure = false;
        self
    }

    /// Lets scripts in the page read the cookie, which turns any cross-site
    /// scripting flaw into session theft. Default: `HttpOnly` is set.
    pub fn with_cookie_readable_by_scripts(mut self) -> Self {
        self.http_only = false;
        self
    }

    /// The cookie's `SameSite`. Default: `Lax`. `None` requires `Secure`.
    pub fn with_same_site(mut self, same_site: SameSite) -> Self {
        self.same_site = same_site;
        self
    }

    /// The idle timeout new sessions get; each session may change its own
    /// with [`Session::set_max_inactive_interval`](crate::Session::set_max_inactive_interval).
    /// Default: 30 minutes.
    pub fn with_max_inactive_interval(mut self, interval: impl IntoDuration) -> Self {
        self.max_inactive = self.checked("max inactive interval", interval);
        self
    }

    /// A deadline counted from creation after which the session ends however
    /// active it is, as OWASP recommends. Default: none.
    pub fn with_absolute_timeout(mut self, timeout: impl IntoDuration) -> Self {
        self.absolute_timeout = Some(self.checked("absolute timeout", timeout));
        self
    }

    /// How stale the stored last-access time may get before a read-only
    /// request writes a touch. Default: a twentieth of the session's idle
    /// timeout (90 seconds for 30 minutes). A session may therefore expire up
    /// to this much earlier than its idle timeout says.
    pub fn with_touch_interval(mut self, interval: impl IntoDuration) -> Self {
        self.touch_interval = Some(self.checked("touch interval", interval));
        self
    }

    /// The `Retry-After` a request gets with its 503 when the store is down.
    /// Default: 1 second.
    pub fn with_retry_after(mut self, delay: impl IntoDuration) -> Self {
        self.retry_after = self.checked("retry-after delay", delay);
        self
    }

    /// `value` as a `std` duration; a negative one is remembered, and
    /// refused when the layer is built.
    fn checked(&mut self, what: &'static str, value: impl IntoDuration) -> Duration {
        value.into_duration().unwrap_or_else(|| {
            self.negative.get_or_insert(what);
            Duration::ZERO
        })
    }

    /// The largest attribute value, in bytes of serde_json text. Default:
    /// 1 MiB.
    pub fn with_max_attribute_bytes(mut self, bytes: usize) -> Self {
        self.max_attribute_bytes = bytes;
        self
    }

    /// The longest attribute name, in bytes. Default: 256.
    pub fn with_max_name_bytes(mut self, bytes: usize) -> Self {
        self.max_name_bytes = bytes;
        self
    }

    /// The most attributes one session may hold. Default: 1,024.
    pub fn with_max_attributes(mut self, count: usize) -> Self {
        self.max_attributes = count;
        self
    }

    /// Sends a persistent cookie ("remember me"): it carries `Max-Age`, so
    /// the browser keeps it across restarts for as long as the session
    /// lives on the server: the idle timeout, or what is left of the
    /// absolute timeout if that ends first. The cookie is sent again, with
    /// a fresh `Max-Age`, when the session's last access is written (a
    /// touch, once per touch interval) and when the id or the idle timeout
    /// changes; other responses carry no `Set-Cookie`. Default: a browser
    /// session cookie, gone when the browser closes (the server enforces
    /// the timeouts either way).
    ///
    /// A persistent cookie outlives the browser session on a shared
    /// computer; offer it where the user asks for it (a "remember me"
    /// layer on the login routes, say), with an absolute timeout.
    pub fn with_persistent_cookie(mut self) -> Self {
        self.persistent_cookie = true;
        self
    }

    /// Drops a request's session changes when its response is a server
    /// error (5xx), as tower-sessions does: the attributes it set or
    /// removed, a new id, a new idle timeout, a principal binding. Two
    /// things still happen: an [`invalidate`](crate::Session::invalidate)
    /// (a logout is never undone by an error), and what
    /// [`update`](crate::Session::update) wrote, which is committed when
    /// `update` returns. Default: a 5xx commits like any response.
    pub fn with_changes_dropped_on_server_error(mut self) -> Self {
        self.commit_on_server_error = false;
        self
    }

    /// Declares that the app binds sessions to principals
    /// ([`Session::login`](crate::Session::login),
    /// [`Session::set_principal`](crate::Session::set_principal)), so that
    /// building the layer over a store that keeps no principal index (such
    /// as the tower-sessions adapter) fails at once, not at the first login.
    /// Default: not declared; binding still works on a store that keeps an
    /// index, and fails at the call on one that does not.
    pub fn with_principal_index(mut self) -> Self {
        self.principal_index = true;
        self
    }

    /// At most `limit.max()` live sessions per principal, enforced by the
    /// store when a session is bound ([`Session::login`](crate::Session::login)),
    /// atomically however many logins of one principal race: past it the
    /// least recently used sessions are deleted at once, or the new login
    /// is refused with `409 Conflict` ([`SessionError::SessionLimit`](crate::SessionError::SessionLimit)),
    /// as [`LimitPolicy`](crate::store::LimitPolicy) says. Implies
    /// [`with_principal_index`](Self::with_principal_index). Default: no
    /// limit.
    ///
    /// ```
    /// use tower_httpsession::store::{LimitPolicy, SessionLimit};
    /// use tower_httpsession::{MemoryStore, SessionConfig, SessionLayer};
    ///
    /// let limit = SessionLimit::new(3, LimitPolicy::EvictLeastRecentlyUsed).unwrap();
    /// let config = SessionConfig::default().with_session_limit(limit);
    /// let layer = SessionLayer::with_config(MemoryStore::default(), config).unwrap();
    /// # let _ = layer;
    /// ```
    pub fn with_session_limit(mut self, limit: crate::store::SessionLimit) -> Self {
        self.session_limit = Some(limit);
        self.principal_index = true;
        self
    }

    /// The per-principal session limit, if any.
    #[must_use]
    pub fn session_limit(&self) -> Option<crate::store::SessionLimit> {
        self.session_limit
    }

    /// The idle timeout new sessions get.
    #[must_use]
    pub fn max_inactive_interval(&self) -> Duration {
        self.max_inactive
    }

    /// The cookie's name.
    #[must_use]
    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    pub(crate) fn touch_interval_for(&self, max_inactive: Duration) -> Duration {
        self.touch_interval
            .unwrap_or_else(|| crate::store::policy::default_touch_interval(max_inactive))
    }

    /// Checks the rules the setters document.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(what) = self.negative {
            return Err(ConfigError::NegativeDuration(what));
        }
        let token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if self.cookie_name.is_empty() || !self.cookie_name.chars().all(token_char) {
            return Err(ConfigError::InvalidCookieName(self.cookie_name.clone()));
        }
        let cookie_text = |c: char| c.is_ascii_graphic() && c != ';' && c != ',';
        if !self.path.starts_with('/') || !self.path.chars().all(cookie_text) {
            return Err(ConfigError::InvalidPath(self.path.clone()));
        }
        let bad_domain = |d: &&String| d.is_empty() || !d.chars().all(cookie_text);
        if let Some(domain) = self.domain.as_ref().filter(bad_domain) {
            return Err(ConfigError::InvalidDomain(domain.clone()));
        }
        if self.cookie_name.starts_with("__Host-")
            && (!self.secure || self.path != "/" || self.domain.is_some())
        {
            return Err(ConfigError::HostPrefix);
        }
        if self.cookie_name.starts_with("__Secure-") && !self.secure {
            return Err(ConfigError::SecurePrefix);
        }
        if self.same_site == SameSite::None && !self.secure {
            return Err(ConfigError::SameSiteNoneWithoutSecure);
        }
        check_interval("max inactive interval", self.max_inactive)?;
        if let Some(timeout) = self.absolute_timeout {
            check_interval("absolute timeout", timeout)?;
        }
        if self
            .touch_interval
            .is_some_and(|touch| touch >= self.max_inactive)
        {
            return Err(ConfigError::TouchIntervalTooLong);
        }
        if self.max_attributes == 0 || self.max_name_bytes == 0 || self.max_attribute_bytes == 0 {
            return Err(ConfigError::ZeroLimit);
        }
        Ok(())
    }
}

fn check_interval(what: &'static str, interval: Duration) -> Result<(), ConfigError> {
    if interval < Duration::from_secs(1) || interval > MAX_INACTIVE_LIMIT {
        return Err(ConfigError::IntervalOutOfRange(what));
    }
    Ok(())
}

/// A duration as the standard library or the `time` crate spells it:
/// every setting that takes a duration takes either.
///
/// ```
/// use tower_httpsession::SessionConfig;
///
/// let a = SessionConfig::default().with_max_inactive_interval(std::time::Duration::from_secs(900));
/// let b = SessionConfig::default().with_max_inactive_interval(time::Duration::minutes(15));
/// assert_eq!(a, b);
/// ```
pub trait IntoDuration {
    /// The duration, or `None` if it is negative.
    fn into_duration(self) -> Option<Duration>;
}

impl IntoDuration for Duration {
    fn into_duration(self) -> Option<Duration> {
        Some(self)
    }
}

impl IntoDuration for time::Duration {
    fn into_duration(self) -> Option<Duration> {
        Duration::try_from(self).ok()
    }
}

/// A [`SessionConfig`] that breaks one of its rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The cookie name is empty or holds characters a cookie name cannot.
    #[error("cookie name {0:?} is empty or holds characters not allowed in a cookie name")]
    InvalidCookieName(String),
    /// The path does not start with `/` or holds characters a cookie cannot.
    #[error("cookie path {0:?} must start with '/' and hold no spaces, ';' or ','")]
    InvalidPath(String),
    /// The domain is empty or holds characters a cookie cannot.
    #[error("cookie domain {0:?} is empty or holds spaces, ';' or ','")]
    InvalidDomain(String),
    /// A `__Host-` cookie must be `Secure`, have path `/` and no domain.
    #[error("a cookie named __Host-… must be Secure, have path \"/\" and no domain")]
    HostPrefix,
    /// A `__Secure-` cookie must be `Secure`.
    #[error("a cookie named __Secure-… must be Secure")]
    SecurePrefix,
    /// Browsers drop `SameSite=None` cookies that are not `Secure`.
    #[error("SameSite=None requires a Secure cookie")]
    SameSiteNoneWithoutSecure,
    /// A timeout is below one second or above 400 days.
    #[error("{0} must be between 1 second and 400 days")]
    IntervalOutOfRange(&'static str),
    /// The touch interval is not shorter than the idle timeout.
    #[error("touch interval must be shorter than the max inactive interval")]
    TouchIntervalTooLong,
    /// A size limit is zero.
    #[error("attribute limits must be greater than zero")]
    ZeroLimit,
    /// A duration was negative (a `time::Duration` can be).
    #[error("{0} must not be negative")]
    NegativeDuration(&'static str),
    /// The configuration binds sessions to principals (a session limit, or
    /// [`SessionConfig::with_principal_index`]) but the store keeps no
    /// principal index.
    #[error(
        "the {backend} store keeps no principal index, which the session limit and principal binding need; use the memory, Redis or PostgreSQL store"
    )]
    PrincipalsUnsupported {
        /// The store's name.
        backend: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_secure() {
        let c = SessionConfig::default();
        assert!(c.validate().is_ok());
        assert!(c.secure && c.http_only);
        assert_eq!(c.same_site, SameSite::Lax);
        assert_eq!(c.path, "/");
        assert_eq!(c.domain, None);
        assert_eq!(c.max_inactive, Duration::from_secs(1800));
        assert_eq!(
            c.touch_interval_for(c.max_inactive),
            Duration::from_secs(90)
        );
    }

    #[test]
    fn bad_configurations_are_refused() {
        let d = SessionConfig::default;
        let cases = [
            (
                d().with_cookie_name(""),
                ConfigError::InvalidCookieName(String::new()),
            ),
            (
                d().with_cookie_name("a b"),
                ConfigError::InvalidCookieName("a b".into()),
            ),
            (d().with_path("x"), ConfigError::InvalidPath("x".into())),
            (
                d().with_domain("a;b"),
                ConfigError::InvalidDomain("a;b".into()),
            ),
            (
                d().with_cookie_name("__Host-s").with_path("/app"),
                ConfigError::HostPrefix,
            ),
            (
                d().with_cookie_name("__Host-s")
                    .with_insecure_cookie_over_http(),
                ConfigError::HostPrefix,
            ),
            (
                d().with_cookie_name("__Host-s").with_domain("example.com"),
                ConfigError::HostPrefix,
            ),
            (
                d().with_cookie_name("__Secure-s")
                    .with_insecure_cookie_over_http(),
                ConfigError::SecurePrefix,
            ),
            (
                d().with_same_site(SameSite::None)
                    .with_insecure_cookie_over_http(),
                ConfigError::SameSiteNoneWithoutSecure,
            ),
            (
                d().with_max_inactive_interval(Duration::ZERO),
                ConfigError::IntervalOutOfRange("max inactive interval"),
            ),
            (
                d().with_absolute_timeout(MAX_INACTIVE_LIMIT * 2),
                ConfigError::IntervalOutOfRange("absolute timeout"),
            ),
            (
                d().with_touch_interval(Duration::from_secs(1800)),
                ConfigError::TouchIntervalTooLong,
            ),
            (d().with_max_attributes(0), ConfigError::ZeroLimit),
        ];
        for (config, expected) in cases {
            assert_eq!(config.validate(), Err(expected));
        }
    }
}
