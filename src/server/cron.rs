//! The cron scheduler every instance runs.
//!
//! It wakes at the earliest due tick of any job, or every [`POLL`] at the
//! latest, reads the due ticks from the backend (so a job added, changed
//! or fired on another instance is seen within [`POLL`]) and re-reads the
//! job definitions when the backend's cron version moved. For each job
//! whose tick has come it asks the schedule what to do
//! (`services::cron::Schedule::due`) and claims the tick: the claim moves
//! the job's due tick to the next one only if it is still the tick this
//! instance saw, so exactly one instance wins it. The same step records
//! the ticks that passed unfired (all instances down, or this one
//! stalled) as one `missed` run and the tick it fires as `pending`; the
//! winner fires in its own task and replaces the pending record with the
//! outcome.
//!
//! The claim also leaves a [`CronClaim`] naming this instance and its
//! generation, removed when the outcome is recorded. Every step each
//! scheduler looks for claims older than [`ORPHAN_AFTER`] whose instance
//! is dead — no live record of that id and generation: stale, reaped, or
//! a later run of it in its place — and takes them over (one
//! instance wins, by compare-and-set) to fire the tick in its place
//! (`rpc::cron::fire_recovered`). Firing runs the target under an
//! idempotency key per tick, so the taker learns whether the dead
//! instance got as far as running it: not started → fired now; finished →
//! its result is recorded, nothing runs again; died mid-call → recorded
//! `unknown`, not run twice. A draining instance claims nothing more and
//! deregisters only once its firings are recorded (`server::drain`).

use super::App;
use crate::backend::{CronClaim, CronJob, CronRun, InstanceView, RunKind, RunOutcome};
use crate::protocol::now_ms;
use crate::services::cron::{Due, Schedule};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Longest sleep between two looks at the due ticks.
const POLL: Duration = Duration::from_millis(500);
/// Longest wait after a backend error.
const BACKOFF: Duration = Duration::from_secs(1);
/// A claim younger than this is a firing in progress, whoever holds it.
const ORPHAN_AFTER: Duration = Duration::from_secs(1);

/// Start the scheduler; it stops with `stop`.
pub fn spawn(app: &App, stop: &CancellationToken) {
    let app = app.clone();
    let stop = stop.clone();
    tokio::spawn(async move {
        let mut scheduler = Scheduler::default();
        loop {
            let wait = match scheduler.step(&app).await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::debug!(error = %e, "cron scheduler: backend unavailable");
                    BACKOFF
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    });
}

/// The jobs as last read, with their parsed schedules.
#[derive(Default)]
struct Scheduler {
    version: Option<u64>,
    jobs: HashMap<String, (CronJob, Option<Schedule>)>,
}

impl Scheduler {
    /// Fire what is due; how long to sleep until the next look.
    async fn step(&mut self, app: &App) -> Result<Duration, crate::backend::BackendError> {
        if app.is_draining() {
            // Leave the ticks to instances that stay: a tick claimed now
            // could die with this process before it fires.
            return Ok(POLL);
        }
        let store = app.cron_store();
        let version = store.cron_version().await?;
        let due = store.cron_due().await?;
        let unknown = due.iter().any(|(id, _)| !self.jobs.contains_key(id));
        if self.version != Some(version) || unknown {
            self.reload(app).await?;
            self.version = Some(version);
        }
        let now = now_ms();
        let mut earliest = now + POLL.as_millis() as u64;
        for (id, tick) in due {
            if tick > now {
                earliest = earliest.min(tick);
                continue;
            }
            let Some((job, Some(schedule))) = self.jobs.get(&id) else {
                continue;
            };
            let Some(plan) = schedule.due(tick, now) else {
                continue;
            };
            if !job.enabled {
                continue;
            }
            let claimed = claim_records(app, &plan);
            let firing = plan.fire.map(|tick_at| own_claim(app, &id, tick_at));
            if store
                .claim_cron_tick(&id, tick, plan.next, &claimed, firing.as_ref())
                .await?
            {
                earliest = earliest.min(plan.next);
                if let Some(missed) = plan.missed {
                    metrics::counter!("switchyard_cron_missed_total").increment(missed.count);
                }
                if let Some(tick) = plan.fire {
                    let (app, job) = (app.clone(), job.clone());
                    let firing = Firing::start(&app);
                    tokio::spawn(async move {
                        let _firing = firing;
                        fire_claimed(&app, &job, tick).await
                    });
                }
            }
        }
        self.recover(app).await?;
        let now = now_ms();
        Ok(Duration::from_millis(earliest.saturating_sub(now)))
    }

    /// Take over and fire the ticks that dead instances claimed and never
    /// recorded.
    async fn recover(&self, app: &App) -> Result<(), crate::backend::BackendError> {
        let store = app.cron_store();
        let now = now_ms();
        let old: Vec<CronClaim> = store
            .cron_claims()
            .await?
            .into_iter()
            .filter(|c| now.saturating_sub(c.claimed_at) >= ORPHAN_AFTER.as_millis() as u64)
            .collect();
        if old.is_empty() {
            return Ok(());
        }
        let view = app.instance_store().instance_view().await?;
        for claim in old {
            if !orphaned(app, &claim, &view) {
                continue;
            }
            let Some((job, _)) = self.jobs.get(&claim.job) else {
                continue;
            };
            let mine = own_claim(app, &claim.job, claim.tick_at);
            if store.take_cron_claim(&claim, &mine).await? {
                tracing::info!(job = %claim.job, tick = claim.tick_at, from = %claim.instance,
                    "cron: taking over a tick its instance did not live to fire");
                metrics::counter!("switchyard_cron_recovered_total").increment(1);
                let (app, job) = (app.clone(), job.clone());
                let firing = Firing::start(&app);
                tokio::spawn(async move {
                    let _firing = firing;
                    let record = crate::rpc::cron::fire_recovered(
                        &app,
                        &job,
                        claim.tick_at,
                        &claim.instance,
                    )
                    .await;
                    finish(&app, &job, record).await;
                });
            }
        }
        Ok(())
    }

    async fn reload(&mut self, app: &App) -> Result<(), crate::backend::BackendError> {
        let jobs = app.cron_store().cron_jobs().await?;
        self.jobs = jobs
            .into_iter()
            .map(|job| {
                let schedule = Schedule::parse(&job.schedule, job.timezone.as_deref())
                    .map_err(|e| tracing::warn!(job = %job.id, error = %e, "cron: bad schedule"))
                    .ok();
                (job.id.clone(), (job, schedule))
            })
            .collect();
        Ok(())
    }
}

/// This instance's claim on tick `tick_at` of job `job`.
fn own_claim(app: &App, job: &str, tick_at: u64) -> CronClaim {
    CronClaim {
        job: job.to_owned(),
        tick_at,
        instance: app.instance_id.clone(),
        generation: app.generation,
        claimed_at: now_ms(),
    }
}

/// Whether the instance holding `claim` is dead: no live instance of
/// that id and generation (its record stale, reaped or deregistered, or a
/// later run of it in its place). An instance registers before it claims
/// anything, and a stopping one deregisters only after its firings.
fn orphaned(app: &App, claim: &CronClaim, view: &InstanceView) -> bool {
    if claim.instance == app.instance_id {
        return claim.generation != app.generation;
    }
    !view
        .live
        .iter()
        .any(|i| i.id == claim.instance && i.generation == claim.generation)
}

/// Counts a firing of this instance while it lives.
struct Firing(App);

impl Firing {
    fn start(app: &App) -> Self {
        app.cron_firing.fetch_add(1, Ordering::SeqCst);
        Firing(app.clone())
    }
}

impl Drop for Firing {
    fn drop(&mut self) {
        self.0.cron_firing.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a claim adds to the history in the same step: the ticks it
/// skips as missed, then the tick it fires as pending (replaced by its
/// outcome; left pending if this instance dies first).
fn claim_records(app: &App, plan: &Due) -> Vec<CronRun> {
    let now = now_ms();
    let record = |tick_at, outcome| CronRun {
        tick_at,
        fired_at: now,
        instance: app.instance_id.clone(),
        kind: RunKind::Scheduled,
        outcome,
        result: None,
        error: None,
        missed: None,
        last_tick_at: None,
        recovered_from: None,
    };
    let mut records = Vec::new();
    if let Some(missed) = plan.missed {
        records.push(CronRun {
            missed: Some(missed.count),
            last_tick_at: Some(missed.last),
            ..record(missed.first, RunOutcome::Missed)
        });
    }
    if let Some(tick) = plan.fire {
        records.push(record(tick, RunOutcome::Pending));
    }
    records
}

/// This instance won `tick`: fire it and record the outcome in place of
/// its pending record.
async fn fire_claimed(app: &App, job: &CronJob, tick: u64) {
    let record = crate::rpc::cron::fire(app, job, tick, RunKind::Scheduled).await;
    finish(app, job, record).await;
}

/// Count a firing and record it in place of its pending record.
async fn finish(app: &App, job: &CronJob, record: CronRun) {
    let label = match record.outcome {
        RunOutcome::Ok => "ok",
        RunOutcome::Unknown => "unknown",
        _ => "error",
    };
    metrics::counter!("switchyard_cron_runs_total", "outcome" => label).increment(1);
    if let Err(e) = app.cron_store().record_cron_run(&job.id, &record).await {
        tracing::warn!(job = %job.id, error = %e, "cron: recording a run failed");
    }
}
