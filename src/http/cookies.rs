//! The `access_token` and `refresh_token` cookies, written byte for byte as
//! Starlette wrote them (attributes in the order of Python's `SimpleCookie`:
//! Domain, expires, HttpOnly, Max-Age, Path, SameSite, Secure).

use http::HeaderValue;

use crate::config::CookieSettings;

pub const ACCESS_COOKIE: &str = "access_token";
pub const REFRESH_COOKIE: &str = "refresh_token";

const EPOCH: &str = "Thu, 01 Jan 1970 00:00:00 GMT";

/// `Set-Cookie` value that stores `value` for `max_age` seconds.
pub fn set(
    name: &str,
    value: &str,
    max_age: u64,
    settings: &CookieSettings,
) -> Option<HeaderValue> {
    render(name, value, None, max_age, settings)
}

/// `Set-Cookie` value that deletes the cookie (value `""`, `Max-Age=0`, a 1970 expiry).
pub fn clear(name: &str, settings: &CookieSettings) -> Option<HeaderValue> {
    render(name, "\"\"", Some(EPOCH), 0, settings)
}

fn render(
    name: &str,
    value: &str,
    expires: Option<&str>,
    max_age: u64,
    settings: &CookieSettings,
) -> Option<HeaderValue> {
    let mut out = format!("{name}={value}");
    if let Some(domain) = &settings.domain {
        out.push_str("; Domain=");
        out.push_str(domain);
    }
    if let Some(expires) = expires {
        out.push_str("; expires=");
        out.push_str(expires);
    }
    if settings.http_only {
        out.push_str("; HttpOnly");
    }
    out.push_str(&format!(
        "; Max-Age={max_age}; Path=/; SameSite={}",
        settings.same_site.as_str()
    ));
    if settings.secure {
        out.push_str("; Secure");
    }
    HeaderValue::from_str(&out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SameSite;

    fn defaults() -> CookieSettings {
        CookieSettings {
            domain: None,
            secure: false,
            http_only: true,
            same_site: SameSite::Lax,
        }
    }

    #[test]
    fn set_cookie_as_starlette() {
        let v = set("access_token", "a.b.c", 3600, &defaults()).unwrap();
        assert_eq!(
            v,
            "access_token=a.b.c; HttpOnly; Max-Age=3600; Path=/; SameSite=lax"
        );
    }

    #[test]
    fn clear_cookie_as_starlette() {
        let v = clear("refresh_token", &defaults()).unwrap();
        assert_eq!(
            v,
            "refresh_token=\"\"; expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; Max-Age=0; Path=/; SameSite=lax"
        );
    }

    #[test]
    fn domain_and_secure_when_configured() {
        let settings = CookieSettings {
            domain: Some("example.com".into()),
            secure: true,
            http_only: false,
            same_site: SameSite::Strict,
        };
        let v = set("access_token", "t", 60, &settings).unwrap();
        assert_eq!(
            v,
            "access_token=t; Domain=example.com; Max-Age=60; Path=/; SameSite=strict; Secure"
        );
    }
}
