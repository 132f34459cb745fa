//! The session cookie: finding it in `Cookie` headers and writing
//! `Set-Cookie`.

use cookie::Cookie;
use http::{HeaderMap, HeaderValue, header};

use crate::config::SessionConfig;
use crate::session::SessionId;

/// The request's `Cookie` header lines, kept as they came: cloning a line
/// the server parsed shares its bytes, so keeping them costs no copy. The
/// session cookie is looked for in them only when the session is first
/// used, so a route that never uses its session parses no cookie.
#[derive(Default)]
pub(crate) struct CookieLines {
    first: Option<HeaderValue>,
    /// Any further `Cookie` lines (HTTP/2 may split the cookies).
    rest: Vec<HeaderValue>,
}

impl CookieLines {
    /// The `Cookie` lines of `headers`.
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let mut lines = headers.get_all(header::COOKIE).iter();
        let first = lines.next().cloned();
        Self {
            first,
            rest: lines.cloned().collect(),
        }
    }

    /// The first cookie named `name` whose value is a well-formed id.
    ///
    /// The header is read as bytes, as browsers send it: another cookie
    /// whose value holds UTF-8 or Latin-1 bytes, and pairs that are empty or
    /// have no `=`, never hide the session cookie. Each `;`-separated pair
    /// is trimmed of spaces and tabs and split at its first `=`; the name is
    /// compared byte for byte, and only the value of a pair with that name
    /// is read, without one pair of surrounding double quotes (RFC 6265
    /// allows them).
    pub(crate) fn session_id(&self, name: &str) -> Option<SessionId> {
        self.first
            .iter()
            .chain(&self.rest)
            .flat_map(|line| line.as_bytes().split(|&b| b == b';'))
            .filter_map(|pair| value_named(pair, name.as_bytes()))
            .find_map(|value| {
                let value = std::str::from_utf8(unquote(value)).ok()?;
                SessionId::from_cookie_value(value)
            })
    }
}

/// The value of one `name=value` pair if its name is `name`.
fn value_named<'a>(pair: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let mut halves = pair.splitn(2, |&b| b == b'=');
    let (pair_name, value) = (halves.next()?, halves.next()?);
    // A header value holds no line breaks or form feeds, so trimming ASCII
    // whitespace trims the spaces and tabs around the name and the value.
    (pair_name.trim_ascii() == name).then(|| value.trim_ascii())
}

/// `value` without one pair of surrounding double quotes, if it has them.
fn unquote(value: &[u8]) -> &[u8] {
    match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    }
}

fn base_cookie(config: &SessionConfig, value: String) -> Cookie<'static> {
    let mut cookie = Cookie::build((config.cookie_name.clone(), value))
        .path(config.path.clone())
        .secure(config.secure)
        .http_only(config.http_only)
        .same_site(config.same_site)
        .build();
    if let Some(domain) = &config.domain {
        cookie.set_domain(domain.clone());
    }
    cookie
}

/// The session cookie for `id`; with `max_age`, a persistent cookie that
/// the browser keeps that long (rounded up to whole seconds), across
/// restarts.
pub(super) fn session_cookie_value(
    config: &SessionConfig,
    id: &SessionId,
    max_age: Option<std::time::Duration>,
) -> Cookie<'static> {
    let mut cookie = base_cookie(config, id.expose_cookie_value());
    if let Some(age) = max_age {
        let secs = age.as_secs() + u64::from(age.subsec_nanos() > 0);
        let secs = i64::try_from(secs).unwrap_or(i64::MAX);
        cookie.set_max_age(cookie::time::Duration::seconds(secs));
    }
    cookie
}

pub(super) fn removal_cookie(config: &SessionConfig) -> Cookie<'static> {
    let mut cookie = base_cookie(config, String::new());
    cookie.make_removal();
    cookie
}

/// Adds a `Set-Cookie`, and keeps shared caches from storing the response:
/// a cached `Set-Cookie` would hand the session to the next visitor.
pub(super) fn append_cookie(headers: &mut HeaderMap, cookie: &Cookie<'static>) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The configuration was validated, so every part is header-safe; a
    // failure here would drop the cookie, never panic.
    match HeaderValue::try_from(cookie.to_string()) {
        Ok(value) => {
            headers.append(header::SET_COOKIE, value);
        }
        Err(error) => {
            tracing::error!(%error, "session cookie is not a valid header value");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session_cookie(headers: &HeaderMap, name: &str) -> Option<SessionId> {
        CookieLines::of(headers).session_id(name)
    }

    #[test]
    fn cookie_is_found_among_others() {
        let id = SessionId::generate().unwrap();
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; SESSION=bad"));
        let value = format!("theme=dark; SESSION={}", id.expose_cookie_value());
        headers.append(header::COOKIE, HeaderValue::try_from(value).unwrap());
        assert_eq!(session_cookie(&headers, "SESSION"), Some(id));
        assert_eq!(session_cookie(&headers, "other"), None);
    }

    /// `session_cookie` over one `Cookie` header of raw bytes.
    fn found_in(bytes: &[u8]) -> Option<SessionId> {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_bytes(bytes).unwrap());
        session_cookie(&headers, "SESSION")
    }

    #[test]
    fn odd_bytes_in_other_cookies_never_hide_the_session() {
        let id = SessionId::generate().unwrap();
        let session = format!("SESSION={}", id.expose_cookie_value());
        let session = session.as_bytes();
        let others: [&[u8]; 9] = [
            "lang=Español".as_bytes(),
            b"lang=Espa\xf1ol",
            b"\xe2\x82\xac=\xff\xfe",
            b"note=a\tb",
            b"flag",
            b"=nameless",
            b"",
            b" \t ",
            b"a=\"unclosed",
        ];
        for other in others {
            for header in [
                [other, b"; ", session].concat(),
                [session, b"; ", other].concat(),
                [other, b";;", session, b";", other].concat(),
            ] {
                let shown = String::from_utf8_lossy(&header).into_owned();
                assert_eq!(found_in(&header).as_ref(), Some(&id), "{shown:?}");
            }
        }
    }

    #[test]
    fn the_session_pair_is_trimmed_and_unquoted_once() {
        let id = SessionId::generate().unwrap();
        let value = id.expose_cookie_value();
        for header in [
            format!(" \t SESSION \t= \t{value} \t;"),
            format!("SESSION=\"{value}\""),
            format!("a=1;SESSION=\"{value}\";b=2"),
        ] {
            assert_eq!(found_in(header.as_bytes()).as_ref(), Some(&id), "{header}");
        }
        for header in [
            format!("SESSION=\"\"{value}\"\""),
            format!("SESSION=\"{value}"),
            format!("SESSION={value}\""),
            format!("session={value}"),
            format!("SESSION2={value}"),
            format!("XSESSION={value}"),
            format!("SESSION={value}x"),
            format!("SESSION=={value}"),
        ] {
            assert_eq!(found_in(header.as_bytes()), None, "{header}");
        }
        let mut latin1 = format!("SESSION={value}").into_bytes();
        latin1.push(0xe9);
        assert_eq!(found_in(&latin1), None);
    }

    #[test]
    fn the_first_well_formed_session_cookie_wins() {
        let first = SessionId::generate().unwrap();
        let second = SessionId::generate().unwrap();
        let header = format!(
            "SESSION=bad; SESSION={}; SESSION={}",
            first.expose_cookie_value(),
            second.expose_cookie_value()
        );
        assert_eq!(found_in(header.as_bytes()), Some(first));
    }

    #[test]
    fn removal_cookie_keeps_attributes() {
        let config = SessionConfig::default()
            .with_path("/app")
            .with_domain("example.com");
        let text = removal_cookie(&config).to_string();
        for part in [
            "SESSION=",
            "Path=/app",
            "Domain=example.com",
            "Secure",
            "SameSite=Lax",
            "Max-Age=0",
        ] {
            assert!(text.contains(part), "{text}");
        }
    }
}
