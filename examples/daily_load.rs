//! Run with: `cargo run --release --example daily_load -- --date 2019-06-01`
//!
//! The daily job: takes exactly one landing day's files, archives them unchanged in the lake
//! (`raw/dt=D/…`, verified by size and SHA-256), parses and validates them, loads the PostgreSQL
//! warehouse (binary COPY into staging, `CALL dwh.merge_day`, one transaction), records the run
//! in `etl.load_run`, and prints a summary and the BI answer: the average distance travelled
//! by the vehicles of each operating period.
//!
//! ```text
//! daily_load --date 2019-06-01                       one day
//! daily_load --from 2019-06-01 --to 2019-06-07       a back-fill, day by day, in order
//! daily_load --from D1 --to D2 --days-parallel 3     ... archiving up to 2 days ahead of the load
//! daily_load --date D --from-lake                    rebuild D from the lake alone
//! daily_load --date D --move                         delete landing files once archived and loaded
//! daily_load ... --alert-command 'mail -s d2d ops@example.com'
//! daily_load ... --alert-sns-topic arn:aws:sns:eu-central-1:123456789012:d2d-alerts
//! ```
//!
//! Every option can also be set through the environment variable shown by `--help`:
//! `DATABASE_URL`, `D2D_LANDING`, `D2D_LAKE` (an `s3://bucket/prefix` URL or a folder),
//! `D2D_S3_ENDPOINT`, `D2D_ALERT_COMMAND`, ... Defaults load the bundled sample
//! (`testdata/landing`) into a lake folder `./lake`.
//!
//! On a terminal: a progress bar per phase. Off a terminal (cron, a container): JSON log lines
//! on stderr (`RUST_LOG` filters them). Re-running a day is safe and gives the same warehouse.
//! Exit status 0 on success; 1 on failure, with the cause on stderr, the run recorded as
//! failed, and the alert command (if any) run with the failure summary on its standard input
//! and in `D2D_ALERT_SUMMARY` (secrets redacted; the command's environment is scrubbed, see
//! `--alert-env`). A failure *after* the load was committed (writing the
//! quarantine file, deleting landing files with `--move`) exits 3 and alerts too, but the run
//! is recorded as `succeeded` with `error` = `quarantine: …` / `cleanup: …`: the load stands,
//! and re-running the day finishes the work. In a back-fill, the reports of the days that
//! succeeded are printed before the failure. SIGTERM or SIGINT stops the run in flight, which
//! the job records `abandoned` in its phase, and exits 143 or 130. Each day run also writes
//! one CloudWatch EMF line of metrics on stderr (`d2d::pipeline::run::metrics`).
//!
//! Waits are bounded: an S3 endpoint that never answers fails a request within 56.5 s with the
//! defaults (`--s3-connect-timeout 3 --s3-read-timeout 8 --s3-attempts 5`), each retry logged
//! as a warning; PostgreSQL must accept and authenticate within `--db-connect-timeout` (10 s).
//!
//! The day comes from `--date`, or `--from`/`--to`; only when none of them is given, from
//! `D2D_DATE` (so a `D2D_DATE` in the environment never conflicts with a back-fill).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use chrono::NaiveDate;
use clap::{Parser, ValueEnum};
use d2d::model::landing::parse_day;
use d2d::pipeline::alert::{redact, AlertCommand, SnsAlert};
use d2d::pipeline::lake::{DayLayout, LakeOptions};
use d2d::pipeline::run::metrics::{emf_line, Outcome};
use d2d::pipeline::run::{self, Phase, RunConfig, RunEvent, RunReport};
use d2d::pipeline::store::StoreOptions;
use d2d::pipeline::warehouse::{AbandonedRun, LoadOptions, RunId, Warehouse};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Load landing days of fleet events into the data lake and the PostgreSQL warehouse.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The landing day to load (YYYY-MM-DD): the date in the files' names. Without --date,
    /// --from or --to, the environment variable D2D_DATE gives it.
    #[arg(long, conflicts_with_all = ["from", "to"], value_parser = parse_day)]
    date: Option<NaiveDate>,
    /// First day of a back-fill (with --to); days run in order, each as its own run.
    #[arg(long, requires = "to", value_parser = parse_day)]
    from: Option<NaiveDate>,
    /// Last day of a back-fill (inclusive).
    #[arg(long, requires = "from", value_parser = parse_day)]
    to: Option<NaiveDate>,
    /// Landing store: `s3://bucket/prefix`, `file:///dir` or a folder.
    #[arg(long, env = "D2D_LANDING", default_value = "testdata/landing")]
    landing: String,
    /// Lake store: `s3://bucket/prefix`, `file:///dir` or a folder.
    #[arg(long, env = "D2D_LAKE", default_value = "lake")]
    lake: String,
    /// PostgreSQL URL (libpq form; `sslmode=require|verify-full`, `sslrootcert=` for TLS).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Endpoint of an S3-compatible server, e.g. http://127.0.0.1:59100 (path-style addressing).
    #[arg(long, env = "D2D_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// How to list one day: `scan` (every key), `nested:<root>` (`<root>YYYY/MM/DD/`) or
    /// `flat:<dir>` (`<dir>YYYY-MM-DD-…`).
    #[arg(long, env = "D2D_LANDING_LAYOUT", default_value = "scan")]
    layout: DayLayout,
    /// Rebuild the day(s) from the lake alone; the landing store is not read.
    #[arg(long, env = "D2D_FROM_LAKE")]
    from_lake: bool,
    /// Delete the landing files after they are archived, verified and loaded.
    #[arg(long = "move", env = "D2D_MOVE")]
    move_landing: bool,
    /// Succeed on a day without files, in landing and in the lake (its earlier load is then
    /// emptied), instead of failing.
    #[arg(long, env = "D2D_ALLOW_EMPTY")]
    allow_empty: bool,
    /// Let a landing file rewritten under an already archived name replace the lake's copy;
    /// without it such a file fails the run, naming both sizes and SHA-256s.
    #[arg(long, env = "D2D_REPLACE_CHANGED")]
    replace_changed: bool,
    /// Drop GPS fixes implying a speed above this (m/s) from the distances; off by default
    /// (the sample is a sped-up replay). Warehouse-wide: a change recomputes every distance.
    #[arg(long, env = "D2D_MAX_SPEED_MPS")]
    max_speed_mps: Option<f64>,
    /// Load no day: recompute every distance of the warehouse under --max-speed-mps (none:
    /// keep every fix), with the loader's kernel, and rewrite the lake's curated distance
    /// partitions that changed. For a new rule, or after a repair.
    #[arg(long, conflicts_with_all = ["date", "from", "to", "from_lake", "move_landing"])]
    refresh_distances: bool,
    /// Fail a day whose refused lines exceed this share of its lines (0.01 = 1 %), before
    /// anything of it is committed; off by default.
    #[arg(long, env = "D2D_MAX_REJECT_RATIO", value_name = "RATIO")]
    max_reject_ratio: Option<f64>,
    /// Shell command run on failure, with the failure summary on stdin and in
    /// D2D_ALERT_SUMMARY (passwords and AWS secrets redacted). Its environment is scrubbed:
    /// PATH, HOME, USER, LOGNAME, SHELL, LANG, LANGUAGE, LC_*, TZ, TMPDIR, TERM, and the
    /// variables named by --alert-env; never the database URL or AWS credentials otherwise.
    #[arg(long, env = "D2D_ALERT_COMMAND")]
    alert_command: Option<String>,
    /// Hand this variable of the job's environment to the alert command too (repeat it, or
    /// a comma-separated list in the environment variable), e.g. a webhook URL, or the AWS
    /// credentials of an `aws sns publish`.
    #[arg(
        long = "alert-env",
        value_name = "NAME",
        env = "D2D_ALERT_ENV",
        value_delimiter = ','
    )]
    alert_env: Vec<String>,
    /// Also publish the (redacted) failure summary to this SNS topic (an ARN), with the
    /// day in the subject; same endpoint and credentials as the S3 stores (D2D_S3_ENDPOINT).
    #[arg(long, env = "D2D_ALERT_SNS_TOPIC", value_name = "ARN")]
    alert_sns_topic: Option<String>,
    /// Seconds an S3 connection attempt may take before it is retried.
    #[arg(long, env = "D2D_S3_CONNECT_TIMEOUT", value_name = "SECS", default_value = "3", value_parser = run::parse_seconds)]
    s3_connect_timeout: Duration,
    /// Seconds an S3 request may wait for an answer once sent (plus one per MiB uploaded),
    /// or for the next bytes of a response body, before it is retried.
    #[arg(long, env = "D2D_S3_READ_TIMEOUT", value_name = "SECS", default_value = "8", value_parser = run::parse_seconds)]
    s3_read_timeout: Duration,
    /// Attempts per S3 request, the first included; each retry is logged. With the defaults an
    /// endpoint that never answers fails a request within 5 × (3 + 8) s + backoff = 56.5 s.
    #[arg(long, env = "D2D_S3_ATTEMPTS", value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    s3_attempts: u32,
    /// Seconds connecting to PostgreSQL (TCP, TLS, authentication) may take; default: the
    /// URL's connect_timeout, else 10.
    #[arg(long, env = "D2D_DB_CONNECT_TIMEOUT", value_name = "SECS", value_parser = run::parse_seconds)]
    db_connect_timeout: Option<Duration>,
    /// Objects read, copied or deleted at once.
    #[arg(long, env = "D2D_CONCURRENCY", default_value_t = 16)]
    concurrency: usize,
    /// In a back-fill (--from/--to), days in flight at once: later days are listed, archived
    /// and parsed ahead (each into a spool in the OS temporary folder, about the size of its
    /// landing files) while the current one loads; loads and merges stay one at a time, in
    /// day order. 1 runs the days one after another.
    #[arg(long, env = "D2D_DAYS_PARALLEL", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    days_parallel: u16,
    /// Progress bars (`auto`: when stderr is a terminal), JSON logs otherwise.
    #[arg(long, env = "D2D_OUTPUT", value_enum, default_value = "auto")]
    output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Bars on a terminal, JSON logs elsewhere.
    Auto,
    /// Progress bars and a text summary.
    Bars,
    /// JSON log lines on stderr and a text summary on stdout.
    Json,
}

fn main() -> ExitCode {
    pin_malloc_threshold();
    run_main()
}

/// glibc's malloc raises its mmap threshold each time a large buffer is freed, after which
/// the parse batches' buffers stay in the heap and RSS grows with the day even though the
/// data held does not (measured on a 3.5 M-event day: 250 MB; 133 MB with the threshold
/// pinned, the same at 1 M). The threshold can only be pinned from the environment before
/// the process starts, so the job re-executes itself once with `MALLOC_MMAP_THRESHOLD_` set
/// (an operator's own value is left alone).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn pin_malloc_threshold() {
    use std::os::unix::process::CommandExt;
    const VAR: &str = "MALLOC_MMAP_THRESHOLD_";
    if std::env::var_os(VAR).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(VAR, "131072")
        .exec();
    // Only reached when exec failed: run as we are.
    eprintln!("daily_load: could not re-execute with {VAR} set ({err}); continuing");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn pin_malloc_threshold() {}

#[tokio::main]
async fn run_main() -> ExitCode {
    let args = Args::parse();
    let bars = match args.output {
        Output::Auto => std::io::stderr().is_terminal(),
        Output::Bars => true,
        Output::Json => false,
    };
    init_logs(bars);
    let config = config(&args);
    if args.refresh_distances {
        return refresh_distances(&config).await;
    }
    let progress = Bars::new(bars);
    // The run in flight, for a graceful stop.
    let current: Mutex<Option<(NaiveDate, RunId)>> = Mutex::new(None);
    let events = |e: &RunEvent<'_>| {
        if let RunEvent::DayStarted { day, run } = e {
            if let Ok(mut current) = current.lock() {
                *current = Some((*day, *run));
            }
        }
        progress.on(e)
    };
    let (from, to) = match days(&args) {
        Ok(days) => days,
        Err(e) => e.exit(),
    };
    // A failing back-fill still reports the days it loaded. A stop signal drops the run in
    // flight: its connections close (rolling back what it had not committed) and its
    // temporary files are removed as their owners are dropped.
    let done = tokio::select! {
        done = run::run_backfill(&config, from, to, &events) => done,
        signal = stop_signal() => {
            progress.clear();
            let current = current.lock().ok().and_then(|mut c| c.take());
            return stopped(&config, signal, current, from).await;
        }
    };
    let reports = done.reports;
    let result = match done.error {
        None => Ok(()),
        Some(e) => Err(e),
    };
    progress.clear();
    print_summary(&reports);
    // One CloudWatch EMF line per day run, on stderr with the logs (see run::metrics).
    let now = chrono::Utc::now();
    for report in &reports {
        eprintln!(
            "{}",
            emf_line("daily_load", &Outcome::Succeeded(report), now)
        );
    }
    if let Err(e) = &result {
        // A failure before any day ran is the first day's.
        eprintln!("{}", emf_line("daily_load", &Outcome::failed(e, from), now));
    }
    match result {
        Ok(()) => {
            if let Err(e) = print_bi_answer(&config.database_url).await {
                // The load succeeded and is recorded so; only the report is missing.
                tracing::warn!(error = %e, "loaded, but could not read the bi views");
                eprintln!("daily_load: warning: loaded, but could not read the bi views: {e}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let summary = failure_summary(&args, &e);
            if !matches!(
                e,
                d2d::pipeline::Error::Run { .. } | d2d::pipeline::Error::AfterCommit { .. }
            ) {
                // run_day logs its own failures; one that happened before it could is logged here.
                tracing::error!(error = %redact(&e.to_string(), &[]), "run failed");
            }
            // Redacted here too: stderr ends up in the same logs and mails as the alert.
            let alert = AlertCommand::new(args.alert_command.clone().unwrap_or_default())
                .pass_env(args.alert_env.iter().cloned())
                .database_url(&args.database_url)
                .timeout(Duration::from_secs(60));
            eprintln!("{}", alert.redacted(&summary));
            if args.alert_command.is_some() {
                if let Err(error) = alert.run(&summary).await {
                    tracing::error!(error = %error, "the alert command failed");
                    eprintln!("daily_load: {error}");
                }
            }
            if let Some(topic) = &args.alert_sns_topic {
                let sns = SnsAlert::new(topic).database_url(&args.database_url);
                let subject = format!("d2d daily_load failed: {}", failed_day(&e, from, to));
                if let Err(error) = sns.publish(&subject, &summary, &config.store_options).await {
                    tracing::error!(error = %error, "the SNS alert failed");
                    eprintln!("daily_load: {error}");
                }
            }
            match e {
                d2d::pipeline::Error::AfterCommit { .. } => ExitCode::from(3),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// Resolves on SIGTERM (what schedulers and container runtimes send first) or SIGINT
/// (Ctrl-C), with the signal's name; never, if the handlers cannot be installed.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("could not install the SIGTERM and SIGINT handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// How long a stopped job waits for PostgreSQL to end its run's session, so that it can
/// record the run itself; past it the next run of any day records it.
const STOP_RECORD_WAIT: Duration = Duration::from_secs(30);

/// After a stop signal: records the run that was in flight as `abandoned` in the phase it was
/// in (once its session is gone), prints what happened, and exits 128 + the signal's number.
async fn stopped(
    config: &RunConfig,
    signal: &str,
    current: Option<(NaiveDate, RunId)>,
    first_day: NaiveDate,
) -> ExitCode {
    let code = if signal == "SIGINT" { 130 } else { 143 };
    let day = current.map_or(first_day, |(day, _)| day);
    let Some((_, run)) = current else {
        eprintln!("daily_load: stopped by {signal} before a run started");
        return ExitCode::from(code);
    };
    let recorded = record_stopped(config, run).await;
    let outcome = Outcome::Failed {
        day,
        run_id: Some(run.0),
        doing: Some("stopped by a signal"),
        committed: matches!(&recorded, Ok(Some(row)) if row.committed_at.is_some()),
    };
    eprintln!("{}", emf_line("daily_load", &outcome, chrono::Utc::now()));
    match recorded {
        Ok(Some(row)) => {
            let phase = row.phase.as_deref().unwrap_or("unknown");
            let load = if row.committed_at.is_some() {
                "its load had committed and stands; re-run the day to finish the lake"
            } else {
                "nothing of it was committed"
            };
            tracing::warn!(signal, %day, run = run.0, phase, "stopped; the run is recorded abandoned");
            eprintln!(
                "daily_load: stopped by {signal}: run {run} of {day} recorded abandoned in phase {phase}; {load}"
            );
        }
        Ok(None) => eprintln!("daily_load: stopped by {signal}; run {run} of {day} had ended"),
        Err(e) => {
            let e = redact(&e.to_string(), &[]);
            tracing::error!(signal, run = run.0, error = %e, "stopped; could not record the run");
            eprintln!(
                "daily_load: stopped by {signal}; run {run} of {day} is recorded by the next run ({e})"
            );
        }
    }
    ExitCode::from(code)
}

/// Closes the stopped `run` as abandoned once PostgreSQL has ended its session (which the
/// dropped connections asked for); `None` if it was no longer running.
async fn record_stopped(
    config: &RunConfig,
    run: RunId,
) -> Result<Option<AbandonedRun>, d2d::pipeline::Error> {
    let wh = Warehouse::connect(&config.database_url).await?;
    let deadline = tokio::time::Instant::now() + STOP_RECORD_WAIT;
    loop {
        if let Some(row) = wh
            .abandon_dead_runs()
            .await?
            .into_iter()
            .find(|r| r.run == run)
        {
            return Ok(Some(row));
        }
        if wh.run_status(run).await?.as_deref() != Some("running") {
            return Ok(None);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(d2d::pipeline::Error::Timeout {
                service: format!("run {run}'s session"),
                operation: "end",
                after: STOP_RECORD_WAIT,
                hint: "PostgreSQL had not ended the stopped run's session yet",
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `--refresh-distances`: every distance recomputed, the curated distance partitions rewritten.
async fn refresh_distances(config: &RunConfig) -> ExitCode {
    match run::refresh_distances(config).await {
        Ok(r) => {
            let c = &r.curated;
            println!(
                "distances recomputed: {} rows; curated distance partitions: {} written, {} deleted, {} unchanged",
                r.distance_rows,
                c.distance_partitions_written,
                c.distance_partitions_deleted,
                c.distance_partitions_unchanged
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let e = redact(&e.to_string(), &[]);
            tracing::error!(error = %e, "distance refresh failed");
            eprintln!("daily_load: distance refresh failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The first and last day: `--date`, `--from`/`--to`, or else `D2D_DATE`.
fn days(args: &Args) -> Result<(NaiveDate, NaiveDate), clap::Error> {
    use clap::{error::ErrorKind, CommandFactory};
    let usage = |kind, msg: String| Args::command().error(kind, msg);
    match (args.date, args.from, args.to) {
        (Some(day), _, _) => Ok((day, day)),
        (None, Some(from), Some(to)) => Ok((from, to)),
        _ => match std::env::var("D2D_DATE") {
            Ok(text) => parse_day(text.trim())
                .map(|d| (d, d))
                .map_err(|e| usage(ErrorKind::ValueValidation, format!("D2D_DATE: {e}"))),
            Err(_) => Err(usage(
                ErrorKind::MissingRequiredArgument,
                "give --date D (or D2D_DATE), or --from D1 --to D2".into(),
            )),
        },
    }
}

fn config(args: &Args) -> RunConfig {
    let mut config = RunConfig::new(&args.landing, &args.lake, &args.database_url);
    config.layout = args.layout.clone();
    config.from_lake = args.from_lake;
    config.move_landing = args.move_landing;
    config.allow_empty = args.allow_empty;
    config.max_reject_ratio = args.max_reject_ratio;
    config.load = LoadOptions {
        max_speed_mps: args.max_speed_mps,
    };
    config.lake_options = LakeOptions {
        concurrency: args.concurrency.max(1),
        replace_changed: args.replace_changed,
    };
    config.store_options = StoreOptions {
        s3_endpoint: args.s3_endpoint.clone().filter(|s| !s.trim().is_empty()),
        s3_max_attempts: args.s3_attempts,
        s3_connect_timeout: args.s3_connect_timeout,
        s3_read_timeout: args.s3_read_timeout,
    };
    config.db_connect_timeout = args.db_connect_timeout;
    config.days_parallel = usize::from(args.days_parallel);
    config
}

fn init_logs(bars: bool) {
    use tracing_subscriber::EnvFilter;
    if bars {
        // Bars show the progress; only warnings and errors interrupt them.
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_current_span(false)
            .with_writer(std::io::stderr)
            .init();
    }
}

/// One bar per phase on a terminal; progress events as JSON log lines elsewhere.
struct Bars {
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<Phase, ProgressBar>>,
}

impl Bars {
    fn new(enabled: bool) -> Self {
        Self {
            multi: enabled.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn on(&self, event: &RunEvent<'_>) {
        let Some(multi) = &self.multi else {
            if let RunEvent::PhaseStarted {
                phase,
                files,
                bytes,
            } = event
            {
                tracing::info!(phase = phase.name(), files, bytes, "phase started");
            }
            return;
        };
        let Ok(mut bars) = self.bars.lock() else {
            return;
        };
        match event {
            RunEvent::DayStarted { day, run } => {
                let _ = multi.println(format!("{day}: run {run}"));
            }
            RunEvent::PhaseStarted {
                phase,
                files,
                bytes,
            } => {
                let bar = if *files > 0 {
                    let bar = ProgressBar::new(*files);
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{prefix:>10} [{bar:32}] {pos}/{len} files  {msg}  {elapsed}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    bar.set_message(bytes_text(0, *bytes));
                    bar
                } else {
                    let bar = ProgressBar::new_spinner();
                    bar.set_style(
                        ProgressStyle::with_template("{prefix:>10} {spinner} {msg} {elapsed}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.enable_steady_tick(Duration::from_millis(120));
                    bar
                };
                bar.set_prefix(phase.name());
                bars.insert(*phase, multi.add(bar));
            }
            RunEvent::Progress {
                phase,
                files_done,
                files_total,
                bytes_done,
                bytes_total,
                ..
            } => {
                if let Some(bar) = bars.get(phase) {
                    bar.set_length(*files_total);
                    bar.set_position(*files_done);
                    bar.set_message(bytes_text(*bytes_done, *bytes_total));
                }
            }
            RunEvent::PhaseFinished { phase, elapsed } => {
                if let Some(bar) = bars.remove(phase) {
                    bar.set_style(
                        ProgressStyle::with_template("{prefix:>10} {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                    bar.finish_with_message(format!("done in {}", seconds(*elapsed)));
                }
            }
        }
    }

    fn clear(&self) {
        if let Ok(mut bars) = self.bars.lock() {
            for (_, bar) in bars.drain() {
                bar.abandon();
            }
        }
    }
}

fn bytes_text(done: u64, total: u64) -> String {
    format!("{} / {}", mib(done), mib(total))
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn print_summary(reports: &[RunReport]) {
    for r in reports {
        let c = &r.counts;
        let p = &r.phases;
        let source = if r.from_lake {
            "rebuilt from the lake".to_owned()
        } else {
            format!(
                "archived: {} copied in the store, {} copied through this host, {} already in the lake, {} only in the lake",
                r.copied_server_side, r.copied_through, r.already_archived, r.kept_from_lake
            )
        };
        println!(
            "d2d daily load of {} — run {} succeeded in {}",
            r.day,
            r.run,
            seconds(p.total)
        );
        println!("  files    {:>10}  {}  ({source})", c.files, mib(c.bytes));
        println!(
            "  lines    {:>10}  = distinct events loaded {} + duplicates {} + rejects {}{}",
            c.lines,
            c.events,
            c.duplicates,
            c.rejects,
            r.quarantine
                .as_ref()
                .map(|q| format!(" (quarantined in {})", q.key))
                .unwrap_or_default()
        );
        let rows = &c.rows;
        println!(
            "  rows     fact_vehicle_event {}  fact_period_event {}  dim_vehicle {}  dim_operating_period {}  vehicle_period_distance {}  etl.reject {}",
            rows.fact_vehicle_event,
            rows.fact_period_event,
            rows.dim_vehicle,
            rows.dim_operating_period,
            rows.vehicle_period_distance,
            rows.reject
        );
        println!(
            "  time     list {}  archive {}  parse {}  copy {}  merge {}  quarantine {}  curate {}  cleanup {}",
            seconds(p.list),
            seconds(p.archive),
            seconds(p.parse),
            seconds(p.copy),
            seconds(p.merge),
            seconds(p.quarantine),
            seconds(p.curate),
            seconds(p.cleanup)
        );
        if let Some(cz) = &r.curated {
            println!(
                "  curated  {} vehicle events, {} period events; distance partitions {} written, {} deleted, {} unchanged ({} bytes of Parquet)",
                cz.vehicle_events,
                cz.period_events,
                cz.distance_partitions_written,
                cz.distance_partitions_deleted,
                cz.distance_partitions_unchanged,
                cz.bytes
            );
        }
        if r.landing_deleted > 0 {
            println!("  moved    {} landing files deleted", r.landing_deleted);
        }
        if !r.refused.is_empty() {
            println!(
                "  refused  {} landing objects, not loaded (those of {} also in etl.reject, line 0):",
                r.refused.len(),
                r.day
            );
            for f in &r.refused {
                println!("           {f}");
                tracing::warn!(day = %r.day, key = f.key, code = f.code, reason = f.reason, "refused landing object");
            }
        }
        if r.stale_temporaries_removed > 0 {
            println!(
                "  cleaned  {} temporary files of killed runs removed from the lake",
                r.stale_temporaries_removed
            );
        }
        tracing::info!(
            day = %r.day,
            run = r.run.0,
            files = c.files,
            bytes = c.bytes,
            lines = c.lines,
            events = c.events,
            duplicates = c.duplicates,
            rejects = c.rejects,
            refused_files = r.refused.len(),
            fact_vehicle_event = rows.fact_vehicle_event,
            fact_period_event = rows.fact_period_event,
            vehicle_period_distance = rows.vehicle_period_distance,
            total_ms = p.total.as_millis() as u64,
            "run summary"
        );
    }
}

async fn print_bi_answer(database_url: &str) -> d2d::pipeline::Result<()> {
    let wh = Warehouse::connect(database_url).await?;
    let periods = wh.period_averages().await?;
    let overall = wh.overall_average().await?;
    println!();
    println!(
        "Average distance travelled per operating period (bi.avg_distance_per_operating_period)"
    );
    println!(
        "  {:<24} {:>9} {:>14} {:>14}",
        "operating period", "vehicles", "avg metres", "total metres"
    );
    for p in &periods {
        println!(
            "  {:<24} {:>9} {:>14} {:>14.1}",
            p.operating_period_id,
            p.vehicles,
            p.avg_metres
                .map_or_else(|| "-".to_owned(), |m| format!("{m:.1}")),
            p.total_metres
        );
    }
    println!(
        "  over all {} (period, vehicle) pairs of {} periods: {}",
        overall.pairs,
        overall.periods,
        overall.avg_metres.map_or_else(
            || "no distance yet".to_owned(),
            |m| format!("{m:.1} m on average")
        )
    );
    Ok(())
}

/// The day a failure names, for the SNS subject: the failed run's, else the days asked for.
fn failed_day(error: &d2d::pipeline::Error, from: NaiveDate, to: NaiveDate) -> String {
    match error {
        d2d::pipeline::Error::Run { day, .. } | d2d::pipeline::Error::AfterCommit { day, .. } => {
            day.to_string()
        }
        _ if from == to => from.to_string(),
        _ => format!("{from}..{to}"),
    }
}

fn failure_summary(args: &Args, error: &d2d::pipeline::Error) -> String {
    let (day, run, phase) = match error {
        d2d::pipeline::Error::Run {
            day, run_id, phase, ..
        }
        | d2d::pipeline::Error::AfterCommit {
            day, run_id, phase, ..
        } => (
            day.to_string(),
            run_id.map_or_else(|| "not recorded".to_owned(), |r| r.to_string()),
            (*phase).to_owned(),
        ),
        _ => ("?".into(), "not recorded".into(), "?".into()),
    };
    let what = match error {
        d2d::pipeline::Error::AfterCommit { .. } => "FAILED AFTER COMMITTING ITS LOAD",
        _ => "FAILED",
    };
    format!(
        "d2d daily_load {what}\nday: {day}\nrun: {run} (etl.load_run)\nphase: {phase}\nlanding: {}\nlake: {}\nerror: {error}",
        if args.from_lake { "(not read: --from-lake)" } else { &args.landing },
        args.lake
    )
}
