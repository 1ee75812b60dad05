//! Background tasks of an instance: the liveness heartbeat, the presence
//! tick, the session janitor, the sweep of idle A2A contexts, the memory
//! trim after a wave of closes (`memory.rs`) and the cron scheduler
//! (`cron.rs`). All stop with the returned token.

use super::App;
use crate::backend::InstanceInfo;
use crate::protocol::{frame, now_ms};
use crate::services::system::VERSION;
use serde_json::json;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the instance record is refreshed: at most every 2 s and at
/// least four times per `node_ttl`, so a late beat never looks like a
/// death.
fn heartbeat_period(app: &App) -> Duration {
    (app.config.limits.node_ttl() / 4).clamp(Duration::from_millis(50), Duration::from_secs(2))
}
/// How often expired sessions are looked for.
const JANITOR: Duration = Duration::from_secs(1);
/// A presence entry younger than this is never taken for one left behind
/// (its socket may be registering right now).
const GHOST_SETTLED_MS: u64 = 2_000;
/// How often the backend's health is sampled for readiness's grace.
const BACKEND_SAMPLE: Duration = Duration::from_millis(200);

pub fn spawn_all(app: &App) -> CancellationToken {
    let stop = CancellationToken::new();
    every(app, &stop, heartbeat_period(app), |app| async move {
        register_instance(&app).await
    });
    // Calls waiting on other instances end within `node_ttl` of a death.
    every(
        app,
        &stop,
        app.config.limits.liveness_read(),
        |app| async move {
            if app.relay.liveness_watched() {
                read_liveness(&app).await;
            }
        },
    );
    every(
        app,
        &stop,
        app.config.limits.presence_tick(),
        |app| async move { presence_tick(&app).await },
    );
    every(app, &stop, JANITOR, |app| async move {
        crate::services::sessions::close_expired(&app).await;
        crate::services::approvals::expire(&app).await;
    });
    every(app, &stop, super::a2a::SWEEP_EVERY, |app| async move {
        super::a2a::sweep(&app).await;
    });
    // Readiness's grace runs from when the backend was found unusable,
    // not from the next probe.
    every(app, &stop, BACKEND_SAMPLE, |app| async move {
        app.note_backend();
    });
    spawn_resync(app, &stop);
    // Free memory back to the system once a wave of closes has settled.
    let trimmer = std::sync::Arc::new(std::sync::Mutex::new(super::memory::Trimmer::default()));
    every(app, &stop, super::memory::LOOK_EVERY, move |app| {
        let trimmer = trimmer.clone();
        async move {
            let due = trimmer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .step(app.hub.len());
            if due {
                app.hub.shrink();
                super::memory::trim().await;
            }
        }
    });
    // The runtime config: announcements and a poll of the stored version.
    let follow = crate::services::runtime_config::follow(app.clone());
    let until = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = until.cancelled() => {}
            _ = follow => {}
        }
    });
    super::cron::spawn(app, &stop);
    stop
}

/// Re-assert this instance's state whenever the backend may have lost it.
fn spawn_resync(app: &App, stop: &CancellationToken) {
    let app = app.clone();
    let stop = stop.clone();
    let mut events = app.health().resync_events();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = events.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let round = *events.borrow_and_update();
                    reassert(&app).await;
                    app.reasserted.fetch_max(round, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }
    });
}

/// Write back everything the local sockets prove: the instance record,
/// each connection's presence, channel interest and memberships, the
/// sessions local connections own (when the backend lost them) and session
/// memberships.
pub async fn reassert(app: &App) {
    use crate::hub::Loss;
    use crate::services::sessions;
    register_instance(app).await;
    app.hub.reassert_interest().await;
    crate::services::agents::reassert(app).await;
    let lost = sessions::restore_if_lost(app).await;
    let mut missing = Vec::new();
    for conn in app.hub.all() {
        crate::services::connections::publish_presence(app, &conn).await;
        crate::services::channels::reassert(app, &conn).await;
        for id in sessions::reassert(app, &conn).await {
            missing.push((conn.clone(), id));
        }
    }
    // Sockets that closed while the backend was unreachable could not
    // remove their entries; a backend that kept its data still has them.
    let hub = app.hub.clone();
    let held = move |conn_id: &str| hub.get(conn_id).is_some();
    match app.presence().forget_unheld(&held, GHOST_SETTLED_MS).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            forgotten = n,
            "connections closed while the backend was unreachable removed from presence"
        ),
        Err(e) => tracing::warn!(error = %e, "removing connections closed meanwhile failed"),
    }
    if lost == Some(Loss::Now)
        && let Ok(epoch) = app.health().epoch().await
    {
        crate::services::write_back::after_loss(app, &epoch).await;
    }
    match lost {
        // Sessions owned on other instances come back when those re-assert.
        Some(Loss::Now | Loss::Recent) => sessions::rejoin_later(app, missing),
        Some(Loss::No) => sessions::closed_while_away(app, missing).await,
        None => {}
    }
    tracing::info!(connections = app.hub.len(), "state re-asserted");
}

/// Run `f` every `period` until `stop` is cancelled.
fn every<F, Fut>(app: &App, stop: &CancellationToken, period: Duration, f: F)
where
    F: Fn(App) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let app = app.clone();
    let stop = stop.clone();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => f(app.clone()).await,
            }
        }
    });
}

pub async fn register_instance(app: &App) {
    let info = InstanceInfo {
        id: app.instance_id.clone(),
        generation: app.generation,
        version: VERSION.into(),
        started_at: app.started_at_ms,
        connections: app.hub.len(),
        last_seen: now_ms(),
        config_version: app.live().version,
        backend_up: app.health().is_available(),
        pubsub_lag_ms: app.health().pubsub_lag_ms(),
    };
    let started = std::time::Instant::now();
    match app.instance_store().register_instance(info).await {
        Ok(()) => metrics::histogram!("switchyard_backend_roundtrip_seconds")
            .record(started.elapsed().as_secs_f64()),
        Err(e) => {
            metrics::counter!("switchyard_backend_errors_total", "kind" => e.kind()).increment(1);
            tracing::warn!(error = %e, "instance heartbeat failed");
        }
    }
    let up = if app.health().is_available() {
        1.0
    } else {
        0.0
    };
    metrics::gauge!("switchyard_backend_up").set(up);
    read_liveness(app).await;
}

/// Which instances live: calls waiting on nodes of instances that died end
/// with this view. The backend's reconnect count before and after reading
/// the view: a view read across a reconnect proves no death by absence.
async fn read_liveness(app: &App) {
    let resyncs = app.health().resync_events();
    let before = *resyncs.borrow();
    if let Ok(view) = app.instance_store().instance_view().await {
        let after = *resyncs.borrow();
        let resync = (before == after).then_some(after);
        app.relay.set_live(
            view.live.into_iter().map(|i| (i.id, i.generation)),
            view.stale,
            resync,
        );
    }
}

/// `presence.tick {ts, connections, nodes, instances}` to every local
/// authenticated socket (cluster counts are not for anyone who can open
/// one).
async fn presence_tick(app: &App) {
    if app.hub.is_empty() {
        return;
    }
    let Ok(counts) = app.presence().connection_counts().await else {
        return;
    };
    let instances = app
        .instance_store()
        .instances()
        .await
        .map(|i| i.len())
        .unwrap_or(1);
    let tick = frame::notification(
        "presence.tick",
        &json!({
            "ts": now_ms(),
            "connections": counts.connections,
            "nodes": counts.nodes,
            "instances": instances,
        }),
    );
    app.hub.broadcast_authenticated(&tick);
}
