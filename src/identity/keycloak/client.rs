//! Every call to Keycloak goes through here: one HTTP client with a bounded
//! timeout, a tracing span and a metric per call, and the service account's
//! admin token cached until shortly before it expires (renewed by one caller
//! while the others wait, so a burst does not fetch it N times).

use std::time::{Duration, Instant};

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Deserialize;
use tokio::sync::Mutex;
use tracing::Instrument;

use crate::config::KeycloakSettings;
use crate::metrics::Metrics;

/// Renew the admin token this long before Keycloak says it expires.
const ADMIN_TOKEN_MARGIN: Duration = Duration::from_secs(30);

/// A Keycloak address that does not make a URL (from the settings or
/// the callback a login names).
#[derive(Debug, thiserror::Error)]
#[error("{what} is not a URL: {source}")]
pub struct UrlError {
    pub what: &'static str,
    #[source]
    pub source: openidconnect::url::ParseError,
}

impl UrlError {
    /// The error of the address `what`, for `map_err`.
    pub fn of(what: &'static str) -> impl FnOnce(openidconnect::url::ParseError) -> Self {
        move |source| Self { what, source }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KcError {
    /// Keycloak cannot be reached, timed out, or answered 5xx.
    #[error("Keycloak unavailable: {0}")]
    Unavailable(String),
    #[error("Keycloak answered {status} to {operation}: {body}")]
    Unexpected {
        operation: &'static str,
        status: u16,
        body: String,
    },
}

/// An answer read whole.
#[derive(Debug)]
pub struct KcResponse {
    pub status: StatusCode,
    pub location: Option<String>,
    pub content_type: Option<String>,
    pub body: bytes::Bytes,
}

impl KcResponse {
    pub fn json<T: serde::de::DeserializeOwned>(
        &self,
        operation: &'static str,
    ) -> Result<T, KcError> {
        serde_json::from_slice(&self.body).map_err(|err| self.unexpected(operation, err))
    }

    pub fn unexpected(&self, operation: &'static str, why: impl std::fmt::Display) -> KcError {
        let body = String::from_utf8_lossy(&self.body);
        let body: String = body.chars().take(300).collect();
        tracing::warn!(operation, status = self.status.as_u16(), %why, "unexpected Keycloak answer");
        KcError::Unexpected {
            operation,
            status: self.status.as_u16(),
            body,
        }
    }

    /// `error` / `error_description` of an OAuth error answer.
    pub fn oauth_error(&self) -> (String, String) {
        #[derive(Deserialize, Default)]
        struct OauthError {
            #[serde(default)]
            error: String,
            #[serde(default)]
            error_description: String,
        }
        let parsed: OauthError = serde_json::from_slice(&self.body).unwrap_or_default();
        (parsed.error, parsed.error_description)
    }

    /// `errorMessage` of an Admin API error answer.
    pub fn admin_error(&self) -> String {
        #[derive(Deserialize, Default)]
        struct AdminError {
            #[serde(default, rename = "errorMessage")]
            error_message: String,
            #[serde(default)]
            error: String,
        }
        let parsed: AdminError = serde_json::from_slice(&self.body).unwrap_or_default();
        if parsed.error_message.is_empty() {
            parsed.error
        } else {
            parsed.error_message
        }
    }
}

/// How a 5xx answer reads.
#[derive(Debug, Clone, Copy)]
enum ServerErrors {
    /// Every 5xx means Keycloak is unavailable.
    Unavailable,
    /// A 500 is an answer (Keycloak refused the request's content); other
    /// 5xx mean unavailable.
    InternalIsAnswer,
}

impl ServerErrors {
    fn unavailable(self, status: StatusCode) -> bool {
        match self {
            Self::Unavailable => true,
            Self::InternalIsAnswer => status != StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// One Admin API request, as [`KcClient::admin_call`] sends it.
struct AdminCall<'a> {
    method: Method,
    path: &'a str,
    body: Option<&'a serde_json::Value>,
    query: &'a [(&'a str, &'a str)],
    /// Instead of the client's `KEYCLOAK_TIMEOUT_MS`.
    timeout: Option<Duration>,
    server_errors: ServerErrors,
}

#[derive(Debug)]
struct AdminToken {
    token: String,
    renew_at: Instant,
}

#[derive(Debug)]
pub struct KcClient {
    client: reqwest::Client,
    settings: KeycloakSettings,
    realm_base: String,
    admin_base: String,
    admin_token: Mutex<Option<AdminToken>>,
    metrics: std::sync::Arc<Metrics>,
}

impl KcClient {
    pub fn new(
        settings: &KeycloakSettings,
        metrics: std::sync::Arc<Metrics>,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent(concat!("authgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let base = settings.url.as_str().trim_end_matches('/');
        Ok(Self {
            client,
            realm_base: format!("{base}/realms/{}", settings.realm),
            admin_base: format!("{base}/admin/realms/{}", settings.realm),
            settings: settings.clone(),
            admin_token: Mutex::new(None),
            metrics,
        })
    }

    /// The same Keycloak and realm through another confidential client
    /// (its own service account and token), counted in the same metrics.
    pub fn for_client(&self, client_id: &str, client_secret: &str) -> Result<Self, reqwest::Error> {
        let mut settings = self.settings.clone();
        settings.client_id = client_id.to_string();
        settings.client_secret = client_secret.to_string();
        Self::new(&settings, std::sync::Arc::clone(&self.metrics))
    }

    pub fn settings(&self) -> &KeycloakSettings {
        &self.settings
    }

    /// `https://kc/realms/<realm>` (the issuer).
    pub fn realm_url(&self) -> &str {
        &self.realm_base
    }

    pub fn token_url(&self) -> String {
        format!("{}/protocol/openid-connect/token", self.realm_base)
    }

    /// Sends a request, counting and timing it. Connection failures,
    /// timeouts and 5xx answers are `Unavailable`.
    pub async fn send(
        &self,
        operation: &'static str,
        request: RequestBuilder,
    ) -> Result<KcResponse, KcError> {
        self.send_reading(operation, request, ServerErrors::Unavailable)
            .await
    }

    async fn send_reading(
        &self,
        operation: &'static str,
        request: RequestBuilder,
        server_errors: ServerErrors,
    ) -> Result<KcResponse, KcError> {
        let span = tracing::info_span!("keycloak", operation, status = tracing::field::Empty);
        let started = Instant::now();
        let call =
            async {
                let response = request.send().await.map_err(|err| {
                    KcError::Unavailable(format!("{operation}: {}", describe(&err)))
                })?;
                let status = response.status();
                let header = |name| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                let location = header(reqwest::header::LOCATION);
                let content_type = header(reqwest::header::CONTENT_TYPE);
                let body = response.bytes().await.map_err(|err| {
                    KcError::Unavailable(format!("{operation}: {}", describe(&err)))
                })?;
                tracing::Span::current().record("status", status.as_u16());
                if status.is_server_error() && server_errors.unavailable(status) {
                    return Err(KcError::Unavailable(format!("{operation}: HTTP {status}")));
                }
                Ok(KcResponse {
                    status,
                    location,
                    content_type,
                    body,
                })
            }
            .instrument(span);
        // Within what is left of the request's deadline, too.
        let result = crate::identity::deadline::bounded(call)
            .await
            .unwrap_or_else(|| {
                Err(KcError::Unavailable(format!(
                    "{operation}: the request's deadline passed"
                )))
            });
        let outcome = match &result {
            Ok(r) if r.status.is_success() => "ok",
            Ok(_) => "refused",
            Err(_) => "unavailable",
        };
        self.metrics
            .keycloak_requests
            .with_label_values(&[operation, outcome])
            .inc();
        self.metrics
            .keycloak_seconds
            .with_label_values(&[operation])
            .observe(started.elapsed().as_secs_f64());
        if let Err(err) = &result {
            tracing::warn!(operation, error = %err, "Keycloak call failed");
        }
        result
    }

    /// A form POST to the realm's token endpoint (client authenticated).
    pub async fn token_request(
        &self,
        operation: &'static str,
        form: &[(&str, &str)],
    ) -> Result<KcResponse, KcError> {
        let request = self
            .client
            .post(self.token_url())
            .basic_auth(&self.settings.client_id, Some(&self.settings.client_secret))
            .form(form);
        self.send(operation, request).await
    }

    /// Executes a request built by the OIDC client (`openidconnect`).
    pub async fn execute(
        &self,
        operation: &'static str,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, KcError> {
        let request = reqwest::Request::try_from(request)
            .map_err(|err| KcError::Unavailable(format!("{operation}: {err}")))?;
        let builder = RequestBuilder::from_parts(self.client.clone(), request);
        let answer = self.send(operation, builder).await?;
        let mut response = http::Response::builder().status(answer.status);
        if let Some(content_type) = &answer.content_type {
            response = response.header(http::header::CONTENT_TYPE, content_type);
        }
        response
            .body(answer.body.to_vec())
            .map_err(|err| KcError::Unavailable(format!("{operation}: {err}")))
    }

    /// A form POST to another OIDC endpoint of the realm (e.g. `logout`).
    pub async fn oidc_form(
        &self,
        operation: &'static str,
        endpoint: &str,
        form: &[(&str, &str)],
    ) -> Result<KcResponse, KcError> {
        let request = self
            .client
            .post(format!(
                "{}/protocol/openid-connect/{endpoint}",
                self.realm_base
            ))
            .basic_auth(&self.settings.client_id, Some(&self.settings.client_secret))
            .form(form);
        self.send(operation, request).await
    }

    /// A plain GET of a public realm URL (discovery, JWKS).
    pub async fn get_public(
        &self,
        operation: &'static str,
        url: &str,
    ) -> Result<KcResponse, KcError> {
        self.send(operation, self.client.get(url)).await
    }

    /// Deletes the Admin API resource at `path`; `false` when it was not there.
    pub async fn admin_delete(&self, operation: &'static str, path: &str) -> Result<bool, KcError> {
        let r = self
            .admin(operation, Method::DELETE, path, None, &[])
            .await?;
        match r.status {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(r.unexpected(operation, "unexpected status")),
        }
    }

    /// An Admin REST API request under `/admin/realms/<realm>`, with the
    /// service account's token.
    pub async fn admin(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        query: &[(&str, &str)],
    ) -> Result<KcResponse, KcError> {
        let call = AdminCall {
            method,
            path,
            body,
            query,
            timeout: None,
            server_errors: ServerErrors::Unavailable,
        };
        self.admin_call(operation, &call).await
    }

    /// An Admin API request doing bulk work (a partial import): bounded by
    /// `timeout` instead of `KEYCLOAK_TIMEOUT_MS`, and a 500 answer is read
    /// as Keycloak's refusal of the request's content (it fails the whole
    /// request on one bad item), not as an outage; 502, 503 and 504 still are.
    pub async fn admin_bulk(
        &self,
        operation: &'static str,
        path: &str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> Result<KcResponse, KcError> {
        let call = AdminCall {
            method: Method::POST,
            path,
            body: Some(body),
            query: &[],
            timeout: Some(timeout),
            server_errors: ServerErrors::InternalIsAnswer,
        };
        self.admin_call(operation, &call).await
    }

    async fn admin_call(
        &self,
        operation: &'static str,
        call: &AdminCall<'_>,
    ) -> Result<KcResponse, KcError> {
        let token = self.admin_token().await?;
        let response = self
            .send_reading(
                operation,
                self.admin_request(call, &token),
                call.server_errors,
            )
            .await?;
        if response.status == StatusCode::UNAUTHORIZED {
            // The token was revoked or the realm keys rotated: renew once.
            self.forget_admin_token().await;
            let token = self.admin_token().await?;
            return self
                .send_reading(
                    operation,
                    self.admin_request(call, &token),
                    call.server_errors,
                )
                .await;
        }
        Ok(response)
    }

    fn admin_request(&self, call: &AdminCall<'_>, token: &str) -> RequestBuilder {
        let mut request = self
            .client
            .request(
                call.method.clone(),
                format!("{}{}", self.admin_base, call.path),
            )
            .bearer_auth(token)
            .query(call.query);
        if let Some(body) = call.body {
            request = request.json(body);
        }
        if let Some(timeout) = call.timeout {
            request = request.timeout(timeout);
        }
        request
    }

    /// Whether the service account gets a token (client id and secret
    /// accepted, service account enabled).
    pub async fn check_service_account(&self) -> Result<(), KcError> {
        self.admin_token().await.map(drop)
    }

    async fn forget_admin_token(&self) {
        *self.admin_token.lock().await = None;
    }

    pub(super) async fn admin_token(&self) -> Result<String, KcError> {
        // Waiting for another caller's renewal counts against the deadline.
        let mut cached = crate::identity::deadline::bounded(self.admin_token.lock())
            .await
            .ok_or_else(|| {
                KcError::Unavailable("service_account_token: the request's deadline passed".into())
            })?;
        if let Some(token) = cached.as_ref()
            && Instant::now() < token.renew_at
        {
            return Ok(token.token.clone());
        }
        #[derive(Deserialize)]
        struct Grant {
            access_token: String,
            expires_in: u64,
        }
        let response = self
            .token_request(
                "service_account_token",
                &[("grant_type", "client_credentials")],
            )
            .await?;
        if !response.status.is_success() {
            return Err(response.unexpected("service_account_token", "client credentials refused"));
        }
        let grant: Grant = response.json("service_account_token")?;
        let lifetime = Duration::from_secs(grant.expires_in).saturating_sub(ADMIN_TOKEN_MARGIN);
        *cached = Some(AdminToken {
            token: grant.access_token.clone(),
            renew_at: Instant::now() + lifetime.max(Duration::from_secs(1)),
        });
        Ok(grant.access_token)
    }
}

fn describe(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "timed out".into()
    } else if err.is_connect() {
        "connection failed".into()
    } else {
        err.to_string()
    }
}

/// Hostile bytes: Keycloak's answers (Admin API and token endpoint) as
/// the gateway decodes them, over random and built bodies (the long run
/// is `scripts/fuzz.sh`).
#[cfg(test)]
mod prop {
    use proptest::prelude::prop;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::super::admin::{ImportResult, KcSession, KcUser};
    use super::super::oidc::KcClaims;
    use super::*;

    fn text() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<String>().prop_map(Value::from),
            "[a-z0-9-]{0,12}".prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            Just(Value::Null),
            Just(json!([])),
            Just(json!({})),
        ]
    }

    fn strings() -> impl Strategy<Value = Value> {
        prop_oneof![
            prop::collection::vec(text(), 0..4).prop_map(Value::Array),
            text(),
        ]
    }

    /// A user, a session, an import line or a token's claims, keys kept
    /// or dropped, values of any type.
    fn object() -> impl Strategy<Value = Value> {
        let keys = [
            "id",
            "username",
            "email",
            "emailVerified",
            "enabled",
            "requiredActions",
            "totp",
            "ipAddress",
            "start",
            "lastAccess",
            "action",
            "resourceType",
            "resourceName",
            "sub",
            "exp",
            "iat",
            "typ",
            "sid",
            "user_id",
            "preferred_username",
            "azp",
            "client_id",
            "error",
            "error_description",
            "errorMessage",
        ];
        (
            prop::collection::vec(proptest::option::of(text()), keys.len()),
            proptest::option::of(prop::collection::vec(("[a-z_]{1,10}", strings()), 0..3)),
            proptest::option::of(strings()),
            proptest::option::of(prop::collection::vec(("[a-z-]{1,8}", strings()), 0..3)),
            prop_oneof![
                Just("ADDED"),
                Just("SKIPPED"),
                Just("OVERWRITTEN"),
                Just("added")
            ],
        )
            .prop_map(move |(values, attributes, realm_roles, clients, action)| {
                let mut map = serde_json::Map::new();
                for (key, value) in keys.iter().zip(values) {
                    if let Some(value) = value {
                        map.insert((*key).to_string(), value);
                    }
                }
                if map.contains_key("action") {
                    map.insert("action".into(), action.into());
                }
                if let Some(attributes) = attributes {
                    let mut attrs: serde_json::Map<String, Value> =
                        attributes.into_iter().collect();
                    attrs.insert("legacy_id".into(), json!(["42", "x"]));
                    map.insert("attributes".into(), Value::Object(attrs));
                }
                if let Some(roles) = realm_roles {
                    map.insert("realm_access".into(), json!({ "roles": roles }));
                }
                if let Some(clients) = clients {
                    let access: serde_json::Map<String, Value> = clients
                        .into_iter()
                        .map(|(c, roles)| (c, json!({ "roles": roles })))
                        .collect();
                    map.insert("resource_access".into(), Value::Object(access));
                }
                Value::Object(map)
            })
    }

    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            3 => object().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
            2 => prop::collection::vec(object(), 0..4)
                .prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
            1 => prop::collection::vec(any::<u8>(), 0..400),
            1 => any::<String>().prop_map(String::into_bytes),
        ]
    }

    fn answer(body: Vec<u8>, status: u16) -> KcResponse {
        KcResponse {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            location: None,
            content_type: Some("application/json".into()),
            body: body.into(),
        }
    }

    proptest! {
        /// Every decoding the gateway does of an answer: never a panic;
        /// an unexpected answer is quoted in at most 300 characters; the
        /// roles of a token are no more than it lists.
        #[test]
        fn keycloak_answers(body in body(), status in 100u16..600) {
            let r = answer(body, status);
            if let Ok(user) = r.json::<KcUser>("user") {
                let _ = user.legacy_id();
            }
            let _ = r.json::<Vec<KcUser>>("users");
            let _ = r.json::<Vec<KcSession>>("sessions");
            let _ = r.json::<Vec<ImportResult>>("import");
            if let Ok(claims) = r.json::<KcClaims>("token") {
                let listed = claims.realm_access.as_ref().map_or(0, |r| r.roles.len())
                    + claims.resource_access.iter().flatten().map(|(_, a)| a.roles.len()).sum::<usize>();
                let roles = claims.roles();
                prop_assert!(roles.len() <= listed);
                prop_assert!(roles.windows(2).all(|w| w[0] < w[1]));
                let _ = claims.service_client();
            }
            let (error, description) = r.oauth_error();
            prop_assert!(error.len() + description.len() <= r.body.len());
            prop_assert!(r.admin_error().len() <= r.body.len());
            let KcError::Unexpected { body, .. } = r.unexpected("op", "why") else {
                return Err(TestCaseError::fail("not an unexpected answer"));
            };
            prop_assert!(body.chars().count() <= 300);
        }

        /// The claims of a token read straight from the token endpoint:
        /// never a panic, whatever the token endpoint sent.
        #[test]
        fn fresh_token_claims(
            claims in object(),
            random in proptest::option::of(any::<String>()),
            junk in "[A-Za-z0-9_.-]{0,20}",
        ) {
            use base64::Engine;
            let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(serde_json::to_vec(&claims).unwrap_or_default());
            let token = random.unwrap_or_else(|| format!("eyJhbGciOiJSUzI1NiJ9.{payload}.{junk}"));
            let _ = KcClaims::of_fresh_token(&token);
        }
    }
}
