//! The audit trail of the daily run: `etl.load_run` and `etl.file_manifest`.
//!
//! A run's row is inserted as `running` in its own short transaction before any work, so even
//! a run that dies is on record; it is closed as `succeeded` or `failed` (with the error) at
//! the end. The loader role writes these tables only through functions that run as the
//! warehouse owner (migration 9): they change a run only while it is running, and a closed run
//! never again.
//!
//! While it runs, a run holds a session-level advisory lock on the connection that recorded it
//! and loads (see `SCHEMA.md`), which PostgreSQL releases when that session ends, however the
//! process died. So a dead run is recognisable: the next run of any day closes it as
//! `abandoned` ([`Warehouse::abandon_dead_runs`]) with the phase it died in, and says whether
//! its load had committed, which the merge records in its own transaction.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};

use super::load::RowsLoaded;
use super::{db_error, Warehouse};
use crate::error::Result;

/// Identifies one run in `etl.load_run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(pub i64);

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The secret that a run's phase writes show ([`Warehouse::record_phase`]): only the session
/// that holds the run reads it ([`Warehouse::run_key`]), so no other session can rewrite the
/// phase of a live run. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct RunKey(String);

impl std::fmt::Debug for RunKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunKey(<redacted>)")
    }
}

/// What is known when a run starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStart {
    /// The landing day.
    pub day: NaiveDate,
    /// Rebuilt from the lake alone.
    pub from_lake: bool,
    /// Landing objects are deleted after a verified archive and a successful load.
    pub move_landing: bool,
    /// Where the landing store is (URL or folder), for the record.
    pub landing: Option<String>,
    /// Where the lake is.
    pub lake: Option<String>,
}

/// How a run ended, as [`Warehouse::finish_run`] records it. (A run still going is `running`
/// in the table; one that died is `running` until the next run closes it as `abandoned`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// The load was committed. A step after the commit may still have failed: then the
    /// record's `error` says which (`quarantine: …`, `cleanup: …`).
    Succeeded,
    /// Stopped by an error; the warehouse is as before the run.
    Failed,
}

impl RunStatus {
    /// The value in `etl.load_run.status`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

/// Counts of a run, as far as it got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunCounts {
    /// Source objects of the day.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
    /// Non-blank lines.
    pub lines: u64,
    /// Distinct valid events loaded (`lines == events + duplicates + rejects`).
    pub events: u64,
    /// Events equal to an earlier one of the day.
    pub duplicates: u64,
    /// Refused lines.
    pub rejects: u64,
    /// Rows written per table.
    pub rows: RowsLoaded,
}

/// Wall-clock time per phase of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhaseTimes {
    /// Listing the day's objects.
    pub list: Duration,
    /// Copying them to the lake and verifying.
    pub archive: Duration,
    /// Reading and parsing.
    pub parse: Duration,
    /// COPY into staging.
    pub copy: Duration,
    /// The merge procedure and commit.
    pub merge: Duration,
    /// Writing rejected lines to the lake's quarantine.
    pub quarantine: Duration,
    /// Writing the lake's curated Parquet zone (reported, not yet a column of
    /// `etl.load_run`).
    pub curate: Duration,
    /// Deleting landing objects (`--move`).
    pub cleanup: Duration,
    /// The whole run.
    pub total: Duration,
}

/// One line of the file manifest: a landing object and its verified copy in the lake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// Key in the landing store.
    pub landing_key: String,
    /// Key in the lake.
    pub lake_key: String,
    /// Size in bytes.
    pub size: u64,
    /// Hex SHA-256 of the content.
    pub sha256: String,
}

/// A run left `running` by a session that is gone, closed by [`Warehouse::abandon_dead_runs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbandonedRun {
    /// Its id.
    pub run: RunId,
    /// Its landing day.
    pub day: NaiveDate,
    /// The phase it died in (`setup`, `list`, ... as [`crate::run::Phase::name`]); `None` for
    /// a run started before migration 9, which did not record phases.
    pub phase: Option<String>,
    /// When it entered that phase.
    pub phase_at: Option<DateTime<Utc>>,
    /// When its load was committed, if it was: then the load stands, and only the steps after
    /// the commit (quarantine file, `--move`) are left for a re-run.
    pub committed_at: Option<DateTime<Utc>>,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn n(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Warehouse {
    /// Closes the runs that died as `abandoned` (see the module documentation), then records a
    /// new run as `running` (committed at once), takes its lock on this connection and returns
    /// its id. The run's load must go through this same `Warehouse`, and it must be closed
    /// with [`Warehouse::finish_run`] here too.
    pub async fn start_run(&self, start: &RunStart) -> Result<RunId> {
        for dead in self.abandon_dead_runs().await? {
            tracing::warn!(
                run = dead.run.0,
                day = %dead.day,
                phase = dead.phase.as_deref().unwrap_or("unknown"),
                committed = dead.committed_at.is_some(),
                "an earlier run died; recorded it as abandoned"
            );
        }
        let row = self
            .client
            .query_one(
                "SELECT etl.start_run($1, $2, $3, $4, $5)",
                &[
                    &start.day,
                    &start.from_lake,
                    &start.move_landing,
                    &start.landing,
                    &start.lake,
                ],
            )
            .await
            .map_err(db_error("record the start of the run"))?;
        Ok(RunId(row.get(0)))
    }

    /// Closes every `running` run whose session is gone as `abandoned`, and returns them. A
    /// live run (its session holds its lock) is left alone.
    pub async fn abandon_dead_runs(&self) -> Result<Vec<AbandonedRun>> {
        let rows = self
            .client
            .query(
                "SELECT run_id, landing_day, phase, phase_at, committed_at
                   FROM etl.abandon_dead_runs()",
                &[],
            )
            .await
            .map_err(db_error("close the runs that died"))?;
        Ok(rows
            .iter()
            .map(|r| AbandonedRun {
                run: RunId(r.get(0)),
                day: r.get(1),
                phase: r.get(2),
                phase_at: r.get(3),
                committed_at: r.get(4),
            })
            .collect())
    }

    /// The status of `run` in `etl.load_run` (`running`, `succeeded`, `failed`,
    /// `abandoned`), or `None` if there is no such run.
    pub async fn run_status(&self, run: RunId) -> Result<Option<String>> {
        let row = self
            .client
            .query_opt(
                "SELECT status FROM etl.load_run WHERE run_id = $1",
                &[&run.0],
            )
            .await
            .map_err(db_error(format!("read the status of run {run}")))?;
        Ok(row.map(|r| r.get(0)))
    }

    /// The key of `run`, which this connection must hold (the one [`Warehouse::start_run`]
    /// was called on), for [`Warehouse::record_phase`] on another connection.
    pub async fn run_key(&self, run: RunId) -> Result<RunKey> {
        let row = self
            .client
            .query_one("SELECT etl.run_key($1)::text", &[&run.0])
            .await
            .map_err(db_error(format!("read the key of run {run}")))?;
        Ok(RunKey(row.get(0)))
    }

    /// Records that a live, running run enters `phase` (a [`crate::run::Phase`] name),
    /// committed at once. Any connection that shows the run's `key` may write it: the run's
    /// own is inside its load transaction while it loads and merges.
    pub async fn record_phase(&self, run: RunId, key: &RunKey, phase: &str) -> Result<()> {
        self.client
            .execute(
                "SELECT etl.run_phase($1, $2::text::uuid, $3)",
                &[&run.0, &key.0, &phase],
            )
            .await
            .map_err(db_error(format!("record phase {phase} of run {run}")))?;
        Ok(())
    }

    /// Records the verified archive of the run's files, in one transaction, on the run's own
    /// connection (the one [`Warehouse::start_run`] was called on).
    pub async fn record_manifest(
        &mut self,
        run: RunId,
        day: NaiveDate,
        entries: &[ManifestEntry],
    ) -> Result<()> {
        let tx = self
            .client
            .transaction()
            .await
            .map_err(db_error("begin the file manifest"))?;
        let insert = tx
            .prepare("SELECT etl.record_manifest($1, $2, $3, $4, $5, $6)")
            .await
            .map_err(db_error("prepare the file manifest"))?;
        // Batches keep each statement's arrays small for days with very many files.
        for chunk in entries.chunks(5_000) {
            let landing: Vec<&str> = chunk.iter().map(|e| e.landing_key.as_str()).collect();
            let lake: Vec<&str> = chunk.iter().map(|e| e.lake_key.as_str()).collect();
            let size: Vec<i64> = chunk.iter().map(|e| n(e.size)).collect();
            let sha: Vec<&str> = chunk.iter().map(|e| e.sha256.as_str()).collect();
            tx.execute(&insert, &[&run.0, &day, &landing, &lake, &size, &sha])
                .await
                .map_err(db_error(format!("record the file manifest of run {run}")))?;
        }
        tx.commit()
            .await
            .map_err(db_error("commit the file manifest"))
    }

    /// Closes a run's record with its outcome, counts and phase times, and releases its lock.
    /// Refused for a run that is no longer running, for a run another live session runs, and
    /// for [`RunStatus::Succeeded`] unless the run's load was committed (its merge ran on the
    /// run's own connection) — and for [`RunStatus::Failed`] if it was.
    pub async fn finish_run(
        &self,
        run: RunId,
        status: RunStatus,
        counts: &RunCounts,
        phases: &PhaseTimes,
        error: Option<&str>,
    ) -> Result<()> {
        let r = &counts.rows;
        self.client
            .execute(
                "SELECT etl.finish_run($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                                       $14, $15, $16, $17, $18, $19, $20, $21, $22, $23)",
                &[
                    &run.0,
                    &status.as_str(),
                    &n(counts.files),
                    &n(counts.bytes),
                    &n(counts.lines),
                    &n(counts.events),
                    &n(counts.duplicates),
                    &n(counts.rejects),
                    &n(r.fact_vehicle_event),
                    &n(r.fact_period_event),
                    &n(r.dim_vehicle),
                    &n(r.dim_operating_period),
                    &n(r.vehicle_period_distance),
                    &n(r.reject),
                    &ms(phases.list),
                    &ms(phases.archive),
                    &ms(phases.parse),
                    &ms(phases.copy),
                    &ms(phases.merge),
                    &ms(phases.quarantine),
                    &ms(phases.cleanup),
                    &ms(phases.total),
                    &error,
                ],
            )
            .await
            .map_err(db_error(format!("record the end of run {run}")))?;
        Ok(())
    }
}
