//! Single sign-on: the OIDC authorization-code flow (with PKCE) through the
//! identity provider, which brokers to a customer's own provider.
//!
//! A login is begun ([`Sso::begin`]: a pending login is stored, single-use
//! and bound to the browser) and completed at the callback
//! ([`Sso::complete`]: the pending login is used up, the code exchanged, the
//! ID token checked and the user found, or given an id on their first
//! visit). What the browser is sent back to is the api layer's to check.

use std::time::Duration;

use async_trait::async_trait;

use super::{IdentityError, Login};

/// A login to begin.
#[derive(Debug, Clone)]
pub struct SsoRequest {
    /// The identity provider's alias (e.g. `customer`).
    pub provider: String,
    /// Where to send the browser once signed in (already allowed).
    pub redirect: String,
    /// The gateway's callback URL, as the identity provider must send the
    /// browser back to it.
    pub callback_url: String,
    /// How long the pending login may wait for its callback.
    pub lifetime: Duration,
}

/// A begun login: send the browser to `authorize_url`, and give it
/// `browser_key` (in a cookie) to present at the callback.
#[derive(Clone)]
pub struct SsoStart {
    pub authorize_url: String,
    pub browser_key: String,
}

impl std::fmt::Debug for SsoStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsoStart").finish_non_exhaustive()
    }
}

/// What the identity provider sent the browser back with.
#[derive(Clone, Default)]
pub struct SsoCallback {
    pub state: Option<String>,
    pub code: Option<String>,
    /// `error` of the query (e.g. `access_denied`).
    pub error: Option<String>,
    /// The value of the browser's login cookie.
    pub browser_key: Option<String>,
    pub callback_url: String,
}

impl std::fmt::Debug for SsoCallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsoCallback")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

/// A completed login.
#[derive(Debug, Clone)]
pub struct SsoLogin {
    pub login: Login,
    pub provider: String,
    /// Where the browser goes now (saved when the login began).
    pub redirect: String,
    /// The user got their integer id just now (first visit).
    pub provisioned: bool,
}

/// Why a login could not begin or complete; `Display` is the answer's detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SsoRefusal {
    #[error("Unknown identity provider")]
    UnknownProvider,
    #[error("Missing code or state")]
    MissingParameters,
    #[error("Unknown sign-in state")]
    UnknownState,
    #[error("Sign-in state does not belong to this browser")]
    WrongBrowser,
    #[error("Sign-in state already used")]
    StateUsed,
    #[error("Sign-in state expired")]
    StateExpired,
    #[error("Sign-in refused by the identity provider")]
    ProviderError,
    #[error("Authorization code refused (expired or already used)")]
    CodeRefused,
    #[error("Invalid ID token")]
    InvalidIdToken,
}

impl SsoRefusal {
    pub const ALL: [Self; 9] = [
        Self::UnknownProvider,
        Self::MissingParameters,
        Self::UnknownState,
        Self::WrongBrowser,
        Self::StateUsed,
        Self::StateExpired,
        Self::ProviderError,
        Self::CodeRefused,
        Self::InvalidIdToken,
    ];

    /// 401 for a token that does not verify; 400 for the rest.
    pub fn unauthorized(self) -> bool {
        self == Self::InvalidIdToken
    }

    /// A short label for logs and the audit trail.
    pub fn reason(self) -> &'static str {
        match self {
            Self::UnknownProvider => "unknown_provider",
            Self::MissingParameters => "missing_parameters",
            Self::UnknownState => "unknown_state",
            Self::WrongBrowser => "wrong_browser",
            Self::StateUsed => "state_used",
            Self::StateExpired => "state_expired",
            Self::ProviderError => "provider_error",
            Self::CodeRefused => "code_refused",
            Self::InvalidIdToken => "invalid_id_token",
        }
    }
}

#[async_trait]
pub trait Sso: Send + Sync + std::fmt::Debug {
    /// Stores a pending login and says where to send the browser; refuses
    /// an identity provider the realm does not have (or has disabled).
    async fn begin(
        &self,
        request: SsoRequest,
    ) -> Result<Result<SsoStart, SsoRefusal>, IdentityError>;

    /// Uses up the pending login named by `state` (it must be known,
    /// unexpired, unused and this browser's), exchanges the code, checks the
    /// ID token and finds (or provisions) the user.
    async fn complete(
        &self,
        callback: SsoCallback,
    ) -> Result<Result<SsoLogin, SsoRefusal>, IdentityError>;
}
