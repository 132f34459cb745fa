//! Reading a [`Profile`] from environment variables.

use std::path::PathBuf;

use super::settings::{
    LimitPolicySetting, SameSiteSetting, Settings, default_capacity, default_max_bytes,
};
use super::tls::check_sslmode;
use super::{Profile, ProfileError, SecretUrl, StoreProfile};

fn invalid(variable: &'static str, value: &str, expected: &'static str) -> ProfileError {
    ProfileError::Invalid {
        variable,
        shown: format!("{value:?}"),
        expected,
    }
}

/// A count above zero, such as a number of sessions or bytes.
fn above_zero(
    variable: &'static str,
    value: Option<String>,
    expected: &'static str,
) -> Result<Option<u64>, ProfileError> {
    value
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| invalid(variable, &v, expected))
        })
        .transpose()
}

fn seconds(variable: &'static str, value: Option<String>) -> Result<Option<u64>, ProfileError> {
    value
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| invalid(variable, &v, "a whole number of seconds"))
        })
        .transpose()
}

impl Profile {
    /// Reads the profile from the process environment; see the
    /// [module docs](super) for the variables.
    ///
    /// # Errors
    ///
    /// A [`ProfileError`] naming the variable and what it accepts.
    pub fn from_env() -> Result<Self, ProfileError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the profile from the process environment, taking a variable
    /// that is not set from `defaults`: for an app or example whose natural
    /// store is not the memory one.
    ///
    /// ```no_run
    /// # use tower_httpsession::profile::Profile;
    /// let profile = Profile::from_env_or(&[
    ///     ("SESSION_STORE", "redis"),
    ///     ("REDIS_URL", "redis://127.0.0.1:6379"),
    /// ])?;
    /// # Ok::<(), tower_httpsession::profile::ProfileError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// A [`ProfileError`] naming the variable and what it accepts.
    pub fn from_env_or(defaults: &[(&str, &str)]) -> Result<Self, ProfileError> {
        Self::from_lookup(|name| {
            std::env::var(name).ok().or_else(|| {
                defaults
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| (*value).to_owned())
            })
        })
    }

    /// Reads the profile from `lookup`, which answers a variable's value:
    /// [`from_env`](Self::from_env) without the process environment, for
    /// tests and other sources.
    ///
    /// # Errors
    ///
    /// A [`ProfileError`] naming the variable and what it accepts.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ProfileError> {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let store = match var("SESSION_STORE").as_deref().map(str::trim) {
            None | Some("memory") => StoreProfile::Memory {
                capacity: above_zero(
                    "SESSION_MEMORY_CAPACITY",
                    var("SESSION_MEMORY_CAPACITY"),
                    "a number of sessions above 0",
                )?
                .unwrap_or_else(default_capacity),
                max_bytes: above_zero(
                    "SESSION_MEMORY_MAX_BYTES",
                    var("SESSION_MEMORY_MAX_BYTES"),
                    "a number of bytes above 0",
                )?
                .unwrap_or_else(default_max_bytes),
            },
            Some("redis") => {
                let list = |name: &str| -> Vec<SecretUrl> {
                    var(name)
                        .map(|v| {
                            v.split(',')
                                .map(str::trim)
                                .filter(|s| !s.is_empty())
                                .map(|s| SecretUrl(s.to_owned()))
                                .collect()
                        })
                        .unwrap_or_default()
                };
                let url = var("REDIS_URL").map(SecretUrl);
                let cluster_urls = list("REDIS_CLUSTER_URLS");
                let sentinels = list("SESSION_REDIS_SENTINELS");
                if url.is_none() && cluster_urls.is_empty() && sentinels.is_empty() {
                    return Err(ProfileError::Missing {
                        variable: "REDIS_URL",
                        profile: "redis",
                    });
                }
                let sentinel_primary = var("SESSION_REDIS_SENTINEL_PRIMARY");
                if !sentinels.is_empty() && sentinel_primary.is_none() {
                    return Err(ProfileError::Missing {
                        variable: "SESSION_REDIS_SENTINEL_PRIMARY",
                        profile: "redis",
                    });
                }
                StoreProfile::Redis {
                    url,
                    cluster_urls,
                    sentinels,
                    sentinel_primary,
                    replica_acks: above_zero(
                        "SESSION_REDIS_REPLICA_ACKS",
                        var("SESSION_REDIS_REPLICA_ACKS"),
                        "a number of replicas above 0",
                    )?
                    .map(|n| {
                        u32::try_from(n).map_err(|_| {
                            invalid(
                                "SESSION_REDIS_REPLICA_ACKS",
                                &n.to_string(),
                                "a number of replicas above 0",
                            )
                        })
                    })
                    .transpose()?,
                    replica_ack_timeout_ms: above_zero(
                        "SESSION_REDIS_REPLICA_ACK_TIMEOUT_MS",
                        var("SESSION_REDIS_REPLICA_ACK_TIMEOUT_MS"),
                        "a number of milliseconds above 0",
                    )?,
                    prefix: var("SESSION_REDIS_PREFIX"),
                    tls_ca_file: var("SESSION_REDIS_TLS_CA_FILE").map(PathBuf::from),
                    tls_client_cert: var("SESSION_REDIS_TLS_CLIENT_CERT").map(PathBuf::from),
                    tls_client_key: var("SESSION_REDIS_TLS_CLIENT_KEY").map(PathBuf::from),
                }
            }
            Some("postgres") => StoreProfile::Postgres {
                url: var("DATABASE_URL")
                    .map(SecretUrl)
                    .ok_or(ProfileError::Missing {
                        variable: "DATABASE_URL",
                        profile: "postgres",
                    })?,
                schema: var("SESSION_PG_SCHEMA"),
                sslmode: var("SESSION_PG_SSLMODE")
                    .map(|mode| check_sslmode(&mode).map(|()| mode))
                    .transpose()?,
                sslrootcert: var("SESSION_PG_SSLROOTCERT").map(PathBuf::from),
            },
            Some(other) => {
                return Err(invalid(
                    "SESSION_STORE",
                    other,
                    "one of memory, redis, postgres",
                ));
            }
        };
        let same_site = match var("SESSION_SAME_SITE").map(|v| v.trim().to_ascii_lowercase()) {
            None => None,
            Some(v) if v == "lax" => Some(SameSiteSetting::Lax),
            Some(v) if v == "strict" => Some(SameSiteSetting::Strict),
            Some(v) if v == "none" => Some(SameSiteSetting::None),
            Some(v) => return Err(invalid("SESSION_SAME_SITE", &v, "one of lax, strict, none")),
        };
        let cookie_secure =
            match var("SESSION_COOKIE_SECURE").map(|v| v.trim().to_ascii_lowercase()) {
                None => None,
                Some(v) if matches!(v.as_str(), "true" | "1" | "yes") => Some(true),
                Some(v) if matches!(v.as_str(), "false" | "0" | "no") => Some(false),
                Some(v) => return Err(invalid("SESSION_COOKIE_SECURE", &v, "true or false")),
            };
        let session_limit = above_zero(
            "SESSION_LIMIT",
            var("SESSION_LIMIT"),
            "a whole number of sessions per principal, 1 or more",
        )?
        .map(|n| {
            u32::try_from(n)
                .ok()
                .and_then(std::num::NonZeroU32::new)
                .ok_or_else(|| invalid("SESSION_LIMIT", &n.to_string(), "at most 4294967295"))
        })
        .transpose()?;
        let session_limit_policy = match var("SESSION_LIMIT_POLICY")
            .map(|v| v.trim().to_ascii_lowercase())
        {
            None => None,
            Some(v) if v == "evict" => Some(LimitPolicySetting::Evict),
            Some(v) if v == "refuse" => Some(LimitPolicySetting::Refuse),
            Some(v) => {
                return Err(invalid(
                    "SESSION_LIMIT_POLICY",
                    &v,
                    "evict (end the least recently used session) or refuse (refuse the new login)",
                ));
            }
        };
        if let (Some(policy), None) = (var("SESSION_LIMIT_POLICY"), session_limit) {
            return Err(invalid(
                "SESSION_LIMIT_POLICY",
                &policy,
                "SESSION_LIMIT to be set as well",
            ));
        }
        let cookie_persistent =
            match var("SESSION_COOKIE_PERSISTENT").map(|v| v.trim().to_ascii_lowercase()) {
                None => None,
                Some(v) if matches!(v.as_str(), "true" | "1" | "yes") => Some(true),
                Some(v) if matches!(v.as_str(), "false" | "0" | "no") => Some(false),
                Some(v) => return Err(invalid("SESSION_COOKIE_PERSISTENT", &v, "true or false")),
            };
        Ok(Settings {
            store,
            connect_timeout_secs: seconds(
                "SESSION_CONNECT_TIMEOUT_SECS",
                var("SESSION_CONNECT_TIMEOUT_SECS"),
            )?,
            cookie_name: var("SESSION_COOKIE_NAME"),
            cookie_secure,
            cookie_persistent,
            cookie_domain: var("SESSION_COOKIE_DOMAIN"),
            cookie_path: var("SESSION_COOKIE_PATH"),
            same_site,
            max_inactive_secs: seconds(
                "SESSION_MAX_INACTIVE_SECS",
                var("SESSION_MAX_INACTIVE_SECS"),
            )?,
            absolute_timeout_secs: seconds(
                "SESSION_ABSOLUTE_TIMEOUT_SECS",
                var("SESSION_ABSOLUTE_TIMEOUT_SECS"),
            )?,
            touch_interval_secs: seconds(
                "SESSION_TOUCH_INTERVAL_SECS",
                var("SESSION_TOUCH_INTERVAL_SECS"),
            )?,
            session_limit,
            session_limit_policy,
        }
        .into())
    }
}
