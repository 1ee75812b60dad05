//! The instance: state, router, background tasks and the accept loop.
//!
//! [`build`] turns a validated [`Config`] into an [`App`] (authenticator,
//! backend, hub) and [`run`] serves it on a listener until `shutdown`
//! resolves, then drains. Tests and `main` differ only in the listener and
//! the shutdown future.

mod a2a;
mod accept;
mod bootstrap;
mod cron;
mod drain;
mod headers;
mod hosts;
pub mod http;
mod lifecycle;
mod mcp;
mod memory;
pub mod openai;
pub mod serve;
mod tasks;
pub mod tools;

mod ui;
mod upgrade;

pub use crate::app::{App, AppInner};
pub use bootstrap::{DevToken, StartError, default_dev_token_path, prepare_auth};
pub use drain::drain;

use crate::auth::{Authenticator, ClientIpResolver, HostPolicy, OriginPolicy};
use crate::backend::redis::{RedisBackend, RedisSettings};
use crate::backend::{Backend, memory::MemoryBackend};
use crate::config::Config;
use crate::hub::Hub;
use axum::Router;
use axum::routing::{any, get, post};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

/// Longest a Redis command may take before it counts as unavailable.
const REDIS_COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1500);

/// Build the application state for `config` (already validated and with
/// its authentication prepared).
pub async fn build(config: Config) -> Result<App, StartError> {
    let backend: Arc<dyn Backend> = match &config.redis_url {
        None => Arc::new(MemoryBackend::new()),
        Some(url) => {
            let settings = RedisSettings {
                url: url.clone(),
                prefix: config.redis_prefix.clone(),
                tls: config.redis_tls.clone(),
                alive_ttl: config.limits.alive_ttl(),
                command_timeout: REDIS_COMMAND_TIMEOUT,
            };
            let redis = RedisBackend::connect(settings)
                .await
                .map_err(|e| StartError::Backend(e.to_string()))?;
            Arc::new(redis)
        }
    };
    build_with_backend(config, backend).await
}

/// Build on a given backend (the behaviour suite runs on each backend).
pub async fn build_with_backend(
    config: Config,
    backend: Arc<dyn Backend>,
) -> Result<App, StartError> {
    let modes = config.effective_auth_modes();
    let auth =
        Authenticator::new(&config.auth, &modes).map_err(|e| StartError::Auth(e.to_string()))?;
    let instance_id = config
        .instance_id
        .clone()
        .unwrap_or_else(|| format!("sy-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]));
    let hub = Hub::new(backend.clone());
    let agents = crate::agents::LocalAgents::new(backend.clone());
    let relay = crate::relay::Relay::new(
        instance_id.clone(),
        backend.clone(),
        hub.clone(),
        agents.clone(),
        config.limits.node_ttl(),
    );
    let generation = crate::protocol::now_ms();
    let inbound = crate::relay::Inbound {
        hub: hub.clone(),
        relay: relay.clone(),
    };
    // The epoch the sessions created from now on live in.
    let epoch = backend
        .epoch()
        .await
        .map_err(|e| StartError::Backend(e.to_string()))?;
    hub.owned().note_epoch(epoch, config.limits.node_ttl());
    backend
        .attach(&instance_id, generation, Arc::new(inbound))
        .await
        .map_err(|e| StartError::Backend(e.to_string()))?;
    let runs = Arc::new(crate::agents::runs::RunBook::new(
        backend.clone(),
        instance_id.clone(),
        generation,
    ));
    let started_at_ms = generation;
    let app = App::new(AppInner {
        origins: OriginPolicy::new(&config.allowed_origins),
        hosts: HostPolicy::new(&config.allowed_hosts, config.is_loopback()),
        client_ips: ClientIpResolver::new(&config.trusted_proxies),
        instance_id,
        generation,
        started: Instant::now(),
        started_at_ms,
        auth,
        backend,
        hub,
        agents,
        relay,
        runs,
        rotation: Default::default(),
        registry: Default::default(),
        logs: crate::telemetry::log_ring().clone(),
        draining: AtomicBool::new(false),
        cron_firing: Default::default(),
        reasserted: std::sync::atomic::AtomicU64::new(0),
        backend_down_since_ms: std::sync::atomic::AtomicU64::new(0),
        metrics: crate::telemetry::metrics_handle(),
        mcp_tools: Default::default(),
        live: crate::config::runtime::LiveConfig::new(config.clone()),
        config,
    });
    crate::services::runtime_config::load_at_start(&app).await;
    app.relay.set_run_hooks(app.runs.clone());
    crate::telemetry::export_capacity(app.live().limits.max_connections);
    tasks::register_instance(&app).await;
    Ok(app)
}

/// All routes of the main port.
pub fn router(app: App) -> Router {
    let api = Router::new()
        .route("/api/publish", post(http::publish))
        .route("/api/broadcast", post(http::broadcast))
        .route("/api/disconnect", post(http::disconnect))
        .route("/api/presence/{channel}", get(http::presence))
        .route("/api/channels", get(http::channel_list))
        .route("/api/sessions", get(http::sessions))
        .route("/status", get(http::status))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/responses", post(openai::responses))
        .route(
            "/tools/invoke",
            post(tools::invoke_post).get(tools::invoke_get),
        )
        .route("/hooks/{name}", post(tools::hook))
        .merge(a2a::routes());
    let mut router = Router::new()
        .route("/", any(upgrade::ws_handler))
        .route("/ws", any(upgrade::ws_handler))
        .route("/ws/agent", any(upgrade::ws_handler))
        .route("/health", get(http::health))
        .route("/ready", get(http::ready))
        .route("/openrpc.json", get(http::openrpc))
        .merge(api);
    router = mcp::routes(router);
    router = ui::routes(&app, router);
    // With a metrics port, `/metrics` is served there only: the main port
    // is the public one (an ingress routes all of it).
    if app.config.metrics_port.is_none() {
        router = router.route("/metrics", get(http::metrics));
    }
    router = router
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            hosts::check,
        ))
        .layer(axum::middleware::map_response(headers::secure))
        .layer(TraceLayer::new_for_http().make_span_with(request_span));
    if let Some(cors) = cors_layer(&app.config.cors.allowed_origins) {
        router = router.layer(cors);
    }
    router.with_state(app)
}

/// The span of one HTTP request: method and path only. The query string
/// can carry a credential (`?token=` on the upgrade), so it is never
/// recorded, at any level.
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    tracing::debug_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
    )
}

/// Only `/metrics`, for a separate metrics port.
pub fn metrics_router(app: App) -> Router {
    Router::new()
        .route("/metrics", get(http::metrics))
        .layer(axum::middleware::map_response(headers::secure))
        .with_state(app)
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| o.parse().ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods(tower_http::cors::Any)
            .allow_headers(tower_http::cors::Any),
    )
}

/// Serve `app` on `listener` (over TLS with `tls`) until `shutdown`
/// resolves, then drain.
pub async fn run(
    app: App,
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let background = tasks::spawn_all(&app);
    let stop = drain_on(app.clone(), shutdown);
    let limits = &app.config.limits;
    let guards = accept::Guards {
        // Room above the WebSocket cap for HTTP calls, and for an upgrade
        // over that cap to be told so (429) rather than reset.
        max_per_ip: limits
            .max_connections_per_ip
            .saturating_add(accept::TCP_HEADROOM),
        max_pending: limits.max_pending_handshakes,
        header_timeout: limits.header_timeout(),
        trusted: app.config.trusted_proxies.clone(),
    };
    let header_timeout = guards.header_timeout;
    let listener = accept::GuardedListener::new(listener, guards);
    serve::serve(listener, tls, router(app.clone()), header_timeout, stop).await;
    background.cancel();
}

/// A future that resolves once `shutdown` fired and the drain finished.
fn drain_on(
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        shutdown.await;
        drain(&app).await;
        let _ = done_tx.send(());
    });
    async move {
        let _ = done_rx.await;
    }
}
