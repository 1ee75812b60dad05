//! OpenTelemetry tracing, off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set.
//!
//! When on, `tracing` spans (one `rpc` span per call, one `relay.serve`
//! span per call a node serves for another instance) are exported over
//! OTLP/HTTP by a batch processor — protobuf, or JSON with
//! `OTEL_EXPORTER_OTLP_PROTOCOL=http/json`; the service name comes from
//! `OTEL_SERVICE_NAME` (default `switchyard`). The W3C trace context rides
//! inside relay messages ([`inject`] / [`extract_into`]), so a call that
//! crosses instances is one trace.
//!
//! When off, no layer is installed, [`rpc_span`] returns a disabled span
//! and nothing is injected: the cost is one relaxed atomic load per call.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

static ENABLED: AtomicBool = AtomicBool::new(false);
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether spans are exported.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

fn endpoint_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|k| std::env::var(k).is_ok_and(|v| !v.trim().is_empty()))
}

/// The export layer, when an endpoint is configured.
pub fn layer<S>() -> Option<impl Layer<S>>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    if !endpoint_configured() {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(exporter) => exporter,
        Err(e) => {
            eprintln!("OpenTelemetry exporter not started: {e}");
            return None;
        }
    };
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "switchyard".into());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("switchyard");
    let _ = PROVIDER.set(provider);
    ENABLED.store(true, Ordering::Relaxed);
    // Only this crate's spans (not every dependency's), at info and above.
    let targets =
        tracing_subscriber::filter::Targets::new().with_target("switchyard", tracing::Level::INFO);
    Some(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(targets),
    )
}

/// Flush what is batched (at shutdown).
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get()
        && let Err(e) = provider.shutdown()
    {
        eprintln!("OpenTelemetry shutdown: {e}");
    }
}

/// The span of one RPC call (disabled when export is off).
pub fn rpc_span(method: &str) -> tracing::Span {
    if enabled() {
        tracing::info_span!("rpc", rpc.method = %method, otel.kind = "server")
    } else {
        tracing::Span::none()
    }
}

/// The current span's trace context as W3C headers, for a relay message.
pub fn inject() -> Option<HashMap<String, String>> {
    if !enabled() {
        return None;
    }
    let mut carrier = HashMap::new();
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    (!carrier.is_empty()).then_some(carrier)
}

/// Make `span` a child of the trace context a relay message carried.
pub fn extract_into(span: &tracing::Span, carrier: Option<&HashMap<String, String>>) {
    if let Some(carrier) = carrier {
        let context = TraceContextPropagator::new().extract(carrier);
        let _ = span.set_parent(context);
    }
}

/// The span of serving a relayed call.
pub fn serve_span(method: &str, carrier: Option<&HashMap<String, String>>) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!("relay.serve", rpc.method = %method, otel.kind = "server");
    extract_into(&span, carrier);
    span
}
