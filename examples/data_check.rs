//! Run with: `cargo run --release --example data_check -- testdata/landing`
//!
//! Profiles raw event files the way an analyst's notebook would: counts per event kind,
//! rejects by reason, duplicates, missing values, value ranges, and the distance each vehicle
//! travelled during each operating period.
//!
//! ```text
//! data_check PATH...               human summary (files or folders, walked recursively)
//! data_check --json PATH...        one JSON object with the headline counts
//! data_check --rejects PATH...     one JSON line per reject: {"source","line","reason"}
//! data_check --distances PATH...   CSV: period,vehicle,fixes,first_at,last_at,metres
//! ```
//!
//! Files compressed with gzip (`….txt.gz`, or gzip's magic bytes under any name) are read
//! decompressed, as the daily run reads them. Exits 0 when it ran, even if some lines were
//! rejected; exits 1 with a message when a path cannot be read (or a gzip file does not
//! decode).

use std::borrow::Cow;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use d2d::model::{check, distance, landing, parse, period, time::format_timestamp, track};

/// Profile door2door event files (NDJSON).
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Files or folders (read recursively) of raw event files.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Print the headline counts as one JSON object.
    #[arg(long, group = "mode")]
    json: bool,
    /// Print every reject as one JSON line.
    #[arg(long, group = "mode")]
    rejects: bool,
    /// Print per-(period, vehicle) distances as CSV.
    #[arg(long, group = "mode")]
    distances: bool,
    /// Drop fixes implying a speed above this (m/s) from the distances. Off by default.
    #[arg(long, value_name = "M_PER_S")]
    max_speed_mps: Option<f64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("data_check: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match write_report(args, &mut out).and_then(|()| out.flush().map_err(Failure::Output)) {
        Ok(()) => Ok(()),
        // A closed pipe (`data_check ... | head`) is the reader's choice, not a failure.
        Err(Failure::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(Failure::Output(e)) => Err(format!("cannot write output: {e}")),
        Err(Failure::Input(message)) => Err(message),
    }
}

enum Failure {
    Input(String),
    Output(std::io::Error),
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Output(e)
    }
}

impl From<csv::Error> for Failure {
    fn from(e: csv::Error) -> Self {
        match e.into_kind() {
            // Writing records of one shape, only the output can fail.
            csv::ErrorKind::Io(e) => Failure::Output(e),
            other => Failure::Output(std::io::Error::other(format!("CSV: {other:?}"))),
        }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Input(message)
    }
}

fn write_report(args: &Args, out: &mut impl Write) -> Result<(), Failure> {
    let mut files = Vec::new();
    for path in &args.paths {
        collect(path, &mut files)?;
    }
    files.sort_by(|a, b| landing::landing_order(&a.0, &b.0));
    let sources = files
        .into_iter()
        .map(|(name, path)| {
            let bytes =
                std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            // Gzip files (`.gz`, or gzip's magic bytes) are decompressed as the daily run does.
            let decoded = landing::decode(&name, &bytes)
                .map(|text| match text {
                    Cow::Owned(v) => Some(v),
                    Cow::Borrowed(_) => None,
                })
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            Ok((name, decoded.unwrap_or(bytes)))
        })
        .collect::<Result<Vec<_>, String>>()?;

    let parsed = parse::parse_sources(&sources);
    let profile = check::profile(&parsed, sources.len() as u64);
    let events = || parsed.events.iter().map(|r| &r.event);
    let periods = period::resolve_periods(events());
    let options = distance::DistanceOptions {
        max_speed_mps: args.max_speed_mps,
    };
    let rows = distance::period_distances(&periods, &track::tracks(events()), &options);

    if args.json {
        let json = serde_json::to_string(&profile.counts).map_err(|e| e.to_string())?;
        writeln!(out, "{json}")?;
    } else if args.rejects {
        for r in &parsed.rejects {
            let line = serde_json::json!({
                "source": &*r.source,
                "line": r.line,
                "reason": r.reason.to_string(),
            });
            writeln!(out, "{line}")?;
        }
    } else if args.distances {
        write_distances(out, &rows)?;
    } else {
        print_summary(out, &profile, &parsed, &periods, &rows)?;
    }
    Ok(())
}

/// The distances as CSV. Ids are free text (commas and quotes included): the csv crate quotes
/// a field when it needs it.
fn write_distances(out: &mut impl Write, rows: &[distance::PeriodDistance]) -> Result<(), Failure> {
    let mut csv = csv::Writer::from_writer(out);
    csv.write_record([
        "period", "vehicle", "fixes", "first_at", "last_at", "metres",
    ])?;
    for r in rows {
        csv.write_record([
            r.period.as_str(),
            r.vehicle.as_str(),
            r.fixes.to_string().as_str(),
            format_timestamp(&r.first_at).as_str(),
            format_timestamp(&r.last_at).as_str(),
            r.metres.to_string().as_str(),
        ])?;
    }
    csv.flush()?;
    Ok(())
}

/// Adds `path` (a file, or every file below a folder, links followed) as (display name, path).
fn collect(path: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<(), String> {
    for entry in walkdir::WalkDir::new(path).follow_links(true) {
        let entry = entry.map_err(|e| {
            let at = e.path().unwrap_or(path).display();
            match e.io_error() {
                Some(io) => format!("cannot read {at}: {io}"),
                None => format!("cannot read {at}: {e}"),
            }
        })?;
        if !entry.file_type().is_dir() {
            out.push((entry.path().display().to_string(), entry.into_path()));
        }
    }
    Ok(())
}

fn print_summary(
    out: &mut impl Write,
    profile: &check::Profile,
    parsed: &parse::Parsed,
    periods: &[period::PeriodState],
    rows: &[distance::PeriodDistance],
) -> std::io::Result<()> {
    let c = &profile.counts;
    writeln!(out, "files        {:>10}", c.files)?;
    writeln!(out, "lines        {:>10}  (non-blank)", c.lines)?;
    writeln!(out, "events       {:>10}", c.events)?;
    writeln!(out, "duplicates   {:>10}", c.duplicates)?;
    writeln!(out, "rejects      {:>10}", c.rejects)?;
    writeln!(out, "vehicles     {:>10}", c.vehicles)?;
    writeln!(out, "periods      {:>10}", c.periods)?;
    writeln!(out, "\nby kind")?;
    for (kind, n) in &c.by_kind {
        writeln!(out, "  {kind:<26}{n:>10}")?;
    }
    if !c.reject_reasons.is_empty() {
        writeln!(out, "\nrejects by reason (first example)")?;
        for (code, n) in &c.reject_reasons {
            let example = parsed.rejects.iter().find(|r| r.reason.code() == code);
            let example = example.map(ToString::to_string).unwrap_or_default();
            writeln!(out, "  {code:<26}{n:>10}  {example}")?;
        }
    }
    writeln!(out, "\nmissing or null")?;
    for (field, n) in &profile.missing {
        writeln!(out, "  {field:<26}{n:>10}")?;
    }
    writeln!(out, "\nranges")?;
    for (field, r) in &profile.time_ranges {
        writeln!(
            out,
            "  {field:<26}{} .. {}",
            format_timestamp(&r.min),
            format_timestamp(&r.max)
        )?;
    }
    for (field, r) in &profile.coordinate_ranges {
        writeln!(out, "  {field:<26}{} .. {}", r.min, r.max)?;
    }
    let all_averages = distance::averages(periods, rows);
    let (averages, overall) = (all_averages.periods, all_averages.overall);
    writeln!(out, "\naverage distance per operating period")?;
    for a in &averages {
        let avg = a
            .avg_metres
            .map_or_else(|| "-".to_owned(), |m| format!("{m:.1} m"));
        writeln!(
            out,
            "  {:<26}{:>4} vehicles  avg {avg:>12}  total {:.1} m",
            a.period.as_str(),
            a.vehicles,
            a.total_metres
        )?;
    }
    if let Some(m) = overall {
        writeln!(
            out,
            "  {:<26}avg {m:.1} m over {} (period, vehicle) pairs",
            "all",
            rows.len()
        )?;
    }
    Ok(())
}
