//! The caller behind a trusted proxy: `X-Forwarded-For`, read from the
//! right.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

use super::{Acl, Refusal};

/// The most `X-Forwarded-For` entries read; a longer chain is refused.
const MAX_FORWARDED: usize = 32;

impl Acl {
    /// The caller: the peer, or, when the peer is a trusted proxy, the
    /// rightmost `X-Forwarded-For` entry that is not a trusted proxy.
    pub(super) fn client_address(
        &self,
        peer: IpAddr,
        headers: &HeaderMap,
    ) -> Result<IpAddr, Refusal> {
        let peer = peer.to_canonical();
        if !self.is_trusted_proxy(peer) {
            return Ok(peer);
        }
        let mut entries = Vec::new();
        for value in headers.get_all("x-forwarded-for") {
            let value = value.to_str().map_err(|_| Refusal::MalformedForwardedFor)?;
            for entry in value.split(',') {
                entries.push(parse_forwarded(entry).ok_or(Refusal::MalformedForwardedFor)?);
                if entries.len() > MAX_FORWARDED {
                    return Err(Refusal::MalformedForwardedFor);
                }
            }
        }
        // all entries trusted: the leftmost is the farthest hop known
        Ok(entries
            .iter()
            .rev()
            .find(|ip| !self.is_trusted_proxy(**ip))
            .or_else(|| entries.first())
            .copied()
            .unwrap_or(peer))
    }

    fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }
}

/// One `X-Forwarded-For` entry: an address, optionally with a port
/// (`203.0.113.7:4711`, `[2001:db8::1]:4711`), as some proxies write it.
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let ip = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))?;
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;
    use crate::health::acl::Access;
    use crate::health::acl::tests::{headers, ip, peer, refused};

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let acl = Acl::builder()
            .with_allowed_network("10.0.0.0/8")
            .with_trusted_proxy("192.168.1.1")
            .build()
            .unwrap();
        // a spoofed header from an untrusted peer changes nothing
        let spoof = headers(&[("x-forwarded-for", "10.0.0.5")]);
        let access = acl.check(peer("203.0.113.9"), &spoof);
        assert_eq!(access.client(), Some(ip("203.0.113.9")));
        assert_eq!(refused(access), Refusal::AddressNotAllowed);
        // and a malformed one from an untrusted peer is not even read
        let junk = headers(&[("x-forwarded-for", "not an address")]);
        assert!(acl.check(peer("10.0.0.1"), &junk).is_allowed());
    }

    #[test]
    fn forwarded_for_from_trusted_proxy_uses_rightmost_untrusted() {
        let acl = Acl::builder()
            .with_allowed_network("10.0.0.0/8")
            .with_trusted_proxy("192.168.1.0/24")
            .build()
            .unwrap();
        let xff = headers(&[("x-forwarded-for", "10.0.0.5")]);
        let access = acl.check(peer("192.168.1.1"), &xff);
        assert_eq!(
            access,
            Access::Allowed {
                client: ip("10.0.0.5")
            }
        );

        // the client wrote 10.0.0.5 itself; the proxy appended the real one
        let xff = headers(&[("x-forwarded-for", "10.0.0.5, 203.0.113.9")]);
        let access = acl.check(peer("192.168.1.1"), &xff);
        assert_eq!(access.client(), Some(ip("203.0.113.9")));
        assert_eq!(refused(access), Refusal::AddressNotAllowed);

        // hops through two trusted proxies are skipped, also across lines
        let xff = headers(&[
            ("x-forwarded-for", "203.0.113.9, 10.0.0.5"),
            ("x-forwarded-for", "192.168.1.7"),
        ]);
        let access = acl.check(peer("192.168.1.1"), &xff);
        assert_eq!(
            access,
            Access::Allowed {
                client: ip("10.0.0.5")
            }
        );

        // ports and mapped addresses are understood
        let xff = headers(&[("x-forwarded-for", "[::ffff:10.0.0.6]:4711")]);
        let access = acl.check(peer("::ffff:192.168.1.1"), &xff);
        assert_eq!(
            access,
            Access::Allowed {
                client: ip("10.0.0.6")
            }
        );

        // no header: the proxy itself is the caller
        let access = acl.check(peer("192.168.1.1"), &HeaderMap::new());
        assert_eq!(access.client(), Some(ip("192.168.1.1")));
        assert!(!access.is_allowed());

        // every entry trusted: the leftmost is used
        let xff = headers(&[("x-forwarded-for", "192.168.1.9, 192.168.1.8")]);
        let access = acl.check(peer("192.168.1.1"), &xff);
        assert_eq!(access.client(), Some(ip("192.168.1.9")));
    }

    #[test]
    fn malformed_forwarded_for_from_trusted_proxy_is_refused() {
        let acl = Acl::builder()
            .with_allowed_network("0.0.0.0/0")
            .with_trusted_proxy("192.168.1.1")
            .build()
            .unwrap();
        for bad in [
            "unknown",
            "10.0.0.1,",
            "10.0.0.1, , 10.0.0.2",
            "10.0.0.256",
            "",
        ] {
            let xff = headers(&[("x-forwarded-for", bad)]);
            let access = acl.check(peer("192.168.1.1"), &xff);
            assert_eq!(refused(access), Refusal::MalformedForwardedFor, "{bad:?}");
        }
        let long = vec!["10.0.0.1"; MAX_FORWARDED + 1].join(",");
        let xff = headers(&[("x-forwarded-for", &long)]);
        assert_eq!(
            refused(acl.check(peer("192.168.1.1"), &xff)),
            Refusal::MalformedForwardedFor
        );
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"10.0.0.1\xff").unwrap(),
        );
        assert_eq!(
            refused(acl.check(peer("192.168.1.1"), &h)),
            Refusal::MalformedForwardedFor
        );
    }
}
