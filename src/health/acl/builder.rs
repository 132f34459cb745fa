//! [`AclBuilder`]: the allowed networks, proxies, token and hosts, checked
//! into an [`Acl`].

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use super::host::AllowedHost;
use super::{Acl, MIN_TOKEN_LEN, digest};

/// Builds an [`Acl`]; the configuration is checked by
/// [`build`](Self::build).
#[derive(Clone, Default)]
#[must_use]
pub struct AclBuilder {
    networks: Vec<String>,
    trusted_proxies: Vec<String>,
    token: Option<String>,
    require_both: bool,
    hosts: Vec<String>,
}

impl fmt::Debug for AclBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AclBuilder")
            .field("networks", &self.networks)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("require_both", &self.require_both)
            .field("hosts", &self.hosts)
            .finish()
    }
}

impl AclBuilder {
    /// Allows callers from a network, given as CIDR (`"10.0.0.0/8"`,
    /// `"fd00::/8"`) or as one address (`"127.0.0.1"`, `"::1"`). Default:
    /// none.
    pub fn with_allowed_network(mut self, cidr: impl Into<String>) -> Self {
        self.networks.push(cidr.into());
        self
    }

    /// Trusts a proxy (CIDR or one address) to report the client in
    /// `X-Forwarded-For`. Default: none, and the header is ignored.
    ///
    /// A trusted proxy is not thereby allowed: list it with
    /// [`with_allowed_network`](Self::with_allowed_network) too if it should
    /// be.
    pub fn with_trusted_proxy(mut self, cidr: impl Into<String>) -> Self {
        self.trusted_proxies.push(cidr.into());
        self
    }

    /// Allows callers that send `Authorization: Bearer <token>`. Default: no
    /// token. It must be at least [`MIN_TOKEN_LEN`] bytes of visible ASCII.
    pub fn with_bearer_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Requires a caller to come from an allowed network *and* send the
    /// token. Default: either one is enough.
    pub fn with_network_and_token_required(mut self) -> Self {
        self.require_both = true;
        self
    }

    /// Allows requests that name `host`, against DNS rebinding (see the
    /// [module docs](super#the-host-dns-rebinding)). Default: none, and any
    /// host passes.
    ///
    /// Once one host is listed, a caller the rest of the ACL allows must
    /// also name a listed host, or it is refused (403 for a `PUT`, no
    /// details for a `GET`): every `Host` header and the URI's authority
    /// (HTTP/2's `:authority`) must be listed, and at least one must be
    /// there. Give a name (`"shop-1.internal"`), an IPv4 address
    /// (`"127.0.0.1"`) or an IPv6 one (`"[::1]"` or `"::1"`), with or
    /// without a port: without one any port matches, with one only that
    /// port, and a request without a port matches no entry with one. Names
    /// match in any case; a trailing dot or another spelling of an address
    /// is another host.
    ///
    /// ```
    /// use http::{HeaderMap, HeaderValue, header::HOST};
    /// use tower_httpsession::health::{Acl, Refusal};
    ///
    /// let acl = Acl::builder()
    ///     .with_allowed_network("10.0.0.0/8")
    ///     .with_allowed_host("shop-1.internal")
    ///     .with_allowed_host("10.0.0.5:8080")
    ///     .build()
    ///     .unwrap();
    /// let peer = Some("10.0.0.9:50000".parse().unwrap());
    /// let host = |h: &'static str| HeaderMap::from_iter([(HOST, HeaderValue::from_static(h))]);
    /// assert!(acl.check(peer, &host("shop-1.internal:3000")).is_allowed());
    /// assert!(acl.check(peer, &host("10.0.0.5:8080")).is_allowed());
    /// assert!(!acl.check(peer, &host("10.0.0.5:3000")).is_allowed());
    /// // a rebound name
    /// assert!(!acl.check(peer, &host("attacker.example")).is_allowed());
    /// assert!(!acl.check(peer, &HeaderMap::new()).is_allowed());
    /// ```
    pub fn with_allowed_host(mut self, host: impl Into<String>) -> Self {
        self.hosts.push(host.into());
        self
    }

    /// Allows callers from a network.
    #[deprecated(note = "renamed to `with_allowed_network`")]
    pub fn allow(self, cidr: impl Into<String>) -> Self {
        self.with_allowed_network(cidr)
    }

    /// Trusts a proxy to report the client in `X-Forwarded-For`.
    #[deprecated(note = "renamed to `with_trusted_proxy`")]
    pub fn trust_proxy(self, cidr: impl Into<String>) -> Self {
        self.with_trusted_proxy(cidr)
    }

    /// Allows callers that send `Authorization: Bearer <token>`.
    #[deprecated(note = "renamed to `with_bearer_token`")]
    pub fn bearer_token(self, token: impl Into<String>) -> Self {
        self.with_bearer_token(token)
    }

    /// Requires a caller to come from an allowed network and send the token.
    #[deprecated(note = "renamed to `with_network_and_token_required`")]
    pub fn require_both(self) -> Self {
        self.with_network_and_token_required()
    }

    /// Allows requests that name `host`.
    #[deprecated(note = "renamed to `with_allowed_host`")]
    pub fn allow_host(self, host: impl Into<String>) -> Self {
        self.with_allowed_host(host)
    }

    /// Checks the configuration.
    ///
    /// # Errors
    ///
    /// An [`AclError`] naming what is wrong.
    pub fn build(self) -> Result<Acl, AclError> {
        let networks = parse_all(&self.networks, AclError::InvalidNetwork)?;
        let trusted_proxies = parse_all(&self.trusted_proxies, AclError::InvalidProxy)?;
        let token = match &self.token {
            None => None,
            Some(t) if t.len() < MIN_TOKEN_LEN => return Err(AclError::TokenTooShort),
            Some(t) if !t.bytes().all(|b| b.is_ascii_graphic()) => {
                return Err(AclError::TokenNotVisibleAscii);
            }
            Some(t) => Some(digest(t.as_bytes())),
        };
        if networks.is_empty() && token.is_none() {
            return Err(AclError::NothingAllowed);
        }
        if self.require_both && (networks.is_empty() || token.is_none()) {
            return Err(AclError::BothNeedsNetworkAndToken);
        }
        let hosts = self
            .hosts
            .iter()
            .map(|h| AllowedHost::parse(h).ok_or_else(|| AclError::InvalidHost(h.clone())))
            .collect::<Result<_, _>>()?;
        Ok(Acl {
            networks,
            trusted_proxies,
            token,
            require_both: self.require_both,
            hosts,
        })
    }
}

fn parse_all(values: &[String], err: fn(String) -> AclError) -> Result<Vec<IpNet>, AclError> {
    values
        .iter()
        .map(|v| parse_net(v).ok_or_else(|| err(v.clone())))
        .collect()
}

fn parse_net(value: &str) -> Option<IpNet> {
    let value = value.trim();
    let net = match value.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => IpNet::from(value.parse::<IpAddr>().ok()?),
    };
    // a mapped IPv6 range such as ::ffff:10.0.0.0/104 is matched as IPv4
    Some(match net {
        IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
            Some(v4) if v6.prefix_len() >= 96 => {
                IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).ok()?
            }
            _ => net,
        },
        IpNet::V4(_) => net,
    })
}

/// An [`Acl`] configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AclError {
    /// An allowed network is neither CIDR nor an address.
    #[error("allowed network {0:?} is neither a CIDR range nor an IP address")]
    InvalidNetwork(String),
    /// A trusted proxy is neither CIDR nor an address.
    #[error("trusted proxy {0:?} is neither a CIDR range nor an IP address")]
    InvalidProxy(String),
    /// The token is shorter than [`MIN_TOKEN_LEN`].
    #[error(
        "the bearer token is too short: it must be at least {MIN_TOKEN_LEN} bytes of visible ASCII, such as the output of `openssl rand -hex 32`"
    )]
    TokenTooShort,
    /// The token holds bytes a header value cannot carry as a bearer token.
    #[error(
        "the bearer token holds spaces or bytes that are not visible ASCII: it must be at least {MIN_TOKEN_LEN} bytes of visible ASCII, such as the output of `openssl rand -hex 32`"
    )]
    TokenNotVisibleAscii,
    /// Neither a network nor a token: the ACL would allow no one.
    #[error(
        "the ACL allows no one: give at least one allowed network (with_allowed_network), a bearer token (with_bearer_token), or both"
    )]
    NothingAllowed,
    /// [`with_network_and_token_required`](AclBuilder::with_network_and_token_required)
    /// without a network or without a token.
    #[error(
        "with_network_and_token_required needs at least one allowed network and a bearer token: give both, or drop it to allow a caller that matches either"
    )]
    BothNeedsNetworkAndToken,
    /// An allowed host is not a host name or address with an optional port.
    #[error("allowed host {0:?} is not a host name or IP address with an optional port")]
    InvalidHost(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::acl::tests::TOKEN;

    #[test]
    fn configuration_is_checked() {
        let err = |b: AclBuilder| b.build().unwrap_err();
        assert_eq!(
            err(Acl::builder().with_allowed_network("10.0.0.0/33")),
            AclError::InvalidNetwork("10.0.0.0/33".into())
        );
        assert_eq!(
            err(Acl::builder()
                .with_allowed_network("10.0.0.1")
                .with_trusted_proxy("proxy.local")),
            AclError::InvalidProxy("proxy.local".into())
        );
        assert_eq!(err(Acl::builder()), AclError::NothingAllowed);
        assert_eq!(
            err(Acl::builder().with_bearer_token("short")),
            AclError::TokenTooShort
        );
        assert_eq!(
            err(Acl::builder().with_bearer_token("has a space in the token")),
            AclError::TokenNotVisibleAscii
        );
        assert_eq!(
            err(Acl::builder()
                .with_allowed_network("::1")
                .with_network_and_token_required()),
            AclError::BothNeedsNetworkAndToken
        );
        assert_eq!(
            err(Acl::builder()
                .with_allowed_network("::1")
                .with_allowed_host("user@shop")),
            AclError::InvalidHost("user@shop".into())
        );
        assert!(
            err(Acl::builder().with_allowed_network("10.0.0.0/33"))
                .to_string()
                .contains("10.0.0.0/33")
        );
    }

    #[test]
    fn debug_never_prints_the_token() {
        let builder = Acl::builder().with_bearer_token(TOKEN);
        assert!(!format!("{builder:?}").contains("0123"));
        let acl = builder.build().unwrap();
        let debug = format!("{acl:?}");
        assert!(!debug.contains("0123") && debug.contains("redacted"));
    }
}
