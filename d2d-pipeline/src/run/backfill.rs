//! A back-fill: the days `from..=to`, each its own run, in day order on one warehouse
//! connection, with the store work of later days overlapped (`--days-parallel N`).
//!
//! ```text
//! day k     : [run record] [wait for its archive] [load ── merge ── commit] [quarantine, curate]
//! day k+1   :   [list ── archive (ahead, own task)]                          [run record] [load …]
//! day k+N-1 :   [list ── archive (ahead, own task)]
//! ```
//!
//! Days are independent, but a merge holds the warehouse's transaction (and its advisory
//! lock), so merges stay one at a time and in day order. What can overlap is the work that
//! touches the stores only: the list and archive phases ([`super::list_and_archive`]). While
//! day k is in its turn, the list and archive phases of days k+1 .. k+N-1 run ahead on tasks
//! of their own; when day k is over, day k+N starts ahead and day k+1 takes its turn.
//! Parsing is not run ahead: it streams into the load's COPY, and parsing a day before its
//! turn would hold the parsed day in memory (the load's memory bound is a few batches).
//!
//! What `etl.load_run` says of a day archived ahead: its run starts when its turn comes (the
//! record's `started_at`, its id, its phases all belong to that turn); `list_ms` is 0 and
//! `archive_ms` is the time the turn **waited** for the work done ahead (0 when it was
//! already finished), so a run's phase times still add up to its wall time. The work's own
//! durations are logged (`archived ahead`, with `list_ms`, `archive_ms` and `waited_ms`).
//! A day whose list or archive failed ahead is recorded, in its turn, as failed in that
//! phase, with that error.
//!
//! A failure stops the back-fill: the days already committed stay; the days ahead are not
//! merged, and their tasks are aborted. What they archived stays in the lake, which is
//! harmless: archiving is idempotent (an identical file is recognised, not copied again) and
//! a later run of the day removes the temporary files an aborted copy may leave.
//!
//! With `days_parallel` 1 nothing runs ahead: the days run exactly as `run_day` runs each.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::NaiveDate;

use super::{
    begin, connect, end, list_and_archive, no_events, run_day_on, Listed, Phase, PhaseLog,
    Progress, RunConfig, RunEvent, RunReport,
};
use crate::error::{Error, Result};
use crate::warehouse::{PhaseTimes, RunCounts};

/// What a back-fill did: the reports of the days that succeeded, in day order, and the
/// error that stopped it, if one did.
#[derive(Debug)]
pub struct Backfill {
    /// One per day that succeeded, in day order.
    pub reports: Vec<RunReport>,
    /// The failure that stopped the back-fill (its day is the one after the last report).
    pub error: Option<Error>,
}

/// Runs the days `from..=to` in day order, each as its own run, overlapping the list and
/// archive phases of up to [`RunConfig::days_parallel`] days (see the module documentation of
/// `run/backfill.rs`); stops at the first failure. Progress events come from the day in its
/// turn only.
pub async fn run_backfill(
    config: &RunConfig,
    from: NaiveDate,
    to: NaiveDate,
    events: &(dyn Fn(&RunEvent<'_>) + Sync),
) -> Backfill {
    let mut done = Backfill {
        reports: Vec::new(),
        error: None,
    };
    if to < from {
        done.error = Some(Error::Config(format!(
            "back-fill range {from} .. {to} is empty (--to before --from)"
        )));
        return done;
    }
    let mut wh = match connect(config, from).await {
        Ok(wh) => wh,
        Err(e) => {
            done.error = Some(e);
            return done;
        }
    };
    let days: Vec<NaiveDate> = from.iter_days().take_while(|d| *d <= to).collect();
    let window = config.days_parallel.max(1);
    let mut ahead: VecDeque<Ahead> = VecDeque::new();
    let mut next = 1;
    for (i, &day) in days.iter().enumerate() {
        // Days i+1 .. i+window-1 run ahead while day i takes its turn.
        next = next.max(i + 1);
        while next < days.len() && next < i + window {
            ahead.push_back(Ahead::spawn(config, days[next]));
            next += 1;
        }
        let mine = match ahead.front() {
            Some(a) if a.day == day => ahead.pop_front(),
            _ => None,
        };
        match run_day_on(&mut wh, config, day, mine, events).await {
            Ok(report) => done.reports.push(report),
            Err(e) => {
                // The day's failure is logged (once, as an error) by its run.
                if !ahead.is_empty() {
                    let not_merged: Vec<String> = ahead.iter().map(|a| a.day.to_string()).collect();
                    tracing::warn!(%day, ?not_merged, "back-fill stopped: the days archived ahead are not loaded");
                }
                done.error = Some(e);
                break;
            }
        }
    }
    // Dropping what is still ahead (after a failure) aborts it.
    drop(ahead);
    done
}

/// The list and archive phases of one day, running ahead on a task of their own.
pub(super) struct Ahead {
    day: NaiveDate,
    task: tokio::task::JoinHandle<AheadDone>,
}

/// What the work ahead left: the listing (or the error), the phase it was in last, and the
/// time it took per phase.
struct AheadDone {
    listed: Result<Listed>,
    phase: Phase,
    times: PhaseTimes,
}

impl Ahead {
    /// Starts listing and archiving `day` now, on a new task. It reports no progress events
    /// and records nothing in the warehouse (the day's run does not exist yet).
    fn spawn(config: &RunConfig, day: NaiveDate) -> Ahead {
        let config = config.clone();
        let task = tokio::spawn(async move {
            let mut progress = Progress {
                phase: Phase::List,
                log: PhaseLog::detached(),
                counts: RunCounts::default(),
                phases: PhaseTimes::default(),
            };
            let listed = list_and_archive(&config, day, &mut progress, &no_events).await;
            tracing::info!(
                %day,
                ok = listed.is_ok(),
                list_ms = ms(progress.phases.list),
                archive_ms = ms(progress.phases.archive),
                "archived ahead"
            );
            AheadDone {
                listed,
                phase: progress.phase,
                times: progress.phases,
            }
        });
        Ahead { day, task }
    }

    /// The day's turn: waits (as its archive phase) for the work ahead to finish and takes
    /// its result. A failure ahead becomes the run's failure, in the phase it happened in.
    pub(super) async fn join(
        mut self,
        progress: &mut Progress,
        events: &(dyn Fn(&RunEvent<'_>) + Sync),
    ) -> Result<Listed> {
        let t = begin(progress, events, Phase::Archive, 0, 0).await;
        let joined = (&mut self.task).await;
        progress.phases.archive = end(events, Phase::Archive, t);
        let done = joined.map_err(|e| Error::Internal {
            context: format!("archiving {} ahead: the task failed: {e}", self.day),
        })?;
        tracing::info!(
            day = %self.day,
            list_ms = ms(done.times.list),
            archive_ms = ms(done.times.archive),
            waited_ms = ms(progress.phases.archive),
            "took the archive done ahead"
        );
        if done.listed.is_err() {
            progress.phase = done.phase;
        }
        done.listed
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        // A no-op once the task has finished (joined); otherwise the back-fill has stopped
        // and the day will not be loaded.
        self.task.abort();
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}
