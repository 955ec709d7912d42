//! The realm's authorization-code flow with PKCE (S256) through the
//! `openidconnect` client, for single sign-on: the URL that sends a browser
//! to Keycloak (with `kc_idp_hint`, so Keycloak brokers straight to the
//! customer's identity provider), the code exchange, and the ID token's
//! check (signature with the realm's keys, issuer, audience, expiry, nonce).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKeySet,
};
use openidconnect::{
    AuthUrl, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken,
    EndpointNotSet, EndpointSet, IssuerUrl, JsonWebKeySet, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, TokenResponse, TokenUrl,
};
use tokio::sync::Mutex;

use super::client::{KcClient, KcError, UrlError};
use super::oidc::{Grant, outcome};
use crate::clock::Clock;
use crate::identity::UpstreamTokens;

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
    EndpointNotSet,
>;

/// The realm's keys are fetched again after this long (and on a token
/// signed with a key not among them).
const KEYS_FOR: Duration = Duration::from_secs(300);

/// Where to send the browser, and what its callback must match.
pub struct Authorization {
    pub url: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

/// What the code exchange came to.
pub enum Exchange {
    /// The tokens, and the ID token (not checked yet).
    Granted(UpstreamTokens, Box<CoreIdToken>),
    /// Keycloak refused the code (`invalid_grant`: expired, used, or not
    /// issued for this verifier or redirect URI), or gave no ID token.
    Refused { error: String, description: String },
}

/// Why an ID token was refused.
#[derive(Debug, thiserror::Error)]
pub enum IdTokenError {
    #[error("ID token refused: {0}")]
    Invalid(String),
    #[error(transparent)]
    Keycloak(#[from] KcError),
}

#[derive(Debug)]
pub struct Broker {
    client: Client,
    http: Arc<KcClient>,
    issuer: IssuerUrl,
    keys: Mutex<Option<(Instant, CoreJsonWebKeySet)>>,
    clock: Arc<dyn Clock>,
}

impl Broker {
    pub fn new(http: Arc<KcClient>, clock: Arc<dyn Clock>) -> Result<Self, UrlError> {
        let settings = http.settings();
        let issuer =
            IssuerUrl::new(http.realm_url().to_string()).map_err(UrlError::of("the realm URL"))?;
        let public = settings.public_url.as_str().trim_end_matches('/');
        let auth_url = AuthUrl::new(format!(
            "{public}/realms/{}/protocol/openid-connect/auth",
            settings.realm
        ))
        .map_err(UrlError::of("the authorization URL"))?;
        let token_url = TokenUrl::new(http.token_url()).map_err(UrlError::of("the token URL"))?;
        let client = CoreClient::new(
            ClientId::new(settings.client_id.clone()),
            issuer.clone(),
            JsonWebKeySet::default(),
        )
        .set_client_secret(ClientSecret::new(settings.client_secret.clone()))
        .set_auth_uri(auth_url)
        .set_token_uri(token_url);
        Ok(Self {
            client,
            http,
            issuer,
            keys: Mutex::new(None),
            clock,
        })
    }

    /// A fresh authorization request to the identity provider `alias`.
    pub fn authorize(&self, alias: &str, callback_url: &str) -> Result<Authorization, UrlError> {
        let redirect =
            RedirectUrl::new(callback_url.to_string()).map_err(UrlError::of("the callback URL"))?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = self
            .client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_redirect_uri(Cow::Owned(redirect))
            .set_pkce_challenge(challenge)
            .add_extra_param("kc_idp_hint", alias)
            .url();
        Ok(Authorization {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        })
    }

    /// Exchanges a code for tokens, with the login's PKCE verifier.
    pub async fn exchange(
        &self,
        code: &str,
        pkce_verifier: &str,
        callback_url: &str,
    ) -> Result<Exchange, KcError> {
        let redirect =
            RedirectUrl::new(callback_url.to_string()).map_err(|e| KcError::Unexpected {
                operation: "code_grant",
                status: 0,
                body: e.to_string(),
            })?;
        let http = Arc::clone(&self.http);
        let call = move |request| {
            let http = Arc::clone(&http);
            async move { http.execute("code_grant", request).await }
        };
        let result = self
            .client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_string()))
            .set_redirect_uri(Cow::Owned(redirect))
            .request_async(&call)
            .await;
        let id_token = result.as_ref().ok().and_then(|r| r.id_token().cloned());
        match (outcome(result)?, id_token) {
            (Grant::Granted(tokens), Some(id_token)) => {
                Ok(Exchange::Granted(tokens, Box::new(id_token)))
            }
            (Grant::Granted(_), None) => Ok(Exchange::Refused {
                error: "no_id_token".into(),
                description: "the token answer has no ID token".into(),
            }),
            (Grant::Refused { error, description }, _) => {
                Ok(Exchange::Refused { error, description })
            }
        }
    }

    /// Checks an ID token (signature with the realm's keys, issuer, audience
    /// = our client, expiry, nonce) and returns its subject.
    pub async fn verify(
        &self,
        id_token: &CoreIdToken,
        nonce: &str,
    ) -> Result<String, IdTokenError> {
        let (keys, fresh) = self.keys(false).await?;
        match self.check(id_token, nonce, keys) {
            Err(ClaimsVerificationError::SignatureVerification(_)) if !fresh => {
                // The realm's keys may have rotated since they were fetched.
                let (keys, _) = self.keys(true).await?;
                self.check(id_token, nonce, keys)
            }
            other => other,
        }
        .map_err(|err| IdTokenError::Invalid(err.to_string()))
    }

    fn check(
        &self,
        id_token: &CoreIdToken,
        nonce: &str,
        keys: CoreJsonWebKeySet,
    ) -> Result<String, ClaimsVerificationError> {
        let settings = self.http.settings();
        let clock = Arc::clone(&self.clock);
        let verifier = CoreIdTokenVerifier::new_confidential_client(
            ClientId::new(settings.client_id.clone()),
            ClientSecret::new(settings.client_secret.clone()),
            self.issuer.clone(),
            keys,
        )
        .set_time_fn(move || clock.now());
        let claims = id_token.claims(&verifier, &Nonce::new(nonce.to_string()))?;
        Ok(claims.subject().as_str().to_string())
    }

    /// The realm's keys, and whether they were fetched just now.
    async fn keys(&self, refetch: bool) -> Result<(CoreJsonWebKeySet, bool), KcError> {
        let mut cached = self.keys.lock().await;
        if !refetch
            && let Some((at, keys)) = cached.as_ref()
            && at.elapsed() < KEYS_FOR
        {
            return Ok((keys.clone(), false));
        }
        let url = format!("{}/protocol/openid-connect/certs", self.http.realm_url());
        let response = self.http.get_public("jwks", &url).await?;
        if !response.status.is_success() {
            return Err(response.unexpected("jwks", "keys not served"));
        }
        let keys: CoreJsonWebKeySet = response.json("jwks")?;
        *cached = Some((Instant::now(), keys.clone()));
        Ok((keys, true))
    }
}
