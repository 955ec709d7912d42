//! The legacy token formats (see the contract's "Tokens" section).
//!
//! - access token: HS256 JWT, `scope = "access_token"`;
//! - refresh token: the same JWT with `scope = "refresh_token"`, wrapped in a
//!   `dir`/`A256GCM` JWE keyed by the 32 bytes of `SECRET_KEY`;
//! - e-mail tokens: HS256 JWTs with `sub` = address and a scope per purpose.
//!
//! Tokens are written exactly as python-jose wrote them (header
//! `{"alg":"HS256","typ":"JWT"}`, compact JSON, `exp` as a float, `iat` as an
//! integer), and read leniently (`exp` float or integer). Expiry is checked
//! against the injected [`Clock`], so tests control time, and so is the
//! lifetime ceiling: a token whose `exp` lies further ahead than
//! [`Ceilings`] allow is refused like an expired one (deliberate difference
//! 14: the old service accepted `exp` = 1e30 for ever).
//!
//! Imports: `config` (the token settings), `clock`.

mod jwe;
pub mod verified;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use serde::{Deserialize, Serialize};

pub use jwe::DirA256Gcm;
use verified::VerifiedTokens;

use crate::clock::Clock;

/// `{"alg":"HS256","typ":"JWT"}` as python-jose encodes it.
const HS256_HEADER_B64: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

pub const ACCESS_SCOPE: &str = "access_token";
pub const REFRESH_SCOPE: &str = "refresh_token";

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token signature or encryption does not verify")]
    Signature,
    #[error("token algorithm is not accepted")]
    Algorithm,
    #[error("token has expired")]
    Expired,
    #[error("token expires further ahead than the lifetime ceiling")]
    BeyondCeiling,
    #[error("token is of another scope")]
    Scope,
    #[error("token claims are missing or of the wrong type")]
    Claims,
    #[error("the key must be 32 bytes")]
    KeyLength,
    #[error("no randomness available")]
    Random,
}

impl TokenError {
    /// A short label for logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Signature => "signature",
            Self::Algorithm => "algorithm",
            Self::Expired => "expired",
            Self::BeyondCeiling => "beyond_ceiling",
            Self::Scope => "scope",
            Self::Claims => "claims",
            Self::KeyLength => "key_length",
            Self::Random => "random",
        }
    }
}

/// Purpose of an e-mailed token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EmailPurpose {
    Verification,
    PasswordReset,
}

impl EmailPurpose {
    pub fn scope(self) -> &'static str {
        match self {
            Self::Verification => "email_verification",
            Self::PasswordReset => "password_reset",
        }
    }
}

/// Claims of an access or refresh token, as read.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SessionClaims {
    pub user_id: i64,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub device_id: Option<String>,
    pub exp: f64,
    #[serde(default)]
    pub iat: Option<f64>,
    #[serde(default)]
    pub scope: Option<String>,
    /// Keycloak's refresh token, wrapped in the legacy refresh token (keycloak mode).
    #[serde(default)]
    pub kc_rt: Option<String>,
    /// The roles a keycloak-mode access token carries (realm roles, and
    /// client roles as `client:role`); absent from legacy and native tokens.
    #[serde(default)]
    pub roles: Option<Vec<String>>,
}

/// Claims written into access and refresh tokens (field order is the wire order).
#[derive(Serialize)]
struct SessionClaimsOut<'a> {
    user_id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_id: Option<&'a str>,
    exp: f64,
    iat: i64,
    scope: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kc_rt: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    roles: Option<&'a [String]>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EmailClaims {
    pub sub: String,
    pub exp: f64,
    #[serde(default)]
    pub scope: Option<String>,
}

#[derive(Serialize)]
struct EmailClaimsOut<'a> {
    sub: &'a str,
    exp: f64,
    iat: i64,
    scope: &'a str,
    /// Makes every e-mail token unique, even two minted in the same second.
    jti: &'a str,
}

/// Tokens signed by an identity provider (Keycloak's RS256 access tokens),
/// verified in-process and read as the legacy claims.
#[async_trait::async_trait]
pub trait ExternalTokens: Send + Sync + std::fmt::Debug {
    /// A user's token.
    async fn verify(&self, token: &str) -> Result<SessionClaims, TokenError>;

    /// A user's token or, where a route admits them, a machine client's
    /// (OAuth client credentials), told apart after one verification.
    async fn verify_caller(&self, token: &str) -> Result<ExternalCaller, TokenError> {
        self.verify(token).await.map(ExternalCaller::User)
    }
}

/// Who an identity provider's token is for.
#[derive(Debug, Clone, PartialEq)]
pub enum ExternalCaller {
    User(SessionClaims),
    Service(ServiceClaims),
}

/// Who a machine client's token is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceClaims {
    pub client_id: String,
    pub roles: Vec<String>,
}

/// True for a JWT whose header names RS256 (a provider's token, not a legacy one).
pub fn is_rs256(token: &str) -> bool {
    jsonwebtoken::decode_header(token).is_ok_and(|h| h.alg == Algorithm::RS256)
}

/// Who a token is for: what goes into a minted access/refresh pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub user_id: i64,
    pub email: Option<String>,
    pub device_id: Option<String>,
    /// Keycloak's refresh token: goes into the refresh token only, never the access token.
    pub upstream_refresh: Option<String>,
    /// Roles to carry in the access token (keycloak mode), never the refresh token.
    pub roles: Option<Vec<String>>,
}

/// Lifetimes of the three token kinds.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub access: Duration,
    pub refresh: Duration,
    pub email: Duration,
}

/// How far ahead of now an `exp` may lie: further, and the token is refused
/// as expired (`JWT_EXP_CEILING_MINUTES`, `JWT_REFRESH_EXP_CEILING_MINUTES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ceilings {
    pub access: Duration,
    pub refresh: Duration,
}

impl Ceilings {
    /// [`crate::config::CEILING_LIFETIMES`] times each lifetime.
    pub fn of(lifetimes: &Lifetimes) -> Self {
        let times = u32::try_from(crate::config::CEILING_LIFETIMES).unwrap_or(u32::MAX);
        Self {
            access: lifetimes.access.saturating_mul(times),
            refresh: lifetimes.refresh.saturating_mul(times),
        }
    }
}

/// The ceiling check: `exp` at most `ceiling` ahead of `now` (Unix seconds).
pub fn within_ceiling(exp: f64, now: i64, ceiling: Duration) -> Result<(), TokenError> {
    if exp > now as f64 + ceiling.as_secs_f64() {
        return Err(TokenError::BeyondCeiling);
    }
    Ok(())
}

/// Mints and verifies every legacy token.
#[derive(Clone)]
pub struct TokenService {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    jwe: DirA256Gcm,
    lifetimes: Lifetimes,
    ceilings: Ceilings,
    clock: Arc<dyn Clock>,
    /// Access tokens that passed [`TokenService::verify_access`].
    verified: Option<VerifiedTokens<SessionClaims>>,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("lifetimes", &self.lifetimes)
            .field("ceilings", &self.ceilings)
            .finish_non_exhaustive()
    }
}

impl TokenService {
    /// `secret` is `SECRET_KEY`; it must be 32 bytes for the JWE. The
    /// ceilings are the default ones ([`Ceilings::of`] the lifetimes).
    pub fn new(
        secret: &[u8],
        lifetimes: Lifetimes,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, TokenError> {
        let encoding = EncodingKey::from_secret(secret).map_err(|_| TokenError::KeyLength)?;
        let decoding = DecodingKey::from_secret(secret).map_err(|_| TokenError::KeyLength)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        Ok(Self {
            encoding,
            decoding,
            validation,
            jwe: DirA256Gcm::new(secret)?,
            ceilings: Ceilings::of(&lifetimes),
            lifetimes,
            clock,
            verified: Some(VerifiedTokens::default()),
        })
    }

    /// Checks every access token in full, each time it is presented
    /// (benchmarks of the verification itself).
    #[doc(hidden)]
    pub fn without_verified_cache(mut self) -> Self {
        self.verified = None;
        self
    }

    /// Refuses tokens whose `exp` lies further ahead than these.
    pub fn with_ceilings(mut self, ceilings: Ceilings) -> Self {
        self.ceilings = ceilings;
        self
    }

    pub fn lifetimes(&self) -> Lifetimes {
        self.lifetimes
    }

    pub fn ceilings(&self) -> Ceilings {
        self.ceilings
    }

    /// Seconds an access token lives (the `expires_in` of the contract).
    pub fn access_seconds(&self) -> u64 {
        self.lifetimes.access.as_secs()
    }

    pub fn mint_access(&self, subject: &Subject) -> Result<String, TokenError> {
        self.mint_session(
            subject,
            ACCESS_SCOPE,
            self.lifetimes.access,
            None,
            subject.roles.as_deref(),
        )
    }

    pub fn mint_refresh(&self, subject: &Subject) -> Result<String, TokenError> {
        let inner = self.mint_session(
            subject,
            REFRESH_SCOPE,
            self.lifetimes.refresh,
            subject.upstream_refresh.as_deref(),
            None,
        )?;
        self.jwe.encrypt(inner.as_bytes())
    }

    /// Verifies an access token: signature, expiry, the lifetime ceiling and
    /// `scope = access_token`. A token presented again is answered from
    /// [`verified`] until its expiry; only a token that passed every check
    /// is kept there.
    pub fn verify_access(&self, token: &str) -> Result<SessionClaims, TokenError> {
        let verified = self.verified.as_ref();
        if let Some(claims) = verified.and_then(|v| v.get(token, self.clock.unix())) {
            return Ok(claims);
        }
        let claims: SessionClaims = self.verify_jwt(token)?;
        let claims = self.check_session(claims, ACCESS_SCOPE, self.ceilings.access)?;
        if let Some(verified) = verified {
            verified.insert(token, claims.clone(), claims.exp);
        }
        Ok(claims)
    }

    /// Decrypts and verifies a refresh token.
    pub fn verify_refresh(&self, token: &str) -> Result<SessionClaims, TokenError> {
        let inner = self.jwe.decrypt(token)?;
        let inner = std::str::from_utf8(&inner).map_err(|_| TokenError::Malformed)?;
        let claims: SessionClaims = self.verify_jwt(inner)?;
        self.check_session(claims, REFRESH_SCOPE, self.ceilings.refresh)
    }

    pub fn mint_email(&self, address: &str, purpose: EmailPurpose) -> Result<String, TokenError> {
        let now = self.clock.unix();
        let mut nonce = [0u8; 9];
        getrandom::fill(&mut nonce).map_err(|_| TokenError::Random)?;
        let jti = URL_SAFE_NO_PAD.encode(nonce);
        self.sign(&EmailClaimsOut {
            sub: address,
            exp: expiry(now, self.lifetimes.email),
            iat: now,
            scope: purpose.scope(),
            jti: &jti,
        })
    }

    /// Verifies signature and expiry of an e-mail token and then its scope:
    /// `Err(Scope)` tells a token of another purpose from a bad one.
    pub fn verify_email(
        &self,
        token: &str,
        purpose: EmailPurpose,
    ) -> Result<EmailClaims, TokenError> {
        let claims: EmailClaims = self.verify_jwt(token)?;
        self.check_expiry(claims.exp)?;
        if claims.scope.as_deref() != Some(purpose.scope()) {
            return Err(TokenError::Scope);
        }
        Ok(claims)
    }

    fn mint_session(
        &self,
        subject: &Subject,
        scope: &str,
        lifetime: Duration,
        kc_rt: Option<&str>,
        roles: Option<&[String]>,
    ) -> Result<String, TokenError> {
        let now = self.clock.unix();
        self.sign(&SessionClaimsOut {
            user_id: subject.user_id,
            email: subject.email.as_deref(),
            device_id: subject.device_id.as_deref(),
            exp: expiry(now, lifetime),
            iat: now,
            scope,
            kc_rt,
            roles,
        })
    }

    fn sign<T: Serialize>(&self, claims: &T) -> Result<String, TokenError> {
        let payload = serde_json::to_vec(claims).map_err(|_| TokenError::Claims)?;
        let message = format!("{HS256_HEADER_B64}.{}", URL_SAFE_NO_PAD.encode(payload));
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &self.encoding, Algorithm::HS256)
                .map_err(|_| TokenError::Signature)?;
        Ok(format!("{message}.{signature}"))
    }

    fn verify_jwt<T: serde::de::DeserializeOwned>(&self, token: &str) -> Result<T, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        jsonwebtoken::decode::<T>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|err| match err.kind() {
                ErrorKind::InvalidSignature => TokenError::Signature,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    TokenError::Algorithm
                }
                ErrorKind::Json(_) => TokenError::Claims,
                _ => TokenError::Malformed,
            })
    }

    fn check_session(
        &self,
        claims: SessionClaims,
        scope: &str,
        ceiling: Duration,
    ) -> Result<SessionClaims, TokenError> {
        self.check_expiry(claims.exp)?;
        within_ceiling(claims.exp, self.clock.unix(), ceiling)?;
        if claims.scope.as_deref() != Some(scope) {
            return Err(TokenError::Scope);
        }
        Ok(claims)
    }

    fn check_expiry(&self, exp: f64) -> Result<(), TokenError> {
        if !exp.is_finite() || exp <= self.clock.unix() as f64 {
            return Err(TokenError::Expired);
        }
        Ok(())
    }
}

/// SHA-256 of a token, hex-encoded: how single-use e-mail tokens and refresh
/// tokens are kept at rest (a database dump holds no usable token).
pub fn digest(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn expiry(now: i64, lifetime: Duration) -> f64 {
    now.saturating_add(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX)) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    const SECRET: &[u8] = b"9e25a2588fcee7d21ea15fb1a63d5135";
    const VALID_SIGNIN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1c2VyX2lkIjo0MiwiZW1haWwiOiJhZGFAZXhhbXBsZS5jb20iLCJkZXZpY2VfaWQiOiI2ZjFjMmE4ZS0zYjdkLTRlNTktOWE0MS0yYzhkN2YwYjVlMTMiLCJleHAiOjQxMDI0NDQ4MDAuMCwiaWF0IjoxNzMyNzkwMDAwLCJzY29wZSI6ImFjY2Vzc190b2tlbiJ9.6YWxBwTgYAALeSatPC_24Nts8o_y-dn2hQcbuenthvU";

    fn service(clock: Arc<ManualClock>) -> TokenService {
        TokenService::new(
            SECRET,
            Lifetimes {
                access: Duration::from_secs(3600),
                refresh: Duration::from_secs(7 * 86400),
                email: Duration::from_secs(86400),
            },
            clock,
        )
        .unwrap()
    }

    #[test]
    fn minted_tokens_are_byte_identical_to_python_jose() {
        // The vector was minted at iat=1732790000 with exp=4102444800.0.
        let clock = Arc::new(ManualClock::at(1_732_790_000));
        let tokens = TokenService::new(
            SECRET,
            Lifetimes {
                access: Duration::from_secs(4_102_444_800 - 1_732_790_000),
                refresh: Duration::from_secs(1),
                email: Duration::from_secs(1),
            },
            clock,
        )
        .unwrap();
        let minted = tokens
            .mint_access(&Subject {
                user_id: 42,
                email: Some("ada@example.com".into()),
                device_id: Some("6f1c2a8e-3b7d-4e59-9a41-2c8d7f0b5e13".into()),
                upstream_refresh: None,
                roles: None,
            })
            .unwrap();
        assert_eq!(minted, VALID_SIGNIN);
    }

    #[test]
    fn access_token_expires_with_the_clock() {
        let clock = Arc::new(ManualClock::at(1_800_000_000));
        let tokens = service(clock.clone());
        let subject = Subject {
            user_id: 7,
            email: None,
            device_id: None,
            upstream_refresh: None,
            roles: None,
        };
        let token = tokens.mint_access(&subject).unwrap();
        assert_eq!(tokens.verify_access(&token).unwrap().user_id, 7);
        clock.advance(3599);
        assert!(tokens.verify_access(&token).is_ok());
        clock.advance(1);
        assert_eq!(tokens.verify_access(&token), Err(TokenError::Expired));
    }

    #[test]
    fn a_token_presented_again_gets_the_same_answer() {
        let tokens = service(Arc::new(ManualClock::at(1_800_000_000)));
        let full = service(Arc::new(ManualClock::at(1_800_000_000))).without_verified_cache();
        let subject = Subject {
            user_id: 7,
            email: Some("a@b.example".into()),
            device_id: Some("d-1".into()),
            upstream_refresh: None,
            roles: None,
        };
        let token = tokens.mint_access(&subject).unwrap();
        let first = tokens.verify_access(&token).unwrap();
        assert_eq!(tokens.verify_access(&token).unwrap(), first);
        assert_eq!(full.verify_access(&token).unwrap(), first);

        // The verified token's text with another payload or signature is
        // checked in full, every time.
        let (head, signature) = token.rsplit_once('.').unwrap();
        let forged = format!("{head}.{}", signature.replace(&signature[..4], "AAAA"));
        let (_, payload) = head.split_once('.').unwrap();
        let other = token.replace(payload, &URL_SAFE_NO_PAD.encode(r#"{"user_id":1}"#));
        for _ in 0..2 {
            assert_eq!(tokens.verify_access(&forged), Err(TokenError::Signature));
            assert_eq!(tokens.verify_access(&other), Err(TokenError::Signature));
        }
        let refresh = tokens.mint_refresh(&subject).unwrap();
        assert!(tokens.verify_access(&refresh).is_err());
    }

    #[test]
    fn scopes_do_not_mix() {
        let clock = Arc::new(ManualClock::at(1_800_000_000));
        let tokens = service(clock);
        let subject = Subject {
            user_id: 7,
            email: Some("a@b.example".into()),
            device_id: None,
            upstream_refresh: Some("upstream.refresh.token".into()),
            roles: Some(vec!["admin".into(), "authgate:billing-reader".into()]),
        };
        let refresh = tokens.mint_refresh(&subject).unwrap();
        let claims = tokens.verify_refresh(&refresh).unwrap();
        assert_eq!(claims.scope.as_deref(), Some(REFRESH_SCOPE));
        assert_eq!(claims.kc_rt.as_deref(), Some("upstream.refresh.token"));
        assert_eq!(claims.roles, None, "roles only in access tokens");
        assert_eq!(
            tokens
                .verify_access(&tokens.mint_access(&subject).unwrap())
                .unwrap()
                .roles,
            subject.roles
        );
        // An access token is not a refresh token, and vice versa.
        let access = tokens.mint_access(&subject).unwrap();
        assert!(tokens.verify_refresh(&access).is_err());
        assert_eq!(
            tokens.verify_access(&access).unwrap().kc_rt,
            None,
            "never in access tokens"
        );
        let email = tokens
            .mint_email("a@b.example", EmailPurpose::Verification)
            .unwrap();
        assert_eq!(tokens.verify_access(&email), Err(TokenError::Claims));
        assert_eq!(
            tokens.verify_email(&email, EmailPurpose::PasswordReset),
            Err(TokenError::Scope)
        );
        assert!(
            tokens
                .verify_email(&email, EmailPurpose::Verification)
                .is_ok()
        );
    }

    /// Deliberate difference 14: an `exp` further ahead than the ceiling is
    /// refused (the old service accepted 1e30), and never kept as verified.
    #[test]
    fn exp_beyond_the_ceiling_is_refused_and_never_kept() {
        let now = 1_800_000_000;
        let clock = Arc::new(ManualClock::at(now));
        let tokens = service(clock.clone());
        assert_eq!(
            tokens.ceilings(),
            Ceilings {
                access: Duration::from_secs(4 * 3600),
                refresh: Duration::from_secs(4 * 7 * 86400),
            }
        );
        let access = |exp: f64| {
            tokens
                .sign(&SessionClaimsOut {
                    user_id: 7,
                    email: None,
                    device_id: None,
                    exp,
                    iat: now,
                    scope: ACCESS_SCOPE,
                    kc_rt: None,
                    roles: None,
                })
                .unwrap()
        };
        let at_ceiling = access((now + 4 * 3600) as f64);
        assert!(tokens.verify_access(&at_ceiling).is_ok());
        for exp in [(now + 4 * 3600 + 1) as f64, 4_102_444_800.0, 1e30, f64::MAX] {
            let token = access(exp);
            for _ in 0..2 {
                assert_eq!(
                    tokens.verify_access(&token),
                    Err(TokenError::BeyondCeiling),
                    "exp {exp}"
                );
            }
            // Once the clock has caught up with it, the same token is fine:
            // the refusal was not remembered either.
        }
        let later = access((now + 5 * 3600) as f64);
        assert_eq!(tokens.verify_access(&later), Err(TokenError::BeyondCeiling));
        clock.advance(3600);
        assert!(tokens.verify_access(&later).is_ok());

        let refresh = |exp: f64| {
            let inner = tokens
                .sign(&SessionClaimsOut {
                    user_id: 7,
                    email: None,
                    device_id: None,
                    exp,
                    iat: now,
                    scope: REFRESH_SCOPE,
                    kc_rt: None,
                    roles: None,
                })
                .unwrap();
            tokens.jwe.encrypt(inner.as_bytes()).unwrap()
        };
        let now = clock.unix();
        assert!(
            tokens
                .verify_refresh(&refresh((now + 27 * 86400) as f64))
                .is_ok()
        );
        assert_eq!(
            tokens.verify_refresh(&refresh((now + 29 * 86400) as f64)),
            Err(TokenError::BeyondCeiling)
        );
        assert_eq!(
            tokens.verify_refresh(&refresh(1e30)),
            Err(TokenError::BeyondCeiling)
        );

        // Configured ceilings replace the default ones.
        let tight = service(clock.clone()).with_ceilings(Ceilings {
            access: Duration::from_secs(3600),
            refresh: Duration::from_secs(7 * 86400),
        });
        let minted = tight
            .mint_access(&Subject {
                user_id: 7,
                email: None,
                device_id: None,
                upstream_refresh: None,
                roles: None,
            })
            .unwrap();
        assert!(tight.verify_access(&minted).is_ok());
        assert_eq!(
            tight.verify_access(&access((now + 2 * 3600) as f64)),
            Err(TokenError::BeyondCeiling)
        );
    }

    #[test]
    fn email_tokens_are_unique_within_a_second() {
        let tokens = service(Arc::new(ManualClock::at(1_800_000_000)));
        let a = tokens
            .mint_email("a@b.example", EmailPurpose::PasswordReset)
            .unwrap();
        let b = tokens
            .mint_email("a@b.example", EmailPurpose::PasswordReset)
            .unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn alg_none_and_truncation_are_rejected() {
        let tokens = service(Arc::new(ManualClock::at(1_800_000_000)));
        let payload = VALID_SIGNIN.split('.').nth(1).unwrap();
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert!(tokens.verify_access(&none).is_err());
        let truncated = &VALID_SIGNIN[..VALID_SIGNIN.len() - 5];
        assert!(tokens.verify_access(truncated).is_err());
        assert!(tokens.verify_access("garbage").is_err());
        assert!(tokens.verify_access("").is_err());
    }

    /// Every token of the legacy vectors is accepted or refused as its name says.
    #[test]
    fn legacy_vectors() {
        let vectors: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/legacy.json")).unwrap();
        let secret = vectors["secret_key"].as_str().unwrap();
        assert_eq!(secret.as_bytes(), SECRET);
        let access = &vectors["access_tokens"];
        let text = |v: &serde_json::Value| v.as_str().unwrap().to_string();
        // The valid vectors expire in 2100, beyond the default ceilings.
        let bounded = service(Arc::new(ManualClock::at(1_800_000_000)));
        assert_eq!(
            bounded.verify_access(&text(&access["valid_signin"])),
            Err(TokenError::BeyondCeiling)
        );
        assert_eq!(
            bounded.verify_refresh(&text(&vectors["refresh_tokens"]["valid"])),
            Err(TokenError::BeyondCeiling)
        );
        let century = Duration::from_secs(100 * 365 * 86400);
        let tokens = service(Arc::new(ManualClock::at(1_800_000_000))).with_ceilings(Ceilings {
            access: century,
            refresh: century,
        });

        let signin = tokens
            .verify_access(&text(&access["valid_signin"]))
            .unwrap();
        assert_eq!(signin.user_id, 42);
        assert_eq!(signin.email.as_deref(), Some("ada@example.com"));
        assert_eq!(
            signin.device_id.as_deref(),
            Some("6f1c2a8e-3b7d-4e59-9a41-2c8d7f0b5e13")
        );
        let refreshed = tokens
            .verify_access(&text(&access["valid_refreshed"]))
            .unwrap();
        assert_eq!((refreshed.user_id, refreshed.email), (42, None));
        assert_eq!(
            tokens.verify_access(&text(&access["expired"])),
            Err(TokenError::Expired)
        );
        assert_eq!(
            tokens.verify_access(&text(&access["wrong_secret"])),
            Err(TokenError::Signature)
        );

        let refresh = &vectors["refresh_tokens"];
        let claims = tokens.verify_refresh(&text(&refresh["valid"])).unwrap();
        assert_eq!(claims.user_id, 42);
        assert_eq!(
            tokens.verify_refresh(&text(&refresh["expired"])),
            Err(TokenError::Expired)
        );
        // A refresh token is not an access token.
        assert!(tokens.verify_access(&text(&refresh["valid"])).is_err());

        let email = &vectors["email_tokens"];
        let verification = text(&email["email_verification"]);
        let reset = text(&email["password_reset"]);
        assert_eq!(
            tokens
                .verify_email(&verification, EmailPurpose::Verification)
                .unwrap()
                .sub,
            "ada@example.com"
        );
        assert!(
            tokens
                .verify_email(&reset, EmailPurpose::PasswordReset)
                .is_ok()
        );
        assert_eq!(
            tokens.verify_email(&verification, EmailPurpose::PasswordReset),
            Err(TokenError::Scope)
        );
        // Deliberate difference 1: e-mail tokens are not access tokens.
        assert!(tokens.verify_access(&verification).is_err());
        assert!(tokens.verify_access(&reset).is_err());
    }
}

/// Hostile bytes: the legacy HS256 tokens (access, e-mail) and the JWE
/// refresh token over round trips, mutated segments and random text (the
/// long run is `scripts/fuzz.sh`).
#[cfg(test)]
mod prop {
    use proptest::prelude::prop;
    use proptest::prelude::*;

    use super::*;
    use crate::clock::ManualClock;

    const SECRET: &[u8] = b"9e25a2588fcee7d21ea15fb1a63d5135";
    const NOW: i64 = 1_732_790_000;

    fn service() -> TokenService {
        TokenService::new(
            SECRET,
            Lifetimes {
                access: Duration::from_secs(3600),
                refresh: Duration::from_secs(7 * 86400),
                email: Duration::from_secs(86400),
            },
            Arc::new(ManualClock::at(NOW)),
        )
        .unwrap()
        .without_verified_cache()
    }

    fn subject() -> impl Strategy<Value = Subject> {
        (
            any::<i64>(),
            proptest::option::of(any::<String>()),
            proptest::option::of("[a-f0-9-]{0,36}"),
            proptest::option::of(any::<String>()),
            proptest::option::of(prop::collection::vec(any::<String>(), 0..4)),
        )
            .prop_map(
                |(user_id, email, device_id, upstream_refresh, roles)| Subject {
                    user_id,
                    email,
                    device_id,
                    upstream_refresh,
                    roles,
                },
            )
    }

    /// A segment to put into a token: base64 of JSON of every shape (what
    /// a forger would try), bare text, or nothing.
    fn segment() -> impl Strategy<Value = String> {
        let json = prop_oneof![
            Just(r#"{"alg":"none","typ":"JWT"}"#.to_string()),
            Just(r#"{"alg":"HS512"}"#.to_string()),
            Just(r#"{"alg":"RS256","kid":"x"}"#.to_string()),
            Just(r#"{"alg":"HS256","typ":"JWT","crit":["b64"]}"#.to_string()),
            Just(r#"{"user_id":1,"exp":1e400,"scope":"access_token"}"#.to_string()),
            Just(r#"{"user_id":"1","exp":"soon"}"#.to_string()),
            Just(r#"{"user_id":1,"exp":4102444800,"scope":"access_token"}"#.to_string()),
            Just("[".repeat(200)),
            any::<String>(),
        ];
        prop_oneof![
            json.prop_map(|j| URL_SAFE_NO_PAD.encode(j)),
            "[A-Za-z0-9_=+/-]{0,40}",
            Just(String::new()),
            any::<String>(),
        ]
    }

    fn mutated(token: &str, part: usize, with: String, how: u8) -> String {
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let part = part % parts.len();
        match how % 5 {
            0 => parts[part] = with,
            1 => {
                parts.remove(part);
            }
            2 => parts.insert(part, with),
            3 => parts[part].push_str(&with),
            _ => {
                // One character of the segment changed.
                let mut chars: Vec<char> = parts[part].chars().collect();
                if !chars.is_empty() {
                    let at = usize::from(how) % chars.len();
                    chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
                }
                parts[part] = chars.into_iter().collect();
            }
        }
        parts.join(".")
    }

    proptest! {
        /// Round trip: what is minted verifies, with the subject's claims.
        #[test]
        fn session_round_trip(subject in subject()) {
            let tokens = service();
            let access = tokens.verify_access(&tokens.mint_access(&subject).unwrap()).unwrap();
            prop_assert_eq!(access.user_id, subject.user_id);
            prop_assert_eq!(&access.email, &subject.email);
            prop_assert_eq!(&access.device_id, &subject.device_id);
            prop_assert_eq!(&access.roles, &subject.roles);
            prop_assert_eq!(access.kc_rt, None);
            let refresh = tokens.verify_refresh(&tokens.mint_refresh(&subject).unwrap()).unwrap();
            prop_assert_eq!(refresh.user_id, subject.user_id);
            prop_assert_eq!(&refresh.kc_rt, &subject.upstream_refresh);
            prop_assert_eq!(refresh.roles, None);
            // Neither passes for the other.
            prop_assert!(tokens.verify_refresh(&tokens.mint_access(&subject).unwrap()).is_err());
        }

        #[test]
        fn email_round_trip(address in any::<String>(), reset in prop::bool::ANY) {
            let tokens = service();
            let purpose = if reset { EmailPurpose::PasswordReset } else { EmailPurpose::Verification };
            let other = if reset { EmailPurpose::Verification } else { EmailPurpose::PasswordReset };
            let token = tokens.mint_email(&address, purpose).unwrap();
            prop_assert_eq!(tokens.verify_email(&token, purpose).unwrap().sub, address);
            prop_assert_eq!(tokens.verify_email(&token, other), Err(TokenError::Scope));
        }

        /// Mutated segments and random text: never a panic, and nothing
        /// but the minted token itself verifies (to its own claims).
        #[test]
        fn hostile_tokens(
            subject in subject(),
            part in any::<usize>(),
            with in segment(),
            how in any::<u8>(),
            random in proptest::option::of(any::<String>()),
        ) {
            let tokens = service();
            let access = tokens.mint_access(&subject).unwrap();
            let hostile = random.unwrap_or_else(|| mutated(&access, part, with, how));
            if let Ok(claims) = tokens.verify_access(&hostile) {
                prop_assert_eq!(claims.user_id, subject.user_id);
                prop_assert_eq!(&claims.email, &subject.email);
            }
            if let Ok(claims) = tokens.verify_email(&hostile, EmailPurpose::Verification) {
                return Err(TestCaseError::fail(format!("an access token passed as an e-mail token: {claims:?}")));
            }
            let _ = tokens.verify_refresh(&hostile);
            let _ = is_rs256(&hostile);
        }
    }
}
