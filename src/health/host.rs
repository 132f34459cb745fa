//! The hosts a request to the health endpoints may name, against DNS
//! rebinding; see [`AclBuilder::with_allowed_host`](super::AclBuilder::with_allowed_host).

use std::net::Ipv6Addr;

use http::HeaderMap;
use http::header::HOST;
use http::uri::Authority;

use super::acl::Refusal;

/// One allowed host: a name or an address, with or without a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AllowedHost {
    /// Lowercase; an IPv6 address in brackets, as `Host` writes it.
    host: String,
    /// `None`: any port.
    port: Option<u16>,
}

impl AllowedHost {
    /// `shop.internal`, `shop.internal:8443`, `127.0.0.1`, `[::1]`,
    /// `[::1]:3000`, or a bare IPv6 address (`::1`); `None` for anything
    /// else, such as user info, a path or a port that is not a number.
    pub(super) fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        if let Ok(v6) = value.parse::<Ipv6Addr>() {
            return Some(Self {
                host: format!("[{v6}]"),
                port: None,
            });
        }
        let authority = Authority::try_from(value).ok()?;
        let (host, port) = host_and_port(&authority)?;
        let port = match port {
            Port::Absent => None,
            Port::Number(n) => Some(n),
            Port::Malformed => return None,
        };
        Some(Self {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// Whether a request naming `host` and `port` may pass: the host in any
    /// case; the port exactly if this entry has one, any port if not.
    fn matches(&self, host: &str, port: Port) -> bool {
        self.host.eq_ignore_ascii_case(host)
            && match (self.port, port) {
                (None, _) => true,
                (Some(wanted), Port::Number(n)) => wanted == n,
                (Some(_), Port::Absent | Port::Malformed) => false,
            }
    }
}

/// The port part of an authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Port {
    Absent,
    Number(u16),
    /// Present but not a number that fits a port (`host:`, `host:99999`).
    Malformed,
}

/// The host and port of an authority; `None` if it carries user info or
/// has no host.
fn host_and_port(authority: &Authority) -> Option<(&str, Port)> {
    let host = authority.host();
    if authority.as_str().contains('@') || host.is_empty() {
        return None;
    }
    let port = match (authority.as_str().len() > host.len(), authority.port_u16()) {
        (false, _) => Port::Absent,
        (true, Some(n)) => Port::Number(n),
        (true, None) => Port::Malformed,
    };
    Some((host, port))
}

/// Checks the hosts a request names against `allowed` (not empty): the
/// request must name at least one, through its `Host` header or its URI's
/// authority (HTTP/2's `:authority`, an absolute-form target), and every
/// one it names must be allowed.
pub(super) fn check(
    allowed: &[AllowedHost],
    authority: Option<&Authority>,
    headers: &HeaderMap,
) -> Result<(), Refusal> {
    let passes = |authority: &Authority| {
        host_and_port(authority)
            .is_some_and(|(host, port)| allowed.iter().any(|a| a.matches(host, port)))
    };
    let mut named = false;
    if let Some(authority) = authority {
        named = true;
        if !passes(authority) {
            return Err(Refusal::HostNotAllowed);
        }
    }
    for value in headers.get_all(HOST) {
        named = true;
        if !Authority::try_from(value.as_bytes()).is_ok_and(|a| passes(&a)) {
            return Err(Refusal::HostNotAllowed);
        }
    }
    if named {
        Ok(())
    } else {
        Err(Refusal::HostMissing)
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn allowed(entries: &[&str]) -> Vec<AllowedHost> {
        entries
            .iter()
            .map(|e| AllowedHost::parse(e).unwrap())
            .collect()
    }

    fn host(value: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.append(HOST, HeaderValue::from_bytes(value).unwrap());
        headers
    }

    #[test]
    fn entries_parse_or_are_refused() {
        let parsed = |e: &str| AllowedHost::parse(e).map(|a| (a.host, a.port));
        assert_eq!(
            parsed("Shop.Internal"),
            Some(("shop.internal".into(), None))
        );
        assert_eq!(parsed(" shop:8443 "), Some(("shop".into(), Some(8443))));
        assert_eq!(parsed("127.0.0.1"), Some(("127.0.0.1".into(), None)));
        assert_eq!(parsed("[::1]"), Some(("[::1]".into(), None)));
        assert_eq!(parsed("::1"), Some(("[::1]".into(), None)));
        assert_eq!(parsed("[::1]:3000"), Some(("[::1]".into(), Some(3000))));
        for bad in [
            "",
            "user@shop",
            "shop/health",
            "shop:",
            "shop:http",
            "shop:99999",
            "[::1",
            "shop internal",
            "http://shop",
        ] {
            assert_eq!(AllowedHost::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_port_in_the_entry_must_match_exactly_none_means_any() {
        let list = allowed(&["shop.internal", "admin.internal:8443", "[::1]"]);
        let ok = |value: &[u8]| check(&list, None, &host(value));
        assert_eq!(ok(b"shop.internal"), Ok(()));
        assert_eq!(ok(b"SHOP.internal:3000"), Ok(()));
        assert_eq!(ok(b"[::1]:3000"), Ok(()));
        assert_eq!(ok(b"admin.internal:8443"), Ok(()));
        for refused in [
            &b"admin.internal"[..],
            b"admin.internal:443",
            b"admin.internal:",
            b"evil.example",
            b"shop.internal.evil.example",
            b"evil@shop.internal",
            b"shop.internal\xff",
            b"",
        ] {
            let shown = String::from_utf8_lossy(refused);
            assert_eq!(ok(refused), Err(Refusal::HostNotAllowed), "{shown}");
        }
    }

    #[test]
    fn every_host_named_must_be_allowed_and_one_must_be() {
        let list = allowed(&["shop.internal"]);
        let none = HeaderMap::new();
        assert_eq!(check(&list, None, &none), Err(Refusal::HostMissing));
        let shop = Authority::from_static("shop.internal:3000");
        let evil = Authority::from_static("evil.example");
        assert_eq!(check(&list, Some(&shop), &none), Ok(()));
        assert_eq!(
            check(&list, Some(&evil), &host(b"shop.internal")),
            Err(Refusal::HostNotAllowed)
        );
        assert_eq!(
            check(&list, Some(&shop), &host(b"evil.example")),
            Err(Refusal::HostNotAllowed)
        );
        let mut two = host(b"shop.internal");
        two.append(HOST, HeaderValue::from_static("evil.example"));
        assert_eq!(check(&list, None, &two), Err(Refusal::HostNotAllowed));
    }
}
