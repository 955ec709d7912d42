//! Back-channel logout (OpenID Connect Back-Channel Logout 1.0): the
//! identity provider tells the gateway, server to server, that sessions
//! ended there. A backend that has a provider validates the logout token
//! and ends what it names in its store; the api layer then refuses the
//! sessions on every replica.

use async_trait::async_trait;

use super::IdentityError;
use crate::revocation::Revocation;

/// Why a logout token was refused (nothing is ended then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoutRefusal {
    /// No `logout_token`, or not a signed JWT that can be read.
    Malformed,
    /// Signed with another algorithm than RS256 (`none`, an HMAC, ...).
    Algorithm,
    /// A header `typ` other than `logout+jwt`.
    Type,
    /// Not signed by a key of the realm.
    Signature,
    Issuer,
    Audience,
    /// `exp` passed (or missing, or too far ahead).
    Expired,
    /// `iat` missing, in the future, or too old.
    IssuedAt,
    /// No back-channel logout event in `events`.
    Event,
    /// Neither `sid` nor `sub`.
    Subject,
    /// A `nonce` (logout tokens must not have one).
    Nonce,
    /// No `jti`.
    TokenId,
    /// This `jti` was used before.
    Replayed,
}

impl LogoutRefusal {
    pub const ALL: [Self; 13] = [
        Self::Malformed,
        Self::Algorithm,
        Self::Type,
        Self::Signature,
        Self::Issuer,
        Self::Audience,
        Self::Expired,
        Self::IssuedAt,
        Self::Event,
        Self::Subject,
        Self::Nonce,
        Self::TokenId,
        Self::Replayed,
    ];

    /// A label for metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Algorithm => "algorithm",
            Self::Type => "type",
            Self::Signature => "signature",
            Self::Issuer => "issuer",
            Self::Audience => "audience",
            Self::Expired => "expired",
            Self::IssuedAt => "issued_at",
            Self::Event => "event",
            Self::Subject => "subject",
            Self::Nonce => "nonce",
            Self::TokenId => "jti",
            Self::Replayed => "replayed",
        }
    }

    /// The `error_description` of the 400 answer.
    pub fn description(self) -> &'static str {
        match self {
            Self::Malformed => "logout_token is missing or is not a signed JWT",
            Self::Algorithm => "logout_token must be signed with RS256",
            Self::Type => "logout_token has a typ other than logout+jwt",
            Self::Signature => "logout_token is not signed by a key of the realm",
            Self::Issuer => "logout_token has another issuer",
            Self::Audience => "logout_token is not meant for this client",
            Self::Expired => "logout_token has expired (or has no usable exp)",
            Self::IssuedAt => "logout_token has no usable iat (missing, in the future or too old)",
            Self::Event => "logout_token has no back-channel logout event",
            Self::Subject => "logout_token names neither sid nor sub",
            Self::Nonce => "logout_token must not have a nonce",
            Self::TokenId => "logout_token has no jti",
            Self::Replayed => "logout_token was used before",
        }
    }
}

/// What a valid logout token ended.
#[derive(Debug, Clone, Default)]
pub struct LoggedOut {
    /// The user, when the gateway knows them.
    pub user_id: Option<i64>,
    /// The provider's session id the token named, if any.
    pub session: Option<String>,
    /// What is newly ended, for every replica to refuse (empty when the
    /// gateway had ended it already, e.g. its own sign-out).
    pub revocation: Revocation,
}

#[async_trait]
pub trait BackchannelLogout: Send + Sync + std::fmt::Debug {
    /// Validates a logout token and, when it is valid, ends the session it
    /// names (`sid`), or all of the user's (`sub` alone), in the store.
    async fn logout(
        &self,
        logout_token: &str,
    ) -> Result<Result<LoggedOut, LogoutRefusal>, IdentityError>;
}
