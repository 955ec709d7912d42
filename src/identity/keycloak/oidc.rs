//! The realm's token endpoint through the `openidconnect` client: the
//! resource-owner password grant (sign-in) and the refresh grant.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{CoreClient, CoreTokenResponse};
use openidconnect::{
    ClientId, ClientSecret, EndpointNotSet, EndpointSet, IssuerUrl, JsonWebKeySet,
    OAuth2TokenResponse, RefreshToken, RequestTokenError, ResourceOwnerPassword,
    ResourceOwnerUsername, Scope, TokenUrl,
};
use serde::Deserialize;

use super::http::{KcError, KcHttp};
use crate::identity::UpstreamTokens;

type Client = CoreClient<
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
    EndpointNotSet,
>;

/// What a grant came to.
#[derive(Debug)]
pub enum Grant {
    Granted(UpstreamTokens),
    /// The OAuth error and its description (e.g. `invalid_grant`,
    /// `Account is not fully set up`).
    Refused {
        error: String,
        description: String,
    },
}

/// Claims of a Keycloak access token that the gateway uses (read from
/// the token endpoint's answers and from verified RS256 bearer tokens).
#[derive(Debug, Clone, Deserialize)]
pub struct KcClaims {
    pub sub: String,
    #[serde(default)]
    pub exp: Option<f64>,
    #[serde(default)]
    pub iat: Option<f64>,
    #[serde(default)]
    pub typ: Option<String>,
    #[serde(default)]
    pub sid: Option<String>,
    #[serde(default)]
    pub user_id: Option<i64>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub preferred_username: Option<String>,
    #[serde(default)]
    pub email_verified: Option<bool>,
    #[serde(default)]
    pub realm_access: Option<RealmAccess>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RealmAccess {
    #[serde(default)]
    pub roles: Vec<String>,
}

impl KcClaims {
    /// The realm roles the token grants.
    pub fn roles(&self) -> Vec<String> {
        self.realm_access
            .as_ref()
            .map(|r| r.roles.clone())
            .unwrap_or_default()
    }
}

impl KcClaims {
    /// Reads the claims of a token that came straight from the token endpoint
    /// over our own connection (its signature is Keycloak's by construction).
    pub fn of_fresh_token(token: &str) -> Option<Self> {
        let payload = token.split('.').nth(1)?;
        let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

#[derive(Debug)]
pub struct Oidc {
    client: Client,
    http: Arc<KcHttp>,
    /// The metric label of its password grants.
    operation: GrantOperation,
}

/// Which client's password grant a call is (its metric label).
#[derive(Debug, Clone, Copy)]
enum GrantOperation {
    Password,
    PasswordCheck,
}

impl GrantOperation {
    fn name(self) -> &'static str {
        match self {
            Self::Password => "password_grant",
            Self::PasswordCheck => "password_check_grant",
        }
    }
}

impl Oidc {
    /// The gateway's client (`KEYCLOAK_CLIENT_ID`).
    pub fn new(http: Arc<KcHttp>) -> Result<Self, String> {
        let settings = http.settings();
        let (id, secret) = (settings.client_id.clone(), settings.client_secret.clone());
        Self::for_client(http, id, secret, GrantOperation::Password)
    }

    /// The password-check client (`KEYCLOAK_PASSWORD_CHECK_CLIENT_ID`): its
    /// direct grant checks the password only, never a second factor.
    pub fn password_check(http: Arc<KcHttp>) -> Result<Self, String> {
        let settings = http.settings();
        let id = settings.password_check_client_id.clone();
        let secret = settings.password_check_client_secret.clone();
        Self::for_client(http, id, secret, GrantOperation::PasswordCheck)
    }

    fn for_client(
        http: Arc<KcHttp>,
        client_id: String,
        secret: String,
        operation: GrantOperation,
    ) -> Result<Self, String> {
        let issuer = IssuerUrl::new(http.realm_url().to_string()).map_err(|e| e.to_string())?;
        let token_url = TokenUrl::new(http.token_url()).map_err(|e| e.to_string())?;
        let client = CoreClient::new(ClientId::new(client_id), issuer, JsonWebKeySet::default())
            .set_client_secret(ClientSecret::new(secret))
            .set_token_uri(token_url);
        Ok(Self {
            client,
            http,
            operation,
        })
    }

    /// The password grant; `otp` is the one-time code for a user with a
    /// second factor (Keycloak's direct-grant OTP step reads it).
    pub async fn password(
        &self,
        username: &str,
        password: &str,
        otp: Option<&str>,
    ) -> Result<Grant, KcError> {
        let http = Arc::clone(&self.http);
        // An enum, not a `&'static str`: a captured reference makes the
        // future not `Send` for every lifetime the async trait asks for.
        let operation = self.operation;
        let call = move |request| {
            let http = Arc::clone(&http);
            async move { http.execute(operation.name(), request).await }
        };
        let username = ResourceOwnerUsername::new(username.to_string());
        let password = ResourceOwnerPassword::new(password.to_string());
        // Built and sent in one expression per arm: a request held in a
        // variable across the await would make the future not `Send`.
        let result = match otp {
            Some(otp) => {
                self.client
                    .exchange_password(&username, &password)
                    .add_scope(Scope::new("openid".into()))
                    .add_extra_param("otp", otp.to_string())
                    .request_async(&call)
                    .await
            }
            None => {
                self.client
                    .exchange_password(&username, &password)
                    .add_scope(Scope::new("openid".into()))
                    .request_async(&call)
                    .await
            }
        };
        outcome(result)
    }

    pub async fn refresh(&self, refresh_token: &str) -> Result<Grant, KcError> {
        let http = Arc::clone(&self.http);
        let call = move |request| {
            let http = Arc::clone(&http);
            async move { http.execute("refresh_grant", request).await }
        };
        let token = RefreshToken::new(refresh_token.to_string());
        let result = self
            .client
            .exchange_refresh_token(&token)
            .request_async(&call)
            .await;
        outcome(result)
    }
}

type TokenResult = Result<
    CoreTokenResponse,
    RequestTokenError<
        KcError,
        openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    >,
>;

fn outcome(result: TokenResult) -> Result<Grant, KcError> {
    match result {
        Ok(response) => {
            let refresh_token = response
                .refresh_token()
                .map(|t| t.secret().clone())
                .unwrap_or_default();
            Ok(Grant::Granted(UpstreamTokens {
                access_token: response.access_token().secret().clone(),
                refresh_token,
                expires_in: response.expires_in().map_or(0, |d| d.as_secs()),
            }))
        }
        Err(RequestTokenError::ServerResponse(err)) => Ok(Grant::Refused {
            error: err.error().to_string(),
            description: err.error_description().cloned().unwrap_or_default(),
        }),
        Err(RequestTokenError::Request(err)) => Err(err),
        Err(RequestTokenError::Parse(err, _)) => Err(KcError::Unexpected {
            operation: "token",
            status: 200,
            body: err.to_string(),
        }),
        Err(RequestTokenError::Other(text)) => Err(KcError::Unexpected {
            operation: "token",
            status: 0,
            body: text,
        }),
    }
}
