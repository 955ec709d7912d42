//! Who may pass a route or a forward-auth check, apart from the HTTP
//! plumbing: its policy and rate limit, and the identity of an admitted
//! request ([`Admitted`], which `edge` writes into the headers the upstream
//! receives). Shared by the forwarding hooks and the forward-auth handler.
//!
//! Imports: the api's `auth` and errors, `edge` (the admitted identity),
//! `routes`, `http`.

use std::net::IpAddr;

use http::{HeaderMap, StatusCode};

use super::{ApiError, App, auth};
use crate::edge::Admitted;
use crate::http::Response;
use crate::routes::{Policy, RouteConfig};

/// Lets a request through `route`, or answers it: the contract's 403s, 429.
pub async fn admit(
    app: &App,
    route: &RouteConfig,
    headers: &HeaderMap,
    client_ip: Option<IpAddr>,
) -> Result<Option<Admitted>, Response> {
    if route.rate_limit.is_some() {
        let key = client_ip.map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
        app.check_limit(&format!("route:{}", route.prefix), route.rate_limit, &key)
            .await
            .map_err(ApiError::into_response)?;
    }
    identify(app, route, headers).await
}

/// Who the request is for, if the route's policy lets them through (no
/// rate limit counted): asked again while a tunnel stays open, so that a
/// revoked session or an expired token ends it.
pub async fn identify(
    app: &App,
    route: &RouteConfig,
    headers: &HeaderMap,
) -> Result<Option<Admitted>, Response> {
    pass(app, &route.policy, route.allow_services, headers).await
}

/// Who the request is for, if `policy` lets them through (machine clients
/// too when `allow_services`).
pub async fn pass(
    app: &App,
    policy: &Policy,
    allow_services: bool,
    headers: &HeaderMap,
) -> Result<Option<Admitted>, Response> {
    let role = match policy {
        Policy::Public => return Ok(None),
        Policy::Authenticated => None,
        Policy::Role(role) => Some(role),
    };
    let caller = auth::authenticate_caller(app, headers, allow_services)
        .await
        .map_err(ApiError::into_response)?;
    let identity = match caller {
        auth::Caller::User(principal) => {
            let roles = auth::roles(app, &principal)
                .await
                .map_err(|err| ApiError::from(err).into_response())?;
            Admitted {
                user_id: Some(principal.user_id),
                client_id: None,
                email: principal.email,
                device_id: principal.device_id,
                roles,
            }
        }
        auth::Caller::Service(service) => Admitted {
            user_id: None,
            client_id: Some(service.client_id),
            email: None,
            device_id: None,
            roles: service.roles,
        },
    };
    if let Some(role) = role
        && !identity.roles.iter().any(|r| r == role)
    {
        return Err(Response::detail(
            StatusCode::FORBIDDEN,
            "Not enough permissions",
        ));
    }
    Ok(Some(identity))
}
