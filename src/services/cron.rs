//! Cron schedules: what a job's `schedule` and `timezone` mean, when its
//! next tick is, and what to do with the ticks that came due while it
//! waited.
//!
//! A schedule is a standard 5-field cron expression (minute granularity),
//! the same with a leading seconds field (6 fields), a macro (`@hourly`,
//! `@daily`, `@weekly`, `@monthly`, `@yearly`) — all parsed by `croner`
//! and read in an IANA time zone (`chrono-tz`, default UTC) — or
//! `@every <duration>` (`humantime`'s grammar: `10s`, `1m 30s`, `2h`) with
//! ticks at the multiples of the interval since the Unix epoch, so every
//! instance computes the same ticks.
//!
//! The scheduler (`server::cron`) wakes for a job's due tick and asks
//! [`Schedule::due`] what to do: fire the newest tick if it is at most
//! [`GRACE_MS`] old, and count the older ones as missed (one record, not a
//! burst of late firings), then wait for the first tick after now.

use crate::protocol::RpcError;
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// Shortest interval between two ticks.
pub const MIN_INTERVAL_MS: u64 = 1000;
/// Longest `@every` interval (a year).
pub const MAX_INTERVAL_MS: u64 = 366 * 24 * 3_600_000;
/// A due tick at most this old still fires; older ones are missed.
pub const GRACE_MS: u64 = 2000;
/// Ticks counted one by one when looking for missed ones; beyond, the
/// count is a lower bound.
const MAX_SCAN: u64 = 10_000;
/// Longest schedule expression.
const MAX_SCHEDULE: usize = 256;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// `@every`: ticks at the multiples of this many ms.
    Every(u64),
    /// A cron expression in a time zone.
    Cron(Box<Cron>, Tz),
}

/// What to do at `now` with a job whose due tick has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The tick to fire, if one is recent enough.
    pub fire: Option<u64>,
    /// Ticks that will not fire: (first, last, count, count is a lower
    /// bound).
    pub missed: Option<Missed>,
    /// The next tick after `now`.
    pub next: u64,
}

/// Ticks that passed without firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missed {
    pub first: u64,
    pub last: u64,
    pub count: u64,
}

impl Schedule {
    /// Parse `schedule` in `timezone`; errors name the field (-32602).
    pub fn parse(schedule: &str, timezone: Option<&str>) -> Result<Self, RpcError> {
        let bad = |why: String| RpcError::invalid_params("schedule", why);
        if schedule.trim().is_empty() || schedule.len() > MAX_SCHEDULE {
            return Err(bad(format!("1-{MAX_SCHEDULE} bytes")));
        }
        let tz: Tz = match timezone {
            None => Tz::UTC,
            Some(name) => name.parse().map_err(|_| {
                RpcError::invalid_params("timezone", format!("unknown time zone {name:?}"))
            })?,
        };
        let trimmed = schedule.trim();
        if let Some(rest) = trimmed.strip_prefix("@every") {
            let every = humantime::parse_duration(rest.trim())
                .map_err(|e| bad(format!("@every <duration> (e.g. @every 10s): {e}")))?;
            let ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
            if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&ms) {
                return Err(bad(format!(
                    "@every between {MIN_INTERVAL_MS} ms and {MAX_INTERVAL_MS} ms"
                )));
            }
            return Ok(Schedule::Every(ms));
        }
        let fields = trimmed.split_whitespace().count();
        if !trimmed.starts_with('@') && !(5..=6).contains(&fields) {
            return Err(bad(format!(
                "5 fields (minute hour day month weekday) or 6 (seconds first), not {fields}"
            )));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let cron = parser
            .parse(trimmed)
            .map_err(|e| bad(format!("not a cron expression: {e}")))?;
        let parsed = Schedule::Cron(Box::new(cron), tz);
        if parsed.next_after(crate::protocol::now_ms()).is_none() {
            return Err(bad("never fires".into()));
        }
        Ok(parsed)
    }

    /// The first tick strictly after `after` (ms), if any.
    pub fn next_after(&self, after: u64) -> Option<u64> {
        match self {
            Schedule::Every(every) => after
                .checked_div(*every)?
                .checked_add(1)?
                .checked_mul(*every),
            Schedule::Cron(cron, tz) => {
                let secs = i64::try_from(after / 1000).ok()?;
                let start: DateTime<Tz> = Utc.timestamp_opt(secs, 0).single()?.with_timezone(tz);
                let next = cron.find_next_occurrence(&start, false).ok()?;
                u64::try_from(next.timestamp_millis()).ok()
            }
        }
    }

    /// What to do at `now` with due tick `tick` (≤ `now`): the newest
    /// tick up to `now` fires if it is at most [`GRACE_MS`] old; the rest
    /// are missed. `None` when the schedule has no tick after `now`.
    pub fn due(&self, tick: u64, now: u64) -> Option<Due> {
        let next = self.next_after(now)?;
        let (newest, count, exact) = match self {
            Schedule::Every(every) => {
                let newest = now - (now % every);
                let newest = newest.max(tick);
                (newest, (newest - tick) / every + 1, true)
            }
            Schedule::Cron(..) => {
                let (mut newest, mut count) = (tick, 1);
                loop {
                    match self.next_after(newest) {
                        Some(t) if t <= now && count < MAX_SCAN => {
                            newest = t;
                            count += 1;
                        }
                        Some(t) if t <= now => break (newest, count, false),
                        _ => break (newest, count, true),
                    }
                }
            }
        };
        let fire = (exact && now.saturating_sub(newest) <= GRACE_MS).then_some(newest);
        let missed_count = count - u64::from(fire.is_some());
        let missed = (missed_count > 0).then(|| Missed {
            first: tick,
            last: if fire.is_some() {
                self.previous(newest, tick)
            } else {
                newest
            },
            count: missed_count,
        });
        Some(Due { fire, missed, next })
    }

    /// The tick before `tick` (not earlier than `floor`).
    fn previous(&self, tick: u64, floor: u64) -> u64 {
        match self {
            Schedule::Every(every) => tick.saturating_sub(*every).max(floor),
            Schedule::Cron(..) => {
                let mut last = floor;
                while let Some(t) = self.next_after(last) {
                    if t >= tick {
                        break;
                    }
                    last = t;
                }
                last
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Schedule, RpcError> {
        Schedule::parse(s, None)
    }

    #[test]
    fn intervals_tick_at_multiples_of_their_length() {
        let every = parse("@every 10s").unwrap();
        assert_eq!(every.next_after(0), Some(10_000));
        assert_eq!(every.next_after(12_345), Some(20_000));
        assert_eq!(every.next_after(20_000), Some(30_000));
        assert!(matches!(
            parse("@every 1m 30s"),
            Ok(Schedule::Every(90_000))
        ));
    }

    #[test]
    fn five_and_six_fields_and_macros_parse() {
        let minutely = parse("* * * * *").unwrap();
        assert_eq!(minutely.next_after(61_000), Some(120_000));
        let secondly = parse("*/5 * * * * *").unwrap();
        assert_eq!(secondly.next_after(61_000), Some(65_000));
        let hourly = parse("@hourly").unwrap();
        assert_eq!(hourly.next_after(1), Some(3_600_000));
        let daily = parse("@daily").unwrap();
        assert_eq!(daily.next_after(1), Some(86_400_000));
    }

    #[test]
    fn time_zones_move_the_ticks() {
        // 2024-01-15 00:00 UTC; midnight in Berlin (UTC+1) is 23:00 UTC.
        let t = 1_705_276_800_000;
        let berlin = Schedule::parse("0 0 * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(berlin.next_after(t), Some(t + 23 * 3_600_000));
    }

    #[test]
    fn bad_schedules_name_their_field() {
        for bad in [
            "",
            "@every",
            "@every 500ms",
            "@every soon",
            "* * *",
            "* * * * * * *",
            "61 * * * *",
            "@sometimes",
            "0 0 30 2 *",
        ] {
            let e = parse(bad).expect_err(bad);
            assert_eq!(e.code, crate::protocol::error::INVALID_PARAMS, "{bad}");
            assert_eq!(e.data.as_ref().unwrap()["field"], "schedule", "{bad}");
        }
        let e = Schedule::parse("* * * * *", Some("Mars/Olympus")).unwrap_err();
        assert_eq!(e.data.as_ref().unwrap()["field"], "timezone");
    }

    #[test]
    fn a_recent_tick_fires_and_older_ones_are_missed_once() {
        let every = parse("@every 1s").unwrap();
        // On time.
        let due = every.due(10_000, 10_003).unwrap();
        assert_eq!(due.fire, Some(10_000));
        assert_eq!(due.missed, None);
        assert_eq!(due.next, 11_000);
        // Down for a while: the newest fires, the rest are one record.
        let due = every.due(10_000, 20_500).unwrap();
        assert_eq!(due.fire, Some(20_000));
        let missed = due.missed.unwrap();
        assert_eq!(
            (missed.first, missed.last, missed.count),
            (10_000, 19_000, 10)
        );
        assert_eq!(due.next, 21_000);
        // A minutely job found 5 minutes late: nothing fires, 5 missed.
        let minutely = parse("* * * * *").unwrap();
        let due = minutely.due(60_000, 305_000).unwrap();
        assert_eq!(due.fire, None);
        let missed = due.missed.unwrap();
        assert_eq!(
            (missed.first, missed.last, missed.count),
            (60_000, 300_000, 5)
        );
        assert_eq!(due.next, 360_000);
    }
}
