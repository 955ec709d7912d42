//! The gateway's pingora hooks for the main listener (and the plain one
//! beside HTTPS): the request head settled once, then either answered by
//! the api layer or admitted and forwarded to an upstream of its route
//! (the lean path, a tunnel, or pingora's proxy for bodies and HTTP/2
//! upstreams), every upstream answer finished by one step.
//!
//! Imports: `api` (the application, admission, forward-auth), `edge`,
//! `forward`, `routes`, `http`, `tls` (the redirect), `server::exchange`
//! and `server::ctx`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::StatusCode;
use http::header::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::modules::http::HttpModules;
use pingora::prelude::{HttpPeer, ProxyHttp, Session};
use pingora::proxy::FailToProxy;
use pingora::{Error, ErrorSource, ErrorType};
use tracing::Instrument;

pub use super::ctx::Ctx;
use super::exchange::{REQUEST_ID, header_text, read_request, stamp, write_response};
use crate::api::admission::{admit, identify};
use crate::api::{App, forward_auth};
use crate::edge::{self, Forwarding};
use crate::forward::{ForwardError, Forwarder, Target, Upgrade};
use crate::http::Response;
use crate::http::client_ip::{client_ip, request_id};
use crate::routes::Policy;
use crate::routes::table::Route;
use crate::tls::redirect::Redirect;

/// How often an open tunnel (WebSocket) asks whether its caller may still
/// pass its route.
const TUNNEL_CHECK_EVERY: Duration = Duration::from_secs(1);

/// The hooks of the main listener (and of the plain one beside HTTPS).
pub struct Gateway {
    app: Arc<App>,
    max_body: usize,
    /// The lean path for requests without a body.
    forwarder: Forwarder,
    /// `HSTS_MAX_AGE_SECONDS`, for answers over TLS.
    hsts: Option<HeaderValue>,
    /// The plain listener beside HTTPS: probes here, the rest redirected.
    redirect: Option<Redirect>,
}

impl Gateway {
    pub fn new(app: Arc<App>) -> Self {
        let max_body = app.config.app.max_body_bytes;
        let hsts = app
            .config
            .edge
            .tls
            .as_ref()
            .and_then(|tls| tls.hsts_max_age)
            .and_then(|age| HeaderValue::from_str(&format!("max-age={age}")).ok());
        Self {
            app,
            max_body,
            forwarder: Forwarder::default(),
            hsts,
            redirect: None,
        }
    }

    /// The gateway of the plain listener beside HTTPS: health probes
    /// answered, everything else redirected (see [`crate::tls::redirect`]).
    pub fn redirecting(mut self, redirect: Redirect) -> Self {
        self.redirect = Some(redirect);
        self
    }

    fn route_label(ctx: &Ctx) -> &str {
        match &ctx.forward {
            Some((route, _)) => route.label.as_str(),
            None => "unmatched",
        }
    }

    /// The chosen route and an upstream address for it (see
    /// [`crate::balance`]: a healthy one, any when none is), never one that
    /// refused this request already.
    fn pick_upstream(ctx: &Ctx) -> pingora::Result<(Arc<Route>, SocketAddr)> {
        let route = ctx
            .forward
            .as_ref()
            .map(|(route, _)| Arc::clone(route))
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route chosen"))?;
        let addr = route
            .balancer
            .as_ref()
            .and_then(|balancer| balancer.pick_avoiding(&ctx.refused))
            .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, "no upstream"))?;
        Ok((route, addr))
    }

    /// `addr` refused (or failed) the connection before anything was sent:
    /// it is marked down until its next probe, and the request may go to
    /// another upstream of its route, whatever its method, when one is left.
    fn next_upstream(
        &self,
        ctx: &mut Ctx,
        addr: SocketAddr,
        error: &dyn std::fmt::Display,
    ) -> bool {
        ctx.refused.push(addr);
        let Some((route, _)) = &ctx.forward else {
            return false;
        };
        let Some(balancer) = &route.balancer else {
            return false;
        };
        balancer.mark_down(addr);
        let again = balancer.has_untried(&ctx.refused);
        if again {
            self.app
                .metrics
                .upstream_errors
                .with_label_values(&[route.label.as_str(), "connect_refused_next"])
                .inc();
            ctx.span.in_scope(|| {
                tracing::warn!(upstream = %addr, %error, "upstream refused the connection; trying the next one")
            });
        }
        again
    }

    /// The one step every upstream answer goes through, on every
    /// forwarding path (lean, tunnel, pingora's proxy): counted with the
    /// time it took, and stamped (request id, HSTS over TLS).
    fn finish_upstream_answer(
        &self,
        ctx: &Ctx,
        header: &mut ResponseHeader,
    ) -> pingora::Result<()> {
        self.observe_upstream_answer(ctx, header.status);
        stamp(header, ctx)
    }

    /// Counts an upstream answer and the time it took.
    fn observe_upstream_answer(&self, ctx: &Ctx, status: StatusCode) {
        let route = Self::route_label(ctx);
        if let Some(started) = ctx.upstream_started {
            self.app
                .metrics
                .upstream_seconds
                .with_label_values(&[route])
                .observe(started.elapsed().as_secs_f64());
        }
        self.app
            .metrics
            .upstream_requests
            .with_label_values(&[route, status.as_str()])
            .inc();
    }

    /// Forwards a request without a body on the lean path (see
    /// [`crate::forward`]) and streams the answer back.
    async fn forward_lean(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<()> {
        let (mut header, exchange, span) = loop {
            let (upstream, addr) = Self::pick_upstream(ctx)?;
            let target = Target {
                addr,
                connect_timeout: upstream.config.connect_timeout,
                read_timeout: upstream.config.read_timeout,
            };
            ctx.upstream_started = Some(Instant::now());
            // One span per upstream exchange, under the request's.
            let span = tracing::debug_span!(parent: &ctx.span, "upstream", %addr);
            match self
                .forwarder
                .send(session, target)
                .instrument(span.clone())
                .await
            {
                Ok((header, exchange)) => break (header, exchange, span),
                Err(ForwardError::Connect(e)) if self.next_upstream(ctx, addr, &e) => {}
                Err(err) => return Err(err.into()),
            }
        };
        self.finish_upstream_answer(ctx, &mut header)?;
        let empty = exchange.is_empty();
        session
            .write_response_header(Box::new(header), empty)
            .await
            .map_err(|e| e.into_down())?;
        exchange.relay(session).instrument(span).await?;
        Ok(())
    }

    /// Forwards an upgrade request (WebSocket) and, once the upstream
    /// switches, relays both ways until a side closes, the tunnel idles, or
    /// the caller may no longer pass the route (`credentials` are checked
    /// again every second: a revoked session or an expired token ends it).
    async fn forward_tunnel(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        credentials: Option<http::HeaderMap>,
    ) -> pingora::Result<()> {
        let (upstream, mut header, upgrade, span) = loop {
            let (upstream, addr) = Self::pick_upstream(ctx)?;
            let target = Target {
                addr,
                connect_timeout: upstream.config.connect_timeout,
                read_timeout: upstream.config.read_timeout,
            };
            ctx.upstream_started = Some(Instant::now());
            let span = tracing::debug_span!(parent: &ctx.span, "upstream", %addr, tunnel = true);
            match self
                .forwarder
                .open_tunnel(session, target)
                .instrument(span.clone())
                .await
            {
                Ok((header, upgrade)) => break (upstream, header, upgrade, span),
                Err(ForwardError::Connect(e)) if self.next_upstream(ctx, addr, &e) => {}
                Err(err) => return Err(err.into()),
            }
        };
        self.finish_upstream_answer(ctx, &mut header)?;
        match upgrade {
            Upgrade::Refused(exchange) => {
                session.set_keepalive(None);
                let empty = exchange.is_empty();
                session
                    .write_response_header(Box::new(header), empty)
                    .await
                    .map_err(|e| e.into_down())?;
                exchange.relay(session).instrument(span).await?;
            }
            Upgrade::Switched(tunnel) => {
                session
                    .write_response_header(Box::new(header), false)
                    .await
                    .map_err(|e| e.into_down())?;
                let (app, route) = (&self.app, &upstream.config);
                let still_allowed = || async {
                    match &credentials {
                        None => true,
                        Some(headers) => identify(app, route, headers).await.is_ok(),
                    }
                };
                let end = tunnel
                    .run(session, TUNNEL_CHECK_EVERY, still_allowed)
                    .instrument(span)
                    .await?;
                self.app
                    .metrics
                    .tunnels_ended
                    .with_label_values(&[end.as_str()])
                    .inc();
                ctx.span
                    .in_scope(|| tracing::info!(end = end.as_str(), "tunnel ended"));
            }
        }
        Ok(())
    }
}

/// The request's credentials (bearer header, cookies), kept to check an
/// open tunnel's caller again.
fn credentials(headers: &http::HeaderMap) -> http::HeaderMap {
    let mut kept = http::HeaderMap::new();
    for name in [http::header::AUTHORIZATION, http::header::COOKIE] {
        for value in headers.get_all(&name) {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    /// None: authgate never compresses answers, and pingora's default, a
    /// disabled compression module, still costs every request a context and
    /// its filter calls.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    fn new_ctx(&self) -> Ctx {
        Ctx::new()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
        let header = session.req_header();
        ctx.request_id = request_id(header_text(header, REQUEST_ID));
        ctx.peer_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(SocketAddr::ip);
        ctx.tls = session
            .digest()
            .is_some_and(|digest| digest.ssl_digest.is_some());
        if ctx.tls {
            ctx.hsts.clone_from(&self.hsts);
        }
        ctx.grpc = crate::http::grpc::is_grpc(&session.req_header().headers);
        let trusted = &self.app.config.edge.trusted_proxies;
        ctx.trusted_peer = ctx
            .peer_ip
            .is_some_and(|ip| trusted.iter().any(|net| net.contains(&ip)));
        if ctx.trusted_peer {
            let chain = edge::headers::joined(&session.req_header().headers, "x-forwarded-for");
            ctx.client_ip = client_ip(ctx.peer_ip, chain.as_deref(), trusted);
        } else {
            ctx.client_ip = ctx.peer_ip;
        }
        ctx.span = tracing::info_span!(
            "request",
            request_id = %ctx.request_id,
            user_id = tracing::field::Empty,
            client_id = tracing::field::Empty
        );

        // An ext_authz check names the original target after
        // `/auth/forward/`: taken raw, before the head is settled.
        let forwarded_target = forward_auth::forwarded_target(session.req_header().raw_path());
        // One canonical request head, before anything reads it.
        let settled = edge::settle(
            session.req_header_mut(),
            ctx.trusted_peer,
            self.app.config.edge.max_request_headers,
        );
        let canonical = match settled {
            Ok(canonical) => canonical,
            Err(refusal) => {
                self.app
                    .metrics
                    .requests_refused
                    .with_label_values(&[refusal.reason()])
                    .inc();
                ctx.span
                    .in_scope(|| tracing::info!(reason = refusal.reason(), "request refused"));
                session.set_keepalive(None);
                write_response(session, refusal.response(), ctx).await?;
                return Ok(true);
            }
        };
        let method = session.req_header().method.clone();

        // With a metrics listener of its own, `/metrics` is not served here.
        if canonical.policy == "/metrics" && self.app.config.edge.metrics_addr.is_some() {
            let response = Response::detail(StatusCode::NOT_FOUND, "Not Found");
            write_response(session, response, ctx).await?;
            return Ok(true);
        }

        if let Some(redirect) = &self.redirect
            && !Redirect::answers_here(&method, &canonical.path)
        {
            let header = session.req_header();
            let response =
                redirect.response(header.headers.get(http::header::HOST), header.raw_path());
            write_response(session, response, ctx).await?;
            return Ok(true);
        }

        // The routes in force now: this request keeps its route whatever
        // reloads happen while it runs. A route without upstreams only
        // states a policy for forward-auth: it is never forwarded.
        let routed = (forwarded_target.is_none() && !self.app.serves(&method, &canonical.path))
            .then(|| {
                let table = self.app.routes.load();
                let readings = table.readings(&canonical);
                let route = readings.policy.filter(|r| r.balancer.is_some()).cloned()?;
                // A path that other upstreams read under another route (a
                // `;` that is a parameter to some and a character to
                // others) must pass that route's policy too.
                Some((route, readings.other().cloned()))
            })
            .flatten();
        if let Some((upstream, also)) = routed {
            let headers = &session.req_header().headers;
            let admitted = async {
                if let Some(other) = also {
                    identify(&self.app, &other.config, headers).await?;
                }
                admit(&self.app, &upstream.config, headers, ctx.client_ip).await
            }
            .instrument(ctx.span.clone())
            .await;
            return match admitted {
                Ok(identity) => {
                    let tunnel = Forwarder::tunnels(session);
                    let recheck = (tunnel && upstream.config.policy != Policy::Public)
                        .then(|| credentials(&session.req_header().headers));
                    edge::for_upstream(
                        session.req_header_mut(),
                        &Forwarding {
                            forward_access_token: upstream.config.forward_access_token,
                            identity: identity.as_ref(),
                            request_id: &ctx.request_id,
                            peer: ctx.peer_ip,
                            trusted_peer: ctx.trusted_peer,
                            scheme: if ctx.tls { "https" } else { "http" },
                        },
                    )?;
                    // The lean path and its tunnels speak HTTP/1.1 upstream.
                    let upstream_h1 = !upstream.config.upstream_h2;
                    ctx.forward = Some((upstream, identity));
                    if tunnel && upstream_h1 {
                        self.forward_tunnel(session, ctx, recheck).await?;
                        return Ok(true);
                    }
                    if upstream_h1 && Forwarder::takes(session) {
                        self.forward_lean(session, ctx).await?;
                        return Ok(true);
                    }
                    Ok(false)
                }
                Err(response) => {
                    ctx.forward = Some((upstream, None));
                    write_response(session, response, ctx).await?;
                    Ok(true)
                }
            };
        }

        let response = match read_request(session, self.max_body, ctx, forwarded_target).await {
            Ok(req) => self.app.handle(req).instrument(ctx.span.clone()).await,
            Err(response) => response,
        };
        write_response(session, response, ctx).await?;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Ctx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let (upstream, addr) = Self::pick_upstream(ctx)?;
        // A resolved SocketAddr: HttpPeer::new's lookup cannot fail.
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(upstream.config.connect_timeout);
        peer.options.total_connection_timeout = Some(upstream.config.connect_timeout);
        peer.options.read_timeout = Some(upstream.config.read_timeout);
        if upstream.config.upstream_h2 {
            // HTTP/2 with prior knowledge (h2c): gRPC, whose trailers pass.
            peer.options.set_http_version(2, 2);
        }
        ctx.upstream_started = Some(Instant::now());
        Ok(Box::new(peer))
    }

    /// A connection refused (or failed) before anything was sent goes to
    /// the route's next upstream, whatever the method; pingora asks
    /// [`Self::upstream_peer`] again, which avoids the ones that refused.
    /// A connect timeout is answered 504 as before: trying another would
    /// double the client's wait.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if matches!(
            e.etype(),
            ErrorType::ConnectRefused | ErrorType::ConnectError
        ) && let Some(addr) = peer._address.as_inet().copied()
            && self.next_upstream(ctx, addr, &e)
        {
            e.set_retry(true);
        }
        e
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        self.finish_upstream_answer(ctx, response)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        if e.esource == ErrorSource::Downstream {
            // The client's side failed: no upstream is to blame. A request
            // body that could not be read is answered 400 (as on the API);
            // a client that went away gets nothing.
            ctx.span
                .in_scope(|| tracing::debug!(error = %e, "client connection failed"));
            let unreadable = !matches!(
                e.etype(),
                ErrorType::WriteError | ErrorType::WriteTimedout | ErrorType::ConnectionClosed
            );
            let mut code = 0;
            if unreadable && session.response_written().is_none() {
                session.set_keepalive(None);
                let response =
                    Response::detail(StatusCode::BAD_REQUEST, "Request body could not be read");
                if write_response(session, response, ctx).await.is_ok() {
                    code = StatusCode::BAD_REQUEST.as_u16();
                }
            }
            return FailToProxy {
                error_code: code,
                can_reuse_downstream: false,
            };
        }
        let (status, detail, kind) = match e.etype() {
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                (StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout", "timeout")
            }
            ErrorType::ConnectNoRoute => (
                StatusCode::BAD_GATEWAY,
                "Bad Gateway",
                "no_healthy_upstream",
            ),
            ErrorType::ConnectRefused => {
                (StatusCode::BAD_GATEWAY, "Bad Gateway", "connect_refused")
            }
            _ => (StatusCode::BAD_GATEWAY, "Bad Gateway", "other"),
        };
        let route = Self::route_label(ctx);
        self.app
            .metrics
            .upstream_errors
            .with_label_values(&[route, kind])
            .inc();
        ctx.span
            .in_scope(|| tracing::warn!(route, kind, error = %e, "forwarding failed"));
        let mut code = status.as_u16();
        if session.response_written().is_none() {
            session.set_keepalive(None);
            if write_response(session, Response::detail(status, detail), ctx)
                .await
                .is_err()
            {
                code = 0;
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// Client-side failures are the client's: logged at debug level above,
    /// not as pingora's errors.
    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, e: &Error) -> bool {
        e.esource == ErrorSource::Downstream
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        // API requests are logged and counted by the api layer.
        if ctx.forward.is_none() {
            return;
        }
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let route = Self::route_label(ctx);
        let method = session.req_header().method.as_str();
        let elapsed = ctx.started.elapsed();
        self.app
            .metrics
            .observe_request(route, method, status, elapsed);
        let user_id = ctx
            .forward
            .as_ref()
            .and_then(|(_, identity)| identity.as_ref().and_then(|i| i.user_id));
        ctx.span.in_scope(|| {
            tracing::info!(
                method,
                path = %session.req_header().uri.path(),
                route,
                status,
                user_id,
                latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
                "request"
            );
        });
    }
}
