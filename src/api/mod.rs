//! The `/users/...` API of the contract, written once against
//! [`IdentityBackend`]: handlers validate, call the backend, mint tokens and
//! shape the answers; they never see SQL or Keycloak. `docs` describes them
//! all as an OpenAPI document.
//!
//! Handlers (one file per resource) never import each other: what several
//! of them share sits below them, in `flows` (opening a session, mailing an
//! e-mail token, the second factor at sign-in), `admission` (who may pass a
//! route), `auth` (the token rule), `error` and `deferred`. Tests of the
//! handlers run in-process on `crate::testkit` (`mod in_process`).
//!
//! Imports: the layers below it: `identity` (through the backend trait),
//! `tokens`, `totp`, `mail`, `audit`, `revocation`, `ratelimit`, `routes`
//! (the live table, for forward-auth), `edge` (the admitted identity),
//! `http`, `config`, `clock`, `metrics`, `background`. Never the server or
//! the store.

mod account;
mod admin_mail;
pub mod admission;
mod audit;
pub mod auth;
mod backchannel;
mod deferred;
mod devices;
pub mod docs;
mod error;
mod flows;
pub mod forward_auth;
mod meta;
mod mfa;
mod password;
mod session;
mod sso;
mod users;
mod verification;

use std::sync::Arc;
use std::time::Instant;

use http::header::{ALLOW, CONTENT_LENGTH, HeaderValue, LOCATION};
use http::{Method, StatusCode};

use deferred::{Deferred, JobContext};
pub use error::ApiError;

/// The Prometheus text of the application's metrics.
pub fn metrics_response(app: &App) -> Response {
    meta::metrics(app)
}

use crate::audit::AuditLog;
use crate::clock::Clock;
use crate::config::Config;
use crate::config::Quota;
use crate::http::endpoints::{Endpoint, Resolution, Router};
use crate::http::{Request, Response};
use crate::identity::IdentityBackend;
use crate::mail::Mailer;
use crate::metrics::Metrics;
use crate::ratelimit::{RateLimiter, retry_after_seconds};
use crate::routes::table::LiveRoutes;
use crate::tokens::{ExternalTokens, TokenService};

impl App {
    /// Records an audit event; a failure to record is logged, never answered.
    pub async fn audit(&self, event: crate::audit::AuditEvent) {
        self.jobs.audit(event).await;
    }

    /// Runs `work` after the answer ([`deferred`]), with what it needs.
    async fn after_answer<W, F>(&self, work: W)
    where
        W: FnOnce(JobContext) -> F,
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.deferred.run(work(self.jobs.clone())).await;
    }

    /// `Err(429)` when `quota` (if configured) has no room for `key` under `name`.
    pub async fn check_limit(
        &self,
        name: &str,
        quota: Option<Quota>,
        key: &str,
    ) -> Result<(), ApiError> {
        let Some(quota) = quota else {
            return Ok(());
        };
        match self.limiter.check(name, quota, key).await {
            Ok(()) => Ok(()),
            Err(wait) => {
                self.metrics.rate_limited.with_label_values(&[name]).inc();
                Err(ApiError::TooManyRequests {
                    retry_after: retry_after_seconds(wait),
                })
            }
        }
    }
}

/// Everything a handler needs.
#[derive(Debug)]
pub struct App {
    pub config: Arc<Config>,
    pub tokens: TokenService,
    pub backend: Arc<dyn IdentityBackend>,
    pub mailer: Arc<Mailer>,
    pub limiter: Arc<RateLimiter>,
    pub sessions: auth::SessionCache,
    /// Revocations every replica refuses (in memory; shared through Redis).
    pub revocations: Arc<crate::revocation::Revocations>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    /// Verifier of the identity provider's own tokens (keycloak mode).
    pub external_tokens: Option<Arc<dyn ExternalTokens>>,
    /// The audit trail.
    pub audit_log: Arc<dyn AuditLog>,
    /// Work that runs beside the server (started by it).
    pub background: Arc<crate::background::Background>,
    /// The shared handles, for work done after the answer.
    jobs: JobContext,
    deferred: Deferred,
    /// The upstream routes in force (forwarding, and forward-auth's
    /// policies); the server fills it and swaps it on reload.
    pub routes: Arc<LiveRoutes>,
    router: Router,
}

impl App {
    pub fn new(
        config: Arc<Config>,
        tokens: TokenService,
        backend: Arc<dyn IdentityBackend>,
        mailer: Arc<Mailer>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        audit_log: Arc<dyn AuditLog>,
    ) -> Result<Self, matchit::InsertError> {
        let jobs = JobContext {
            config: Arc::clone(&config),
            tokens: tokens.clone(),
            backend: Arc::clone(&backend),
            mailer: Arc::clone(&mailer),
            clock: Arc::clone(&clock),
            metrics: Arc::clone(&metrics),
            audit_log: Arc::clone(&audit_log),
        };
        Ok(Self {
            jobs,
            deferred: Deferred::default(),
            background: Arc::default(),
            audit_log,
            limiter: Arc::new(RateLimiter::local_only()),
            sessions: auth::SessionCache::new(),
            revocations: Arc::new(crate::revocation::Revocations::local(
                tokens.lifetimes().access,
                Arc::clone(&clock),
                Arc::clone(&metrics),
            )),
            config,
            tokens,
            backend,
            mailer,
            clock,
            metrics,
            external_tokens: None,
            routes: Arc::new(LiveRoutes::default()),
            router: Router::new()?,
        })
    }

    /// Uses this limiter (e.g. one shared through Redis) for every limit.
    pub fn with_limiter(mut self, limiter: Arc<RateLimiter>) -> Self {
        self.limiter = limiter;
        self
    }

    /// Refuses and shares revocations through this set (e.g. one shared
    /// through Redis).
    pub fn with_revocations(mut self, revocations: Arc<crate::revocation::Revocations>) -> Self {
        self.revocations = revocations;
        self
    }

    /// Runs this work beside the server.
    pub fn with_background(mut self, background: crate::background::Background) -> Self {
        self.background = Arc::new(background);
        self
    }

    /// Accepts the identity provider's own tokens as well as legacy ones.
    pub fn with_external_tokens(mut self, verifier: Arc<dyn ExternalTokens>) -> Self {
        self.external_tokens = Some(verifier);
        self
    }

    /// Waits until the work started after answers (mails, audit records)
    /// has finished: for tests, which then read what it wrote.
    pub async fn settle(&self) {
        self.deferred.settle().await;
    }

    /// Whether the API answers this path (any method): otherwise it may be forwarded.
    pub fn serves(&self, method: &Method, path: &str) -> bool {
        self.router.resolve(method, path) != Resolution::NotFound
    }

    /// Answers one request; never fails (every error becomes its response).
    pub async fn handle(&self, req: Request) -> Response {
        let started = Instant::now();
        let method = req.method.clone();
        let path = req.path.clone();
        let (route, mut response) = match self.router.resolve(&req.method, &req.path) {
            Resolution::Found(route, param) => {
                let within = self.config.keycloak.request_deadline;
                let response =
                    crate::identity::deadline::scope(within, self.dispatch(route, param, req))
                        .await
                        .unwrap_or_else(ApiError::into_response);
                (Some(route), response)
            }
            Resolution::WrongMethod(allow) => {
                let mut response =
                    Response::detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
                if let Ok(value) = HeaderValue::from_str(&allow) {
                    response.headers.insert(ALLOW, value);
                }
                (None, response)
            }
            Resolution::Redirect(twin) => (None, self.redirect(&req, &twin)),
            Resolution::NotFound => (None, Response::detail(StatusCode::NOT_FOUND, "Not Found")),
        };
        if method == Method::HEAD {
            let length = response.body.len();
            response
                .headers
                .insert(CONTENT_LENGTH, HeaderValue::from(length));
            response.body = bytes::Bytes::new();
        }
        let elapsed = started.elapsed();
        let route_label = route.map_or("unmatched", Endpoint::template);
        self.metrics.observe_request(
            route_label,
            method.as_str(),
            response.status.as_u16(),
            elapsed,
        );
        tracing::info!(
            method = %method,
            path = %path,
            route = route_label,
            status = response.status.as_u16(),
            latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            "request"
        );
        response
    }

    /// Starlette's trailing-slash redirect: 307 to the twin path, absolute, query kept.
    fn redirect(&self, req: &Request, twin: &str) -> Response {
        let host = req
            .header("host")
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}:{}", self.config.app.host, self.config.app.port));
        let mut location = format!("http://{host}{twin}");
        if let Some(query) = &req.query {
            location.push('?');
            location.push_str(query);
        }
        let mut response = Response::empty(StatusCode::TEMPORARY_REDIRECT);
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers.insert(LOCATION, value);
        }
        response
    }

    async fn dispatch(
        &self,
        route: Endpoint,
        param: Option<String>,
        req: Request,
    ) -> Result<Response, ApiError> {
        let user_param = param.as_deref().unwrap_or_default();
        match (route, &req.method) {
            (Endpoint::Root, _) => Ok(meta::root(self)),
            (Endpoint::Health, _) => Ok(meta::health()),
            (Endpoint::Ready, _) => meta::ready(self).await,
            (Endpoint::Metrics, _) => Ok(meta::metrics(self)),
            (Endpoint::Signup, _) => account::signup(self, &req).await,
            (Endpoint::Signin, _) => session::signin(self, &req).await,
            (Endpoint::RefreshToken, _) => session::refresh(self, &req).await,
            (Endpoint::Signout, _) => session::signout(self, &req).await,
            (Endpoint::VerifyEmail, _) => verification::verify_email(self, &req).await,
            (Endpoint::ResendVerification, _) => verification::resend(self, &req).await,
            (Endpoint::ForgotPassword, _) => password::forgot(self, &req).await,
            (Endpoint::ResetPassword, _) => password::reset(self, &req).await,
            (Endpoint::Me, _) => users::me(self, &req).await,
            (Endpoint::Users, &Method::POST) => users::create(self, &req).await,
            (Endpoint::Users, _) => users::list(self, &req).await,
            (Endpoint::User, &Method::PUT) => users::update(self, &req, user_param).await,
            (Endpoint::User, &Method::DELETE) => users::delete(self, &req, user_param).await,
            (Endpoint::User, _) => users::get(self, &req, user_param).await,
            (Endpoint::EmailTest, _) => admin_mail::send(self, &req).await,
            (Endpoint::Docs, _) => Ok(docs::page()),
            (Endpoint::DocsJson, _) => Ok(docs::json(self)),
            (Endpoint::Audit, _) => audit::list(self, &req).await,
            (Endpoint::Sessions, &Method::DELETE) => devices::end_others(self, &req).await,
            (Endpoint::Sessions, _) => devices::list(self, &req).await,
            (Endpoint::Session, _) => devices::end_one(self, &req, user_param).await,
            (Endpoint::UserSessions, _) => devices::end_all(self, &req, user_param).await,
            (Endpoint::SsoLogin, _) => sso::login(self, &req).await,
            (Endpoint::SsoCallback, _) => sso::callback(self, &req).await,
            (Endpoint::Totp, &Method::POST) => mfa::start(self, &req).await,
            (Endpoint::Totp, &Method::DELETE) => mfa::remove(self, &req).await,
            (Endpoint::Totp, _) => mfa::status(self, &req).await,
            (Endpoint::TotpConfirm, _) => mfa::confirm(self, &req).await,
            (Endpoint::BackchannelLogout, _) => backchannel::logout(self, &req).await,
            (Endpoint::ForwardAuth, _) => Ok(forward_auth::check(self, &req).await),
        }
    }
}
