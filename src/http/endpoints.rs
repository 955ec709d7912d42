//! Paths and methods of the API, resolved the way Starlette's router did:
//! an unknown method on a known path is 405 (with `Allow`), an unknown path
//! whose twin with (or without) a trailing slash exists is a 307 to the twin,
//! anything else is 404. GET routes also answer HEAD.
//!
//! [`PATHS`] is the one list of the API's paths: the router is built from it
//! and so is the OpenAPI document (`/docs/json`).
//!
//! An [`Endpoint`] is one of the API's own; the upstream routes of
//! `ROUTES_FILE` are `crate::routes`'s.

use http::Method;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Root,
    Health,
    Ready,
    Metrics,
    Signup,
    Signin,
    RefreshToken,
    Signout,
    VerifyEmail,
    ResendVerification,
    ForgotPassword,
    ResetPassword,
    Me,
    Users,
    User,
    EmailTest,
    Docs,
    DocsJson,
    Audit,
    /// `/auth/sessions`: the caller's device sessions.
    Sessions,
    Session,
    /// An admin's force-logout of a user.
    UserSessions,
    SsoLogin,
    SsoCallback,
    Totp,
    TotpConfirm,
    /// Keycloak's back-channel logout (OpenID Connect Back-Channel Logout 1.0).
    BackchannelLogout,
    /// Forward-auth: a proxy asks whether a request may pass (any method).
    ForwardAuth,
}

impl Endpoint {
    /// The methods the route answers (every GET route answers HEAD too).
    pub fn methods(self) -> &'static [Method] {
        const GET: &[Method] = &[Method::GET, Method::HEAD];
        const POST: &[Method] = &[Method::POST];
        match self {
            Self::Root
            | Self::Health
            | Self::Ready
            | Self::Metrics
            | Self::Me
            | Self::Docs
            | Self::DocsJson
            | Self::Audit
            | Self::SsoLogin
            | Self::SsoCallback => GET,
            Self::Users => &[Method::GET, Method::HEAD, Method::POST],
            Self::Sessions => &[Method::GET, Method::HEAD, Method::DELETE],
            Self::Session | Self::UserSessions => &[Method::DELETE],
            Self::User => &[Method::GET, Method::HEAD, Method::PUT, Method::DELETE],
            Self::Totp => &[Method::GET, Method::HEAD, Method::POST, Method::DELETE],
            // The original request's method: any is answered (these are
            // the ones documented).
            Self::ForwardAuth => &[
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ],
            Self::Signup
            | Self::Signin
            | Self::RefreshToken
            | Self::Signout
            | Self::VerifyEmail
            | Self::ResendVerification
            | Self::ForgotPassword
            | Self::ResetPassword
            | Self::EmailTest
            | Self::TotpConfirm
            | Self::BackchannelLogout => POST,
        }
    }

    /// Answers every method, those of [`Self::methods`] and any other.
    pub fn any_method(self) -> bool {
        self == Self::ForwardAuth
    }

    /// A label for logs and metrics (the path template).
    pub fn template(self) -> &'static str {
        PATHS
            .iter()
            .find(|(_, route)| *route == self)
            .map_or("unknown", |(path, _)| path)
    }
}

/// Every path of the API and its route, in the order they are documented.
pub const PATHS: &[(&str, Endpoint)] = &[
    ("/", Endpoint::Root),
    ("/health", Endpoint::Health),
    ("/ready", Endpoint::Ready),
    ("/metrics", Endpoint::Metrics),
    ("/users/signup", Endpoint::Signup),
    ("/users/signin", Endpoint::Signin),
    ("/users/refresh-token", Endpoint::RefreshToken),
    ("/users/signout", Endpoint::Signout),
    ("/users/verify-email", Endpoint::VerifyEmail),
    ("/users/resend-verification", Endpoint::ResendVerification),
    ("/users/forgot-password", Endpoint::ForgotPassword),
    ("/users/reset-password", Endpoint::ResetPassword),
    ("/users/me/", Endpoint::Me),
    ("/users/me", Endpoint::Me),
    ("/users/", Endpoint::Users),
    ("/users/{user_id}", Endpoint::User),
    ("/email/email/test", Endpoint::EmailTest),
    ("/docs", Endpoint::Docs),
    ("/docs/json", Endpoint::DocsJson),
    ("/auth/audit", Endpoint::Audit),
    ("/auth/sessions", Endpoint::Sessions),
    ("/auth/sessions/{session_id}", Endpoint::Session),
    (
        "/auth/admin/users/{user_id}/sessions",
        Endpoint::UserSessions,
    ),
    ("/auth/login", Endpoint::SsoLogin),
    ("/auth/callback", Endpoint::SsoCallback),
    ("/auth/mfa/totp", Endpoint::Totp),
    ("/auth/mfa/totp/confirm", Endpoint::TotpConfirm),
    ("/auth/backchannel-logout", Endpoint::BackchannelLogout),
    ("/auth/forward", Endpoint::ForwardAuth),
    ("/auth/forward/{*original}", Endpoint::ForwardAuth),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The route, and its `{...}` segment when the route has one.
    Found(Endpoint, Option<String>),
    WrongMethod(String),
    /// 307 to this path (the twin with or without a trailing slash).
    Redirect(String),
    NotFound,
}

#[derive(Debug)]
pub struct Router {
    inner: matchit::Router<Endpoint>,
}

impl Router {
    pub fn new() -> Result<Self, matchit::InsertError> {
        let mut inner = matchit::Router::new();
        for (path, route) in PATHS {
            inner.insert(*path, *route)?;
        }
        Ok(Self { inner })
    }

    pub fn resolve(&self, method: &Method, path: &str) -> Resolution {
        if let Ok(found) = self.inner.at(path) {
            let route = *found.value;
            if !route.methods().contains(method) && !route.any_method() {
                let allow: Vec<&str> = route.methods().iter().map(Method::as_str).collect();
                return Resolution::WrongMethod(allow.join(", "));
            }
            let param = found.params.iter().next().map(|(_, v)| v.to_string());
            return Resolution::Found(route, param);
        }
        if path != "/" {
            let twin = match path.strip_suffix('/') {
                Some(stripped) => stripped.to_string(),
                None => format!("{path}/"),
            };
            if self.inner.at(&twin).is_ok() {
                return Resolution::Redirect(twin);
            }
        }
        Resolution::NotFound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_like_starlette() {
        let router = Router::new().unwrap();
        assert_eq!(
            router.resolve(&Method::POST, "/users/signin"),
            Resolution::Found(Endpoint::Signin, None)
        );
        assert_eq!(
            router.resolve(&Method::GET, "/users/me"),
            Resolution::Found(Endpoint::Me, None)
        );
        assert_eq!(
            router.resolve(&Method::GET, "/users/12"),
            Resolution::Found(Endpoint::User, Some("12".into()))
        );
        assert_eq!(
            router.resolve(&Method::GET, "/users"),
            Resolution::Redirect("/users/".into())
        );
        assert_eq!(
            router.resolve(&Method::POST, "/users/signin/"),
            Resolution::Redirect("/users/signin".into())
        );
        assert_eq!(
            router.resolve(&Method::GET, "/users/signin"),
            Resolution::WrongMethod("POST".into())
        );
        assert_eq!(router.resolve(&Method::GET, "/nope"), Resolution::NotFound);
        assert_eq!(
            router.resolve(&Method::GET, "/docs/json"),
            Resolution::Found(Endpoint::DocsJson, None)
        );
        assert_eq!(
            router.resolve(&Method::GET, "/docs/"),
            Resolution::Redirect("/docs".into())
        );
        assert_eq!(
            router.resolve(&Method::GET, "/docs/nope"),
            Resolution::NotFound
        );
        assert_eq!(
            router.resolve(&Method::DELETE, "/auth/sessions/AxkkMuB3"),
            Resolution::Found(Endpoint::Session, Some("AxkkMuB3".into()))
        );
        assert_eq!(
            router.resolve(&Method::DELETE, "/auth/admin/users/7/sessions"),
            Resolution::Found(Endpoint::UserSessions, Some("7".into()))
        );
        assert_eq!(
            router.resolve(&Method::HEAD, "/health"),
            Resolution::Found(Endpoint::Health, None)
        );
        let propfind = Method::from_bytes(b"PROPFIND").unwrap();
        assert_eq!(
            router.resolve(&propfind, "/auth/forward"),
            Resolution::Found(Endpoint::ForwardAuth, None)
        );
        assert_eq!(
            router.resolve(&Method::POST, "/auth/forward/admin/x"),
            Resolution::Found(Endpoint::ForwardAuth, Some("admin/x".into()))
        );
    }
}
