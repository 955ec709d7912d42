//! Local verification of the tokens Keycloak signs (RS256): the realm's
//! JWKS is fetched once, kept in a moka cache, refreshed in the background,
//! and fetched again on an unknown `kid`, at most once per floor interval.
//! Tokens whose `exp` lies further ahead than the access tokens' ceiling
//! (`JWT_EXP_CEILING_MINUTES`) are refused like the legacy ones.
//! A token presented again is answered from the verified tokens until its
//! expiry (see [`crate::tokens::verified`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use moka::future::Cache;
use tokio::sync::Mutex;

use super::client::{KcClient, KcError};
use super::oidc::KcClaims;
use crate::clock::Clock;
use crate::tokens::verified::VerifiedTokens;
use crate::tokens::{
    ACCESS_SCOPE, ExternalCaller, ExternalTokens, ServiceClaims, SessionClaims, TokenError,
    within_ceiling,
};

/// How often the keys are fetched again while nothing asks for a new one.
const REFRESH_EVERY: Duration = Duration::from_secs(300);
/// Least time between two fetches caused by unknown `kid`s.
const REFETCH_FLOOR: Duration = Duration::from_secs(10);
/// The ceiling unless told another: that of `JWT_EXP_TIME_MINUTES`' default.
const DEFAULT_CEILING: Duration = Duration::from_secs(3600 * crate::config::CEILING_LIFETIMES);

#[derive(Debug)]
pub struct Jwks {
    http: Arc<KcClient>,
    keys: Cache<String, Arc<DecodingKey>>,
    last_fetch: Mutex<Option<Instant>>,
    refresher_started: AtomicBool,
    issuer: String,
    clock: Arc<dyn Clock>,
    /// How far ahead an `exp` may lie.
    ceiling: Duration,
    /// Tokens that passed [`Jwks::verify`].
    verified: Option<VerifiedTokens<KcClaims>>,
}

impl Jwks {
    pub fn new(http: Arc<KcClient>, clock: Arc<dyn Clock>) -> Self {
        Self {
            issuer: http.realm_url().to_string(),
            keys: Cache::builder()
                .max_capacity(64)
                .time_to_live(REFRESH_EVERY * 6)
                .build(),
            http,
            last_fetch: Mutex::new(None),
            refresher_started: AtomicBool::new(false),
            ceiling: DEFAULT_CEILING,
            clock,
            verified: Some(VerifiedTokens::default()),
        }
    }

    /// Refuses tokens whose `exp` lies further ahead than `ceiling`.
    pub fn with_ceiling(mut self, ceiling: Duration) -> Self {
        self.ceiling = ceiling;
        self
    }

    /// Checks every token in full, each time it is presented (benchmarks of
    /// the verification itself).
    #[doc(hidden)]
    pub fn without_verified_cache(mut self) -> Self {
        self.verified = None;
        self
    }

    /// Verifies an RS256 token of the realm: signature, issuer, expiry, type.
    pub async fn verify(self: &Arc<Self>, token: &str) -> Result<KcClaims, TokenError> {
        self.start_refresher();
        let verified = self.verified.as_ref();
        if let Some(claims) = verified.and_then(|v| v.get(token, self.clock.unix())) {
            return Ok(claims);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::RS256 {
            return Err(TokenError::Algorithm);
        }
        let kid = header.kid.ok_or(TokenError::Malformed)?;
        let key = self.key(&kid).await.ok_or(TokenError::Signature)?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        validation.set_issuer(&[&self.issuer]);
        let claims = jsonwebtoken::decode::<KcClaims>(token, &key, &validation)
            .map_err(|err| match err.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::Signature,
                jsonwebtoken::errors::ErrorKind::InvalidIssuer => TokenError::Claims,
                _ => TokenError::Malformed,
            })?
            .claims;
        let exp = claims.exp.ok_or(TokenError::Claims)?;
        let now = self.clock.unix();
        if !exp.is_finite() || exp <= now as f64 {
            return Err(TokenError::Expired);
        }
        within_ceiling(exp, now, self.ceiling)?;
        if claims.typ.as_deref().is_some_and(|t| t != "Bearer") {
            return Err(TokenError::Scope);
        }
        if let Some(verified) = verified {
            verified.insert(token, claims.clone(), exp);
        }
        Ok(claims)
    }

    /// The realm's issuer (`<KEYCLOAK_URL>/realms/<realm>`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The realm's RS256 signing key of this id, from the cache (fetched
    /// again on an unknown id, at most once per floor interval).
    pub async fn signing_key(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        self.key(kid).await
    }

    async fn key(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        if let Some(key) = self.keys.get(kid).await {
            return Some(key);
        }
        // Unknown kid: the keys may have rotated. Fetch, but not too often.
        let mut last = self.last_fetch.lock().await;
        // A fetch we waited for may have brought it.
        if let Some(key) = self.keys.get(kid).await {
            return Some(key);
        }
        if last.is_some_and(|at| at.elapsed() < REFETCH_FLOOR) {
            return None;
        }
        if let Err(err) = self.fetch_locked(&mut last).await {
            tracing::warn!(error = %err, "JWKS fetch failed");
        }
        self.keys.get(kid).await
    }

    /// Puts a key into the cache as a fetch would (benchmarks: no HTTP).
    #[doc(hidden)]
    pub async fn insert_key(&self, kid: &str, key: DecodingKey) {
        self.keys.insert(kid.to_string(), Arc::new(key)).await;
    }

    /// Fetches the realm's keys and caches its RS256 signing keys.
    pub async fn fetch(&self) -> Result<usize, KcError> {
        let mut last = self.last_fetch.lock().await;
        self.fetch_locked(&mut last).await
    }

    async fn fetch_locked(&self, last: &mut Option<Instant>) -> Result<usize, KcError> {
        *last = Some(Instant::now());
        let url = format!("{}/protocol/openid-connect/certs", self.issuer);
        let response = self.http.get_public("jwks", &url).await?;
        if !response.status.is_success() {
            return Err(response.unexpected("jwks", "keys not served"));
        }
        let set: JwkSet = response.json("jwks")?;
        let mut count = 0;
        for jwk in &set.keys {
            let (Some(kid), AlgorithmParameters::RSA(rsa)) = (&jwk.common.key_id, &jwk.algorithm)
            else {
                continue;
            };
            if jwk
                .common
                .public_key_use
                .as_ref()
                .is_some_and(|u| *u != jsonwebtoken::jwk::PublicKeyUse::Signature)
            {
                continue;
            }
            match DecodingKey::from_rsa_components(&rsa.n, &rsa.e) {
                Ok(key) => {
                    self.keys.insert(kid.clone(), Arc::new(key)).await;
                    count += 1;
                }
                Err(err) => tracing::warn!(%kid, error = %err, "JWKS key unusable"),
            }
        }
        tracing::info!(keys = count, "JWKS refreshed");
        Ok(count)
    }

    /// Starts the background refresh (once, on the runtime that serves).
    fn start_refresher(self: &Arc<Self>) {
        if self.refresher_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let jwks = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH_EVERY).await;
                if let Err(err) = jwks.fetch().await {
                    tracing::warn!(error = %err, "JWKS background refresh failed");
                }
            }
        });
    }
}

/// A Jwks behind an `Arc`, as the api layer holds it.
#[derive(Debug, Clone)]
pub struct KeycloakTokens(pub Arc<Jwks>);

#[async_trait::async_trait]
impl ExternalTokens for KeycloakTokens {
    async fn verify(&self, token: &str) -> Result<SessionClaims, TokenError> {
        session_claims(self.0.verify(token).await?)
    }

    async fn verify_caller(&self, token: &str) -> Result<ExternalCaller, TokenError> {
        let claims = self.0.verify(token).await?;
        match claims.service_client() {
            Some(client_id) => Ok(ExternalCaller::Service(ServiceClaims {
                client_id: client_id.to_string(),
                roles: claims.roles(),
            })),
            None => session_claims(claims).map(ExternalCaller::User),
        }
    }
}

/// A user's verified Keycloak token as a legacy session.
fn session_claims(claims: KcClaims) -> Result<SessionClaims, TokenError> {
    let user_id = claims.user_id.ok_or(TokenError::Claims)?;
    let roles = claims.roles();
    Ok(SessionClaims {
        user_id,
        email: claims.email,
        device_id: claims.sid,
        exp: claims.exp.unwrap_or_default(),
        iat: claims.iat,
        scope: Some(ACCESS_SCOPE.to_string()),
        kc_rt: None,
        roles: Some(roles),
    })
}

/// Hostile bytes: the Keycloak-token path (RS256 bearer tokens) over
/// mutated segments of a signed token and random text, verified against
/// a cached key as in service (the long run is `scripts/fuzz.sh`). An
/// unknown `kid` makes one fetch attempt per 10 s, to the discard port.
#[cfg(test)]
mod prop {
    use std::sync::LazyLock;

    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
    use jsonwebtoken::{EncodingKey, Header};
    use proptest::prelude::*;

    use super::*;
    use crate::clock::ManualClock;
    use crate::config::{KeycloakSettings, TokenFormat};
    use crate::metrics::Metrics;

    const PRIVATE_PEM: &str = include_str!("../../../bench/fixtures/bench-rsa2048.pem");
    const JWKS: &str = include_str!("../../../bench/fixtures/bench-jwks.json");
    const NOW: i64 = 1_800_000_000;

    struct Fixture {
        runtime: tokio::runtime::Runtime,
        jwks: Arc<Jwks>,
        /// Signed once (an RSA signature per case would be the whole run).
        token: String,
    }

    static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let settings = KeycloakSettings {
            url: "http://127.0.0.1:9".parse().unwrap(),
            public_url: "http://127.0.0.1:9".parse().unwrap(),
            realm: "authgate".into(),
            client_id: "authgate".into(),
            client_secret: "s".into(),
            password_check_client_id: "c".into(),
            password_check_client_secret: "s".into(),
            import_client_id: "i".into(),
            import_client_secret: "s".into(),
            timeout: Duration::from_millis(200),
            token_format: TokenFormat::Legacy,
            admin_events_interval: None,
            request_deadline: Duration::from_secs(8),
        };
        let http = Arc::new(KcClient::new(&settings, Arc::new(Metrics::new().unwrap())).unwrap());
        let issuer = http.realm_url().to_string();
        let jwks =
            Arc::new(Jwks::new(http, Arc::new(ManualClock::at(NOW))).without_verified_cache());
        let set: JwkSet = serde_json::from_str(JWKS).unwrap();
        let kid = set.keys[0].common.key_id.clone().unwrap();
        let AlgorithmParameters::RSA(rsa) = &set.keys[0].algorithm else {
            panic!("fixture key is not RSA");
        };
        let key = DecodingKey::from_rsa_components(&rsa.n, &rsa.e).unwrap();
        runtime.block_on(jwks.insert_key(&kid, key));
        let der: String = PRIVATE_PEM
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let signing = EncodingKey::from_rsa_der(&STANDARD.decode(der).unwrap());
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid);
        let claims = serde_json::json!({
            "exp": NOW + 300, "iat": NOW, "iss": issuer, "sub": "0f8e", "typ": "Bearer",
            "azp": "authgate", "sid": "5d2e", "user_id": 42, "email": "ada@example.com",
            "preferred_username": "ada",
            "realm_access": {"roles": ["user", "offline_access"]},
            "resource_access": {"authgate": {"roles": ["reader"]}},
        });
        let token = jsonwebtoken::encode(&header, &claims, &signing).unwrap();
        Fixture {
            runtime,
            jwks,
            token,
        }
    });

    fn segment() -> impl Strategy<Value = String> {
        let json = prop_oneof![
            Just(r#"{"alg":"none"}"#.to_string()),
            Just(r#"{"alg":"HS256","kid":"bench-rs256"}"#.to_string()),
            Just(r#"{"alg":"RS256"}"#.to_string()),
            Just(r#"{"alg":"RS256","kid":"other"}"#.to_string()),
            Just(r#"{"alg":"RS256","kid":1}"#.to_string()),
            Just(r#"{"sub":"x","user_id":1,"exp":1e999}"#.to_string()),
            Just(r#"{"sub":"x","realm_access":{"roles":"admin"}}"#.to_string()),
            any::<String>(),
        ];
        prop_oneof![
            json.prop_map(|j| URL_SAFE_NO_PAD.encode(j)),
            "[A-Za-z0-9_-]{0,60}",
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

    #[test]
    fn the_signed_token_verifies() {
        let f = &*FIXTURE;
        let claims = f.runtime.block_on(f.jwks.verify(&f.token)).unwrap();
        assert_eq!(claims.user_id, Some(42));
        assert_eq!(claims.roles(), ["authgate:reader", "user"]);
    }

    proptest! {
        /// Never a panic, and nothing but the signed token verifies.
        #[test]
        fn hostile_rs256_tokens(
            part in any::<usize>(),
            with in segment(),
            how in any::<u8>(),
            random in proptest::option::of(any::<String>()),
        ) {
            let f = &*FIXTURE;
            let hostile = random.unwrap_or_else(|| mutated(&f.token, part, with, how));
            let verified = f.runtime.block_on(f.jwks.verify(&hostile));
            if let Ok(claims) = verified {
                prop_assert_eq!(claims.user_id, Some(42));
                prop_assert_eq!(claims.sub, "0f8e");
            }
            let _ = crate::tokens::is_rs256(&hostile);
        }
    }
}
