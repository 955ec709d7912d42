//! [`Sso`] through Keycloak: the realm brokers to the customer's identity
//! provider; the gateway keeps the pending logins in PostgreSQL and gives a
//! first-time brokered user their integer id.

use async_trait::async_trait;
use uuid::Uuid;

use super::KeycloakBackend;
use super::admin::LEGACY_ID;
use super::broker::Exchange;
use super::oidc::{Grant, KcClaims};
use super::registry::IdentityRow;
use super::sso_logins::NewLogin;
use crate::identity::sso::{Sso, SsoCallback, SsoLogin, SsoRefusal, SsoRequest, SsoStart};
use crate::identity::{IdentityError, Internal, Login, User};

impl KeycloakBackend {
    /// Whether the realm has this identity provider, enabled (asked at most
    /// every few seconds per alias).
    async fn provider_known(&self, alias: &str) -> Result<bool, IdentityError> {
        if let Some(known) = self.sso.providers.get(alias).await {
            return Ok(known);
        }
        let known = self.admin.identity_provider_enabled(alias).await?;
        self.sso.providers.insert(alias.to_string(), known).await;
        Ok(known)
    }

    /// The user behind a brokered login, given an id on their first one.
    async fn brokered_user(&self, subject: &str) -> Result<(User, bool), IdentityError> {
        let keycloak_id = Uuid::parse_str(subject).map_err(|_| {
            IdentityError::Internal(Internal::Inconsistent("ID token subject is not a UUID"))
        })?;
        if let Some(identity) = self.registry.by_keycloak_id(keycloak_id).await? {
            return Ok((identity.user(true), false));
        }
        let mut tx = self.registry.begin().await?;
        self.registry.lock_keycloak_id(&mut tx, keycloak_id).await?;
        // Another replica may have finished the same first login meanwhile.
        if let Some(identity) = self.registry.by_keycloak_id(keycloak_id).await? {
            return Ok((identity.user(true), false));
        }
        let kc = self.admin.get(subject).await?.ok_or_else(|| {
            IdentityError::Internal(Internal::Inconsistent("brokered user not in Keycloak"))
        })?;
        if kc.legacy_id().is_some() {
            let user = self.user_of(&kc).await?.ok_or_else(|| {
                IdentityError::Internal(Internal::Inconsistent(
                    "Keycloak user has no usable legacy_id",
                ))
            })?;
            return Ok((user, false));
        }
        let legacy_id = self.registry.allocate_id().await?;
        if let Err(message) = self
            .admin
            .set_attribute(&kc, LEGACY_ID, &legacy_id.to_string())
            .await?
        {
            return Err(IdentityError::Internal(Internal::KeycloakRefused {
                what: "the legacy_id",
                detail: message,
            }));
        }
        let identity = IdentityRow {
            legacy_id,
            keycloak_id,
            username: kc.username.clone(),
            email: kc.email.clone().unwrap_or_default(),
            email_verified: Some(kc.email_verified),
        };
        self.registry.upsert(Some(&mut tx), &identity).await?;
        tx.commit().await.map_err(crate::identity::db_error)?;
        tracing::info!(legacy_id, %keycloak_id, "brokered user provisioned");
        Ok((identity.user(kc.email_verified), true))
    }
}

#[async_trait]
impl Sso for KeycloakBackend {
    async fn begin(
        &self,
        request: SsoRequest,
    ) -> Result<Result<SsoStart, SsoRefusal>, IdentityError> {
        if !self.provider_known(&request.provider).await? {
            return Ok(Err(SsoRefusal::UnknownProvider));
        }
        let authorization = self
            .sso
            .broker
            .authorize(&request.provider, &request.callback_url)
            .map_err(|err| IdentityError::Internal(Internal::Other(Box::new(err))))?;
        let browser_key = openidconnect::CsrfToken::new_random().secret().clone();
        let lifetime = chrono::Duration::from_std(request.lifetime)
            .map_err(|err| IdentityError::Internal(Internal::Other(Box::new(err))))?;
        self.sso
            .logins
            .insert(&NewLogin {
                state: &authorization.state,
                browser_key: &browser_key,
                nonce: &authorization.nonce,
                pkce_verifier: &authorization.pkce_verifier,
                provider: &request.provider,
                redirect: &request.redirect,
                expires_at: self.sso.clock.now() + lifetime,
            })
            .await?;
        Ok(Ok(SsoStart {
            authorize_url: authorization.url,
            browser_key,
        }))
    }

    async fn complete(
        &self,
        callback: SsoCallback,
    ) -> Result<Result<SsoLogin, SsoRefusal>, IdentityError> {
        let Some(state) = callback.state.as_deref().filter(|s| !s.is_empty()) else {
            return Ok(Err(if callback.error.is_some() {
                SsoRefusal::ProviderError
            } else {
                SsoRefusal::MissingParameters
            }));
        };
        let browser_key = callback.browser_key.as_deref().unwrap_or_default();
        // Used up first, whatever follows: a state works once.
        let pending = match self.sso.logins.take(state, browser_key).await? {
            Ok(pending) => pending,
            Err(refusal) => return Ok(Err(refusal)),
        };
        if let Some(error) = &callback.error {
            tracing::info!(%error, provider = %pending.provider, "identity provider refused the sign-in");
            return Ok(Err(SsoRefusal::ProviderError));
        }
        let Some(code) = callback.code.as_deref().filter(|c| !c.is_empty()) else {
            return Ok(Err(SsoRefusal::MissingParameters));
        };
        let (tokens, id_token) = match self
            .sso
            .broker
            .exchange(code, &pending.pkce_verifier, &callback.callback_url)
            .await?
        {
            Exchange::Granted(tokens, id_token) => (tokens, id_token),
            Exchange::Refused { error, description } => {
                tracing::info!(%error, %description, "code exchange refused");
                return Ok(Err(SsoRefusal::CodeRefused));
            }
        };
        let subject = match self.sso.broker.verify(&id_token, &pending.nonce).await {
            Ok(subject) => subject,
            Err(super::broker::IdTokenError::Invalid(why)) => {
                tracing::warn!(%why, "ID token refused");
                return Ok(Err(SsoRefusal::InvalidIdToken));
            }
            Err(super::broker::IdTokenError::Keycloak(err)) => return Err(err.into()),
        };
        let (user, provisioned) = self.brokered_user(&subject).await?;
        // A first-time user got their legacy_id after the code's tokens were
        // issued: refresh once, so the tokens carry it (`user_id`).
        let tokens = if provisioned {
            match self.oidc.refresh(&tokens.refresh_token).await? {
                Grant::Granted(fresh) => fresh,
                Grant::Refused { error, .. } => {
                    tracing::warn!(%error, "refresh after provisioning refused");
                    tokens
                }
            }
        } else {
            tokens
        };
        let claims = KcClaims::of_fresh_token(&tokens.access_token);
        let roles = claims.as_ref().map(KcClaims::roles);
        if let Some(claims) = &claims
            && let (Ok(keycloak_id), Some(roles)) = (Uuid::parse_str(&claims.sub), &roles)
        {
            self.registry.set_roles(keycloak_id, roles).await?;
        }
        let (device_id, upstream_session) = self
            .session_of_login(claims.and_then(|c| c.sid), user.id)
            .await?;
        Ok(Ok(SsoLogin {
            login: Login {
                user,
                device_id,
                upstream: Some(tokens),
                upstream_session,
                roles,
            },
            provider: pending.provider,
            redirect: pending.redirect_to,
            provisioned,
        }))
    }
}
