//! "Token required": the access token from `Authorization: Bearer` (which
//! wins) or the `access_token` cookie, verified in-process; then the
//! session's revocation state (deliberate difference 7).
//!
//! Revocation answers are cached per process: a signed-out session is
//! refused here at once, and a session found live is not asked about again
//! for a few seconds (other replicas learn of a sign-out within that time),
//! so the request path seldom leaves the process. With `REDIS_URL`, a
//! session ended on any replica (sign-out, `/auth/sessions`, an admin's
//! force-logout) is on the shared deny-list, asked before that cache (one
//! Redis `EXISTS` per request): every replica refuses its tokens at their
//! next request. Without Redis, or while it does not answer, the registry
//! alone decides, so other replicas refuse them within the 5 seconds of
//! cache.
//!
//! The same holds for the profile `GET /users/me` answers with: a user read
//! from the store is kept for those few seconds, and a change made through
//! this replica (update, deletion, password reset) forgets it at once.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use moka::sync::Cache;

use crate::http::cookie_in;
use crate::http::cookies::ACCESS_COOKIE;
use crate::identity::{IdentityBackend, IdentityError, SessionRef, User};
use crate::tokens::{ExternalCaller, SessionClaims, TokenError};

use super::{ApiError, App};

/// No token (or not a bearer one).
pub(super) const UNAUTHORIZED: &str = "Unauthorized.";
/// A token that does not verify, has expired, or whose session ended.
pub(super) const INVALID: &str = "Invalid token or expired token.";
/// A valid token without the right to do this.
pub(super) const NOT_PERMITTED: &str = "Not enough permissions";

/// How long a session found live, or a user read from the store, is
/// believed without asking again.
const LIVE_FOR: Duration = Duration::from_secs(5);
/// How long roles are kept for the proxy's `X-Auth-Roles` and `role:` routes.
const ROLES_FOR: Duration = Duration::from_secs(30);

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: i64,
    pub email: Option<String>,
    pub device_id: Option<String>,
    /// The roles the token itself carries (keycloak mode), as granted when
    /// it was issued; `None` for tokens without them.
    pub roles: Option<Arc<Vec<String>>>,
}

/// A machine client (OAuth client credentials), on routes that allow services.
#[derive(Debug, Clone)]
pub struct ServicePrincipal {
    pub client_id: String,
    pub roles: Arc<Vec<String>>,
}

/// Who is calling a forwarded route.
#[derive(Debug, Clone)]
pub enum Caller {
    User(Principal),
    Service(ServicePrincipal),
}

/// The process's memory of sessions, roles and users.
#[derive(Debug)]
pub struct SessionCache {
    /// Sessions ended here (sign-out), by device id.
    ended: Cache<String, ()>,
    /// Tokens found live recently, by user/device/iat.
    live: Cache<String, ()>,
    roles: Cache<i64, Arc<Vec<String>>>,
    /// Users read recently, by id (`GET /users/me`).
    users: Cache<i64, Arc<User>>,
}

impl SessionCache {
    pub fn new(access_lifetime: Duration) -> Self {
        Self {
            ended: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(access_lifetime)
                .build(),
            live: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(LIVE_FOR)
                .build(),
            roles: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ROLES_FOR)
                .build(),
            users: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(LIVE_FOR)
                .build(),
        }
    }

    /// The user with this id, from memory when read in the last few
    /// seconds, else from the store (and then remembered).
    pub async fn user(
        &self,
        backend: &dyn IdentityBackend,
        id: i64,
    ) -> Result<Arc<User>, IdentityError> {
        if let Some(user) = self.users.get(&id) {
            return Ok(user);
        }
        let user = Arc::new(
            backend
                .user_by_id(id)
                .await?
                .ok_or(IdentityError::NotFound)?,
        );
        self.users.insert(id, Arc::clone(&user));
        Ok(user)
    }

    /// A sign-out on this replica: refused at once, whatever was cached.
    pub fn session_ended(&self, device_id: &str) {
        self.ended.insert(device_id.to_string(), ());
    }

    /// Sessions of some user ended (password reset, deletion, a change of
    /// roles): forget what was believed live.
    pub fn forget(&self) {
        self.live.invalidate_all();
        self.roles.invalidate_all();
        self.users.invalidate_all();
    }
}

/// The bearer credentials of an `Authorization` header, if it has usable ones.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let (scheme, credentials) = value.split_once(' ')?;
    let credentials = credentials.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !credentials.is_empty()).then_some(credentials)
}

/// The access token of a request: bearer (which wins) or cookie.
fn presented_token(headers: &HeaderMap) -> Result<String, ApiError> {
    match bearer(headers) {
        Some(token) => Ok(token.to_string()),
        None => cookie_in(headers, ACCESS_COOKIE)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| ApiError::forbidden(UNAUTHORIZED)),
    }
}

/// A user, or (where `services` allows) a machine client with a
/// client-credentials token of the identity provider.
pub async fn authenticate_caller(
    app: &App,
    headers: &HeaderMap,
    services: bool,
) -> Result<Caller, ApiError> {
    if services
        && let Some(external) = &app.external_tokens
        && let Some(token) = bearer(headers)
        && crate::tokens::is_rs256(token)
    {
        // One verification tells a machine client from a user.
        let verified = match external.verify_caller(token).await {
            Ok(ExternalCaller::Service(service)) => {
                tracing::Span::current().record("client_id", service.client_id.as_str());
                return Ok(Caller::Service(ServicePrincipal {
                    client_id: service.client_id,
                    roles: Arc::new(service.roles),
                }));
            }
            Ok(ExternalCaller::User(claims)) => Ok(claims),
            Err(err) => Err(err),
        };
        return principal(app, verified).await.map(Caller::User);
    }
    authenticate(app, headers).await.map(Caller::User)
}

/// The rule of the contract for a request's headers.
pub async fn authenticate(app: &App, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let token = presented_token(headers)?;
    let verified = match &app.external_tokens {
        Some(external) if crate::tokens::is_rs256(&token) => external.verify(&token).await,
        _ => app.tokens.verify_access(&token),
    };
    principal(app, verified).await
}

/// The user of a verified token, or the contract's 403 for a refused or
/// revoked one.
async fn principal(
    app: &App,
    verified: Result<SessionClaims, TokenError>,
) -> Result<Principal, ApiError> {
    let claims = verified.map_err(|err| {
        tracing::debug!(reason = err.reason(), "access token refused");
        app.metrics
            .token_rejections
            .with_label_values(&["access", err.reason()])
            .inc();
        ApiError::forbidden(INVALID)
    })?;
    if revoked(app, &claims).await? {
        tracing::debug!(reason = "revoked", "access token refused");
        app.metrics
            .token_rejections
            .with_label_values(&["access", "revoked"])
            .inc();
        return Err(ApiError::forbidden(INVALID));
    }
    tracing::Span::current().record("user_id", claims.user_id);
    Ok(Principal {
        user_id: claims.user_id,
        email: claims.email,
        device_id: claims.device_id,
        roles: claims.roles.map(Arc::new),
    })
}

async fn revoked(app: &App, claims: &SessionClaims) -> Result<bool, IdentityError> {
    let cache = &app.sessions;
    if let Some(device_id) = &claims.device_id {
        if cache.ended.contains_key(device_id) {
            return Ok(true);
        }
        if app.deny_list.listed(device_id).await == Some(true) {
            cache.session_ended(device_id);
            return Ok(true);
        }
    }
    let key = format!(
        "{}/{}/{}",
        claims.user_id,
        claims.device_id.as_deref().unwrap_or("-"),
        claims.iat.unwrap_or_default()
    );
    if cache.live.contains_key(&key) {
        return Ok(false);
    }
    let revoked = app.backend.session_revoked(&SessionRef::of(claims)).await?;
    if !revoked {
        cache.live.insert(key, ());
    }
    Ok(revoked)
}

/// "Token required" for an API request.
pub async fn require(app: &App, req: &crate::http::Request) -> Result<Principal, ApiError> {
    authenticate(app, &req.headers).await
}

/// The caller must hold the `admin` role: from the token when it carries
/// roles (keycloak mode: a removal takes effect at the next refresh), else
/// asked at the source, not cached (so a grant takes effect at once).
pub async fn require_admin(app: &App, principal: &Principal) -> Result<(), ApiError> {
    if is_admin(app, principal).await? {
        Ok(())
    } else {
        Err(ApiError::forbidden(NOT_PERMITTED))
    }
}

pub async fn is_admin(app: &App, principal: &Principal) -> Result<bool, IdentityError> {
    if principal
        .roles
        .as_ref()
        .is_some_and(|roles| roles.iter().any(|r| r == "admin"))
    {
        return Ok(true);
    }
    app.backend.is_admin(principal.user_id).await
}

/// The caller's roles: those its token carries, else the user's as the
/// store last saw them, cached briefly (the proxy's hot path).
pub async fn roles(app: &App, principal: &Principal) -> Result<Arc<Vec<String>>, IdentityError> {
    if let Some(roles) = &principal.roles {
        return Ok(Arc::clone(roles));
    }
    let user_id = principal.user_id;
    if let Some(roles) = app.sessions.roles.get(&user_id) {
        return Ok(roles);
    }
    let roles = Arc::new(app.backend.roles(user_id).await?);
    app.sessions.roles.insert(user_id, Arc::clone(&roles));
    Ok(roles)
}
