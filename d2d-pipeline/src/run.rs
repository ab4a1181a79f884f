//! The daily run: one landing day from the landing store, through the lake, into the warehouse.
//!
//! For day D, [`run_day`]:
//!
//! 1. records the run as `running` in `etl.load_run` (applying pending migrations first, and
//!    recording the runs that died as `abandoned`);
//! 2. **lists** the landing objects of D ([`lake::list_day_report`]: the date in the file name
//!    decides; objects that look like event files but cannot be loaded — a key that cannot be
//!    a lake key, a link leading out of the landing folder, a name breaking the day rule — are
//!    refused one by one and reported, never failing the day); removes the temporary files
//!    that killed runs left in the day's lake partitions;
//! 3. **archives** each one to `raw/dt=D/<key>` in the lake, verified by size and SHA-256
//!    ([`lake::archive_day`]; on S3 by the checksum S3 computes over a server-side copy, so each
//!    landing byte crosses the network once per run, when step 4 reads the lake copy; a landing file rewritten under an archived name is refused unless
//!    [`LakeOptions::replace_changed`]), then takes **the day as the lake holds it**: the files
//!    just archived plus every other file of `raw/dt=D/` archived by earlier runs
//!    ([`lake::with_archived_rest`]), and records that file manifest; with `from_lake` the
//!    landing store is not read and the day is `raw/dt=D/` alone ([`lake::list_archived`]);
//! 4. **loads**: reads the archived copies from the lake (each checked against the manifest's
//!    SHA-256), parses them in batches, files in parallel on rayon's threads, and streams the
//!    rows into staging with binary COPY — three stages that overlap, joined by bounded
//!    queues, so memory is bounded by a few batches, not the day (`run/stream.rs`); gzip files
//!    are decompressed; refused lines and files go to a quarantine that spills to a temporary
//!    file past a megabyte; with [`RunConfig::max_reject_ratio`], a day with a larger share of
//!    refused lines fails here, before anything is committed;
//! 5. **merges** (`CALL dwh.merge_day`), computes the distances of the (period, vehicle) pairs
//!    the day changes with `d2d_model::distance` (from the fixes spilled while parsing and the
//!    neighbouring days' fixes; the day is not read back), and commits: one transaction from
//!    the first COPY to the commit, so a failure leaves the warehouse as it was;
//! 6. writes the day's refused lines to `quarantine/dt=D/rejects.ndjson` (replacing any
//!    earlier file) — after the commit, so it never describes a load that did not happen;
//! 7. writes the day's **curated** Parquet files (`curated/…`, see [`crate::curated`]) from
//!    the committed warehouse: the day's facts and the distance partitions that changed;
//! 8. with `move_landing`, deletes the landing objects archived by this run (only now: archive
//!    verified and load committed);
//! 9. closes the run record as `succeeded`, or `failed` with the error.
//!
//! Once the commit has landed the run is recorded as `succeeded` whatever follows; if step 6,
//! 7 or 8 then fails, the record's `error` says `quarantine: …`, `curate: …` or `cleanup: …`
//! and the run
//! returns [`Error::AfterCommit`] (an alert-worthy failure that leaves the new load in place;
//! re-running the day finishes the work).
//!
//! A run that dies (killed, machine lost) stays `running` until the next run of any day finds
//! its session gone and records it as `abandoned`, with the phase it died in and whether its
//! load had committed (see [`Warehouse::abandon_dead_runs`]). The phase is written as each one
//! begins, on a second connection of the run. Test-only: `D2D_TEST_PAUSE_AT=<phase>` stops a
//! run on entering that phase (`run/phase_log.rs`), so tests can kill it there.
//!
//! Running a day again gives the same warehouse; late files are picked up. Landing files may
//! vanish (`--move`, retention), so the **lake** defines the day: a file leaves day D only when
//! it is deleted from the lake's `raw/dt=D/` and D is re-run (the warehouse is keyed by landing
//! day and object).
//!
//! [`run_days`] / [`run_backfill`] run a range of days in day order on one warehouse
//! connection; with [`RunConfig::days_parallel`] above 1 the next days are listed, archived,
//! read and parsed ahead (steps 2 to 4 up to staging, which touch the stores and the CPU
//! only) while a day copies, merges and commits: each day ahead stages its rows into a spool
//! on local disk (about the size of its staging rows; memory stays bounded by a few batches
//! per day in flight), which its turn streams into COPY unparsed (`run/backfill.rs`).

mod backfill;
pub mod metrics;
mod phase_log;
mod stream;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::NaiveDate;

use crate::curated::{self, CuratedReport};
use crate::error::{Error, Result};
use crate::lake::{self, ArchiveAction, ArchivedFile, DayLayout, LakeOptions, Quarantine};
use crate::store::{CopyMethod, Store, StoreOptions};
use crate::warehouse::{
    DatabaseUrl, DayLoad, DayRows, LoadOptions, ManifestEntry, PhaseTimes, RunCounts, RunId,
    RunStart, RunStatus, Warehouse,
};
use phase_log::PhaseLog;

pub use backfill::{run_backfill, Backfill};

/// Everything a run needs to know.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    /// The landing store: `s3://bucket/prefix` or a folder.
    pub landing: String,
    /// The lake store: `s3://bucket/prefix` or a folder.
    pub lake: String,
    /// libpq URL of the warehouse (see [`crate::warehouse::DatabaseUrl`] for TLS).
    pub database_url: String,
    /// How to list the landing store for one day.
    pub layout: DayLayout,
    /// Rebuild from the lake alone; the landing store is not read.
    pub from_lake: bool,
    /// Delete the landing objects after a verified archive and a committed load.
    pub move_landing: bool,
    /// Treat a day without files — none in landing and none in the lake's `raw/dt=D/` — as a
    /// success (loads nothing, so it also removes what an earlier load of the day put in the
    /// warehouse); by default it is an error, since it usually means a wrong date, store or
    /// layout.
    pub allow_empty: bool,
    /// The distance rule and other load settings.
    pub load: LoadOptions,
    /// Concurrency of the lake steps (and of reading files to parse), and whether a landing
    /// file rewritten under an archived name may replace the lake's copy.
    pub lake_options: LakeOptions,
    /// How to reach S3 (timeouts and retries included).
    pub store_options: StoreOptions,
    /// How long connecting to the warehouse may take; `None`: the URL's `connect_timeout`, or
    /// [`crate::warehouse::DEFAULT_CONNECT_TIMEOUT`] (10 s) when it sets none.
    pub db_connect_timeout: Option<Duration>,
    /// Files parsed together (one rayon batch).
    pub batch_files: usize,
    /// Bytes parsed together at most (a larger file is read from the lake in pieces of this
    /// size, cut at line ends). The load holds a few batches at once (read, parsed, being
    /// copied), so this bounds its memory, whatever the size of the files and of their lines:
    /// about 8 × `batch_bytes` in all.
    pub batch_bytes: u64,
    /// Fail the day, before its merge commits, when refused lines exceed this share of its
    /// non-blank lines (`0.01` = 1 %); `None` (the default) accepts any share.
    pub max_reject_ratio: Option<f64>,
    /// In a back-fill ([`run_days`]), days in flight at once: while one day loads and merges,
    /// up to `days_parallel - 1` later days are listed, archived, read and parsed ahead on
    /// tasks of their own, each staging its rows into a spool on local disk
    /// ([`RunConfig::spool_dir`]); COPY, merges and commits stay one at a time, in day order
    /// (`run/backfill.rs`). 1 (the default) runs the days strictly one after another.
    pub days_parallel: usize,
    /// Where a day parsed ahead keeps its spool (a temporary folder per day, about the size
    /// of the day's staging rows, removed once the day is loaded, fails or is abandoned);
    /// `None` (the default): the OS temporary folder.
    pub spool_dir: Option<PathBuf>,
}

impl RunConfig {
    /// A configuration with the defaults: scan listing, no move, no speed filter,
    /// 64 files or 8 MiB per parse batch, S3 settings from the environment.
    pub fn new(
        landing: impl Into<String>,
        lake: impl Into<String>,
        database_url: impl Into<String>,
    ) -> Self {
        Self {
            landing: landing.into(),
            lake: lake.into(),
            database_url: database_url.into(),
            layout: DayLayout::default(),
            from_lake: false,
            move_landing: false,
            allow_empty: false,
            load: LoadOptions::default(),
            lake_options: LakeOptions::default(),
            store_options: StoreOptions::from_env(),
            db_connect_timeout: None,
            batch_files: 64,
            batch_bytes: 8 * 1024 * 1024,
            max_reject_ratio: None,
            days_parallel: 1,
            spool_dir: None,
        }
    }

    /// The warehouse URL with [`RunConfig::db_connect_timeout`] applied.
    fn warehouse_url(&self) -> Result<DatabaseUrl> {
        let mut url = DatabaseUrl::parse(&self.database_url)?;
        if let Some(limit) = self.db_connect_timeout {
            url.config.connect_timeout(limit);
        }
        Ok(url)
    }

    fn check(&self) -> Result<()> {
        if self.from_lake && self.move_landing {
            return Err(Error::Config(
                "--move needs files archived from landing in this run; it cannot be combined with --from-lake".into(),
            ));
        }
        if let Some(r) = self.max_reject_ratio {
            if !(0.0..=1.0).contains(&r) {
                return Err(Error::Config(format!(
                    "--max-reject-ratio must be between 0 and 1, not {r}"
                )));
            }
        }
        if self.days_parallel == 0 {
            return Err(Error::Config("--days-parallel must be at least 1".into()));
        }
        if self.batch_files == 0 || self.batch_bytes == 0 {
            return Err(Error::Config(
                "parse batches must hold at least one file".into(),
            ));
        }
        Ok(())
    }
}

/// A step of the run, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Connecting, migrating, recording the run.
    Setup,
    /// Listing the day's landing objects (or, from the lake, listing and checksumming them).
    List,
    /// Copying to the lake and verifying.
    Archive,
    /// Reading, parsing and copying into staging.
    Load,
    /// `CALL dwh.merge_day` and commit.
    Merge,
    /// Writing the refused lines to the lake (after the commit).
    Quarantine,
    /// Writing the curated Parquet zone from the committed warehouse.
    Curate,
    /// Deleting landing objects (`--move`).
    Cleanup,
}

impl Phase {
    /// Every phase, in run order.
    pub const ALL: [Phase; 8] = [
        Phase::Setup,
        Phase::List,
        Phase::Archive,
        Phase::Load,
        Phase::Merge,
        Phase::Quarantine,
        Phase::Curate,
        Phase::Cleanup,
    ];

    /// Short name: `setup`, `list`, `archive`, `load`, `merge`, `quarantine`, `curate`,
    /// `cleanup`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Setup => "setup",
            Self::List => "list",
            Self::Archive => "archive",
            Self::Load => "load",
            Self::Quarantine => "quarantine",
            Self::Curate => "curate",
            Self::Merge => "merge",
            Self::Cleanup => "cleanup",
        }
    }

    /// What the run is doing in this phase, for messages: `archiving`, ...
    pub fn doing(&self) -> &'static str {
        match self {
            Self::Setup => "connecting to or recording in the warehouse",
            Self::List => "listing",
            Self::Archive => "archiving",
            Self::Load => "parsing and loading",
            Self::Quarantine => "writing the quarantine",
            Self::Curate => "writing the curated zone",
            Self::Merge => "merging",
            Self::Cleanup => "deleting landing objects",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a run reports while it works, for progress bars and logs.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent<'a> {
    /// The run of `day` is recorded as `run`.
    DayStarted {
        /// The landing day.
        day: NaiveDate,
        /// Its id in `etl.load_run`.
        run: RunId,
    },
    /// A phase begins; totals are 0 when not known in advance.
    PhaseStarted {
        /// Which.
        phase: Phase,
        /// Files it will handle.
        files: u64,
        /// Bytes it will handle.
        bytes: u64,
    },
    /// A phase finished some files.
    Progress {
        /// Which.
        phase: Phase,
        /// Files done so far.
        files_done: u64,
        /// Files in the phase.
        files_total: u64,
        /// Bytes done so far.
        bytes_done: u64,
        /// Bytes in the phase.
        bytes_total: u64,
        /// The last file finished.
        key: &'a str,
    },
    /// A phase is over.
    PhaseFinished {
        /// Which.
        phase: Phase,
        /// How long it took.
        elapsed: Duration,
    },
}

/// A timeout as `daily_load`'s flags and the Lambda's variables give it: a positive, finite
/// number of seconds below 10⁹, fractions allowed (`2`, `0.5`); the error quotes the text.
pub fn parse_seconds(text: &str) -> std::result::Result<Duration, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!("{text:?} is not a positive number of seconds")),
    }
}

/// A progress callback that ignores every event.
pub fn no_events(_: &RunEvent<'_>) {}

/// What [`refresh_distances`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct RefreshReport {
    /// `dwh.vehicle_period_distance` rows written.
    pub distance_rows: u64,
    /// The curated distance partitions rewritten, deleted or left alone.
    pub curated: CuratedReport,
}

/// Recomputes every distance of the warehouse under `config.load`'s rule (which becomes the
/// warehouse's) and rewrites the curated distance partitions that changed: for a new rule
/// without loading a day, or after a repair. Loads no day and records no run; the warehouse
/// is migrated first if it is behind. `daily_load --refresh-distances` runs it.
pub async fn refresh_distances(config: &RunConfig) -> Result<RefreshReport> {
    let mut wh = Warehouse::connect_with(&config.warehouse_url()?).await?;
    if !wh.pending_migrations().await?.is_empty() {
        let report = wh.migrate().await?;
        tracing::info!(applied = ?report.applied, "applied warehouse migrations");
    }
    let distance_rows = wh.refresh_distances(config.load).await?;
    tracing::info!(distance_rows, "distances recomputed");
    let (lake, _) = open_stores(&RunConfig {
        from_lake: true,
        ..config.clone()
    })
    .await?;
    let curated = curated::write_distances(&mut wh, &lake).await?;
    Ok(RefreshReport {
        distance_rows,
        curated,
    })
}

/// What a successful run did.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    /// The landing day.
    pub day: NaiveDate,
    /// Its id in `etl.load_run`.
    pub run: RunId,
    /// Rebuilt from the lake.
    pub from_lake: bool,
    /// Files, bytes, lines, events, duplicates, rejects, rows written per table.
    pub counts: RunCounts,
    /// Time per phase.
    pub phases: PhaseTimes,
    /// Files copied to the lake inside the storage service.
    pub copied_server_side: u64,
    /// Files copied to the lake through this process.
    pub copied_through: u64,
    /// Files the lake already held, identical.
    pub already_archived: u64,
    /// Files of the day taken from the lake alone: archived by earlier runs, no longer (or
    /// not) listed in landing this time.
    pub kept_from_lake: u64,
    /// The quarantine object written, if there were rejects.
    pub quarantine: Option<lake::QuarantineFile>,
    /// What the curated zone's write did (`None` if it did not get that far).
    pub curated: Option<CuratedReport>,
    /// Landing objects deleted (`--move`).
    pub landing_deleted: u64,
    /// Landing objects refused as a whole, with why ([`lake::RefusedFile`]): those of this
    /// day are also in `etl.reject` (line 0) and the quarantine; those of no day (an
    /// impossible date) only here.
    pub refused: Vec<lake::RefusedFile>,
    /// Temporary files of killed writers removed from the day's lake partitions.
    pub stale_temporaries_removed: u64,
}

/// Runs landing day `day`; see the module documentation. Progress goes to `events`.
///
/// On failure the returned [`Error::Run`] names the day, the run id (when the run could be
/// recorded) and the phase; the run is recorded as failed with the error text and the
/// warehouse is unchanged. A failure after the commit is an [`Error::AfterCommit`] instead
/// (see the module docs).
pub async fn run_day(
    config: &RunConfig,
    day: NaiveDate,
    events: &(dyn Fn(&RunEvent<'_>) + Sync),
) -> Result<RunReport> {
    let mut wh = connect(config, day).await?;
    run_day_on(&mut wh, config, day, None, events).await
}

/// Runs the days `from..=to` in day order, each as its own run; stops at the first failure.
/// With [`RunConfig::days_parallel`] above 1, later days are listed, archived and parsed
/// ahead while earlier ones load and merge (see [`run_backfill`], which also returns the
/// reports of the days done before a failure).
pub async fn run_days(
    config: &RunConfig,
    from: NaiveDate,
    to: NaiveDate,
    events: &(dyn Fn(&RunEvent<'_>) + Sync),
) -> Result<Vec<RunReport>> {
    let done = run_backfill(config, from, to, events).await;
    match done.error {
        None => Ok(done.reports),
        Some(e) => Err(e),
    }
}

async fn connect(config: &RunConfig, day: NaiveDate) -> Result<Warehouse> {
    let setup = |source| Error::Run {
        day,
        run_id: None,
        phase: Phase::Setup.doing(),
        source: Box::new(source),
    };
    let result = async {
        config.check()?;
        d2d_model::landing::check_day(day).map_err(|e| Error::Config(e.to_string()))?;
        let mut wh = Warehouse::connect_with(&config.warehouse_url()?).await?;
        // A database without the schema (or behind this build) is brought up to date; one
        // that is current is only read, so a loader role without DDL rights can run the job.
        if !wh.pending_migrations().await?.is_empty() {
            let report = wh.migrate().await?;
            tracing::info!(applied = ?report.applied, "applied warehouse migrations");
        }
        Ok(wh)
    }
    .await;
    result.map_err(|source| {
        let error = setup(source);
        tracing::error!(%day, phase = %Phase::Setup, error = %error, "run failed");
        error
    })
}

/// What a run has gathered so far, kept apart so that a failure still reports it.
struct Progress {
    phase: Phase,
    log: PhaseLog,
    counts: RunCounts,
    phases: PhaseTimes,
}

/// Runs `day` on `wh`; with `ahead`, its list, archive and parse were started earlier
/// (a back-fill) and the run takes their results, waiting for them if need be.
async fn run_day_on(
    wh: &mut Warehouse,
    config: &RunConfig,
    day: NaiveDate,
    ahead: Option<backfill::Ahead>,
    events: &(dyn Fn(&RunEvent<'_>) + Sync),
) -> Result<RunReport> {
    let started = Instant::now();
    // What killed runs left on local disk goes first; live runs' spills are locked and stay.
    crate::scratch::remove_dead(&std::env::temp_dir());
    if let Some(dir) = &config.spool_dir {
        crate::scratch::remove_dead(dir);
    }
    let start = RunStart {
        day,
        from_lake: config.from_lake,
        move_landing: config.move_landing,
        // Recorded for good in etl.load_run: without credentials put in the URLs.
        landing: (!config.from_lake).then(|| crate::alert::redact(&config.landing, &[])),
        lake: Some(crate::alert::redact(&config.lake, &[])),
    };
    let setup = |source| Error::Run {
        day,
        run_id: None,
        phase: Phase::Setup.doing(),
        source: Box::new(source),
    };
    let log = Warehouse::connect(&config.database_url)
        .await
        .map_err(setup)?;
    let run = wh.start_run(&start).await.map_err(setup)?;
    let key = wh.run_key(run).await.map_err(setup)?;
    tracing::info!(%day, run = run.0, from_lake = config.from_lake, "run started");
    events(&RunEvent::DayStarted { day, run });
    phase_log::pause_if_asked(run, Phase::Setup).await;
    let mut progress = Progress {
        phase: Phase::Setup,
        log: PhaseLog::new(log, run, key),
        counts: RunCounts::default(),
        phases: PhaseTimes::default(),
    };
    let mut loaded = match steps(wh, config, day, run, ahead, &mut progress, events).await {
        Ok(loaded) => loaded,
        Err(source) => {
            progress.phases.total = started.elapsed();
            let error = Error::Run {
                day,
                run_id: Some(run.0),
                phase: progress.phase.doing(),
                source: Box::new(source),
            };
            // Every variant's message already carries its cause; a URL in it loses its
            // credentials before it is logged and recorded.
            let text = crate::alert::redact(&error.to_string(), &[]);
            tracing::error!(%day, run = run.0, phase = %progress.phase, error = %text, "run failed");
            if let Err(e) = record(wh, config, run, RunStatus::Failed, &progress, Some(&text)).await
            {
                tracing::error!(run = run.0, error = %e, "could not record the failure of the run");
            }
            return Err(error);
        }
    };

    // The load is committed: from here on the run has succeeded, whatever else fails.
    let after = after_commit(wh, config, &mut loaded, &mut progress, events).await;
    progress.phases.total = started.elapsed();
    let mut report = loaded.report;
    report.phases = progress.phases;
    report.counts = progress.counts;
    let text = after
        .as_ref()
        .err()
        .map(|e| crate::alert::redact(&format!("{}: {e}", progress.phase.name()), &[]));
    let recorded = record(
        wh,
        config,
        run,
        RunStatus::Succeeded,
        &progress,
        text.as_deref(),
    )
    .await;
    let after_commit_error = |phase: &'static str, source: Error| {
        let error = Error::AfterCommit {
            day,
            run_id: Some(run.0),
            phase,
            source: Box::new(source),
        };
        let text = crate::alert::redact(&error.to_string(), &[]);
        tracing::error!(%day, run = run.0, phase, error = %text, "run committed its load, then failed");
        error
    };
    if let Err(source) = after {
        return Err(after_commit_error(progress.phase.doing(), source));
    }
    if let Err(source) = recorded {
        return Err(after_commit_error("recording the run", source));
    }
    tracing::info!(
        %day,
        run = run.0,
        files = report.counts.files,
        events = report.counts.events,
        rejects = report.counts.rejects,
        total_ms = report.phases.total.as_millis() as u64,
        "run succeeded"
    );
    Ok(report)
}

/// Closes the run record. The connection may be what failed, so one fresh connection is tried
/// before giving up; the first error is logged, the last returned.
async fn record(
    wh: &mut Warehouse,
    config: &RunConfig,
    run: RunId,
    status: RunStatus,
    progress: &Progress,
    text: Option<&str>,
) -> Result<()> {
    let counts = &progress.counts;
    let phases = &progress.phases;
    let Err(first) = wh.finish_run(run, status, counts, phases, text).await else {
        return Ok(());
    };
    // The server answered and refused: trying again will not change its mind.
    if server_refused(&first) {
        return Err(first);
    }
    tracing::warn!(run = run.0, error = %first, "could not close the run record; reconnecting");
    // A server that restarted refuses connections for a few seconds: try again for a while
    // (about half a minute in all) before leaving the record to the next run.
    let mut last = first;
    for wait in RECORD_RETRY_WAITS {
        tokio::time::sleep(wait).await;
        let fresh = match Warehouse::connect_with(&config.warehouse_url()?).await {
            Ok(fresh) => fresh,
            Err(e) => {
                last = e;
                continue;
            }
        };
        match fresh.finish_run(run, status, counts, phases, text).await {
            Ok(()) => {
                *wh = fresh;
                return Ok(());
            }
            Err(e) if server_refused(&e) => return Err(e),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Whether `e` is PostgreSQL's own answer (an SQLSTATE), not a lost connection.
fn server_refused(e: &Error) -> bool {
    matches!(e, Error::Database { source, .. } if source.as_db_error().is_some())
}

/// The waits before each new try at closing a run's record (see `record`).
const RECORD_RETRY_WAITS: [Duration; 6] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(8),
    Duration::from_secs(16),
];

async fn begin(
    progress: &mut Progress,
    events: &(dyn Fn(&RunEvent<'_>) + Sync),
    phase: Phase,
    files: u64,
    bytes: u64,
) -> Instant {
    progress.phase = phase;
    progress.log.enter(phase).await;
    events(&RunEvent::PhaseStarted {
        phase,
        files,
        bytes,
    });
    Instant::now()
}

fn end(events: &(dyn Fn(&RunEvent<'_>) + Sync), phase: Phase, started: Instant) -> Duration {
    let elapsed = started.elapsed();
    events(&RunEvent::PhaseFinished { phase, elapsed });
    tracing::info!(
        phase = phase.name(),
        ms = elapsed.as_millis() as u64,
        "phase done"
    );
    elapsed
}

fn lake_progress<'a>(
    events: &'a (dyn Fn(&RunEvent<'_>) + Sync),
    phase: Phase,
) -> impl Fn(lake::Progress<'_>) + Sync + 'a {
    move |p: lake::Progress<'_>| {
        events(&RunEvent::Progress {
            phase,
            files_done: p.files_done as u64,
            files_total: p.files_total as u64,
            bytes_done: p.bytes_done,
            bytes_total: p.bytes_total,
            key: p.key,
        })
    }
}

/// A committed load and what the steps after the commit need.
struct Loaded {
    report: RunReport,
    lake: Store,
    landing: Option<Store>,
    /// The files this run archived from landing (the ones `--move` may delete).
    archived_now: Vec<ArchivedFile>,
    quarantine: Quarantine,
    /// The day's vehicle rows as committed, for the curated zone (taken by it).
    rows: Option<DayRows>,
}

/// Everything up to and including the commit, phase by phase.
async fn steps(
    wh: &mut Warehouse,
    config: &RunConfig,
    day: NaiveDate,
    run: RunId,
    mut ahead: Option<backfill::Ahead>,
    progress: &mut Progress,
    events: &(dyn Fn(&RunEvent<'_>) + Sync),
) -> Result<Loaded> {
    let Listed {
        lake,
        landing,
        stale,
        files: (day_files, archived_now, refused),
    } = match &mut ahead {
        None => list_and_archive(config, day, progress, events).await?,
        Some(ahead) => ahead.archived(progress, events).await?,
    };
    let mut report = new_report(config, day, run, &day_files, landing.is_some());
    report.stale_temporaries_removed = stale;
    progress.counts.files = day_files.len() as u64;
    progress.counts.bytes = day_files.iter().map(|f| f.size).sum();
    record_manifest(wh, run, day, &day_files).await?;

    let (load, quarantine, unreadable) = match ahead {
        None => {
            let mut load = wh.begin_day(day, config.load).await?;
            let (quarantine, unreadable) = stage_day(
                config, day, &lake, &day_files, &refused, &mut load, progress, events,
            )
            .await?;
            (load, quarantine, unreadable)
        }
        Some(ahead) => ahead.load_parsed(wh, config, progress, events).await?,
    };
    report.refused = refused;
    report.refused.extend(unreadable);
    check_reject_ratio(config, load.lines(), load.rejects())?;
    let rows = merge(load, progress, events).await?;
    Ok(Loaded {
        report,
        lake,
        landing,
        archived_now,
        quarantine,
        rows: Some(rows),
    })
}

/// What the list and archive phases leave for the load.
struct Listed {
    lake: Store,
    landing: Option<Store>,
    /// Temporary files of killed writers removed from the day's lake partitions.
    stale: u64,
    files: DayFiles,
}

/// The list and archive phases: opens the stores, removes the day's stale temporaries, and
/// lists and archives the day (or, from the lake, lists what the lake holds). Touches the
/// stores only, never the warehouse, so a back-fill can run it ahead for later days.
async fn list_and_archive(
    config: &RunConfig,
    day: NaiveDate,
    progress: &mut Progress,
    events: &(dyn Fn(&RunEvent<'_>) + Sync),
) -> Result<Listed> {
    // Opening a store can fail (bad URL, unreadable folder): blame the stores, not the
    // warehouse.
    let started = std::time::SystemTime::now();
    progress.phase = Phase::List;
    let (lake, landing) = open_stores(config).await?;
    let stale = lake::remove_stale_temporaries(&lake, day, started).await?;
    let files = match &landing {
        None => list_lake_day(config, &lake, day, progress, events).await?,
        Some(landing) => archive_day(config, landing, &lake, day, progress, events).await?,
    };
    Ok(Listed {
        lake,
        landing,
        stale,
        files,
    })
}

/// The lake, created on first use when it is a folder (a bucket is its owner's to create),
/// and the landing store unless the day is rebuilt from the lake.
async fn open_stores(config: &RunConfig) -> Result<(Store, Option<Store>)> {
    let lake = Store::open_with(&config.lake, &config.store_options).await?;
    if !lake.is_s3() {
        lake.create_if_missing().await?;
    }
    let landing = match config.from_lake {
        true => None,
        false => Some(Store::open_with(&config.landing, &config.store_options).await?),
    };
    Ok((lake, landing))
}

/// The day's files, the ones this run archived from landing (for `--move`), and the landing
/// objects refused as a whole.
type DayFiles = (Vec<ArchivedFile>, Vec<ArchivedFile>, Vec<lake::RefusedFile>);

/// `--from-lake`: the day is what the lake's `raw/dt=D/` holds.
async fn list_lake_day(
    config: &RunConfig,
    lake: &Store,
    day: NaiveDate,
    progress: &mut Progress,
    events: &(dyn Fn(&RunEvent<'_>) + Sync),
) -> Result<DayFiles> {
    let t = begin(progress, events, Phase::List, 0, 0).await;
    let files = lake::list_archived(
        lake,
        day,
        &config.lake_options,
        &lake_progress(events, Phase::List),
    )
    .await?;
    progress.phases.list = end(events, Phase::List, t);
    check_not_empty(
        config,
        day,
        files.is_empty(),
        &format!("the lake {} (raw/dt=)", lake.url()),
    )?;
    Ok((files, Vec::new(), Vec::new()))
}

/// Lists the day in landing, archives it, and takes the day as the lake then holds it.
async fn archive_day(
    config: &RunConfig,
    landing: &Store,
    lake: &Store,
    day: NaiveDate,
    progress: &mut Progress,
    events: &(dyn Fn(&RunEvent<'_>) + Sync),
) -> Result<DayFiles> {
    let t = begin(progress, events, Phase::List, 0, 0).await;
    let lake::DayListing { objects, refused } =
        lake::list_day_report(landing, day, &config.layout).await?;
    for r in &refused {
        tracing::warn!(
            key = r.key,
            code = r.code,
            "refused landing object: {}",
            r.reason
        );
    }
    progress.phases.list = end(events, Phase::List, t);
    let bytes = objects.iter().map(|o| o.size).sum();
    let t = begin(
        progress,
        events,
        Phase::Archive,
        objects.len() as u64,
        bytes,
    )
    .await;
    let archived = lake::archive_day(
        landing,
        lake,
        day,
        &objects,
        &config.lake_options,
        &lake_progress(events, Phase::Archive),
    )
    .await?;
    // Landing files may be gone (moved, expired): the day is what the lake holds.
    let files = lake::with_archived_rest(
        lake,
        day,
        archived.clone(),
        &config.lake_options,
        &lake_progress(events, Phase::Archive),
    )
    .await?;
    progress.phases.archive = end(events, Phase::Archive, t);
    check_not_empty(
        config,
        day,
        files.is_empty(),
        &format!(
            "{} (layout {}) nor the lake {} (raw/dt=){}",
            landing.url(),
            config.layout,
            lake.url(),
            match refused.len() {
                0 => String::new(),
                n => format!(" ({n} landing objects refused, logged above)"),
            }
        ),
    )?;
    Ok((files, archived, refused))
}

/// The report of a run, with what archiving did to each file counted.
fn new_report(
    config: &RunConfig,
    day: NaiveDate,
    run: RunId,
    day_files: &[ArchivedFile],
    from_landing: bool,
) -> RunReport {
    let mut report = RunReport {
        day,
        run,
        from_lake: config.from_lake,
        counts: RunCounts::default(),
        phases: PhaseTimes::default(),
        copied_server_side: 0,
        copied_through: 0,
        already_archived: 0,
        kept_from_lake: 0,
        quarantine: None,
        curated: None,
        landing_deleted: 0,
        refused: Vec::new(),
        stale_temporaries_removed: 0,
    };
    for f in day_files {
        match f.action {
            ArchiveAction::Copied(CopyMethod::ServerSide) => report.copied_server_side += 1,
            ArchiveAction::Copied(CopyMethod::GetPut) => report.copied_through += 1,
            ArchiveAction::AlreadyArchived => report.already_archived += 1,
            ArchiveAction::FromLake if from_landing => report.kept_from_lake += 1,
            ArchiveAction::FromLake => {}
        }
    }
    report
}

async fn record_manifest(
    wh: &mut Warehouse,
    run: RunId,
    day: NaiveDate,
    day_files: &[ArchivedFile],
) -> Result<()> {
    let manifest: Vec<ManifestEntry> = day_files
        .iter()
        .map(|f| ManifestEntry {
            landing_key: f.landing_key.clone(),
            lake_key: f.lake_key.clone(),
            size: f.size,
            sha256: f.sha256_hex(),
        })
        .collect();
    wh.record_manifest(run, day, &manifest).await
}

/// Stages the whole day into `load` (a transaction's, or a spool's for a day ahead): the
/// landing objects of the day refused as a whole, then every file read and parsed
/// ([`load_day`]); returns the quarantine (refused lines and files) and the files that
/// could not be decoded.
#[allow(clippy::too_many_arguments)]
async fn stage_day(
    config: &RunConfig,
    day: NaiveDate,
    lake: &Store,
    day_files: &[ArchivedFile],
    refused: &[lake::RefusedFile],
    load: &mut DayLoad<'_>,
    progress: &mut Progress,
    events: &(dyn Fn(&RunEvent<'_>) + Sync),
) -> Result<(Quarantine, Vec<lake::RefusedFile>)> {
    let ours: Vec<&lake::RefusedFile> = refused.iter().filter(|r| r.day == Some(day)).collect();
    for r in &ours {
        load.add_refused(r).await?;
    }
    let (mut quarantine, unreadable) =
        load_day(config, lake, day_files, load, progress, events).await?;
    for r in ours {
        quarantine.push_file(r)?;
    }
    Ok((quarantine, unreadable))
}

/// Reads, parses and stages the day's files, overlapping the three ([`stream`]); returns the
/// refused lines gathered for the quarantine file, and the files that could not be decoded.
async fn load_day(
    config: &RunConfig,
    lake: &Store,
    day_files: &[ArchivedFile],
    load: &mut DayLoad<'_>,
    progress: &mut Progress,
    events: &(dyn Fn(&RunEvent<'_>) + Sync),
) -> Result<(Quarantine, Vec<lake::RefusedFile>)> {
    let t = begin(
        progress,
        events,
        Phase::Load,
        progress.counts.files,
        progress.counts.bytes,
    )
    .await;
    let mut quarantine = Quarantine::new(load.day());
    let batching = stream::Batching {
        files: config.batch_files,
        bytes: config.batch_bytes,
        concurrency: config.lake_options.concurrency,
    };
    let loaded =
        stream::load_files(lake, day_files, batching, load, &mut quarantine, events).await?;
    progress.phases.parse = loaded.parse;
    end(events, Phase::Load, t);
    Ok((quarantine, loaded.refused))
}

/// With [`RunConfig::max_reject_ratio`], fails a day whose refused lines exceed that share of
/// its non-blank lines. Runs before the merge: a failure commits nothing.
fn check_reject_ratio(config: &RunConfig, lines: u64, rejects: u64) -> Result<()> {
    let Some(max) = config.max_reject_ratio else {
        return Ok(());
    };
    let ratio = if lines == 0 {
        0.0
    } else {
        rejects as f64 / lines as f64
    };
    if ratio > max {
        return Err(Error::TooManyRejects {
            rejects,
            lines,
            ratio,
            max,
        });
    }
    Ok(())
}

/// Copies what staging still lacks, merges the day and commits; returns the day's rows as
/// committed.
async fn merge(
    load: DayLoad<'_>,
    progress: &mut Progress,
    events: &(dyn Fn(&RunEvent<'_>) + Sync),
) -> Result<DayRows> {
    let t = begin(progress, events, Phase::Merge, 0, 0).await;
    let (loaded, rows) = load.commit_with_rows().await?;
    end(events, Phase::Merge, t);
    tracing::info!(
        ms = loaded.distances.as_millis() as u64,
        rows = loaded.rows.vehicle_period_distance,
        "distances computed (part of the merge)"
    );
    progress.phases.copy = loaded.copy;
    progress.phases.merge = loaded.merge;
    progress.counts.lines = loaded.lines;
    progress.counts.events = loaded.events;
    progress.counts.duplicates = loaded.duplicates;
    progress.counts.rejects = loaded.rejects;
    progress.counts.rows = loaded.rows;
    Ok(rows)
}

/// The steps after the commit: the quarantine file, then `--move`'s deletions. A failure here
/// leaves the committed load in place; a re-run of the day repairs both.
async fn after_commit(
    wh: &mut Warehouse,
    config: &RunConfig,
    loaded: &mut Loaded,
    progress: &mut Progress,
    events: &(dyn Fn(&RunEvent<'_>) + Sync),
) -> Result<()> {
    let t = begin(progress, events, Phase::Quarantine, 0, 0).await;
    let quarantine = std::mem::replace(&mut loaded.quarantine, Quarantine::new(loaded.report.day));
    loaded.report.quarantine = quarantine.write(&loaded.lake).await?;
    progress.phases.quarantine = end(events, Phase::Quarantine, t);

    let t = begin(progress, events, Phase::Curate, 0, 0).await;
    let day = loaded.report.day;
    let curated = match loaded.rows.take() {
        Some(rows) => curated::write_day_with_rows(wh, &loaded.lake, day, rows).await?,
        None => curated::write_day(wh, &loaded.lake, day).await?,
    };
    loaded.report.curated = Some(curated);
    progress.phases.curate = end(events, Phase::Curate, t);

    if let (true, Some(landing)) = (config.move_landing, &loaded.landing) {
        let archived = &loaded.archived_now;
        let t = begin(
            progress,
            events,
            Phase::Cleanup,
            archived.len() as u64,
            archived.iter().map(|f| f.size).sum(),
        )
        .await;
        loaded.report.landing_deleted = lake::delete_landing(
            landing,
            &loaded.lake,
            archived,
            &config.lake_options,
            &lake_progress(events, Phase::Cleanup),
        )
        .await? as u64;
        progress.phases.cleanup = end(events, Phase::Cleanup, t);
    }
    Ok(())
}

fn check_not_empty(config: &RunConfig, day: NaiveDate, empty: bool, where_: &str) -> Result<()> {
    if empty && !config.allow_empty {
        return Err(Error::Config(format!(
            "no landing files of {day} in {where_}; check the date and the store, or allow empty days"
        )));
    }
    Ok(())
}

/// Runs `command` with `sh -c`, the failure summary on its standard input and in the
/// environment variable `D2D_ALERT_SUMMARY`, in a scrubbed environment and with secrets
/// redacted from the summary ([`crate::alert::AlertCommand`], which also passes chosen
/// variables on). Waits at most `timeout`; a non-zero exit is an error.
pub async fn run_alert_command(command: &str, summary: &str, timeout: Duration) -> Result<()> {
    crate::alert::AlertCommand::new(command)
        .timeout(timeout)
        .run(summary)
        .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_run_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let config = RunConfig::new("l", "k", "postgres://x");
        let day = "2019-06-01".parse().unwrap();
        assert_send(&run_day(&config, day, &no_events));
    }

    #[test]
    fn seconds_are_positive_finite_and_quoted_when_not() {
        assert_eq!(parse_seconds(" 0.5 "), Ok(Duration::from_millis(500)));
        assert_eq!(parse_seconds("3"), Ok(Duration::from_secs(3)));
        for bad in ["0", "-1", "inf", "NaN", "1e9", "soon", ""] {
            let err = parse_seconds(bad).unwrap_err();
            assert_eq!(err, format!("{bad:?} is not a positive number of seconds"));
        }
    }

    #[test]
    fn config_refuses_move_from_lake() {
        let mut c = RunConfig::new("l", "k", "postgres://x");
        c.check().unwrap();
        c.from_lake = true;
        c.move_landing = true;
        assert!(c.check().unwrap_err().to_string().contains("--from-lake"));
    }

    #[test]
    fn run_errors_name_day_phase_and_cause() {
        let e = Error::Run {
            day: "2019-06-01".parse().unwrap(),
            run_id: Some(3),
            phase: Phase::Merge.doing(),
            source: Box::new(Error::Config("boom".into())),
        };
        assert_eq!(
            e.to_string(),
            "daily run of 2019-06-01 failed while merging: invalid configuration: boom"
        );
    }

    #[tokio::test]
    async fn alert_command_gets_the_summary_and_its_exit_code_counts() {
        let dir = std::env::temp_dir().join(format!("d2d-alert-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("alert.txt");
        let cmd = format!(
            "cat > '{0}' && printf '%s' \"$D2D_ALERT_SUMMARY\" > '{0}.env'",
            out.display()
        );
        run_alert_command(&cmd, "day 2019-06-01 failed", Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "day 2019-06-01 failed\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("alert.txt.env")).unwrap(),
            "day 2019-06-01 failed"
        );
        let err = run_alert_command("exit 3", "x", Duration::from_secs(10))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("exit status: 3"), "{err}");
        let err = run_alert_command("sleep 5", "x", Duration::from_millis(100))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("killed"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
