//! Assembles the pingora server. One HTTP service decides per request:
//! the API's own paths are read whole (bounded) and answered by the api
//! layer; paths under a configured route are admitted (policy, rate limit)
//! and forwarded to a healthy upstream, streaming, with identity headers.
//! Every answer carries `X-Request-Id`, and every request ends in one log
//! line and in the metrics.
//!
//! The three listeners (main, plain beside HTTPS, metrics) and the
//! background services are assembled here; the hooks are
//! [`gateway`]'s, the API's input and output [`exchange`]'s, the metrics
//! listener [`metrics_listener`]'s.
//!
//! Imports: `api`, `background`, `conn`, `drain`, `keepalive`, `reload`,
//! `routes`, `tls`, its own submodules.

mod ctx;
mod exchange;
mod gateway;
mod metrics_listener;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pingora::prelude::ProxyHttp;
use pingora::proxy::HttpProxy;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;

pub use gateway::{Ctx, Gateway};
use metrics_listener::MetricsListener;

use crate::api::App;
use crate::conn::ClientPolicy;
use crate::conn::listener::ClientListener;
use crate::drain::{Drain, InFlight, StopSignals};
use crate::keepalive::LeanKeepalive;
use crate::reload::{HangupSignals, Reloads};
use crate::routes::reload::RoutesService;
use crate::routes::table::RouteTable;
use crate::tls::Tls;
use crate::tls::redirect::Redirect;

/// How often upstreams are probed.
const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Starts the server on `addr` with `workers` threads, forwarding to
/// `routes` (the routes file as read at start-up); never returns.
pub fn run(
    app: Arc<App>,
    routes: Vec<crate::routes::RouteConfig>,
    addr: SocketAddr,
    workers: usize,
) -> Result<std::convert::Infallible, String> {
    let conf = ServerConf {
        threads: workers,
        work_stealing: true,
        // On SIGTERM or SIGINT pingora stops accepting and, at the latest
        // after the grace period, stops the runtimes; the drain ends the
        // process as soon as no request is in flight (crate::drain).
        grace_period_seconds: Some(app.config.edge.shutdown_grace.as_secs()),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    // The first route table; the routes service probes its upstreams
    // before the listener opens, keeps checking them, and swaps in the
    // table of a reloaded routes file.
    let (table, _) = RouteTable::build(&routes, &RouteTable::default(), HEALTH_CHECK_EVERY)
        .map_err(|err| format!("ROUTES_FILE {err}"))?;
    let route_count = table.len();
    app.routes.replace(Arc::new(table));
    // SIGHUP reloads (crate::reload): whatever can reload subscribes.
    let reloads = Reloads::new();
    server.add_service(background_service(
        "reload signals",
        HangupSignals::new(reloads.clone()),
    ));
    let routes = server.add_service(background_service(
        "routes",
        RoutesService::new(
            Arc::clone(&app.routes),
            Arc::clone(&app.metrics),
            reloads.clone(),
            app.config.edge.routes_file.clone(),
            app.config.edge.routes_watch,
            HEALTH_CHECK_EVERY,
        ),
    ));
    let clients = ClientPolicy::new(&app.config.edge, &app.metrics);

    let in_flight = InFlight::default();
    server.add_service(background_service(
        "drain",
        Drain::new(in_flight.clone(), app.config.edge.shutdown_grace),
    ));
    server.add_service(background_service(
        "background",
        crate::background::Service(Arc::clone(&app.background)),
    ));
    let tls = match &app.config.edge.tls {
        Some(settings) => {
            let tls = Tls::new(settings, Arc::clone(&app.clock), &app.metrics)
                .map_err(|err| err.to_string())?;
            server.add_service(background_service("tls certificate", tls.watch(&reloads)));
            Some(Arc::new(tls))
        }
        None => None,
    };
    let service = lean_service(
        &server,
        ("authgate", addr, "APP_HOST/APP_PORT"),
        Gateway::new(Arc::clone(&app)),
        clients.clone(),
        in_flight.clone(),
        tls.clone(),
    )?;
    // Listens once every upstream has been probed once.
    server.add_service(service).add_dependencies(&[routes]);
    if let Some(port) = app.config.edge.tls.as_ref().and_then(|t| t.redirect_port) {
        let plain_addr = SocketAddr::new(addr.ip(), port);
        let gateway = Gateway::new(Arc::clone(&app)).redirecting(Redirect {
            https_port: addr.port(),
        });
        let plain = lean_service(
            &server,
            ("authgate redirect", plain_addr, "HTTP_REDIRECT_PORT"),
            gateway,
            clients.clone(),
            in_flight.clone(),
            None,
        )?;
        server.add_service(plain);
        tracing::info!(%plain_addr, "plain listener: probes, and redirects to HTTPS");
    }
    if let Some(metrics_addr) = app.config.edge.metrics_addr {
        let metrics = lean_service(
            &server,
            ("authgate metrics", metrics_addr, "METRICS_ADDR"),
            MetricsListener::new(Arc::clone(&app)),
            clients,
            in_flight,
            None,
        )?;
        server.add_service(metrics);
        tracing::info!(%metrics_addr, "metrics listener");
    }
    tracing::info!(
        %addr,
        workers,
        routes = route_count,
        tls = tls.is_some(),
        "authgate listening"
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(StopSignals),
    });
    std::process::exit(0)
}

/// `hooks` listening on `addr` (named by its `setting` when it cannot
/// be bound), whose client connections are held to `clients` and whose
/// idle keep-alive connections cost little (see [`crate::keepalive`]), over
/// `tls` when given.
fn lean_service<P>(
    server: &Server,
    (name, addr, setting): (&str, SocketAddr, &str),
    hooks: P,
    clients: ClientPolicy,
    in_flight: InFlight,
    tls: Option<Arc<Tls>>,
) -> Result<ClientListener<LeanKeepalive<HttpProxy<P>>>, String>
where
    P: ProxyHttp + Send + Sync + 'static,
    P::CTX: Send + Sync,
{
    let proxy = pingora::proxy::http_proxy(&server.configuration, hooks);
    ClientListener::bind(
        name,
        addr,
        LeanKeepalive::new(proxy, clients, in_flight, tls),
    )
    .map_err(|err| format!("{setting} {addr} cannot be bound: {err}"))
}
