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

use super::client::{KcClient, KcError, UrlError};
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
    /// Client roles, by client id.
    #[serde(default)]
    pub resource_access: Option<std::collections::BTreeMap<String, RealmAccess>>,
    /// The client the token was issued to.
    #[serde(default)]
    pub azp: Option<String>,
    /// Set on a service account's token (client credentials).
    #[serde(default)]
    pub client_id: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RealmAccess {
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Roles every user of a realm has from Keycloak itself; they say nothing
/// about the user and are left out of the gateway's view.
fn is_builtin_role(role: &str) -> bool {
    matches!(role, "offline_access" | "uma_authorization") || role.starts_with("default-roles-")
}

impl KcClaims {
    /// The roles the token grants, compactly: realm roles by name, client
    /// roles as `client:role` (Keycloak's built-in ones and those of its
    /// `account` console left out), sorted.
    pub fn roles(&self) -> Vec<String> {
        let realm = self
            .realm_access
            .iter()
            .flat_map(|r| r.roles.iter())
            .filter(|role| !is_builtin_role(role))
            .cloned();
        let clients = self
            .resource_access
            .iter()
            .flatten()
            .filter(|(client, _)| client.as_str() != "account")
            .flat_map(|(client, access)| {
                access
                    .roles
                    .iter()
                    .map(move |role| format!("{client}:{role}"))
            });
        let mut roles: Vec<String> = realm.chain(clients).collect();
        roles.sort();
        roles.dedup();
        roles
    }

    /// The client of a service account's token (client credentials), or
    /// `None` for a user's token.
    pub fn service_client(&self) -> Option<&str> {
        let username = self.preferred_username.as_deref()?;
        if self.user_id.is_some() || !username.starts_with("service-account-") {
            return None;
        }
        self.client_id.as_deref().or(self.azp.as_deref())
    }
}

impl KcClient {
    /// The service account's user id (the `sub` of its token): the author
    /// of the admin events authgate's own calls cause.
    pub async fn service_account_id(&self) -> Result<Option<String>, KcError> {
        let token = self.admin_token().await?;
        Ok(KcClaims::of_fresh_token(&token).map(|claims| claims.sub))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_compact_and_service_tokens_are_told_apart() {
        let claims: KcClaims = serde_json::from_value(serde_json::json!({
            "sub": "7d3c", "preferred_username": "ada", "user_id": 42, "azp": "authgate",
            "realm_access": {"roles": ["offline_access", "admin", "default-roles-authgate", "uma_authorization", "user"]},
            "resource_access": {
                "account": {"roles": ["manage-account", "view-profile"]},
                "authgate": {"roles": ["billing-reader"]}
            }
        }))
        .unwrap();
        assert_eq!(claims.roles(), ["admin", "authgate:billing-reader", "user"]);
        assert_eq!(claims.service_client(), None);
        let service: KcClaims = serde_json::from_value(serde_json::json!({
            "sub": "91aa", "preferred_username": "service-account-reports-service",
            "azp": "reports-service", "client_id": "reports-service",
            "realm_access": {"roles": ["reports"]}
        }))
        .unwrap();
        assert_eq!(service.service_client(), Some("reports-service"));
        assert_eq!(service.roles(), ["reports"]);
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
    http: Arc<KcClient>,
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
    pub fn new(http: Arc<KcClient>) -> Result<Self, UrlError> {
        let settings = http.settings();
        let (id, secret) = (settings.client_id.clone(), settings.client_secret.clone());
        Self::for_client(http, id, secret, GrantOperation::Password)
    }

    /// The password-check client (`KEYCLOAK_PASSWORD_CHECK_CLIENT_ID`): its
    /// direct grant checks the password only, never a second factor.
    pub fn password_check(http: Arc<KcClient>) -> Result<Self, UrlError> {
        let settings = http.settings();
        let id = settings.password_check_client_id.clone();
        let secret = settings.password_check_client_secret.clone();
        Self::for_client(http, id, secret, GrantOperation::PasswordCheck)
    }

    fn for_client(
        http: Arc<KcClient>,
        client_id: String,
        secret: String,
        operation: GrantOperation,
    ) -> Result<Self, UrlError> {
        let issuer =
            IssuerUrl::new(http.realm_url().to_string()).map_err(UrlError::of("the realm URL"))?;
        let token_url = TokenUrl::new(http.token_url()).map_err(UrlError::of("the token URL"))?;
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

pub(super) type TokenResult = Result<
    CoreTokenResponse,
    RequestTokenError<
        KcError,
        openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    >,
>;

pub(super) fn outcome(result: TokenResult) -> Result<Grant, KcError> {
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
