//! A back-fill: the days `from..=to`, each its own run, in day order on one warehouse
//! connection, with the store work and the parsing of later days overlapped
//! (`--days-parallel N`).
//!
//! ```text
//! day k     : [run record] [wait: archive] [manifest] [wait: parse, COPY spool] [merge] [curate]
//! day k+1   :   [list ─ archive ─ read ─ parse ─▶ spool]   (ahead, on a task of its own)
//! day k+N-1 :   [list ─ archive ─ read ─ parse ─▶ spool]   (ahead, on a task of its own)
//! ```
//!
//! Days are independent, but a merge holds the warehouse's transaction (and its advisory
//! lock), and staging is shared by all loads (one day fills it at a time), so COPY, merges
//! and commits stay one at a time and in day order. Everything before them touches the stores
//! and the CPU only, and runs ahead: while day k is in its turn, days k+1 .. k+N-1 are listed
//! and archived ([`super::list_and_archive`]), then read from the lake and parsed (on rayon's
//! threads, as in a day's own load), each staging its rows into a **spool**: the very binary
//! COPY rows the load would send, one file per staging table, in a temporary folder of its own
//! under [`RunConfig::spool_dir`] (the OS temporary folder by default), with its counts, its
//! quarantine and its unreadable files kept alongside (see `warehouse/load.rs`). When day k is
//! over, day k+N starts ahead and day k+1 takes its turn: it streams its spool into staging as
//! it is (no parsing in the turn), merges and commits.
//!
//! **Bounds.** Memory: each day ahead holds what a day's load holds — a few parse batches
//! (about 8 × `batch_bytes`), one batch of encoded rows, and what grows with the fleet, not the
//! day (the per-vehicle summaries, the lifecycle events, the fixed-size filter of update
//! events, the quarantine's first megabyte) — so N days in flight hold about N times one load,
//! whatever the size of the days. Disk: each spool is about the size of its day's staging rows
//! in PostgreSQL's binary format (62 MB for a generated day of 300 k events and 66 MB of
//! landing files: about the landing bytes); up to N spools exist at once (N − 1 days ahead and
//! the one being copied). A spool is removed as soon as its day is copied, fails, or is
//! abandoned.
//!
//! What `etl.load_run` says of a day done ahead: its run starts when its turn comes (the
//! record's `started_at`, its id, its phases all belong to that turn); `list_ms` is 0,
//! `archive_ms` is the time the turn **waited** for the list and archive done ahead, and
//! `parse_ms` the time it then waited for the parse (each 0 when already finished), while
//! `copy_ms` is the spool's COPY; so a run's phase times still add up to its wall time. The
//! work's own durations are logged (`archived ahead`, `parsed ahead`, with `list_ms`,
//! `archive_ms`, `parse_ms`, `took_ms`, `spool_bytes` and `waited_ms`). The manifest is
//! recorded between the two waits, as a day's own run records it between archive and load. A
//! day whose work failed ahead is recorded, in its turn, as failed in that phase (list,
//! archive, or load for a read, parse or spool failure), with that error; counts, rejects,
//! quarantine and curated output are those of the same day run on its own.
//!
//! A failure stops the back-fill: the days already committed stay; the days ahead are not
//! merged, their tasks are aborted and waited for, and their spools removed before
//! [`run_backfill`] returns. What they archived stays in the lake, which is harmless:
//! archiving is idempotent (an identical file is recognised, not copied again) and a later
//! run of the day removes the temporary files an aborted copy may leave.
//!
//! With `days_parallel` 1 nothing runs ahead and nothing is spooled: the days run exactly as
//! `run_day` runs each. The first day of a back-fill always runs that way (nothing is ahead
//! of it).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use tokio::sync::oneshot;

use super::{
    begin, connect, end, list_and_archive, no_events, run_day_on, stage_day, Listed, Phase,
    PhaseLog, Progress, RunConfig, RunEvent, RunReport,
};
use crate::error::{Error, Result};
use crate::lake::{ArchivedFile, Quarantine, RefusedFile};
use crate::store::Store;
use crate::warehouse::{DayLoad, PhaseTimes, RunCounts, SpooledDay, Warehouse};

/// What a back-fill did: the reports of the days that succeeded, in day order, and the
/// error that stopped it, if one did.
#[derive(Debug)]
pub struct Backfill {
    /// One per day that succeeded, in day order.
    pub reports: Vec<RunReport>,
    /// The failure that stopped the back-fill (its day is the one after the last report).
    pub error: Option<Error>,
}

/// Runs the days `from..=to` in day order, each as its own run, overlapping the list,
/// archive and parse work of up to [`RunConfig::days_parallel`] days (see the module
/// documentation of `run/backfill.rs`); stops at the first failure. Progress events come
/// from the day in its turn only.
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
    if let Err(e) = d2d_model::landing::check_day(to) {
        done.error = Some(Error::Config(e.to_string()));
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
                    tracing::warn!(
                        %day,
                        ?not_merged,
                        "back-fill stopped: the days started ahead are not loaded"
                    );
                }
                done.error = Some(e);
                break;
            }
        }
    }
    // What is still ahead (after a failure) is aborted, and waited for: when the back-fill
    // returns, no spool of it is left.
    for a in ahead {
        a.abort().await;
    }
    done
}

/// One day's work ahead of its turn, on a task of its own: its list and archive phases, then
/// its files read, parsed and staged into a spool.
pub(super) struct Ahead {
    day: NaiveDate,
    /// The listing (sent as soon as the archive is done, so the turn can record the manifest
    /// while the parse goes on), the phase it was in last, and its phase times.
    archived: Option<oneshot::Receiver<(Result<Listed>, Phase, PhaseTimes)>>,
    task: tokio::task::JoinHandle<Result<Parsed>>,
}

/// A day read and parsed ahead: its staging rows in a spool, its quarantine, the files that
/// could not be decoded, and the time the parse took.
pub(super) struct Parsed {
    spooled: SpooledDay,
    quarantine: Quarantine,
    unreadable: Vec<RefusedFile>,
    parse: Duration,
}

impl Ahead {
    /// Starts listing, archiving, reading and parsing `day` now, on a new task. It reports no
    /// progress events and records nothing in the warehouse (the day's run does not exist
    /// yet).
    fn spawn(config: &RunConfig, day: NaiveDate) -> Ahead {
        let config = config.clone();
        let (archived_tx, archived) = oneshot::channel();
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
            // What the parse needs of the listing; the listing itself goes to the turn.
            let mine = listed
                .as_ref()
                .ok()
                .map(|l| (l.lake.clone(), l.files.0.clone(), l.files.2.clone()));
            // The turn may be gone (the back-fill stopped): then so is the reason to parse.
            let sent = archived_tx.send((listed, progress.phase, progress.phases));
            let Some((lake, day_files, refused)) = mine.filter(|_| sent.is_ok()) else {
                return Err(Error::Internal {
                    context: format!("parsing {day} ahead: its list or archive did not succeed"),
                });
            };
            let started = Instant::now();
            let parsed = parse_ahead(&config, day, &lake, &day_files, &refused).await;
            // parse_ms: the parser's own time (as a day's own run records it); took_ms: the
            // whole read, parse and spool.
            tracing::info!(
                %day,
                ok = parsed.is_ok(),
                parse_ms = parsed.as_ref().map_or(0, |p| ms(p.parse)),
                took_ms = ms(started.elapsed()),
                spool_bytes = parsed.as_ref().map_or(0, |p| p.spooled.bytes()),
                "parsed ahead"
            );
            parsed
        });
        Ahead {
            day,
            archived: Some(archived),
            task,
        }
    }

    /// The day's turn, first part: waits (as its archive phase) for the list and archive done
    /// ahead and takes the listing. A failure ahead becomes the run's failure, in the phase
    /// it happened in.
    pub(super) async fn archived(
        &mut self,
        progress: &mut Progress,
        events: &(dyn Fn(&RunEvent<'_>) + Sync),
    ) -> Result<Listed> {
        let t = begin(progress, events, Phase::Archive, 0, 0).await;
        let received = match self.archived.take() {
            Some(rx) => rx.await.ok(),
            None => None,
        };
        progress.phases.archive = end(events, Phase::Archive, t);
        let Some((listed, phase, times)) = received else {
            // The task ended without sending: it panicked (or was aborted).
            let why = match (&mut self.task).await {
                Err(e) => e.to_string(),
                Ok(_) => "it ended without a listing".to_owned(),
            };
            return Err(Error::Internal {
                context: format!("archiving {} ahead: the task failed: {why}", self.day),
            });
        };
        tracing::info!(
            day = %self.day,
            list_ms = ms(times.list),
            archive_ms = ms(times.archive),
            waited_ms = ms(progress.phases.archive),
            "took the archive done ahead"
        );
        if listed.is_err() {
            progress.phase = phase;
        }
        listed
    }

    /// The day's turn, second part, as its load phase: waits for the parse done ahead (the
    /// wait is the run's parse time), then opens the day's load and streams the spool into
    /// staging. Returns the load, ready to merge, the quarantine and the files that could
    /// not be decoded.
    pub(super) async fn load_parsed<'w>(
        mut self,
        wh: &'w mut Warehouse,
        config: &RunConfig,
        progress: &mut Progress,
        events: &(dyn Fn(&RunEvent<'_>) + Sync),
    ) -> Result<(DayLoad<'w>, Quarantine, Vec<RefusedFile>)> {
        let (files, bytes) = (progress.counts.files, progress.counts.bytes);
        let t = begin(progress, events, Phase::Load, files, bytes).await;
        let joined = (&mut self.task).await;
        progress.phases.parse = t.elapsed();
        let parsed = joined.map_err(|e| Error::Internal {
            context: format!("parsing {} ahead: the task failed: {e}", self.day),
        })??;
        tracing::info!(
            day = %self.day,
            parse_ms = ms(parsed.parse),
            waited_ms = ms(progress.phases.parse),
            spool_bytes = parsed.spooled.bytes(),
            "took the parse done ahead"
        );
        let mut load = wh.begin_day(self.day, config.load).await?;
        load.copy_spooled(parsed.spooled).await?;
        end(events, Phase::Load, t);
        Ok((load, parsed.quarantine, parsed.unreadable))
    }

    /// Stops the work ahead and waits until it is dropped, so that its spool is gone.
    async fn abort(mut self) {
        self.task.abort();
        // Cancelled (or finished): either way the task's future, and its spool, are dropped.
        let _ = (&mut self.task).await;
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        // A no-op once the task has finished (joined); otherwise the back-fill has stopped
        // and the day will not be loaded.
        self.task.abort();
    }
}

/// Reads, parses and stages `day` into a spool under [`RunConfig::spool_dir`], as its load
/// phase would into staging ([`stage_day`]).
async fn parse_ahead(
    config: &RunConfig,
    day: NaiveDate,
    lake: &Store,
    day_files: &[ArchivedFile],
    refused: &[RefusedFile],
) -> Result<Parsed> {
    let mut progress = Progress {
        phase: Phase::Load,
        log: PhaseLog::detached(),
        counts: RunCounts::default(),
        phases: PhaseTimes::default(),
    };
    progress.counts.files = day_files.len() as u64;
    progress.counts.bytes = day_files.iter().map(|f| f.size).sum();
    let dir = config.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
    let mut load = DayLoad::spooled(day, config.load, &dir)?;
    let (quarantine, unreadable) = stage_day(
        config,
        day,
        lake,
        day_files,
        refused,
        &mut load,
        &mut progress,
        &no_events,
    )
    .await?;
    Ok(Parsed {
        spooled: load.finish_spool().await?,
        quarantine,
        unreadable,
        parse: progress.phases.parse,
    })
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}
