//! Opening a device session: the pair minted for a login (or the
//! provider's own) and the session recorded, as sign-in, e-mail
//! verification and single sign-on all end; the answer they give.

use http::header::SET_COOKIE;
use serde::Serialize;

use crate::api::{ApiError, App};
use crate::http::cookies::{self, ACCESS_COOKIE, REFRESH_COOKIE};
use crate::http::schema::{Documented, Schema};
use crate::http::{Request, Response};
use crate::identity::{DeviceInfo, Login};
use crate::tokens::Subject;

/// The answer of sign-up, sign-in (`SessionAnswer` keys are always all present).
#[derive(Debug, Serialize)]
pub struct SessionAnswer {
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
    pub expires_in: Option<u64>,
    pub fallback_url: Option<String>,
    pub message: Option<&'static str>,
}

/// An access token as the examples show it (not a working one).
pub const EXAMPLE_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1c2VyX2lkIjo0Miwic2NvcGUiOiJhY2Nlc3NfdG9rZW4ifQ.c2lnbmF0dXJl";
/// A refresh token (a compact JWE) as the examples show it.
pub const EXAMPLE_REFRESH_TOKEN: &str =
    "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..aXY.Y2lwaGVydGV4dA.dGFn";

impl Documented for SessionAnswer {
    const NAME: &'static str = "SessionAnswer";

    fn schema() -> Schema {
        Schema::object()
            .field(
                "access_token",
                Schema::string()
                    .nullable()
                    .describe("HS256 JWT, scope `access_token`; `null` while the address is not verified (sign-in)."),
            )
            .field(
                "refresh_token",
                Schema::string()
                    .nullable()
                    .describe("JWE (`dir`/`A256GCM`) wrapping a refresh JWT; `null` like `access_token`."),
            )
            .field(
                "expires_in",
                Schema::integer()
                    .nullable()
                    .describe("Seconds the access token lives (`JWT_EXP_TIME_MINUTES`)."),
            )
            .field(
                "fallback_url",
                Schema::string()
                    .nullable()
                    .describe("Where to send an unverified user (sign-in); otherwise `null`."),
            )
            .field(
                "message",
                Schema::string().nullable().describe(
                    "`Verification email sent successfully` (sign-up), `Please verify your email first` (unverified sign-in) or `null`.",
                ),
            )
            .describe("The answer of sign-up and sign-in; every key is always present.")
    }

    fn example() -> Self {
        Self {
            access_token: Some(EXAMPLE_TOKEN.into()),
            refresh_token: Some(EXAMPLE_REFRESH_TOKEN.into()),
            expires_in: Some(3600),
            fallback_url: None,
            message: Some("Verification email sent successfully"),
        }
    }
}

/// A freshly minted pair for a recorded device session.
#[derive(Debug)]
pub struct SessionTokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
}

impl SessionTokens {
    /// Sets both cookies on a response.
    pub fn set_cookies(&self, app: &App, response: &mut Response) {
        let settings = &app.config.cookies;
        let lifetimes = app.tokens.lifetimes();
        let pairs = [
            (
                ACCESS_COOKIE,
                &self.access_token,
                lifetimes.access.as_secs(),
            ),
            (
                REFRESH_COOKIE,
                &self.refresh_token,
                lifetimes.refresh.as_secs(),
            ),
        ];
        for (name, value, max_age) in pairs {
            if let Some(header) = cookies::set(name, value, max_age, settings) {
                response.headers.append(SET_COOKIE, header);
            }
        }
    }
}

/// What the request tells about the device (legacy `device_sessions` columns).
pub fn device_info(req: &Request) -> DeviceInfo {
    DeviceInfo {
        device_type: req.header("sec-ch-ua-platform").map(str::to_string),
        device_name: req.header("sec-ch-ua").map(str::to_string),
        user_agent: req.header("user-agent").map(str::to_string),
        ip_address: req.client_ip.map(|ip| ip.to_string()),
    }
}

/// Mints the pair for a login (or hands out the provider's own, with
/// `TOKEN_FORMAT=keycloak`) and records its device session.
pub async fn open_session(
    app: &App,
    login: &Login,
    device: &DeviceInfo,
) -> Result<SessionTokens, ApiError> {
    if app.backend.hands_out_upstream_tokens()
        && let Some(upstream) = &login.upstream
    {
        app.backend
            .record_session(login, device, &upstream.refresh_token)
            .await?;
        return Ok(SessionTokens {
            access_token: upstream.access_token.clone(),
            refresh_token: upstream.refresh_token.clone(),
            expires_in: upstream.expires_in,
        });
    }
    let subject = Subject {
        user_id: login.user.id,
        email: Some(login.user.email.clone()),
        device_id: Some(login.device_id.clone()),
        upstream_refresh: login.upstream.as_ref().map(|u| u.refresh_token.clone()),
        roles: login.roles.clone(),
    };
    let access_token = app
        .tokens
        .mint_access(&subject)
        .map_err(ApiError::internal)?;
    let refresh_token = app
        .tokens
        .mint_refresh(&subject)
        .map_err(ApiError::internal)?;
    app.backend
        .record_session(login, device, &refresh_token)
        .await?;
    Ok(SessionTokens {
        access_token,
        refresh_token,
        expires_in: app.tokens.access_seconds(),
    })
}
