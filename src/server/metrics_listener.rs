//! The metrics listener (`METRICS_ADDR`), a service of its own: `/metrics`
//! and nothing else, on a request head settled by the same rules as the
//! main listener's, never forwarded anywhere.
//!
//! Imports: `api` (the application and its metrics answer), `edge`,
//! `http`, `server::exchange`, `server::ctx` (the per-request state).

use std::sync::Arc;

use async_trait::async_trait;
use http::StatusCode;
use pingora::modules::http::HttpModules;
use pingora::prelude::{HttpPeer, ProxyHttp, Session};
use pingora::{Error, ErrorType};

use super::ctx::Ctx;
use super::exchange::{REQUEST_ID, header_text, write_response};
use crate::api::App;
use crate::edge;
use crate::http::Response;
use crate::http::client_ip::request_id;

pub struct MetricsListener {
    app: Arc<App>,
}

impl MetricsListener {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

#[async_trait]
impl ProxyHttp for MetricsListener {
    type CTX = Ctx;

    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    fn new_ctx(&self) -> Ctx {
        Ctx::new()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
        ctx.request_id = request_id(header_text(session.req_header(), REQUEST_ID));
        ctx.grpc = crate::http::grpc::is_grpc(&session.req_header().headers);
        // No forwarding headers are believed here: nothing is forwarded.
        let settled = edge::settle(
            session.req_header_mut(),
            false,
            self.app.config.edge.max_request_headers,
        );
        let response = match settled {
            Ok(canonical) if canonical.path == "/metrics" => {
                crate::api::metrics_response(&self.app)
            }
            Ok(_) => Response::detail(StatusCode::NOT_FOUND, "Not Found"),
            Err(refusal) => {
                self.app
                    .metrics
                    .requests_refused
                    .with_label_values(&[refusal.reason()])
                    .inc();
                tracing::info!(reason = refusal.reason(), "metrics request refused");
                session.set_keepalive(None);
                refusal.response()
            }
        };
        write_response(session, response, ctx).await?;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Ctx,
    ) -> pingora::Result<Box<HttpPeer>> {
        Err(Error::explain(
            ErrorType::InternalError,
            "the metrics listener forwards nothing",
        ))
    }
}
