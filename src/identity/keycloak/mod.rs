//! The Keycloak backend: users, credentials, verification state and
//! sessions live in Keycloak (Admin REST API and the realm's token
//! endpoint); PostgreSQL keeps the integer ids, the single-use e-mail tokens
//! and the ended sessions ([`registry`]).
//!
//! Nothing here runs on the per-request path: verifying a token and reading
//! `/users/me` use PostgreSQL and keys in memory, never Keycloak. Keycloak
//! stays the authority ([`authority`]): its back-channel logouts and the
//! changes read from its admin events ([`event_reader`]) end the sessions
//! they concern in authgate too.

mod abandoned;
pub mod admin;
pub mod admin_events;
mod authority;
mod broker;
pub mod client;
mod credentials;
mod device_rows;
mod devices;
pub mod event_reader;
mod event_rows;
pub mod import;
pub mod jwks;
pub mod logout_token;
mod mfa;
pub mod oidc;
pub mod registry;
mod session_ids;
mod sso;
mod sso_logins;
pub mod used_tokens;

pub use authority::{Applied, AuthorityParts};

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use self::admin::{Admin, Created, KcUser, LEGACY_ID};
use self::client::{KcClient, KcError, UrlError};
use self::oidc::{Grant, KcClaims, Oidc};
use self::registry::{IdentityRow, Registry};
use super::{
    CredentialCheck, Credentials, DeviceInfo, EmailTokens, IdentityBackend, IdentityError,
    Internal, Login, MailQuota, NewUser, PendingToken, RefreshDenied, Refreshed, Roles, SessionRef,
    Sessions, UpstreamTokens, User, UserPatch, Users,
};
use crate::tokens::{EmailPurpose, SessionClaims};

impl From<KcError> for IdentityError {
    /// Keycloak unreachable, slow, answering 5xx, or answering a call
    /// something that is not one of its documented outcomes (a 400 `Cannot
    /// parse the JSON` to a body authgate built, a body that does not parse:
    /// what a Keycloak that is stopping or starting answers) is the
    /// contract's 503 `Keycloak unavailable`; the client may try again. A
    /// failure on authgate's side before anything was asked (status 0) or a
    /// conflict Keycloak meant (409) stays an internal error.
    fn from(err: KcError) -> Self {
        match err {
            KcError::Unavailable(_) => IdentityError::Unavailable("Keycloak"),
            KcError::Unexpected { status, .. } if status != 0 && status != 409 => {
                IdentityError::Unavailable("Keycloak")
            }
            KcError::Unexpected { .. } => IdentityError::Internal(Internal::Other(Box::new(err))),
        }
    }
}

/// Keycloak's description of a correct password on an account with a
/// pending required action (here: verify e-mail).
const NOT_SET_UP: &str = "Account is not fully set up";

/// One lock per account name. Keycloak's brute-force detector refuses a
/// login for a user while another one of theirs is in flight
/// (`user_temporarily_disabled`, answered as bad credentials), so the
/// gateway sends one password grant per account at a time.
#[derive(Debug, Default)]
struct AccountLocks {
    locks: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl AccountLocks {
    fn lock_for(&self, account: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Forget locks nobody holds, so the map stays as small as the traffic.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        Arc::clone(locks.entry(account.to_lowercase()).or_default())
    }
}

/// What single sign-on needs ([`sso`]).
#[derive(Debug)]
struct SsoParts {
    broker: broker::Broker,
    logins: sso_logins::SsoLogins,
    /// Identity provider alias → exists and enabled, asked briefly.
    providers: moka::future::Cache<String, bool>,
    clock: Arc<dyn crate::clock::Clock>,
}

/// How long an identity provider's existence is believed.
const PROVIDER_CACHE_FOR: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug)]
pub struct KeycloakBackend {
    http: Arc<KcClient>,
    admin: Admin,
    oidc: Oidc,
    /// The client that checks a password without the second factor.
    password_check: Oidc,
    credentials: credentials::Credentials,
    registry: Registry,
    account_locks: AccountLocks,
    sso: SsoParts,
    /// Back-channel logout: the realm's keys, the logout tokens used.
    authority: AuthorityParts,
    /// Sign-ups whose Keycloak user may exist without a registry row.
    abandoned: abandoned::Abandoned,
}

impl KeycloakBackend {
    pub fn new(
        http: Arc<KcClient>,
        registry: Registry,
        authority: AuthorityParts,
    ) -> Result<Self, UrlError> {
        let (db, clock) = registry.shared();
        let (db_for_abandoned, clock_for_abandoned) = (Arc::clone(&db), Arc::clone(&clock));
        let sso = SsoParts {
            broker: broker::Broker::new(Arc::clone(&http), Arc::clone(&clock))?,
            logins: sso_logins::SsoLogins::new(db, Arc::clone(&clock)),
            providers: moka::future::Cache::builder()
                .max_capacity(1024)
                .time_to_live(PROVIDER_CACHE_FOR)
                .build(),
            clock,
        };
        Ok(Self {
            sso,
            admin: Admin::new(Arc::clone(&http)),
            oidc: Oidc::new(Arc::clone(&http))?,
            password_check: Oidc::password_check(Arc::clone(&http))?,
            credentials: credentials::Credentials::new(Arc::clone(&http)),
            http,
            registry,
            account_locks: AccountLocks::default(),
            authority,
            abandoned: abandoned::Abandoned::new(db_for_abandoned, clock_for_abandoned),
        })
    }

    /// The Keycloak user of an abandoned sign-up (`legacy_id`), if Keycloak
    /// created it, is removed: the sign-up is written down, and looked for
    /// soon here and later by every replica's sweep ([`abandoned`]).
    async fn abandon(&self, legacy_id: i32) {
        if let Err(err) = self.abandoned.record(legacy_id).await {
            tracing::warn!(legacy_id, error = %err, "abandoned sign-up not recorded");
        }
        let looks = self.abandoned.clone();
        tokio::spawn(looks.first_looks(Admin::new(Arc::clone(&self.http)), legacy_id));
    }

    /// The sweep of abandoned sign-ups that every replica runs in the
    /// background.
    pub fn abandoned_sweep(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        abandoned::sweep(self.abandoned.clone(), Admin::new(Arc::clone(&self.http)))
    }

    /// A user found with the sign-up's address or name is the left-over
    /// of an abandoned sign-up: removed, so this sign-up goes on. `false`
    /// when it is someone's account.
    async fn clear_abandoned(&self, found: &KcUser) -> Result<bool, IdentityError> {
        let Some(legacy_id) = found.legacy_id() else {
            return Ok(false);
        };
        if !self.abandoned.contains(legacy_id).await? {
            return Ok(false);
        }
        self.admin.delete(&found.id).await?;
        self.abandoned.remove(legacy_id).await?;
        tracing::info!(
            legacy_id,
            "Keycloak user of a failed sign-up removed on its retry"
        );
        Ok(true)
    }

    pub fn admin(&self) -> &Admin {
        &self.admin
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The registry entry of a Keycloak user, created when the user has a
    /// `legacy_id` but no entry yet (e.g. made in Keycloak's console).
    async fn identity_of(&self, user: &KcUser) -> Result<Option<IdentityRow>, IdentityError> {
        let Ok(keycloak_id) = Uuid::parse_str(&user.id) else {
            return Ok(None);
        };
        if let Some(identity) = self.registry.by_keycloak_id(keycloak_id).await? {
            return Ok(Some(identity));
        }
        let Some(legacy_id) = user.legacy_id() else {
            tracing::warn!(keycloak_id = %user.id, "Keycloak user has no legacy_id");
            return Ok(None);
        };
        let identity = IdentityRow {
            legacy_id,
            keycloak_id,
            username: user.username.clone(),
            email: user.email.clone().unwrap_or_default(),
            email_verified: Some(user.email_verified),
        };
        let adopted = self.registry.adopt(&identity).await?;
        if adopted.is_none() {
            tracing::warn!(keycloak_id = %user.id, legacy_id, "legacy_id already belongs to another user");
        }
        Ok(adopted)
    }

    /// The registry entry of a user id; `NotFound` when there is none.
    async fn identity(&self, user_id: i64) -> Result<IdentityRow, IdentityError> {
        self.registry
            .by_legacy_id(user_id)
            .await?
            .ok_or(IdentityError::NotFound)
    }

    /// Ends every session of a user, in Keycloak and for the gateway's
    /// checks (tokens of the gateway's own sessions included); returns the
    /// Keycloak sessions that were open (UUID and `sid`).
    async fn end_all_sessions(
        &self,
        identity: &IdentityRow,
    ) -> Result<Vec<(Uuid, String)>, IdentityError> {
        let keycloak_id = identity.keycloak_id.to_string();
        let open = self.admin.user_sessions(&keycloak_id).await?;
        let sessions = self.session_uuids(identity, open).await?;
        let legacy_id = i64::from(identity.legacy_id);
        self.registry.end_sessions(&sessions, legacy_id).await?;
        self.registry.revoke_all(identity.legacy_id).await?;
        self.admin.logout_user(&keycloak_id).await?;
        Ok(sessions)
    }

    /// Keycloak sessions of a user (`sid`s, in their order) with their UUIDs.
    async fn session_uuids(
        &self,
        identity: &IdentityRow,
        sids: Vec<String>,
    ) -> Result<Vec<(Uuid, String)>, IdentityError> {
        let uuids = self
            .registry
            .devices_for_sessions(&sids, i64::from(identity.legacy_id))
            .await?;
        sids.into_iter()
            .map(|sid| match uuids.get(&sid) {
                Some(uuid) => Ok((*uuid, sid)),
                None => Err(IdentityError::Internal(Internal::Inconsistent(
                    "session id not recorded",
                ))),
            })
            .collect()
    }

    /// The session a login opened: its UUID (the tokens' `device_id`) and
    /// Keycloak's `sid`. The same `sid` always gets the same UUID.
    async fn session_of_login(
        &self,
        sid: Option<String>,
        user_id: i64,
    ) -> Result<(String, Option<String>), IdentityError> {
        match sid {
            Some(sid) => {
                let uuid = self.registry.device_for_session(&sid, user_id).await?;
                Ok((uuid.to_string(), Some(sid)))
            }
            None => Ok((Uuid::new_v4().to_string(), None)),
        }
    }

    /// The user of a Keycloak user (the registry's copy of its verified
    /// flag brought up to date on the way).
    async fn user_of(&self, kc: &KcUser) -> Result<Option<User>, IdentityError> {
        let Some(identity) = self.identity_of(kc).await? else {
            return Ok(None);
        };
        if identity.email_verified != Some(kc.email_verified) {
            self.registry
                .set_verified(identity.keycloak_id, kc.email_verified)
                .await?;
        }
        Ok(Some(identity.user(kc.email_verified)))
    }

    /// The Keycloak user behind a registry id.
    async fn kc_user(
        &self,
        legacy_id: i64,
    ) -> Result<Option<(IdentityRow, KcUser)>, IdentityError> {
        let Some(identity) = self.registry.by_legacy_id(legacy_id).await? else {
            return Ok(None);
        };
        let Some(kc) = self.admin.get(&identity.keycloak_id.to_string()).await? else {
            return Ok(None);
        };
        Ok(Some((identity, kc)))
    }

    /// Finds the account a sign-in named (username or address).
    async fn find_login(&self, login: &str) -> Result<Option<KcUser>, IdentityError> {
        if let Some(user) = self.admin.find_by_username(login).await? {
            return Ok(Some(user));
        }
        if login.contains('@') {
            return Ok(self.admin.find_by_email(login).await?);
        }
        Ok(None)
    }

    /// What a password grant says about a sign-in.
    async fn judge(&self, login: &str, grant: Grant) -> Result<CredentialCheck, IdentityError> {
        match grant {
            Grant::Granted(tokens) => {
                let claims = KcClaims::of_fresh_token(&tokens.access_token).ok_or_else(|| {
                    IdentityError::Internal(Internal::Inconsistent(
                        "Keycloak access token unreadable",
                    ))
                })?;
                let known = match Uuid::parse_str(&claims.sub) {
                    Ok(id) => self.registry.by_keycloak_id(id).await?,
                    Err(_) => None,
                };
                let user = match known {
                    Some(identity) => {
                        // Keycloak grants no tokens to unverified users.
                        if identity.email_verified != Some(true) {
                            self.registry
                                .set_verified(identity.keycloak_id, true)
                                .await?;
                        }
                        identity.user(true)
                    }
                    None => {
                        let kc = self
                            .admin
                            .get(&claims.sub)
                            .await?
                            .ok_or(IdentityError::NotFound)?;
                        self.user_of(&kc).await?.ok_or_else(|| {
                            IdentityError::Internal(Internal::Inconsistent(
                                "Keycloak user has no usable legacy_id",
                            ))
                        })?
                    }
                };
                let roles = claims.roles();
                if let Ok(keycloak_id) = Uuid::parse_str(&claims.sub) {
                    self.registry.set_roles(keycloak_id, &roles).await?;
                }
                let (device_id, upstream_session) =
                    self.session_of_login(claims.sid.clone(), user.id).await?;
                Ok(CredentialCheck::Valid(Login {
                    user,
                    device_id,
                    upstream: Some(tokens),
                    upstream_session,
                    roles: Some(roles),
                }))
            }
            Grant::Refused { error, description }
                if error == "invalid_grant" && description == NOT_SET_UP =>
            {
                // Keycloak checked the password before the pending actions.
                let Some(kc) = self.find_login(login).await? else {
                    return Ok(CredentialCheck::Invalid);
                };
                match self.user_of(&kc).await? {
                    Some(user) if !kc.email_verified => Ok(CredentialCheck::Unverified(user)),
                    _ => Ok(CredentialCheck::Invalid),
                }
            }
            Grant::Refused { error, description } => {
                if error != "invalid_grant" {
                    tracing::warn!(%error, %description, "password grant refused unexpectedly");
                }
                Ok(CredentialCheck::Invalid)
            }
        }
    }

    /// Keeps the roles of a fresh Keycloak token (role changes take effect
    /// at the next refresh), and returns them.
    async fn remember_roles(
        &self,
        tokens: &UpstreamTokens,
    ) -> Result<Option<Vec<String>>, IdentityError> {
        let Some(claims) = KcClaims::of_fresh_token(&tokens.access_token) else {
            return Ok(None);
        };
        let roles = claims.roles();
        if let Ok(keycloak_id) = Uuid::parse_str(&claims.sub) {
            self.registry.set_roles(keycloak_id, &roles).await?;
        }
        Ok(Some(roles))
    }
}

#[async_trait]
impl Users for KeycloakBackend {
    #[tracing::instrument(skip_all, fields(user = %new.describe()))]
    async fn register(
        &self,
        new: NewUser,
        token: Option<PendingToken>,
    ) -> Result<User, IdentityError> {
        if let Some(found) = self.admin.find_by_email(&new.email).await?
            && !self.clear_abandoned(&found).await?
        {
            return Err(IdentityError::EmailTaken);
        }
        if let Some(found) = self.admin.find_by_username(&new.username).await?
            && !self.clear_abandoned(&found).await?
        {
            return Err(IdentityError::UsernameTaken);
        }
        let legacy_id = self.registry.allocate_id().await?;
        let representation = json!({
            "username": new.username,
            "email": new.email,
            "enabled": true,
            "emailVerified": false,
            "attributes": { LEGACY_ID: [legacy_id.to_string()] },
            "credentials": [{"type": "password", "value": new.password, "temporary": false}],
        });
        let created = match self.admin.create_user(&representation).await {
            Ok(created) => created,
            Err(err) => {
                // Keycloak may have created the user all the same.
                self.abandon(legacy_id).await;
                return Err(err.into());
            }
        };
        let keycloak_id = match created {
            Created::Id(id) => id,
            Created::Conflict(message) if message.to_lowercase().contains("email") => {
                return Err(IdentityError::EmailTaken);
            }
            Created::Conflict(_) => return Err(IdentityError::UsernameTaken),
            Created::Refused(message) => {
                return Err(IdentityError::Internal(Internal::KeycloakRefused {
                    what: "the user",
                    detail: message,
                }));
            }
        };
        let identity = IdentityRow {
            legacy_id,
            keycloak_id: Uuid::parse_str(&keycloak_id).map_err(|_| {
                IdentityError::Internal(Internal::Inconsistent("Keycloak id is not a UUID"))
            })?,
            username: new.username.clone(),
            email: new.email.clone(),
            email_verified: Some(false),
        };
        // The registry row and the verification token, or no user at all.
        let stored = async {
            let mut tx = self.registry.begin().await?;
            self.registry.upsert(Some(&mut tx), &identity).await?;
            if let Some(pending) = &token {
                self.registry
                    .insert_token(
                        Some(&mut tx),
                        legacy_id,
                        pending.purpose,
                        &pending.token,
                        pending.expires_at,
                    )
                    .await?;
                self.registry.count_signup_mail(&mut tx, legacy_id).await?;
            }
            tx.commit().await.map_err(super::db_error)
        }
        .await;
        if let Err(err) = stored {
            tracing::warn!(error = %err, "sign-up not recorded; removing the Keycloak user");
            if let Err(cleanup) = self.admin.delete(&keycloak_id).await {
                tracing::warn!(error = %cleanup, keycloak_id, "Keycloak user not removed yet; later");
                self.abandon(legacy_id).await;
            }
            return Err(err);
        }
        Ok(identity.user(false))
    }

    async fn user_by_id(&self, id: i64) -> Result<Option<User>, IdentityError> {
        // From the registry only: `/users/me` must not cost a Keycloak call.
        Ok(self
            .registry
            .by_legacy_id(id)
            .await?
            .map(|identity| identity.user(true)))
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, IdentityError> {
        match self.admin.find_by_email(email).await? {
            Some(kc) if kc.enabled => self.user_of(&kc).await,
            // The registry is asked in either case, so that an unknown
            // address costs what a known one does (deliberate difference 3);
            // here it tells of an entry whose Keycloak user is gone.
            _ => {
                if self.registry.has_email(email).await? {
                    tracing::info!(
                        "an address of the registry has no enabled Keycloak user (deleted or disabled there)"
                    );
                }
                Ok(None)
            }
        }
    }

    /// From the registry and its copy of the verified flag: the same one
    /// query for known and unknown addresses. A flag not known yet (rows
    /// from before the registry kept it) is asked of Keycloak, once.
    async fn user_by_email_stored(&self, email: &str) -> Result<Option<User>, IdentityError> {
        match self.registry.by_email(email).await? {
            None => Ok(None),
            Some(identity) => match identity.email_verified {
                Some(verified) => Ok(Some(identity.user(verified))),
                None => self.user_by_email(email).await,
            },
        }
    }

    async fn still_unverified(&self, user: &User) -> Result<bool, IdentityError> {
        let Some((identity, kc)) = self.kc_user(user.id).await? else {
            return Ok(false);
        };
        if identity.email_verified != Some(kc.email_verified) {
            self.registry
                .set_verified(identity.keycloak_id, kc.email_verified)
                .await?;
        }
        Ok(kc.enabled && !kc.email_verified)
    }

    async fn list_users(&self, offset: i64, limit: i64) -> Result<Vec<User>, IdentityError> {
        // The registry holds every user the gateway knows, in id order.
        Ok(self
            .registry
            .list(offset, limit)
            .await?
            .iter()
            .map(|identity| identity.user(true))
            .collect())
    }

    async fn update_user(&self, id: i64, patch: UserPatch) -> Result<User, IdentityError> {
        let (identity, kc) = self.kc_user(id).await?.ok_or(IdentityError::NotFound)?;
        let mut changes = serde_json::Map::new();
        if let Some(email) = &patch.email {
            if !email.eq_ignore_ascii_case(kc.email.as_deref().unwrap_or_default())
                && self.admin.find_by_email(email).await?.is_some()
            {
                return Err(IdentityError::EmailTaken);
            }
            changes.insert("email".into(), json!(email));
        }
        if let Some(verified) = patch.is_verified {
            changes.insert("emailVerified".into(), json!(verified));
            if verified {
                let actions: Vec<&String> = kc
                    .required_actions
                    .iter()
                    .filter(|a| a.as_str() != "VERIFY_EMAIL")
                    .collect();
                changes.insert("requiredActions".into(), json!(actions));
            }
        }
        if !changes.is_empty()
            && let Err(message) = self.admin.update(&kc.id, &changes).await?
        {
            tracing::info!(%message, "Keycloak refused the update");
            return Err(IdentityError::EmailTaken);
        }
        if let Some(password) = &patch.password
            && let Err(message) = self.admin.set_password(&kc.id, password).await?
        {
            return Err(IdentityError::Internal(Internal::KeycloakRefused {
                what: "the password",
                detail: message,
            }));
        }
        if let Some(email) = &patch.email {
            self.registry.set_email(identity.legacy_id, email).await?;
        }
        let kc = self
            .admin
            .get(&kc.id)
            .await?
            .ok_or(IdentityError::NotFound)?;
        self.registry
            .set_verified(identity.keycloak_id, kc.email_verified)
            .await?;
        let mut user = identity.user(kc.email_verified);
        if let Some(email) = patch.email {
            user.email = email;
        }
        Ok(user)
    }

    async fn delete_user(&self, id: i64) -> Result<(), IdentityError> {
        let identity = self
            .registry
            .by_legacy_id(id)
            .await?
            .ok_or(IdentityError::NotFound)?;
        self.end_all_sessions(&identity).await?;
        self.admin.delete(&identity.keycloak_id.to_string()).await?;
        self.registry.mark_deleted(identity.legacy_id).await
    }
}

#[async_trait]
impl Credentials for KeycloakBackend {
    #[tracing::instrument(skip_all)]
    async fn check_credentials(
        &self,
        login: &str,
        password: &str,
    ) -> Result<CredentialCheck, IdentityError> {
        let lock = self.account_locks.lock_for(login);
        let grant = {
            let _one_at_a_time = lock.lock().await;
            self.oidc.password(login, password, None).await?
        };
        self.judge(login, grant).await
    }
    // login_verified: the trait's default. Keycloak opens sessions only on
    // credentials, so a verification link opens a session of the gateway's
    // own, checked against Keycloak at each refresh.
}

#[async_trait]
impl Sessions for KeycloakBackend {
    fn hands_out_upstream_tokens(&self) -> bool {
        self.http.settings().token_format == crate::config::TokenFormat::Keycloak
    }

    fn takes_upstream_refresh_tokens(&self) -> bool {
        true
    }

    async fn record_session(
        &self,
        login: &Login,
        device: &DeviceInfo,
        _refresh_token: &str,
    ) -> Result<(), IdentityError> {
        // Keycloak holds the session but not the user agent, and sees the
        // gateway's address: keep the device as the gateway saw it. Sessions
        // of the gateway's own (verification links) are not Keycloak's.
        if let Some(sid) = &login.upstream_session {
            self.registry
                .record_device(sid, login.user.id, device)
                .await?;
        }
        Ok(())
    }

    /// Sign-out: the session (named by its UUID) is refused from now on,
    /// and its Keycloak session, if it has one, ended.
    async fn end_session(&self, user_id: i64, device_id: &str) -> Result<(), IdentityError> {
        let sid = match Uuid::try_parse(device_id) {
            Ok(uuid) => self.registry.session_of_device(uuid).await?,
            // Not a UUID: a token minted before sessions had UUIDs names its sid.
            Err(_) => Some(device_id.to_string()),
        };
        self.registry
            .end_session(device_id, sid.as_deref(), user_id)
            .await?;
        if let Some(sid) = sid {
            self.admin.delete_session(&sid).await?;
        }
        Ok(())
    }

    async fn session_uuid(
        &self,
        user_id: i64,
        session_id: &str,
    ) -> Result<Option<String>, IdentityError> {
        if i32::try_from(user_id).is_err() {
            // No user of the registry: nothing to map.
            return Ok(None);
        }
        Ok(Some(
            self.registry
                .device_for_session(session_id, user_id)
                .await?
                .to_string(),
        ))
    }

    async fn session_revoked(&self, session: &SessionRef<'_>) -> Result<bool, IdentityError> {
        self.registry.revoked(session).await
    }

    async fn refresh(
        &self,
        claims: &SessionClaims,
    ) -> Result<Result<Refreshed, RefreshDenied>, IdentityError> {
        if self.registry.revoked(&SessionRef::of(claims)).await? {
            return Ok(Err(RefreshDenied::SessionEnded));
        }
        if let Some(kc_rt) = claims.kc_rt.as_deref() {
            return Ok(match self.oidc.refresh(kc_rt).await? {
                Grant::Granted(tokens) => Ok(Refreshed {
                    roles: self.remember_roles(&tokens).await?,
                }),
                Grant::Refused { .. } => Err(RefreshDenied::SessionEnded),
            });
        }
        // A session of the gateway's own (or a legacy token): the user must
        // still exist and be enabled in Keycloak.
        match self.kc_user(claims.user_id).await? {
            Some((_, kc)) if !kc.enabled => Ok(Err(RefreshDenied::UserGone)),
            Some(_) => Ok(Ok(Refreshed::default())),
            None if self.registry.by_legacy_id(claims.user_id).await?.is_some() => {
                Ok(Err(RefreshDenied::UserGone))
            }
            None => Ok(Ok(Refreshed::default())),
        }
    }

    async fn refresh_upstream(
        &self,
        refresh_token: &str,
    ) -> Result<Result<UpstreamTokens, RefreshDenied>, IdentityError> {
        Ok(match self.oidc.refresh(refresh_token).await? {
            Grant::Granted(tokens) => {
                self.remember_roles(&tokens).await?;
                Ok(tokens)
            }
            Grant::Refused { .. } => Err(RefreshDenied::SessionEnded),
        })
    }
}

#[async_trait]
impl EmailTokens for KeycloakBackend {
    async fn store_email_token(
        &self,
        user_id: i64,
        purpose: EmailPurpose,
        token: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), IdentityError> {
        let legacy_id = i32::try_from(user_id).map_err(|_| IdentityError::NotFound)?;
        self.registry
            .insert_token(None, legacy_id, purpose, token, expires_at)
            .await
    }

    async fn redeem_verification(&self, token: &str) -> Result<Option<User>, IdentityError> {
        let mut tx = self.registry.begin().await?;
        let Some(legacy_id) = self
            .registry
            .consume_token(&mut tx, token, EmailPurpose::Verification)
            .await?
        else {
            return Ok(None);
        };
        let Some((identity, kc)) = self.kc_user(i64::from(legacy_id)).await? else {
            return Ok(None);
        };
        // Keycloak first; the token stays unused if Keycloak fails.
        self.admin.mark_verified(&kc).await?;
        tx.commit().await.map_err(super::db_error)?;
        self.registry
            .set_verified(identity.keycloak_id, true)
            .await?;
        Ok(Some(identity.user(true)))
    }

    async fn redeem_password_reset(
        &self,
        token: &str,
        new_password: &str,
    ) -> Result<Option<User>, IdentityError> {
        let mut tx = self.registry.begin().await?;
        let Some(legacy_id) = self
            .registry
            .consume_token(&mut tx, token, EmailPurpose::PasswordReset)
            .await?
        else {
            return Ok(None);
        };
        let Some((identity, kc)) = self.kc_user(i64::from(legacy_id)).await? else {
            return Ok(None);
        };
        if let Err(message) = self.admin.set_password(&kc.id, new_password).await? {
            return Err(IdentityError::Internal(Internal::KeycloakRefused {
                what: "the password",
                detail: message,
            }));
        }
        tx.commit().await.map_err(super::db_error)?;
        self.end_all_sessions(&identity).await?;
        Ok(Some(identity.user(kc.email_verified)))
    }

    async fn reserve_verification_mail(&self, user_id: i64) -> Result<MailQuota, IdentityError> {
        self.registry.reserve_verification_mail(user_id).await
    }

    async fn reserve_address_mail(&self, address: &str) -> Result<MailQuota, IdentityError> {
        self.registry.reserve_address_mail(address).await
    }
}

#[async_trait]
impl Roles for KeycloakBackend {
    /// A realm role.
    async fn grant_role(&self, login: &str, role: &str) -> Result<User, IdentityError> {
        let kc = self
            .find_login(login)
            .await?
            .ok_or(IdentityError::NotFound)?;
        self.admin.grant_realm_role(&kc.id, role).await?;
        self.user_of(&kc).await?.ok_or(IdentityError::NotFound)
    }

    async fn roles(&self, id: i64) -> Result<Vec<String>, IdentityError> {
        self.registry.roles(id).await
    }

    async fn is_admin(&self, id: i64) -> Result<bool, IdentityError> {
        let Some(identity) = self.registry.by_legacy_id(id).await? else {
            return Ok(false);
        };
        let roles = self
            .admin
            .realm_roles(&identity.keycloak_id.to_string())
            .await?;
        Ok(roles.iter().any(|r| r == "admin"))
    }
}

#[async_trait]
impl IdentityBackend for KeycloakBackend {
    async fn ready(&self) -> Result<(), IdentityError> {
        self.registry.ping().await?;
        let url = self.http.realm_url().to_string();
        let r = self.http.get_public("realm", &url).await?;
        if r.status.is_success() {
            Ok(())
        } else {
            Err(IdentityError::Unavailable("Keycloak"))
        }
    }

    fn sso(&self) -> Option<&dyn crate::identity::sso::Sso> {
        Some(self)
    }

    fn mfa(&self) -> Option<&dyn crate::identity::mfa::Mfa> {
        Some(self)
    }

    fn devices(&self) -> Option<&dyn crate::identity::devices::Devices> {
        Some(self)
    }

    fn backchannel_logout(&self) -> Option<&dyn crate::identity::logout::BackchannelLogout> {
        Some(self)
    }
}

#[cfg(test)]
mod error_tests {
    use super::*;

    fn unexpected(status: u16, body: &str) -> IdentityError {
        KcError::Unexpected {
            operation: "update_user",
            status,
            body: body.into(),
        }
        .into()
    }

    #[test]
    fn answers_that_are_no_documented_outcome_are_keycloak_unavailable() {
        for (status, body) in [
            (400, "{\"error\":\"Cannot parse the JSON\"}"),
            (400, "{\"errorMessage\":\"Could not update user!\"}"),
            (401, ""),
            (404, "{\"error\":\"HTTP 404 Not Found\"}"),
            (200, "<html>not JSON</html>"),
            (500, "{}"),
        ] {
            let err = unexpected(status, body);
            assert!(
                matches!(err, IdentityError::Unavailable("Keycloak")),
                "{status}: {err:?}"
            );
            assert_eq!(err.to_string(), "Keycloak unavailable");
        }
        let err: IdentityError =
            KcError::Unavailable("find_user_by_email: timed out".into()).into();
        assert_eq!(err.to_string(), "Keycloak unavailable");
    }

    #[test]
    fn local_failures_and_meant_conflicts_stay_internal() {
        assert!(matches!(
            unexpected(0, "bad redirect"),
            IdentityError::Internal(_)
        ));
        assert!(matches!(
            unexpected(409, "User exists with same email"),
            IdentityError::Internal(_)
        ));
    }
}
