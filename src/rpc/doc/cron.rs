//! Cluster-wide cron.

use super::{Doc, boolean, counted, object, record, string};
use crate::backend::CronRun;
use crate::protocol::error;
use crate::rpc::cron::CronJobView;
use schemars::SchemaGenerator;
use serde_json::Value;

pub const CRON_ADD: Doc = Doc {
    summary: "Schedule a job",
    description: "Admin. Each tick fires exactly once across all instances. `schedule`: 5 \
                  cron fields, 6 with seconds first, `@hourly`/`@daily`/`@weekly`/`@monthly`/\
                  `@yearly`, or `@every <duration>` (at least 1 s), read in `timezone` (IANA, \
                  default UTC). A `{method, params}` target is called with the creator's \
                  identity through the same path as a client's call; a `{channel, event, \
                  data}` target is published as `publish` does, with `cron: {id, tickAt}` \
                  added to object data. The creator's identity is kept as it was when the job was \
                  created (or its target last changed): removing the job is what stops it. \
                  `params` and `data` at most 8 KiB; at most 1000 jobs (-32002).",
    result: job,
    errors: &[error::CONFLICT, error::LIMIT_EXCEEDED, error::UNAVAILABLE],
};

pub const CRON_UPDATE: Doc = Doc {
    summary: "Change a job's schedule, time zone, target or enabled flag",
    description: "Admin. Fields left out stay as they are; a new target runs as the caller. \
                  The next tick is computed anew from now.",
    result: job,
    errors: &[error::NOT_FOUND, error::UNAVAILABLE],
};

pub const CRON_GET: Doc = Doc {
    summary: "One job and its next tick",
    description: "Admin.",
    result: job,
    errors: &[error::NOT_FOUND, error::UNAVAILABLE],
};

pub const CRON_LIST: Doc = Doc {
    summary: "Every job and its next tick",
    description: "Admin. By id.",
    result: |g| counted("jobs", job(g)),
    errors: &[error::UNAVAILABLE],
};

pub const CRON_RUN: Doc = Doc {
    summary: "Fire a job now, once",
    description: "Admin. Runs the target on this instance and answers the run (recorded as \
                  `manual` in `cron.runs`); the schedule is untouched. A target's failure is \
                  the run's `error`, not this call's.",
    result: run,
    errors: &[error::NOT_FOUND, error::UNAVAILABLE],
};

pub const CRON_REMOVE: Doc = Doc {
    summary: "Delete a job and its history",
    description: "Admin. No instance fires it after this answer.",
    result: |_| object(&[("id", string()), ("removed", boolean())]),
    errors: &[error::NOT_FOUND, error::UNAVAILABLE],
};

pub const CRON_RUNS: Doc = Doc {
    summary: "A job's recent firings",
    description: "Admin. Newest first (the newest 100 are kept): the scheduled tick, when it \
                  fired, on which instance, `scheduled` or `manual`, and the outcome — `ok` \
                  with the method's result (a summary when over 4 KiB), `error` with the \
                  JSON-RPC error, `missed` with how many ticks passed while no instance \
                  could fire them (one record, never fired late in a burst), or `pending`: \
                  claimed and firing (one that stays pending lost its instance between the \
                  claim and the firing).",
    result: |g| {
        object(&[
            ("id", string()),
            ("count", super::count()),
            ("runs", super::array(run(g))),
        ])
    },
    errors: &[error::NOT_FOUND, error::UNAVAILABLE],
};

fn job(g: &mut SchemaGenerator) -> Value {
    record::<CronJobView>(g)
}

fn run(g: &mut SchemaGenerator) -> Value {
    record::<CronRun>(g)
}
