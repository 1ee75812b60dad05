//! The cron scheduler every instance runs.
//!
//! It wakes at the earliest due tick of any job, or every [`POLL`] at the
//! latest, reads the due ticks from the backend (so a job added, changed
//! or fired on another instance is seen within [`POLL`]) and re-reads the
//! job definitions when the backend's cron version moved. For each job
//! whose tick has come it asks the schedule what to do
//! (`services::cron::Schedule::due`) and claims the tick: the claim moves
//! the job's due tick to the next one only if it is still the tick this
//! instance saw, so exactly one instance wins it. The winner records the
//! ticks that passed unfired (all instances down, or this one stalled) as
//! one `missed` run and fires the newest in its own task, recording the
//! outcome.
//!
//! An instance killed between its claim and its firing loses that tick
//! (at most once, never twice): the claim is what prevents duplicates. A
//! draining instance claims nothing more, so a graceful stop loses none.

use super::App;
use crate::backend::{CronJob, CronRun, RunKind, RunOutcome};
use crate::protocol::now_ms;
use crate::services::cron::{Due, Schedule};
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Longest sleep between two looks at the due ticks.
const POLL: Duration = Duration::from_millis(500);
/// Longest wait after a backend error.
const BACKOFF: Duration = Duration::from_secs(1);

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
            if store.claim_cron_tick(&id, tick, plan.next).await? {
                earliest = earliest.min(plan.next);
                let (app, job) = (app.clone(), job.clone());
                tokio::spawn(async move { run_claimed(&app, &job, plan).await });
            }
        }
        let now = now_ms();
        Ok(Duration::from_millis(earliest.saturating_sub(now)))
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

/// This instance won the tick: record what was missed, fire, record.
async fn run_claimed(app: &App, job: &CronJob, plan: Due) {
    let store = app.cron_store();
    if let Some(missed) = plan.missed {
        metrics::counter!("switchyard_cron_missed_total").increment(missed.count);
        let record = CronRun {
            tick_at: missed.first,
            fired_at: now_ms(),
            instance: app.instance_id.clone(),
            kind: RunKind::Scheduled,
            outcome: RunOutcome::Missed,
            result: None,
            error: None,
            missed: Some(missed.count),
            last_tick_at: Some(missed.last),
        };
        if let Err(e) = store.record_cron_run(&job.id, &record).await {
            tracing::warn!(job = %job.id, error = %e, "cron: recording missed ticks failed");
        }
    }
    let Some(tick) = plan.fire else {
        return;
    };
    let record = crate::rpc::cron::fire(app, job, tick, RunKind::Scheduled).await;
    let label = if record.outcome == RunOutcome::Ok {
        "ok"
    } else {
        "error"
    };
    metrics::counter!("switchyard_cron_runs_total", "outcome" => label).increment(1);
    if let Err(e) = store.record_cron_run(&job.id, &record).await {
        tracing::warn!(job = %job.id, error = %e, "cron: recording a run failed");
    }
}
