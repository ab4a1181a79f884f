//! The audit trail of the daily run: `etl.load_run` and `etl.file_manifest`.
//!
//! A run's row is inserted as `running` in its own short transaction before any work, so even
//! a run that dies is on record; it is closed as `succeeded` or `failed` (with the error) at
//! the end.

use std::time::Duration;

use chrono::NaiveDate;

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

/// How a run ended (a run still going, or one that died, is `running` in the table: the
/// default of its row, never written by [`Warehouse::finish_run`]).
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

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn n(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Warehouse {
    /// Records a run as `running` (committed at once) and returns its id.
    pub async fn start_run(&self, start: &RunStart) -> Result<RunId> {
        let row = self
            .client
            .query_one(
                "INSERT INTO etl.load_run (landing_day, from_lake, move_landing, landing, lake)
                 VALUES ($1, $2, $3, $4, $5) RETURNING run_id",
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

    /// Records the verified archive of the run's files, in one transaction.
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
            .prepare(
                "INSERT INTO etl.file_manifest (run_id, landing_day, landing_key, lake_key, size, sha256)
                 SELECT $1, $2, * FROM unnest($3::text[], $4::text[], $5::bigint[], $6::text[])",
            )
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

    /// Closes a run's record with its outcome, counts and phase times.
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
                "UPDATE etl.load_run SET status = $2, files = $3, bytes = $4, lines = $5,
                        events = $6, duplicates = $7, rejects = $8,
                        rows_fact_vehicle_event = $9, rows_fact_period_event = $10,
                        rows_dim_vehicle = $11, rows_dim_operating_period = $12,
                        rows_vehicle_period_distance = $13, rows_reject = $14,
                        list_ms = $15, archive_ms = $16, parse_ms = $17, copy_ms = $18,
                        merge_ms = $19, quarantine_ms = $20, cleanup_ms = $21, total_ms = $22,
                        error = $23,
                        finished_at = CASE WHEN $2 = 'running' THEN NULL ELSE clock_timestamp() END
                  WHERE run_id = $1",
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
