//! Cluster-wide cron (admin): `cron.add`, `cron.update`, `cron.get`,
//! `cron.list`, `cron.run`, `cron.remove`, `cron.runs`.
//!
//! Jobs live in the backend (`backend::cron`), so every instance's
//! scheduler (`server::cron`) sees them; a tick fires on exactly one
//! instance, the one whose claim moves the job's due tick forward.
//! Firing ([`fire`]) goes through the same call path as a client's call
//! ([`super::handle`]), on a connection of its own that no socket backs,
//! with the identity of the admin who created the job (its sub, role,
//! scopes and channel claims, stored with the job; never a credential). A
//! channel target is a `publish` made that way, so the channel's rules
//! apply to the creator as they would to a live call. Each firing's
//! outcome joins the job's history (`cron.runs`).

use super::Ctx;
use crate::app::App;
use crate::auth::{AuthMethod, Identity, Role, ScopeSet};
use crate::backend::{
    CronCreator, CronJob, CronRun, CronTarget, Idempotency, RUNS_MAX, RunKind, RunOutcome,
};
use crate::conn::ConnHandle;
use crate::protocol::{Call, RpcError, now_ms};
use crate::services::cron::Schedule;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

/// Jobs kept cluster-wide.
pub const MAX_JOBS: usize = 1000;
/// Largest `params` / `data` of a target, as JSON: every scheduler
/// re-reads every job when one changes, so jobs stay small.
const MAX_PAYLOAD: usize = 8 * 1024;
/// A result larger than this (as JSON) is kept as a summary.
const MAX_RESULT: usize = 4096;
/// Methods a job may not call: they bind state to a connection, which a
/// job's call has only for its duration, or they schedule jobs.
const UNSCHEDULABLE: &[&str] = &[
    "connect",
    "auth",
    "subscribe",
    "unsubscribe",
    "session.create",
    "session.join",
    "session.leave",
    "session.resume",
    "agent.register",
    "agent.unregister",
    "agent.status",
    "agent.event",
    "invoke.progress",
    "approval.request",
    "approval.wait",
];

/// A job as answered: the record and its next tick.
#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CronJobView {
    #[serde(flatten)]
    pub job: CronJob,
    /// The next scheduled tick (ms); null while disabled.
    pub next_at: Option<u64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddParams {
    /// 1-64 of `A-Z a-z 0-9 . _ -`.
    id: String,
    /// 5 fields (`*/5 * * * *`), 6 with seconds first (`*/10 * * * * *`),
    /// a macro (`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`) or
    /// `@every <duration>` (`@every 10s`; at least 1 s).
    schedule: String,
    /// IANA time zone the expression is read in (default UTC).
    timezone: Option<String>,
    /// `{method, params}` (called as the creator) or `{channel, event,
    /// data}` (published as the creator).
    #[schemars(with = "CronTarget")]
    target: Value,
    /// Default true.
    enabled: Option<bool>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateParams {
    id: String,
    schedule: Option<String>,
    /// An IANA time zone; `null` leaves it as it is.
    timezone: Option<String>,
    #[schemars(with = "Option<CronTarget>")]
    target: Option<Value>,
    enabled: Option<bool>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdParams {
    id: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunsParams {
    id: String,
    /// Newest firings returned (default 20, at most 100).
    limit: Option<usize>,
}

pub async fn add(ctx: &Ctx<'_>, p: AddParams) -> Result<Value, RpcError> {
    let identity = ctx.identity()?;
    validate_id(&p.id)?;
    let schedule = Schedule::parse(&p.schedule, p.timezone.as_deref())?;
    let target = target(ctx.app, &identity, p.target)?;
    let now = now_ms();
    let job = CronJob {
        id: p.id,
        schedule: p.schedule,
        timezone: p.timezone,
        target,
        enabled: p.enabled.unwrap_or(true),
        created_by: creator_of(&identity),
        created_at: now,
        updated_at: now,
    };
    let next = next_tick(&job, &schedule, now);
    ctx.app
        .cron_store()
        .create_cron_job(&job, next, MAX_JOBS)
        .await
        .map_err(|e| e.into_rpc(&job.id))?;
    Ok(view(job, next))
}

pub async fn update(ctx: &Ctx<'_>, p: UpdateParams) -> Result<Value, RpcError> {
    let identity = ctx.identity()?;
    let mut job = find(ctx.app, &p.id).await?;
    if let Some(schedule) = p.schedule {
        job.schedule = schedule;
    }
    if p.timezone.is_some() {
        job.timezone = p.timezone;
    }
    if let Some(raw) = p.target {
        job.target = target(ctx.app, &identity, raw)?;
        // The job now runs as whoever gave it its new target.
        job.created_by = creator_of(&identity);
    }
    if let Some(enabled) = p.enabled {
        job.enabled = enabled;
    }
    let schedule = Schedule::parse(&job.schedule, job.timezone.as_deref())?;
    let now = now_ms();
    job.updated_at = now;
    let next = next_tick(&job, &schedule, now);
    ctx.app
        .cron_store()
        .update_cron_job(&job, next)
        .await
        .map_err(|e| e.into_rpc(&job.id))?;
    Ok(view(job, next))
}

pub async fn get(ctx: &Ctx<'_>, p: IdParams) -> Result<Value, RpcError> {
    let job = find(ctx.app, &p.id).await?;
    let due = ctx.app.cron_store().cron_due().await?;
    let next = due.into_iter().find(|(id, _)| *id == job.id).map(|d| d.1);
    Ok(view(job, next))
}

pub async fn list(ctx: &Ctx<'_>) -> Result<Value, RpcError> {
    let store = ctx.app.cron_store();
    let jobs = store.cron_jobs().await?;
    let due: std::collections::HashMap<String, u64> = store.cron_due().await?.into_iter().collect();
    let jobs: Vec<Value> = jobs
        .into_iter()
        .map(|job| {
            let next = due.get(&job.id).copied().filter(|_| job.enabled);
            view(job, next)
        })
        .collect();
    Ok(json!({ "count": jobs.len(), "jobs": jobs }))
}

/// Fire the job now, once, on this instance (its schedule is untouched).
pub async fn run(ctx: &Ctx<'_>, p: IdParams) -> Result<Value, RpcError> {
    let job = find(ctx.app, &p.id).await?;
    let record = fire(ctx.app, &job, now_ms(), RunKind::Manual).await;
    ctx.app
        .cron_store()
        .record_cron_run(&job.id, &record)
        .await?;
    Ok(serde_json::to_value(record).unwrap_or_default())
}

pub async fn remove(ctx: &Ctx<'_>, p: IdParams) -> Result<Value, RpcError> {
    if !ctx.app.cron_store().remove_cron_job(&p.id).await? {
        return Err(RpcError::not_found("cron job", &p.id));
    }
    Ok(json!({ "id": p.id, "removed": true }))
}

pub async fn runs(ctx: &Ctx<'_>, p: RunsParams) -> Result<Value, RpcError> {
    let limit = p.limit.unwrap_or(20);
    if limit == 0 || limit > RUNS_MAX {
        return Err(RpcError::invalid_params(
            "limit",
            format!("between 1 and {RUNS_MAX}"),
        ));
    }
    find(ctx.app, &p.id).await?;
    let runs = ctx.app.cron_store().cron_runs(&p.id, limit).await?;
    Ok(json!({ "id": p.id, "count": runs.len(), "runs": runs }))
}

/// The idempotency scope of scheduled firings: a tick runs its target
/// once under the key `<job>@<tick>`, so an instance that takes over a
/// dead instance's tick finds out whether that instance got as far as
/// running it.
const ONCE_SCOPE: &str = "cron";

/// Run the job's target for tick `tick_at` as its creator and say how it
/// went (the caller records it). A scheduled tick runs at most once
/// across instances (see [`ONCE_SCOPE`]).
pub async fn fire(app: &App, job: &CronJob, tick_at: u64, kind: RunKind) -> CronRun {
    let (method, params) = match &job.target {
        CronTarget::Method { method, params } => (method.clone(), params.clone()),
        CronTarget::Channel {
            channel,
            event,
            data,
        } => (
            "publish".to_owned(),
            json!({ "channel": channel, "event": event, "data": stamped(data, &job.id, tick_at) }),
        ),
    };
    let conn = ConnHandle::new(
        format!("cron-{}", uuid::Uuid::new_v4().simple()),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        16,
    );
    conn.state().identity = Some(Arc::new(identity_of(&job.created_by)));
    // No socket reads this connection: closed from the start, its queue
    // drops what a handler pushes (`invoke.progress`, …) instead of
    // filling up and reporting a slow consumer.
    conn.close(crate::conn::close_code::NORMAL, "cron call");
    let call = Call {
        id: Some(crate::protocol::frame::Id::null()),
        method,
        params,
    };
    // Bounded: a node's method has its own timeout, this is the backstop.
    let limit = fire_limit(app);
    let handled = async {
        let key = tick_key(&job.id, tick_at);
        let scheduled = (kind == RunKind::Scheduled).then_some(key.as_str());
        crate::services::idempotent::once(app, ONCE_SCOPE, "", scheduled, limit, || {
            super::handle(app, &conn, call)
        })
        .await
    };
    let outcome = match tokio::time::timeout(limit, handled).await {
        Ok(outcome) => outcome,
        Err(_) => Err(RpcError::timeout(format!(
            "cron job {} gave up after {} ms",
            job.id,
            limit.as_millis()
        ))),
    };
    let (outcome, result, error) = match outcome {
        Ok(result) => (RunOutcome::Ok, Some(summary(result)), None),
        Err(e) => (
            RunOutcome::Error,
            None,
            Some(serde_json::to_value(&e).unwrap_or_default()),
        ),
    };
    record(app, tick_at, kind, outcome, result, error)
}

/// Fire tick `tick_at`, which instance `dead` claimed and did not live to
/// record: run it if that instance never started its call; if it did,
/// keep the result it left, or say the outcome is unknown when it died
/// with the call running (never run twice).
pub async fn fire_recovered(app: &App, job: &CronJob, tick_at: u64, dead: &str) -> CronRun {
    let key = crate::services::idempotent::full_key(ONCE_SCOPE, "", &tick_key(&job.id, tick_at));
    let mut run = match app.idempotency_store().idempotency(&key).await {
        Ok(Some(Idempotency::Done { result })) => record(
            app,
            tick_at,
            RunKind::Scheduled,
            RunOutcome::Ok,
            Some(summary(result)),
            None,
        ),
        Ok(Some(Idempotency::Pending)) => {
            let why = format!(
                "instance {dead} died while this tick's call was running; \
                 whether it took effect is unknown, and it is not run twice"
            );
            let error = json!({ "code": crate::protocol::error::INTERNAL_ERROR, "message": why });
            record(
                app,
                tick_at,
                RunKind::Scheduled,
                RunOutcome::Unknown,
                None,
                Some(error),
            )
        }
        // Never started (or the lookup failed: the firing's own claim of
        // the key decides).
        Ok(None) | Err(_) => fire(app, job, tick_at, RunKind::Scheduled).await,
    };
    run.recovered_from = Some(dead.to_owned());
    run
}

/// The longest a firing takes: the request timeout, and a margin for the
/// backstop.
pub fn fire_limit(app: &App) -> Duration {
    Duration::from_millis(app.config.limits.request_timeout_ms) + Duration::from_secs(5)
}

fn tick_key(job: &str, tick_at: u64) -> String {
    crate::backend::CronClaim::field(job, tick_at)
}

fn record(
    app: &App,
    tick_at: u64,
    kind: RunKind,
    outcome: RunOutcome,
    result: Option<Value>,
    error: Option<Value>,
) -> CronRun {
    CronRun {
        tick_at,
        fired_at: now_ms(),
        instance: app.instance_id.clone(),
        kind,
        outcome,
        result,
        error,
        missed: None,
        last_tick_at: None,
        recovered_from: None,
    }
}

/// A channel target's data with `cron: {id, tickAt}` added (when the data
/// is an object or absent), so subscribers can tell the ticks apart.
fn stamped(data: &Value, id: &str, tick_at: u64) -> Value {
    let stamp = json!({ "id": id, "tickAt": tick_at });
    match data {
        Value::Object(map) => {
            let mut map = map.clone();
            map.insert("cron".into(), stamp);
            Value::Object(map)
        }
        Value::Null => json!({ "cron": stamp }),
        other => other.clone(),
    }
}

/// A result as kept in the history: whole when small, otherwise its size
/// and the start of its JSON.
fn summary(result: Value) -> Value {
    let text = result.to_string();
    if text.len() <= MAX_RESULT {
        return result;
    }
    let mut cut = MAX_RESULT / 4;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    json!({ "truncated": true, "bytes": text.len(), "preview": &text[..cut] })
}

/// The job's next tick after `now`, `None` while it is disabled.
fn next_tick(job: &CronJob, schedule: &Schedule, now: u64) -> Option<u64> {
    job.enabled.then(|| schedule.next_after(now)).flatten()
}

fn view(job: CronJob, next_at: Option<u64>) -> Value {
    serde_json::to_value(CronJobView { job, next_at }).unwrap_or_default()
}

async fn find(app: &App, id: &str) -> Result<CronJob, RpcError> {
    app.cron_store()
        .cron_job(id)
        .await?
        .ok_or_else(|| RpcError::not_found("cron job", id))
}

fn validate_id(id: &str) -> Result<(), RpcError> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(RpcError::invalid_params("id", "1-64 of A-Z a-z 0-9 . _ -"))
    }
}

/// Decode and check a target; errors name `target.<field>`.
fn target(app: &App, identity: &Identity, raw: Value) -> Result<CronTarget, RpcError> {
    let Value::Object(map) = raw else {
        return Err(RpcError::invalid_params(
            "target",
            "{method, params} or {channel, event, data}",
        ));
    };
    let text = |key: &str, field: &str| -> Result<String, RpcError> {
        match map.get(key) {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 128 => Ok(s.clone()),
            _ => Err(RpcError::invalid_params(field, "a string of 1-128 bytes")),
        }
    };
    let payload = |key: &str, field: &str| -> Result<Value, RpcError> {
        let value = map.get(key).cloned().unwrap_or(Value::Null);
        if value.to_string().len() > MAX_PAYLOAD {
            return Err(RpcError::invalid_params(
                field,
                format!("at most {MAX_PAYLOAD} bytes of JSON"),
            ));
        }
        Ok(value)
    };
    let known = |keys: &[&str]| -> Result<(), RpcError> {
        match map.keys().find(|k| !keys.contains(&k.as_str())) {
            Some(extra) => Err(RpcError::invalid_params(
                &format!("target.{extra}"),
                "unknown field",
            )),
            None => Ok(()),
        }
    };
    if map.contains_key("method") {
        known(&["method", "params"])?;
        let method = text("method", "target.method")?;
        let canonical = super::lookup(&method).map_or(method.as_str(), |m| m.name);
        if UNSCHEDULABLE.contains(&canonical) || canonical.starts_with("cron.") {
            return Err(RpcError::invalid_params(
                "target.method",
                format!("{method} cannot be scheduled"),
            ));
        }
        let params = payload("params", "target.params")?;
        if !matches!(params, Value::Object(_) | Value::Array(_) | Value::Null) {
            return Err(RpcError::invalid_params(
                "target.params",
                "an object, an array or absent",
            ));
        }
        Ok(CronTarget::Method { method, params })
    } else if map.contains_key("channel") {
        known(&["channel", "event", "data"])?;
        let channel = text("channel", "target.channel")?;
        crate::services::channels::validate_name("target.channel", &channel)?;
        crate::services::channels::may_publish(app, identity, "", &channel)?;
        let event = match map.get("event") {
            None => "message".to_owned(),
            Some(_) => text("event", "target.event")?,
        };
        let data = payload("data", "target.data")?;
        Ok(CronTarget::Channel {
            channel,
            event,
            data,
        })
    } else {
        Err(RpcError::invalid_params(
            "target",
            "{method, params} or {channel, event, data}",
        ))
    }
}

fn creator_of(identity: &Identity) -> CronCreator {
    CronCreator {
        sub: identity.sub.clone(),
        role: identity.role.as_str().to_owned(),
        scopes: identity
            .scopes
            .names()
            .into_iter()
            .map(str::to_owned)
            .collect(),
        channels: identity.channels.clone(),
    }
}

/// The identity a job's calls run with: its creator's, without expiry.
fn identity_of(creator: &CronCreator) -> Identity {
    Identity {
        sub: creator.sub.clone(),
        role: creator.role.parse().unwrap_or(Role::Operator),
        scopes: ScopeSet::from_names(&creator.scopes).unwrap_or_default(),
        channels: creator.channels.clone(),
        method: AuthMethod::None,
        expires_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_results_are_kept_as_a_summary() {
        let small = json!({"ok": true});
        assert_eq!(summary(small.clone()), small);
        let large = json!({"text": "é".repeat(10_000)});
        let kept = summary(large.clone());
        assert_eq!(kept["truncated"], true);
        assert_eq!(kept["bytes"], large.to_string().len());
        assert!(kept["preview"].as_str().unwrap().len() <= MAX_RESULT / 4);
    }

    #[test]
    fn channel_data_carries_the_tick() {
        let stamp = json!({"id": "j", "tickAt": 5});
        assert_eq!(
            stamped(&json!({"a": 1}), "j", 5),
            json!({"a": 1, "cron": stamp})
        );
        assert_eq!(stamped(&Value::Null, "j", 5), json!({"cron": stamp}));
        assert_eq!(stamped(&json!([1]), "j", 5), json!([1]));
    }

    #[test]
    fn the_creator_identity_round_trips() {
        let creator = CronCreator {
            sub: "ann".into(),
            role: "operator".into(),
            scopes: vec!["operator.admin".into(), "operator.read".into()],
            channels: vec!["private:x".into()],
        };
        let identity = identity_of(&creator);
        assert!(identity.is_admin());
        assert_eq!(creator_of(&identity), creator);
    }
}
