//! Who may change the traffic state or see health details.
//!
//! An [`Acl`] allows callers by address (CIDR ranges matched against the
//! socket peer), by bearer token, or by both. It denies by default: a
//! [`Health`](super::Health) router without one refuses every `PUT` and
//! shows details to no one.
//!
//! # The caller's address
//!
//! The address is the socket peer, from axum's
//! [`ConnectInfo<SocketAddr>`](axum::extract::ConnectInfo); serve the app
//! with `into_make_service_with_connect_info::<SocketAddr>()`. Without it
//! the ACL cannot tell who is calling and refuses.
//!
//! `X-Forwarded-For` is read only when the peer is a
//! [trusted proxy](AclBuilder::with_trusted_proxy). Then the caller is the
//! rightmost address in the header that is not itself a trusted proxy: the
//! entries to its left were written by the client and prove nothing. A
//! header that does not parse is refused, not skipped. IPv4-mapped IPv6
//! addresses (`::ffff:10.0.0.1`) are matched as IPv4.
//!
//! # The token
//!
//! `Authorization: Bearer <token>`, compared in constant time against a hash
//! of the configured token, so neither its bytes nor its length leak through
//! timing. `Debug` never prints it.
//!
//! # The host: DNS rebinding
//!
//! A web page can make a browser on an allowed network send requests to
//! the instance: its attacker-controlled name first resolves to the
//! attacker's server, then to the instance's address, and the browser takes
//! the answers for its own origin's. The request then comes from an allowed
//! address, with the attacker's name in `Host`.
//!
//! - A bearer token closes this: a browser cannot attach an
//!   `Authorization` header that the page never learned, cross-origin or
//!   after rebinding.
//! - For an ACL that allows by address alone, a list of allowed hosts
//!   closes it: with [`with_allowed_host`](AclBuilder::with_allowed_host), a request whose
//!   `Host` (or URI authority, as HTTP/2 sends it) is missing or not listed
//!   is refused, whatever its address or token.
//!
//! With neither, an address-only ACL trusts every page a browser on the
//! allowed networks opens.

mod builder;
mod forwarded;
mod token;

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use http::request::Parts;
use http::uri::Authority;
use ipnet::IpNet;

use super::host::{self, AllowedHost};

use self::token::{check_token, digest};

pub use self::builder::{AclBuilder, AclError};

/// The shortest bearer token an [`Acl`] accepts.
pub const MIN_TOKEN_LEN: usize = 16;

/// Which callers may change the traffic state and see health details.
///
/// ```
/// use tower_httpsession::health::Acl;
///
/// let acl = Acl::builder()
///     .with_allowed_network("10.0.0.0/8")
///     .with_allowed_network("fd00::/8")
///     .with_trusted_proxy("10.0.0.2") // the balancer, which sets X-Forwarded-For
///     .with_bearer_token("d5b1c0a4e7f94a3b9c2d")
///     .with_allowed_host("shop-1.internal") // any port
///     .build()
///     .unwrap();
/// // the token never shows
/// assert!(!format!("{acl:?}").contains("d5b1"));
///
/// let bad = Acl::builder().with_allowed_network("10.0.0.0/33").build().unwrap_err();
/// assert!(bad.to_string().contains("10.0.0.0/33"));
/// ```
#[derive(Clone)]
pub struct Acl {
    networks: Vec<IpNet>,
    trusted_proxies: Vec<IpNet>,
    token: Option<[u8; 32]>,
    require_both: bool,
    hosts: Vec<AllowedHost>,
}

impl fmt::Debug for Acl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acl")
            .field("networks", &self.networks)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("token", &self.token.map(|_| "<redacted>"))
            .field("require_both", &self.require_both)
            .field("hosts", &self.hosts)
            .finish()
    }
}

/// Why a caller was refused; logged, never sent to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// No ACL is configured: deny by default.
    NoAcl,
    /// The request carries no `ConnectInfo<SocketAddr>`: the app was served
    /// without `into_make_service_with_connect_info`.
    NoConnectInfo,
    /// `X-Forwarded-For` from a trusted proxy did not parse.
    MalformedForwardedFor,
    /// The caller's address is in no allowed network.
    AddressNotAllowed,
    /// A token is required and none was sent.
    TokenMissing,
    /// The token sent is not the configured one.
    TokenWrong,
    /// Allowed hosts are listed and the request names none: no `Host`
    /// header and no authority in its URI.
    HostMissing,
    /// Allowed hosts are listed and the request names another one.
    HostNotAllowed,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoAcl => "no ACL is configured",
            Self::NoConnectInfo => {
                "no ConnectInfo<SocketAddr> on the request; serve the app with \
                 into_make_service_with_connect_info::<SocketAddr>()"
            }
            Self::MalformedForwardedFor => "malformed X-Forwarded-For from a trusted proxy",
            Self::AddressNotAllowed => "address not in an allowed network",
            Self::TokenMissing => "no bearer token",
            Self::TokenWrong => "wrong bearer token",
            Self::HostMissing => "no Host header or URI authority while allowed hosts are listed",
            Self::HostNotAllowed => "Host not in the allowed hosts",
        })
    }
}

/// What [`Acl::check`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The caller may change the state and see details.
    Allowed {
        /// The caller's address, after `X-Forwarded-For` if trusted.
        client: IpAddr,
    },
    /// The caller may not.
    Refused {
        /// The caller's address, when known.
        client: Option<IpAddr>,
        /// Why.
        reason: Refusal,
    },
}

impl Access {
    /// Whether the caller is allowed.
    #[must_use]
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allowed { .. })
    }

    /// The caller's address, when known.
    #[must_use]
    pub fn client(&self) -> Option<IpAddr> {
        match *self {
            Self::Allowed { client } => Some(client),
            Self::Refused { client, .. } => client,
        }
    }
}

impl Acl {
    /// Starts an empty builder.
    pub fn builder() -> AclBuilder {
        AclBuilder::default()
    }

    /// Decides whether a caller is allowed, from the socket peer (`None`:
    /// unknown, refused) and the request headers. The host, if
    /// [allowed hosts](AclBuilder::with_allowed_host) are listed, is the `Host`
    /// header: use [`check_request`](Self::check_request) where a request
    /// may carry it in its URI, as HTTP/2 requests do.
    #[must_use]
    pub fn check(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Access {
        self.decide(peer, None, headers)
    }

    /// Like [`check`](Self::check), for a whole request head: the host is
    /// also read from the URI's authority (HTTP/2's `:authority`, or an
    /// absolute-form target in HTTP/1.1). The health endpoints use this.
    #[must_use]
    pub fn check_request(&self, peer: Option<SocketAddr>, request: &Parts) -> Access {
        self.decide(peer, request.uri.authority(), &request.headers)
    }

    fn decide(
        &self,
        peer: Option<SocketAddr>,
        authority: Option<&Authority>,
        headers: &HeaderMap,
    ) -> Access {
        let Some(peer) = peer else {
            return Access::Refused {
                client: None,
                reason: Refusal::NoConnectInfo,
            };
        };
        let client = match self.client_address(peer.ip(), headers) {
            Ok(ip) => ip,
            Err(reason) => {
                return Access::Refused {
                    client: Some(peer.ip().to_canonical()),
                    reason,
                };
            }
        };
        let address_ok = self.networks.iter().any(|n| n.contains(&client));
        let token = self.token.as_ref().map(|t| check_token(t, headers));
        let outcome = if self.require_both {
            match token {
                _ if !address_ok => Err(Refusal::AddressNotAllowed),
                Some(Ok(())) => Ok(()),
                Some(Err(reason)) => Err(reason),
                None => Err(Refusal::TokenMissing),
            }
        } else {
            match token {
                _ if address_ok => Ok(()),
                Some(Ok(())) => Ok(()),
                // a wrong token is worth its own log line; a missing one is
                // just an address outside the networks
                Some(Err(Refusal::TokenWrong)) => Err(Refusal::TokenWrong),
                Some(Err(_)) | None => Err(Refusal::AddressNotAllowed),
            }
        };
        // checked last, so that a refusal for the address or the token is
        // logged as such
        let outcome = outcome.and_then(|()| match self.hosts.as_slice() {
            [] => Ok(()),
            hosts => host::check(hosts, authority, headers),
        });
        match outcome {
            Ok(()) => Access::Allowed { client },
            Err(reason) => Access::Refused {
                client: Some(client),
                reason,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    pub(super) const TOKEN: &str = "0123456789abcdef-token";

    pub(super) fn peer(s: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(s.parse().unwrap(), 50_000))
    }

    pub(super) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    pub(super) fn refused(access: Access) -> Refusal {
        match access {
            Access::Refused { reason, .. } => reason,
            Access::Allowed { client } => panic!("allowed {client}"),
        }
    }

    pub(super) fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_v4_and_v6() {
        let acl = Acl::builder()
            .with_allowed_network("10.1.0.0/16")
            .with_allowed_network("2001:db8::/32")
            .with_allowed_network("192.0.2.7")
            .build()
            .unwrap();
        let none = HeaderMap::new();
        assert!(acl.check(peer("10.1.200.3"), &none).is_allowed());
        assert!(acl.check(peer("192.0.2.7"), &none).is_allowed());
        assert!(acl.check(peer("2001:db8:1::5"), &none).is_allowed());
        assert_eq!(
            refused(acl.check(peer("10.2.0.1"), &none)),
            Refusal::AddressNotAllowed
        );
        assert_eq!(
            refused(acl.check(peer("192.0.2.8"), &none)),
            Refusal::AddressNotAllowed
        );
        assert_eq!(
            refused(acl.check(peer("2001:db9::1"), &none)),
            Refusal::AddressNotAllowed
        );
    }

    #[test]
    fn mapped_ipv6_is_matched_as_ipv4() {
        let acl = Acl::builder()
            .with_allowed_network("127.0.0.1/32")
            .build()
            .unwrap();
        let none = HeaderMap::new();
        let access = acl.check(peer("::ffff:127.0.0.1"), &none);
        assert_eq!(
            access,
            Access::Allowed {
                client: ip("127.0.0.1")
            }
        );
        assert!(!acl.check(peer("::ffff:127.0.0.2"), &none).is_allowed());
        // a mapped range in the configuration is IPv4 too
        let acl = Acl::builder()
            .with_allowed_network("::ffff:10.0.0.0/104")
            .build()
            .unwrap();
        assert!(acl.check(peer("10.9.9.9"), &none).is_allowed());
        assert!(acl.check(peer("::ffff:10.9.9.9"), &none).is_allowed());
        assert!(!acl.check(peer("11.0.0.1"), &none).is_allowed());
    }

    #[test]
    fn missing_connect_info_is_refused() {
        let acl = Acl::builder()
            .with_allowed_network("0.0.0.0/0")
            .build()
            .unwrap();
        let access = acl.check(None, &HeaderMap::new());
        assert_eq!(
            access,
            Access::Refused {
                client: None,
                reason: Refusal::NoConnectInfo
            }
        );
    }

    #[test]
    fn either_mode_takes_network_or_token() {
        let acl = Acl::builder()
            .with_allowed_network("127.0.0.1")
            .with_bearer_token(TOKEN)
            .build()
            .unwrap();
        let right = headers(&[("authorization", &format!("Bearer {TOKEN}"))]);
        assert!(acl.check(peer("127.0.0.1"), &HeaderMap::new()).is_allowed());
        assert!(acl.check(peer("198.51.100.1"), &right).is_allowed());
        assert!(
            !acl.check(peer("198.51.100.1"), &HeaderMap::new())
                .is_allowed()
        );
    }

    #[test]
    fn both_mode_needs_network_and_token() {
        let acl = Acl::builder()
            .with_allowed_network("127.0.0.1/32")
            .with_bearer_token(TOKEN)
            .with_network_and_token_required()
            .build()
            .unwrap();
        let right = headers(&[("authorization", &format!("Bearer {TOKEN}"))]);
        let wrong = headers(&[("authorization", "Bearer xxxxxxxxxxxxxxxxxxxxxx")]);
        assert!(acl.check(peer("127.0.0.1"), &right).is_allowed());
        assert_eq!(
            refused(acl.check(peer("127.0.0.2"), &right)),
            Refusal::AddressNotAllowed
        );
        assert_eq!(
            refused(acl.check(peer("127.0.0.1"), &wrong)),
            Refusal::TokenWrong
        );
        assert_eq!(
            refused(acl.check(peer("127.0.0.1"), &HeaderMap::new())),
            Refusal::TokenMissing
        );
    }

    #[test]
    fn listed_hosts_apply_to_every_caller_after_address_and_token() {
        let acl = Acl::builder()
            .with_allowed_network("127.0.0.1")
            .with_bearer_token(TOKEN)
            .with_allowed_host("localhost")
            .build()
            .unwrap();
        let listed = headers(&[("host", "localhost:3000")]);
        assert!(acl.check(peer("127.0.0.1"), &listed).is_allowed());
        let token = format!("Bearer {TOKEN}");
        let cases = [
            (
                "127.0.0.1",
                Some("attacker.example:3000"),
                None,
                Refusal::HostNotAllowed,
            ),
            ("127.0.0.1", None, None, Refusal::HostMissing),
            // the token does not lift the host check
            (
                "198.51.100.1",
                Some("attacker.example"),
                Some(&token),
                Refusal::HostNotAllowed,
            ),
            // an address outside is refused as such, whatever the host
            (
                "198.51.100.1",
                Some("attacker.example"),
                None,
                Refusal::AddressNotAllowed,
            ),
        ];
        for (from, host, token, reason) in cases {
            let mut h = HeaderMap::new();
            if let Some(host) = host {
                h.insert("host", HeaderValue::from_str(host).unwrap());
            }
            if let Some(token) = token {
                h.insert("authorization", HeaderValue::from_str(token).unwrap());
            }
            assert_eq!(
                refused(acl.check(peer(from), &h)),
                reason,
                "{from} {host:?}"
            );
        }
    }

    #[test]
    fn check_request_reads_the_uri_authority_too() {
        let acl = Acl::builder()
            .with_allowed_network("127.0.0.1")
            .with_allowed_host("localhost")
            .build()
            .unwrap();
        let head = |uri: &str, host: Option<&str>| {
            let mut request = http::Request::put(uri);
            if let Some(host) = host {
                request = request.header("host", host);
            }
            request.body(()).unwrap().into_parts().0
        };
        let p = peer("127.0.0.1");
        // HTTP/2: no Host header, the authority in the URI
        assert!(
            acl.check_request(p, &head("https://localhost:3000/actuator/health", None))
                .is_allowed()
        );
        assert_eq!(
            refused(acl.check_request(p, &head("https://attacker.example/", None))),
            Refusal::HostNotAllowed
        );
        // both: both must be listed
        assert_eq!(
            refused(acl.check_request(p, &head("http://attacker.example/", Some("localhost")))),
            Refusal::HostNotAllowed
        );
        assert!(
            acl.check_request(p, &head("/actuator/health", Some("LOCALHOST")))
                .is_allowed()
        );
        assert_eq!(
            refused(acl.check_request(p, &head("/actuator/health", None))),
            Refusal::HostMissing
        );
    }

    #[test]
    fn without_listed_hosts_any_host_passes() {
        let acl = Acl::builder()
            .with_allowed_network("127.0.0.1")
            .build()
            .unwrap();
        let rebound = headers(&[("host", "attacker.example")]);
        assert!(acl.check(peer("127.0.0.1"), &rebound).is_allowed());
        assert!(acl.check(peer("127.0.0.1"), &HeaderMap::new()).is_allowed());
    }
}
