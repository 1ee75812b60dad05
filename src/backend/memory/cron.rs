//! Cron in memory: jobs by id, each enabled job's due tick, and each
//! job's firings newest first. One lock makes the claim a plain
//! compare-and-set.

use super::MemoryBackend;
use crate::backend::cron::{PENDING_SCAN, RUNS_MAX};
use crate::backend::{
    BackendError, BackendResult, CronClaim, CronJob, CronRun, CronStore, RunKind, RunOutcome,
};
use async_trait::async_trait;

#[async_trait]
impl CronStore for MemoryBackend {
    async fn create_cron_job(
        &self,
        job: &CronJob,
        next_at: Option<u64>,
        max_jobs: usize,
    ) -> BackendResult<()> {
        let mut state = self.lock();
        let cron = &mut state.cron;
        if cron.jobs.contains_key(&job.id) {
            return Err(BackendError::Conflict(format!(
                "cron job {} exists",
                job.id
            )));
        }
        if cron.jobs.len() >= max_jobs {
            return Err(BackendError::Limit("cron jobs", max_jobs));
        }
        cron.jobs.insert(job.id.clone(), job.clone());
        if let Some(next) = next_at {
            cron.due.insert(job.id.clone(), next);
        }
        cron.version += 1;
        Ok(())
    }

    async fn update_cron_job(&self, job: &CronJob, next_at: Option<u64>) -> BackendResult<()> {
        let mut state = self.lock();
        let cron = &mut state.cron;
        let Some(current) = cron.jobs.get_mut(&job.id) else {
            return Err(BackendError::NotFound("cron job"));
        };
        *current = job.clone();
        match next_at {
            Some(next) => cron.due.insert(job.id.clone(), next),
            None => cron.due.remove(&job.id),
        };
        cron.version += 1;
        Ok(())
    }

    async fn cron_job(&self, id: &str) -> BackendResult<Option<CronJob>> {
        Ok(self.lock().cron.jobs.get(id).cloned())
    }

    async fn cron_jobs(&self) -> BackendResult<Vec<CronJob>> {
        Ok(self.lock().cron.jobs.values().cloned().collect())
    }

    async fn cron_due(&self) -> BackendResult<Vec<(String, u64)>> {
        let state = self.lock();
        Ok(state
            .cron
            .due
            .iter()
            .map(|(id, at)| (id.clone(), *at))
            .collect())
    }

    async fn remove_cron_job(&self, id: &str) -> BackendResult<bool> {
        let mut state = self.lock();
        let cron = &mut state.cron;
        let existed = cron.jobs.remove(id).is_some();
        cron.due.remove(id);
        cron.runs.remove(id);
        cron.claims.retain(|(job, _), _| job != id);
        if existed {
            cron.version += 1;
        }
        Ok(existed)
    }

    async fn claim_cron_tick(
        &self,
        id: &str,
        tick_at: u64,
        next_at: u64,
        claimed: &[CronRun],
        firing: Option<&CronClaim>,
    ) -> BackendResult<bool> {
        let mut state = self.lock();
        let cron = &mut state.cron;
        match cron.due.get_mut(id) {
            Some(due) if *due == tick_at => *due = next_at,
            _ => return Ok(false),
        }
        if let Some(claim) = firing {
            cron.claims
                .insert((claim.job.clone(), claim.tick_at), claim.clone());
        }
        let runs = cron.runs.entry(id.to_owned()).or_default();
        for run in claimed {
            runs.push_front(run.clone());
        }
        runs.truncate(RUNS_MAX);
        Ok(true)
    }

    async fn record_cron_run(&self, id: &str, run: &CronRun) -> BackendResult<()> {
        let mut state = self.lock();
        let cron = &mut state.cron;
        if run.kind == RunKind::Scheduled {
            cron.claims.remove(&(id.to_owned(), run.tick_at));
        }
        if !cron.jobs.contains_key(id) {
            return Ok(());
        }
        let runs = cron.runs.entry(id.to_owned()).or_default();
        let pending = runs
            .iter_mut()
            .take(PENDING_SCAN)
            .filter(|_| run.kind == RunKind::Scheduled)
            .find(|r| r.outcome == RunOutcome::Pending && r.tick_at == run.tick_at);
        match pending {
            Some(slot) => *slot = run.clone(),
            None => {
                runs.push_front(run.clone());
                runs.truncate(RUNS_MAX);
            }
        }
        Ok(())
    }

    async fn cron_runs(&self, id: &str, limit: usize) -> BackendResult<Vec<CronRun>> {
        let state = self.lock();
        Ok(state
            .cron
            .runs
            .get(id)
            .map(|runs| runs.iter().take(limit).cloned().collect())
            .unwrap_or_default())
    }

    async fn cron_claims(&self) -> BackendResult<Vec<CronClaim>> {
        let mut claims: Vec<CronClaim> = self.lock().cron.claims.values().cloned().collect();
        claims.sort_by(|a, b| (a.tick_at, &a.job).cmp(&(b.tick_at, &b.job)));
        Ok(claims)
    }

    async fn take_cron_claim(&self, from: &CronClaim, to: &CronClaim) -> BackendResult<bool> {
        let mut state = self.lock();
        match state.cron.claims.get_mut(&(from.job.clone(), from.tick_at)) {
            Some(current) if current == from => {
                *current = to.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn cron_version(&self) -> BackendResult<u64> {
        Ok(self.lock().cron.version)
    }
}
