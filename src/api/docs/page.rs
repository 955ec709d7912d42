//! `GET /docs`: one self-contained page (its style and script inline) that
//! fetches `/docs/json` and renders it, with a "Try it" form per operation.
//! It loads nothing from anywhere else, and its Content-Security-Policy
//! allows only its own inline style and script (by hash) and requests to
//! this origin.

use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue};
use http::{HeaderName, StatusCode};
use sha2::{Digest, Sha256};

use crate::http::Response;

const STYLE: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");

struct Page {
    html: Bytes,
    policy: Option<HeaderValue>,
}

static PAGE: LazyLock<Page> = LazyLock::new(|| {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>API documentation</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <main id=\"app\"><p>Loading <a href=\"docs/json\">/docs/json</a>…</p>\
         <noscript><p>This page needs JavaScript; the document itself is at \
         <a href=\"docs/json\">/docs/json</a>.</p></noscript></main>\n\
         <script>{SCRIPT}</script>\n</body>\n</html>\n"
    );
    let policy = format!(
        "default-src 'none'; style-src '{}'; script-src '{}'; connect-src 'self'; \
         img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        digest(STYLE),
        digest(SCRIPT)
    );
    Page {
        html: Bytes::from(html),
        policy: HeaderValue::from_str(&policy).ok(),
    }
});

/// `sha256-<base64>` of an inline element's text, as CSP names it.
fn digest(text: &str) -> String {
    format!(
        "sha256-{}",
        STANDARD.encode(Sha256::digest(text.as_bytes()))
    )
}

/// `GET /docs`.
pub fn page() -> Response {
    let page = &*PAGE;
    let mut response = Response::empty(StatusCode::OK);
    response.headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
        .headers
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response.headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    if let Some(policy) = &page.policy {
        response
            .headers
            .insert(CONTENT_SECURITY_POLICY, policy.clone());
    }
    response.body = page.html.clone();
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_is_self_contained_and_pinned_by_its_policy() {
        let response = page();
        let html = String::from_utf8(response.body.to_vec()).unwrap();
        for external in [
            "src=\"http",
            "href=\"http",
            "src=\"//",
            "href=\"//",
            "@import",
            "url(http",
        ] {
            assert!(!html.contains(external), "page loads {external}");
        }
        assert!(!SCRIPT.contains("</script"));
        assert!(!STYLE.contains("</style"));
        let policy = response.headers[CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(policy.contains(&digest(SCRIPT)));
        assert!(policy.contains(&digest(STYLE)));
        assert!(policy.starts_with("default-src 'none'"));
    }
}
