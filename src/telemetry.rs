//! Logs, the `logs.tail` ring and Prometheus metrics.
//!
//! Logging is `tracing`: pretty or JSON lines on stderr, filtered by
//! `log.level`. A small layer also copies every record into a bounded
//! in-memory ring that `logs.tail` reads, so an operator can look at recent
//! records of one instance without shell access. Metrics use the `metrics`
//! facade with a Prometheus recorder installed once per process; label sets
//! are bounded (method names come from the method table, never from input).

use crate::config::{LogConfig, LogFormat};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex, OnceLock};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// One captured log record.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct LogRecord {
    pub ts: u64,
    pub level: String,
    pub target: String,
    pub message: String,
}

/// A bounded ring of recent log records (cheap to clone).
#[derive(Clone)]
pub struct LogRing(Arc<Mutex<Ring>>);

struct Ring {
    records: VecDeque<LogRecord>,
    capacity: usize,
}

impl LogRing {
    pub fn new(capacity: usize) -> Self {
        Self(Arc::new(Mutex::new(Ring {
            records: VecDeque::with_capacity(capacity.min(64)),
            capacity: capacity.max(1),
        })))
    }

    pub fn push(&self, record: LogRecord) {
        let mut ring = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if ring.records.len() == ring.capacity {
            ring.records.pop_front();
        }
        ring.records.push_back(record);
    }

    /// The newest `limit` records at `min_level` or more severe, oldest first.
    pub fn tail(&self, limit: usize, min_level: tracing::Level) -> Vec<LogRecord> {
        let ring = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<LogRecord> = ring
            .records
            .iter()
            .rev()
            .filter(|r| {
                r.level
                    .parse::<tracing::Level>()
                    .is_ok_and(|l| l <= min_level)
            })
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }
}

/// The process-wide ring `logs.tail` reads.
pub fn log_ring() -> &'static LogRing {
    static RING: OnceLock<LogRing> = OnceLock::new();
    RING.get_or_init(|| LogRing::new(1000))
}

struct RingLayer(LogRing);

#[derive(Default)]
struct MessageVisitor(String);

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for RingLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut visitor = MessageVisitor::default();
        event.record(&mut visitor);
        let meta = event.metadata();
        self.0.push(LogRecord {
            ts: crate::protocol::now_ms(),
            level: meta.level().to_string(),
            target: meta.target().to_owned(),
            message: visitor.0,
        });
    }
}

/// Crates whose verbose levels print payloads (WebSocket frames with
/// in-band credentials, Redis commands with their arguments): capped at
/// `info` whatever `log.level` asks, so no level logs a secret.
const PAYLOAD_LOGGERS: [&str; 3] = ["tungstenite=info", "tokio_tungstenite=info", "fred=info"];

/// `log.level` as a filter, with [`PAYLOAD_LOGGERS`] capped. The caps
/// only ever lower a level: under a quieter `log.level` they are left out,
/// so they never make the filter (and every callsite's check) more verbose.
fn log_filter(level: &str) -> EnvFilter {
    let mut filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let verbose = filter
        .max_level_hint()
        .is_none_or(|max| max > tracing_subscriber::filter::LevelFilter::INFO);
    if !verbose {
        return filter;
    }
    for directive in PAYLOAD_LOGGERS {
        if let Ok(directive) = directive.parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

/// Install the global subscriber (logs to stderr + the ring). Safe to call
/// more than once: later calls keep the first subscriber.
pub fn init_logging(config: &LogConfig) {
    // `log.level` filters the log output only (per-layer filters): spans
    // exported to OpenTelemetry do not depend on how verbose the logs are.
    let filter = || log_filter(&config.level);
    let ring = RingLayer(log_ring().clone()).with_filter(filter());
    let registry = tracing_subscriber::registry()
        .with(ring)
        .with(crate::otel::layer());
    let result = match config.format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr)
                    .with_filter(filter()),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr)
                    .with_filter(filter()),
            )
            .try_init(),
    };
    // Already initialised (tests start several servers in one process).
    let _ = result;
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0, 2.5, 5.0, 10.0,
                ])
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            keep_up(handle.clone(), UPKEEP_EVERY);
            describe();
            process_collector().describe();
            register_rare_counters();
            Some(handle)
        })
        .clone()
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Fold what the recorder holds into its metrics every `every`, on a thread
/// of its own. The recorder keeps each histogram sample until then: with
/// nobody scraping `/metrics`, every call would otherwise leave its sample
/// behind for good (16 bytes measured: 1.6 MB/s at 100 000 calls/s).
fn keep_up(handle: PrometheusHandle, every: std::time::Duration) {
    let upkeep = move || {
        loop {
            std::thread::sleep(every);
            handle.run_upkeep();
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(upkeep)
    {
        tracing::error!(error = %e, "no metrics upkeep thread: histograms grow until scraped");
    }
}

/// The exposition of every metric, with the standard `process_*` series
/// (resident memory, CPU seconds, open and maximum file descriptors,
/// threads, start time) read from the OS at this scrape.
pub fn render(handle: &PrometheusHandle) -> String {
    process_collector().collect();
    handle.render()
}

fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// Memory a connection may hold under load (its queue, buffers and
/// records), with headroom over the 15–17 KiB an idle one measures after a
/// reconnect storm; the sizing rule of `docs/sizing.md`.
pub const BYTES_PER_CONNECTION: u64 = 32 * 1024;
/// What an instance holds with no connection (runtime, pools, buffers).
pub const BASE_MEMORY_BYTES: u64 = 64 * 1024 * 1024;

/// Exports the configured connection cap (`switchyard_max_connections`)
/// and the container's memory limit (`switchyard_memory_limit_bytes`, 0
/// when none), so dashboards and alerts relate connections and resident
/// memory to them, and warns when the cap cannot be reached within the
/// limit: the instance would be OOM-killed, with no drain, first.
pub fn export_capacity(max_connections: usize) {
    metrics::gauge!("switchyard_max_connections").set(max_connections as f64);
    let limit = memory_limit_bytes();
    metrics::gauge!("switchyard_memory_limit_bytes").set(limit.unwrap_or(0) as f64);
    let needed = BASE_MEMORY_BYTES + max_connections as u64 * BYTES_PER_CONNECTION;
    if let Some(limit) = limit
        && needed > limit
    {
        let fits = limit.saturating_sub(BASE_MEMORY_BYTES) / BYTES_PER_CONNECTION;
        tracing::warn!(
            setting = "limits.max_connections",
            max_connections,
            memory_limit_mib = limit >> 20,
            connections_that_fit = fits,
            "limits.max_connections needs about {} MiB at {} KiB per connection, above the \
             memory limit: the instance would be killed before it refuses connections; \
             set limits.max_connections to at most {fits} or raise the limit (docs/sizing.md)",
            needed >> 20,
            BYTES_PER_CONNECTION >> 10,
        );
    }
}

/// The memory limit of this process's cgroup (v2 `memory.max`, else v1
/// `memory.limit_in_bytes`), as seen from inside a container; `None` when
/// there is none.
fn memory_limit_bytes() -> Option<u64> {
    [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|path| std::fs::read_to_string(path).ok())
    .and_then(|text| parse_memory_limit(&text))
}

/// A cgroup memory limit file's content: a byte count, or `max` (v2) or a
/// page-rounded `i64::MAX` (v1) for none.
fn parse_memory_limit(text: &str) -> Option<u64> {
    let bytes: u64 = text.trim().parse().ok()?;
    (bytes < 1 << 62).then_some(bytes)
}

/// Counters of rare events, exported at 0 from the start: a healthy
/// instance then shows them (dashboards draw 0, alerts on their `rate()`
/// see a series) instead of leaving them absent until the first event.
fn register_rare_counters() {
    for name in [
        "switchyard_pubsub_dropped_total",
        "switchyard_pubsub_resubscribes_total",
        "switchyard_reaped_connections_total",
        "switchyard_sessions_restored_total",
        "switchyard_cron_missed_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    for reason in crate::refusals::Refused::ALL {
        metrics::counter!("switchyard_refusals_total", "reason" => reason.label()).increment(0);
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        "switchyard_connections",
        "Open WebSocket connections on this instance"
    );
    describe_gauge!(
        "switchyard_max_connections",
        "Configured cap of WebSocket connections on this instance (limits.max_connections)"
    );
    describe_gauge!(
        "switchyard_memory_limit_bytes",
        "Memory limit of this instance's cgroup (container), 0 when it has none"
    );
    describe_counter!(
        "switchyard_connections_total",
        "WebSocket connections accepted"
    );
    describe_counter!(
        "switchyard_messages_in_total",
        "RPC calls received, by method"
    );
    describe_counter!(
        "switchyard_messages_out_total",
        "Frames queued to clients, by kind"
    );
    describe_histogram!(
        "switchyard_rpc_duration_seconds",
        "RPC handling latency, by method"
    );
    describe_counter!(
        "switchyard_deliveries_total",
        "Channel frames queued to local sockets"
    );
    describe_counter!(
        "switchyard_slow_consumer_closes_total",
        "Connections closed as slow consumers"
    );
    describe_counter!(
        "switchyard_auth_failures_total",
        "Failed authentications, by carrier"
    );
    describe_counter!(
        "switchyard_rate_limited_total",
        "Rejections by a rate limit, by limit"
    );
    describe_counter!("switchyard_rpc_errors_total", "RPC error replies, by code");
    describe_gauge!(
        "switchyard_backend_up",
        "1 while the shared backend (Redis) is reachable and its pub/sub delivers"
    );
    describe_histogram!(
        "switchyard_backend_roundtrip_seconds",
        "Duration of the instance heartbeat write to the backend"
    );
    describe_counter!(
        "switchyard_backend_errors_total",
        "Backend failures seen by callers and the heartbeat, by kind"
    );
    describe_gauge!(
        "switchyard_pubsub_lag_seconds",
        "Age of the last pub/sub canary seen through this instance's inbox"
    );
    describe_gauge!(
        "switchyard_config_version",
        "Version of the runtime config document in force on this instance (0: none)"
    );
    describe_counter!(
        "switchyard_cron_runs_total",
        "Scheduled cron ticks this instance fired, by outcome (ok, error)"
    );
    describe_counter!(
        "switchyard_cron_missed_total",
        "Cron ticks found too old to fire (no instance was alive), counted by the instance that noticed"
    );
    // Series that exist from the first scrape, so dashboards and alerts
    // see zeros rather than gaps.
    metrics::gauge!("switchyard_connections").set(0.0);
    metrics::gauge!("switchyard_config_version").set(0.0);
    for name in [
        "switchyard_connections_total",
        "switchyard_messages_out_total",
        "switchyard_deliveries_total",
        "switchyard_slow_consumer_closes_total",
        "switchyard_auth_failures_total",
        "switchyard_rate_limited_total",
        "switchyard_rpc_errors_total",
        "switchyard_backend_errors_total",
    ] {
        metrics::counter!(name).increment(0);
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn payload_caps_never_raise_a_quiet_level() {
        use tracing_subscriber::filter::LevelFilter;
        assert_eq!(log_filter("warn").max_level_hint(), Some(LevelFilter::WARN));
        assert_eq!(
            log_filter("error").max_level_hint(),
            Some(LevelFilter::ERROR)
        );
        assert_eq!(
            log_filter("trace").max_level_hint(),
            Some(LevelFilter::TRACE)
        );
    }

    use super::*;

    /// This process's resident memory, in bytes.
    fn rss() -> u64 {
        crate::bench::common::rss_kib(std::process::id()).expect("VmRSS") * 1024
    }

    /// How much resident memory recording `samples` histogram samples into
    /// a fresh recorder added, with upkeep every `every` or none.
    fn growth(samples: u32, every: Option<std::time::Duration>) -> u64 {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[0.001, 0.01, 0.1])
            .expect("buckets")
            .build_recorder();
        if let Some(every) = every {
            keep_up(recorder.handle(), every);
        }
        let before = rss();
        let mut peak = before;
        metrics::with_local_recorder(&recorder, || {
            let histogram = metrics::histogram!("switchyard_test_seconds");
            for i in 0..samples {
                histogram.record(f64::from(i % 7) / 100.0);
                if i % 100_000 == 0 {
                    peak = peak.max(rss());
                    // Give the upkeep thread its turns on a busy machine.
                    std::thread::yield_now();
                }
            }
        });
        peak.max(rss()) - before
    }

    #[test]
    fn unscraped_histograms_stay_bounded() {
        // The process-wide recorder runs its upkeep on a thread of its own.
        metrics_handle().expect("the recorder");
        let threads = || -> Vec<String> {
            std::fs::read_dir("/proc/self/task")
                .expect("tasks")
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .map(|name| name.trim().to_owned())
                .collect()
        };
        // A new thread names itself once it runs: wait for it (bounded).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !threads().iter().any(|t| t == "metrics-upkeep") {
            assert!(std::time::Instant::now() < deadline, "{:?}", threads());
            std::thread::sleep(std::time::Duration::from_millis(10));
        }

        // 3 million samples are about 48 MB held until folded (16 B each,
        // measured): with upkeep they are folded as they come (about 3 MB
        // at most was measured); without it they all stay.
        const SAMPLES: u32 = 3_000_000;
        let kept = growth(SAMPLES, Some(std::time::Duration::from_millis(10)));
        let held = growth(SAMPLES, None);
        assert!(
            held > 30 << 20,
            "without upkeep the samples should be held: {held} B"
        );
        assert!(
            kept < 12 << 20,
            "with upkeep the samples should be folded: {kept} B (held without: {held} B)"
        );
    }

    #[test]
    fn ring_is_bounded_and_filters() {
        let ring = LogRing::new(3);
        for (i, level) in ["INFO", "WARN", "DEBUG", "ERROR"].iter().enumerate() {
            ring.push(LogRecord {
                ts: i as u64,
                level: (*level).into(),
                target: "t".into(),
                message: format!("m{i}"),
            });
        }
        let all = ring.tail(10, tracing::Level::TRACE);
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].message, "m1");
        let warn = ring.tail(10, tracing::Level::WARN);
        assert_eq!(
            warn.iter().map(|r| r.message.as_str()).collect::<Vec<_>>(),
            ["m1", "m3"]
        );
    }

    #[test]
    fn cgroup_memory_limits_read_as_bytes_or_none() {
        assert_eq!(parse_memory_limit("536870912\n"), Some(512 << 20));
        // v2 without a limit, v1 without a limit (i64::MAX rounded to a page).
        assert_eq!(parse_memory_limit("max\n"), None);
        assert_eq!(parse_memory_limit("9223372036854771712\n"), None);
        assert_eq!(parse_memory_limit(""), None);
    }
}
