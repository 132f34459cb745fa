//! The shop's own settings, read from the environment, and the one-line
//! messages a bad one stops start-up with.

use std::fmt::Write as _;

use tower_httpsession::health::{Acl, AclError};
use tower_httpsession::profile::ProfileError;

/// Why the shop cannot start: one line in words that names the setting,
/// what it got (never a secret) and what it accepts.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// A variable holds a value the shop does not accept.
    #[error("{variable}={got:?}: expected {expected}")]
    Invalid {
        variable: &'static str,
        got: String,
        expected: &'static str,
    },
    /// `HEALTH_TOKEN` breaks a rule; the token itself is never shown.
    #[error("HEALTH_TOKEN (hidden, {len} bytes): {source}")]
    Token { len: usize, source: AclError },
    /// The health settings together allow no one, or break another rule.
    #[error("HEALTH_ALLOW, HEALTH_TOKEN and HEALTH_HOSTS: {0}")]
    Acl(AclError),
    /// The session store's settings.
    #[error("{0}")]
    Profile(#[from] ProfileError),
    /// Settings that together break a rule, said in words.
    #[error("{0}")]
    Rule(String),
    /// Anything else that stops start-up, said in words.
    #[error("{0}")]
    Other(String),
}

impl StartError {
    /// Whether a setting is wrong (exit code 2), rather than the world
    /// (a store that does not answer, a port in use: exit code 1).
    pub(crate) fn is_setting(&self) -> bool {
        match self {
            Self::Invalid { .. } | Self::Token { .. } | Self::Acl(_) | Self::Rule(_) => true,
            Self::Profile(e) => !matches!(
                e,
                ProfileError::Unreachable { .. } | ProfileError::Refused { .. }
            ),
            Self::Other(_) => false,
        }
    }
}

/// How many instances the demo may start.
const MAX_INSTANCES: u16 = 8;

/// What `SESSION_STORE` etc. leave to the shop itself.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The port of the balancer, or of the one instance.
    pub(crate) port: u16,
    /// How many instances: 1 is a plain instance on `port`; more start a
    /// balancer on `port` and the instances on the ports after it.
    pub(crate) instances: u16,
    /// This instance's name on its pages.
    pub(crate) name: String,
    pub(crate) drain_secs: u64,
    pub(crate) allow: Vec<String>,
    pub(crate) token: Option<String>,
    pub(crate) hosts: Vec<String>,
}

/// The entries of a comma-separated list.
fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Settings {
    /// Reads the settings from `lookup`, which answers a variable's value.
    pub(crate) fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, StartError> {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let port = match var("PORT") {
            None => 3000,
            Some(v) => {
                v.trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or(StartError::Invalid {
                        variable: "PORT",
                        got: v,
                        expected: "a TCP port from 1 to 65535",
                    })?
            }
        };
        let instances = match var("SHOP_INSTANCES") {
            None => 2,
            Some(v) => v
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|n| (1..=MAX_INSTANCES).contains(n))
                .ok_or(StartError::Invalid {
                    variable: "SHOP_INSTANCES",
                    got: v,
                    expected: "a number of instances from 1 to 8",
                })?,
        };
        if instances > 1 && u32::from(port) + u32::from(instances) > u32::from(u16::MAX) {
            return Err(StartError::Invalid {
                variable: "PORT",
                got: port.to_string(),
                expected: "a port with room for the instances' ports after it (SHOP_INSTANCES)",
            });
        }
        let drain_secs =
            match var("HEALTH_DRAIN_SECS") {
                None => 5,
                Some(v) => v.trim().parse::<u64>().ok().filter(|s| *s <= 3600).ok_or(
                    StartError::Invalid {
                        variable: "HEALTH_DRAIN_SECS",
                        got: v,
                        expected: "a whole number of seconds from 0 to 3600",
                    },
                )?,
            };
        // Set but empty, or `none`, means no network: the token alone.
        let allow = match lookup("HEALTH_ALLOW") {
            None => list("127.0.0.1/32,::1/128"),
            Some(v) if v.trim().eq_ignore_ascii_case("none") => Vec::new(),
            Some(v) => list(&v),
        };
        let hosts =
            list(&var("HEALTH_HOSTS").unwrap_or_else(|| "127.0.0.1,localhost,[::1]".into()));
        if hosts.is_empty() {
            return Err(StartError::Invalid {
                variable: "HEALTH_HOSTS",
                got: lookup("HEALTH_HOSTS").unwrap_or_default(),
                expected: "the host names the shop is reached by, comma-separated",
            });
        }
        Ok(Self {
            port,
            instances,
            name: var("SHOP_INSTANCE_NAME").unwrap_or_else(|| "shop".to_owned()),
            drain_secs,
            allow,
            token: lookup("HEALTH_TOKEN"),
            hosts,
        })
    }

    /// The health endpoints' ACL: the networks of `HEALTH_ALLOW` and, if
    /// set, the token of `HEALTH_TOKEN`, both required when both are
    /// given; the `Host` names of `HEALTH_HOSTS`.
    pub(crate) fn acl(&self) -> Result<Acl, StartError> {
        let mut acl = Acl::builder();
        for cidr in &self.allow {
            acl = acl.with_allowed_network(cidr.clone());
        }
        if let Some(token) = &self.token {
            acl = acl.with_bearer_token(token.clone());
            if !self.allow.is_empty() {
                acl = acl.with_network_and_token_required();
            }
        }
        for host in &self.hosts {
            acl = acl.with_allowed_host(host.clone());
        }
        acl.build().map_err(|e| match e {
            AclError::InvalidNetwork(got) | AclError::InvalidProxy(got) => StartError::Invalid {
                variable: "HEALTH_ALLOW",
                got,
                expected: "comma-separated CIDR ranges or IP addresses, or `none` for the token alone",
            },
            AclError::InvalidHost(got) => StartError::Invalid {
                variable: "HEALTH_HOSTS",
                got,
                expected: "comma-separated host names or IP addresses, each with an optional port",
            },
            AclError::TokenTooShort | AclError::TokenNotVisibleAscii => StartError::Token {
                len: self.token.as_ref().map_or(0, String::len),
                source: e,
            },
            AclError::NothingAllowed => StartError::Rule(
                "HEALTH_ALLOW=none without HEALTH_TOKEN: the health toggle would allow no one; \
                 set HEALTH_TOKEN (at least 16 bytes of visible ASCII) or HEALTH_ALLOW to the \
                 networks allowed"
                    .to_owned(),
            ),
            other => StartError::Acl(other),
        })
    }

    /// Who the ACL lets use the toggle, for the start-up log.
    pub(crate) fn describe_acl(&self) -> String {
        let mut text = String::new();
        if !self.allow.is_empty() {
            let _ = write!(text, "callers from {}", self.allow.join(", "));
        }
        if self.token.is_some() {
            if !text.is_empty() {
                text.push_str(" with ");
            }
            text.push_str("the bearer token");
        }
        text
    }
}

/// A new random bearer token: 32 bytes from the operating system, in hex.
pub(crate) fn new_token() -> Result<String, StartError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| StartError::Other(format!("no random bytes for the health token: {e}")))?;
    Ok(bytes.iter().fold(String::with_capacity(64), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    }))
}
