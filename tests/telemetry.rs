//! OpenTelemetry over real processes: two instances export their spans
//! over OTLP/HTTP (JSON) to a collector in the test, and a `node.invoke`
//! from a caller on A to a node on B is one trace — B's `relay.serve` span
//! is a child of A's `rpc` span. An instance without the endpoint exports
//! nothing.

mod common;

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use common::instance::*;
use common::*;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Spans = Arc<Mutex<Vec<(String, Value)>>>;

/// An OTLP/HTTP JSON collector on a free port: every span it receives,
/// with the `service.name` of its resource.
async fn collector() -> (String, Spans) {
    let spans: Spans = Arc::default();
    let sink = spans.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let request: Value = serde_json::from_slice(&body).unwrap_or_default();
                for resource in request["resourceSpans"].as_array().into_iter().flatten() {
                    let service = resource["resource"]["attributes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|a| a["key"] == "service.name")
                        .and_then(|a| a["value"]["stringValue"].as_str())
                        .unwrap_or_default()
                        .to_owned();
                    for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                        for span in scope["spans"].as_array().into_iter().flatten() {
                            sink.lock().unwrap().push((service.clone(), span.clone()));
                        }
                    }
                }
                "{}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), spans)
}

fn attribute<'a>(span: &'a Value, key: &str) -> Option<&'a str> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)?["value"]["stringValue"]
        .as_str()
}

/// The first span of `service` named `name` for `method`, waiting (bounded).
async fn span_of(spans: &Spans, service: &str, name: &str, method: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = spans
            .lock()
            .unwrap()
            .iter()
            .find(|(s, span)| {
                s == service
                    && span["name"] == name
                    && attribute(span, "rpc.method") == Some(method)
            })
            .map(|(_, span)| span.clone());
        if let Some(span) = found {
            return span;
        }
        assert!(
            Instant::now() < deadline,
            "no {name} span of {service} for {method}; got: {:?}",
            spans
                .lock()
                .unwrap()
                .iter()
                .map(|(s, v)| (s.clone(), v["name"].clone()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn one_trace_across_instances() {
    let (endpoint, spans) = collector().await;
    let redis = RedisProcess::start();
    let otel = |service: &'static str| {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_SERVICE_NAME", service),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ]
    };
    let a = Instance::start(&redis, "a", &otel("sy-a")).await;
    let b = Instance::start(&redis, "b", &otel("sy-b")).await;
    let quiet = Instance::start(&redis, "quiet", &[]).await;

    // A node (an admin may act as one) on B, the caller on A.
    let mut node = b.client(ADMIN).await;
    node.call(
        "agent.register",
        json!({"agentId": "traced", "capabilities": ["trace"]}),
    )
    .await;
    let mut caller = a.client(ADMIN).await;
    let (reply, ()) = tokio::join!(
        caller.request(
            "node.invoke",
            json!({"capability": "trace", "command": "ping", "timeoutMs": 5000}),
        ),
        async {
            let (id, params) = server_request(&mut node, "invoke").await;
            assert_eq!(params["command"], "ping", "{params}");
            answer(&mut node, &id, json!("pong")).await;
        },
    );
    assert_eq!(reply["result"]["result"], "pong", "{reply}");

    let rpc = span_of(&spans, "sy-a", "rpc", "node.invoke").await;
    let serve = span_of(&spans, "sy-b", "relay.serve", "invoke").await;
    assert!(
        rpc["traceId"].as_str().is_some_and(|t| !t.is_empty()),
        "{rpc}"
    );
    assert_eq!(
        serve["traceId"], rpc["traceId"],
        "one trace: {rpc} / {serve}"
    );
    assert_eq!(
        serve["parentSpanId"], rpc["spanId"],
        "B's span is a child of A's"
    );

    // The instance without an endpoint exports nothing.
    let mut other = quiet.client(ADMIN).await;
    other.call("status", json!({})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let services: Vec<String> = spans
        .lock()
        .unwrap()
        .iter()
        .map(|(s, _)| s.clone())
        .collect();
    assert!(
        services.iter().all(|s| s == "sy-a" || s == "sy-b"),
        "{services:?}"
    );
}
