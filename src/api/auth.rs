//! "Token required": the access token from `Authorization: Bearer` (which
//! wins) or the `access_token` cookie, verified in-process; then the
//! session's revocation state (deliberate difference 7).
//!
//! A browser may send several `access_token` cookies (a stale one of a
//! parent domain beside the current one), in an order of its choosing. The
//! answer does not depend on that order: the tokens that verify and whose
//! session is live are kept, the others ignored; they must all name one
//! user and one session (the newest of them is used), else the request is
//! refused as a bad token. One cookie, the common case, is checked once.
//!
//! Tokens name their session by a UUID (`device_id`). Keycloak's own tokens
//! (`TOKEN_FORMAT=keycloak`) name it by Keycloak's session id; it is read as
//! the session's UUID (asked of the backend once, then remembered), so
//! everything past this point speaks of UUIDs only.
//!
//! Revocation is decided from memory: the process's set of revocations
//! ([`crate::revocation`]: ended sessions, user and everyone cut-offs),
//! which every revocation made here joins at once and, with `REDIS_URL`,
//! every revocation made on another replica (sign-out, `/auth/sessions`, an
//! admin's force-logout, Keycloak's back-channel logout and admin events)
//! joins within milliseconds, pushed through Redis. Behind it, the store
//! stays the authority: a token found live is asked about again after a
//! few seconds, which bounds what a replica misses while Redis is away (or
//! without Redis).
//!
//! The same holds for the profile `GET /users/me` answers with: a user read
//! from the store is kept for those few seconds, and a change made through
//! this replica (update, deletion, password reset) forgets it at once.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use moka::sync::Cache;

use crate::http::cookies::ACCESS_COOKIE;
use crate::http::cookies_in;
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
/// How long an unused session UUID is remembered.
const SESSION_UUIDS_FOR: Duration = Duration::from_secs(3600);

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
    /// Tokens found live recently, by user/device/iat.
    live: Cache<String, ()>,
    /// Roles read from the store, with the Unix second they were read.
    roles: Cache<i64, (Arc<Vec<String>>, i64)>,
    /// Users read recently, by id (`GET /users/me`).
    users: Cache<i64, Arc<User>>,
    /// Session UUIDs of sessions tokens name otherwise (Keycloak's `sid`);
    /// a mapping never changes.
    session_uuids: Cache<String, String>,
}

impl Default for SessionCache {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionCache {
    pub fn new() -> Self {
        Self {
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
            session_uuids: Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(SESSION_UUIDS_FOR)
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

/// What a request presents as its access token.
#[derive(Debug, PartialEq, Eq)]
enum Presented {
    /// The bearer token, or the one `access_token` cookie.
    One(String),
    /// Several distinct `access_token` cookies, sorted.
    Several(Vec<String>),
}

/// The access token(s) of a request: bearer (which wins) or cookies.
fn presented_tokens(headers: &HeaderMap) -> Result<Presented, ApiError> {
    if let Some(token) = bearer(headers) {
        return Ok(Presented::One(token.to_string()));
    }
    let mut cookies = cookies_in(headers, ACCESS_COOKIE).filter(|c| !c.is_empty());
    let first = cookies
        .next()
        .ok_or_else(|| ApiError::forbidden(UNAUTHORIZED))?;
    let mut others: Vec<String> = cookies.filter(|c| *c != first).collect();
    if others.is_empty() {
        return Ok(Presented::One(first));
    }
    others.push(first);
    others.sort_unstable();
    others.dedup();
    Ok(Presented::Several(others))
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
    match presented_tokens(headers)? {
        Presented::One(token) => principal(app, verify(app, &token).await).await,
        Presented::Several(tokens) => one_session_of(app, &tokens).await,
    }
}

/// Verifies an access token: the identity provider's own (RS256), or a legacy one.
async fn verify(app: &App, token: &str) -> Result<SessionClaims, TokenError> {
    match &app.external_tokens {
        Some(external) if crate::tokens::is_rs256(token) => external.verify(token).await,
        _ => app.tokens.verify_access(token),
    }
}

/// The user of several presented tokens: those that verify and are live
/// must name one user and one session (the newest of them is used).
async fn one_session_of(app: &App, tokens: &[String]) -> Result<Principal, ApiError> {
    let mut chosen: Option<(SessionClaims, &str)> = None;
    for token in tokens {
        let Some(claims) = admitted(app, verify(app, token).await).await? else {
            continue;
        };
        chosen = match chosen {
            None => Some((claims, token)),
            Some(kept) if same_session(&kept.0, &claims) => Some(newer(kept, (claims, token))),
            Some(_) => {
                tracing::debug!(reason = "ambiguous", "access token refused");
                app.metrics
                    .token_rejections
                    .with_label_values(&["access", "ambiguous"])
                    .inc();
                return Err(ApiError::forbidden(INVALID));
            }
        };
    }
    chosen
        .map(|(claims, _)| principal_of(claims))
        .ok_or_else(|| ApiError::forbidden(INVALID))
}

fn same_session(a: &SessionClaims, b: &SessionClaims) -> bool {
    a.user_id == b.user_id && a.device_id == b.device_id
}

/// The later issued of two tokens of one session (then the greater text:
/// the choice never depends on the order they came in).
fn newer<'t>(a: (SessionClaims, &'t str), b: (SessionClaims, &'t str)) -> (SessionClaims, &'t str) {
    let issued = |c: &SessionClaims| c.iat.unwrap_or(f64::MIN);
    match issued(&a.0)
        .total_cmp(&issued(&b.0))
        .then_with(|| a.1.cmp(b.1))
    {
        std::cmp::Ordering::Less => b,
        _ => a,
    }
}

/// The user of a verified token, or the contract's 403 for a refused or
/// revoked one.
async fn principal(
    app: &App,
    verified: Result<SessionClaims, TokenError>,
) -> Result<Principal, ApiError> {
    admitted(app, verified)
        .await?
        .map(principal_of)
        .ok_or_else(|| ApiError::forbidden(INVALID))
}

/// The claims of a verified token whose session is live (its session named
/// by UUID); `None` (counted) for a refused or revoked one.
async fn admitted(
    app: &App,
    verified: Result<SessionClaims, TokenError>,
) -> Result<Option<SessionClaims>, IdentityError> {
    let mut claims = match verified {
        Ok(claims) => claims,
        Err(err) => {
            tracing::debug!(reason = err.reason(), "access token refused");
            app.metrics
                .token_rejections
                .with_label_values(&["access", err.reason()])
                .inc();
            return Ok(None);
        }
    };
    claims.device_id = session_uuid(app, claims.user_id, claims.device_id).await?;
    if revoked(app, &claims).await? {
        tracing::debug!(reason = "revoked", "access token refused");
        app.metrics
            .token_rejections
            .with_label_values(&["access", "revoked"])
            .inc();
        return Ok(None);
    }
    Ok(Some(claims))
}

fn principal_of(claims: SessionClaims) -> Principal {
    tracing::Span::current().record("user_id", claims.user_id);
    Principal {
        user_id: claims.user_id,
        email: claims.email,
        device_id: claims.device_id,
        roles: claims.roles.map(Arc::new),
    }
}

/// The UUID of the session a token names: the token's `device_id` when it
/// is one (legacy tokens: no work), else the backend's UUID for that
/// session id (Keycloak's `sid`), remembered.
pub async fn session_uuid(
    app: &App,
    user_id: i64,
    device_id: Option<String>,
) -> Result<Option<String>, IdentityError> {
    let Some(id) = device_id else {
        return Ok(None);
    };
    if uuid::Uuid::try_parse(&id).is_ok() {
        return Ok(Some(id));
    }
    if let Some(known) = app.sessions.session_uuids.get(&id) {
        return Ok(Some(known));
    }
    match app.backend.session_uuid(user_id, &id).await? {
        Some(uuid) => {
            app.sessions.session_uuids.insert(id, uuid.clone());
            Ok(Some(uuid))
        }
        None => Ok(Some(id)),
    }
}

async fn revoked(app: &App, claims: &SessionClaims) -> Result<bool, IdentityError> {
    let session = SessionRef::of(claims);
    if app.revocations.refuses(
        session.user_id,
        session.device_id,
        claims.iat,
        session.access,
    ) {
        return Ok(true);
    }
    let key = format!(
        "{}/{}/{}",
        claims.user_id,
        claims.device_id.as_deref().unwrap_or("-"),
        claims.iat.unwrap_or_default()
    );
    let cache = &app.sessions;
    if cache.live.contains_key(&key) {
        return Ok(false);
    }
    let revoked = app.backend.session_revoked(&session).await?;
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
/// store last saw them, cached briefly (the proxy's hot path); a change of
/// the user's roles pushed as a revocation drops the cached ones.
pub async fn roles(app: &App, principal: &Principal) -> Result<Arc<Vec<String>>, IdentityError> {
    if let Some(roles) = &principal.roles {
        return Ok(Arc::clone(roles));
    }
    let user_id = principal.user_id;
    if let Some((roles, read_at)) = app.sessions.roles.get(&user_id)
        && app
            .revocations
            .access_cutoff(user_id)
            .is_none_or(|changed| changed < read_at)
    {
        return Ok(roles);
    }
    let read_at = app.clock.unix();
    let roles = Arc::new(app.backend.roles(user_id).await?);
    app.sessions
        .roles
        .insert(user_id, (Arc::clone(&roles), read_at));
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookies: &[&str], authorization: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in cookies {
            headers.append(http::header::COOKIE, line.parse().unwrap());
        }
        if let Some(value) = authorization {
            headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        }
        headers
    }

    fn presented(cookies: &[&str], authorization: Option<&str>) -> Presented {
        match presented_tokens(&headers(cookies, authorization)) {
            Ok(presented) => presented,
            Err(err) => panic!("refused: {err:?}"),
        }
    }

    #[test]
    fn one_cookie_or_the_bearer_is_one_token() {
        assert_eq!(
            presented(&["access_token=a.b.c"], None),
            Presented::One("a.b.c".into())
        );
        // The same token twice, or beside empty ones, is still one.
        assert_eq!(
            presented(
                &["access_token=a.b.c; access_token=", "access_token=a.b.c"],
                None
            ),
            Presented::One("a.b.c".into())
        );
        assert_eq!(
            presented(
                &["access_token=a.b.c; access_token=x.y.z"],
                Some("Bearer b.e.d")
            ),
            Presented::One("b.e.d".into())
        );
        assert!(presented_tokens(&headers(&["access_token=", "theme=x"], None)).is_err());
    }

    #[test]
    fn several_cookies_come_out_the_same_in_any_order() {
        let expected = Presented::Several(vec!["a.b.c".into(), "x.y.z".into()]);
        for lines in [
            vec!["access_token=a.b.c; access_token=x.y.z"],
            vec!["access_token=x.y.z; access_token=a.b.c"],
            vec![
                "access_token=x.y.z",
                "access_token=a.b.c; access_token=x.y.z",
            ],
        ] {
            assert_eq!(presented(&lines, None), expected, "{lines:?}");
        }
    }

    fn claims(user_id: i64, device_id: Option<&str>, iat: f64) -> SessionClaims {
        SessionClaims {
            user_id,
            email: None,
            device_id: device_id.map(str::to_string),
            exp: iat + 3600.0,
            iat: Some(iat),
            scope: Some("access_token".into()),
            kc_rt: None,
            roles: None,
        }
    }

    #[test]
    fn the_newest_token_of_a_session_is_chosen_whatever_the_order() {
        let old = (claims(1, Some("d"), 100.0), "old");
        let new = (claims(1, Some("d"), 200.0), "new");
        assert_eq!(newer(old.clone(), new.clone()).1, "new");
        assert_eq!(newer(new.clone(), old.clone()).1, "new");
        let twin = (claims(1, Some("d"), 200.0), "twin");
        assert_eq!(newer(new.clone(), twin.clone()).1, "twin");
        assert_eq!(newer(twin, new).1, "twin");
        assert!(same_session(&old.0, &claims(1, Some("d"), 5.0)));
        assert!(!same_session(&old.0, &claims(2, Some("d"), 5.0)));
        assert!(!same_session(&old.0, &claims(1, Some("e"), 5.0)));
        assert!(!same_session(&old.0, &claims(1, None, 5.0)));
    }
}
