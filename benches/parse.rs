//! Throughput of the NDJSON parser on the real landing files, next to the untyped baseline
//! `serde_json::from_slice::<serde_json::Value>` per line, in the same run.
//!
//! ```text
//! cargo bench --bench parse
//! ```
//!
//! Inputs, all read into memory before timing starts:
//! - `real_files`: the 717 files of `testdata/landing` (one day, 35,290 lines, 7.8 MB), parsed
//!   file by file (`parse_sources`, or `parse_bytes` per file then `Parsed::merge`) and as one
//!   concatenated buffer;
//! - `repeated_100mb`: that buffer repeated 13 times (~101 MB). Every event after the first copy
//!   is a duplicate, so this also measures de-duplication at scale.
//!
//! Each typed parse keeps every event and reject in memory; the baseline parses each line to a
//! `Value` and drops it. Throughput counters: bytes of input, and items = non-blank lines.
//!
//! After the timings (only under `cargo bench`, not `cargo test --benches`), two tables:
//! - single-thread throughput per second of CPU time: each sequential case is repeated for
//!   about 1.5 s of its thread's on-CPU time (`/proc/thread-self/schedstat`), so the figure
//!   holds on a machine shared with other work, where wall-clock medians swing with the load;
//! - peak memory: each case is run once more in a fresh child process, and the growth of the
//!   process's peak resident set (VmHWM) over its size once the input is loaded is reported.
//!   Unlike divan's `max alloc`, this includes rayon's worker threads.
//!
//! Set `D2D_BENCH_NO_TABLES=1` to skip both.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::LazyLock;

use d2d::model::parse::{parse_bytes, parse_bytes_par, parse_sources, Parsed};
use divan::counter::{BytesCount, ItemsCount};
use divan::{black_box, AllocProfiler, Bencher};
use rayon::prelude::*;

#[global_allocator]
static ALLOC: AllocProfiler = AllocProfiler::system();

/// Copies of the real day in the large input: 13 × 7.78 MB ≈ 101 MB.
const COPIES: usize = 13;

struct Inputs {
    files: Vec<(String, Vec<u8>)>,
    concat: Vec<u8>,
    lines: u64,
}

static REAL: LazyLock<Inputs> = LazyLock::new(load_real);
static BIG: LazyLock<Vec<u8>> = LazyLock::new(|| repeat(&REAL.concat, COPIES));

fn landing_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/landing")
}

fn load_real() -> Inputs {
    let mut paths = d2d_testkit::file_paths(&landing_dir());
    // The landing order: names are timestamps, so lexical order is time order.
    paths.sort();
    assert_eq!(
        paths.len(),
        717,
        "expected the 717 files of testdata/landing"
    );
    let files: Vec<(String, Vec<u8>)> = paths
        .iter()
        .map(|p| {
            let bytes =
                std::fs::read(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
            (p.display().to_string(), bytes)
        })
        .collect();
    let mut concat = Vec::with_capacity(files.iter().map(|(_, b)| b.len() + 1).sum());
    for (_, bytes) in &files {
        concat.extend_from_slice(bytes);
        if !concat.ends_with(b"\n") {
            concat.push(b'\n');
        }
    }
    let lines = non_blank_lines(&concat);
    Inputs {
        files,
        concat,
        lines,
    }
}

fn repeat(bytes: &[u8], copies: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * copies);
    for _ in 0..copies {
        out.extend_from_slice(bytes);
    }
    out
}

fn non_blank_lines(bytes: &[u8]) -> u64 {
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .count() as u64
}

/// The untyped baseline: every line to a `serde_json::Value`, on one thread.
fn value_per_line(bytes: &[u8]) -> usize {
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .filter(|l| black_box(serde_json::from_slice::<serde_json::Value>(l)).is_ok())
        .count()
}

/// The untyped baseline across rayon's threads.
fn value_per_line_par(bytes: &[u8]) -> usize {
    bytes
        .par_split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .filter(|l| black_box(serde_json::from_slice::<serde_json::Value>(l)).is_ok())
        .count()
}

/// Each file on the calling thread, merged in order as `parse_sources` does.
fn per_file_sequential(files: &[(String, Vec<u8>)]) -> Parsed {
    Parsed::merge(files.iter().map(|(name, bytes)| parse_bytes(name, bytes)))
}

fn counters(bytes: usize, lines: u64) -> (BytesCount, ItemsCount) {
    (BytesCount::new(bytes), ItemsCount::new(lines))
}

fn main() {
    // Fail before timing anything if the parser disagrees with the data's own line count.
    let real = &*REAL;
    let parsed = parse_bytes("day", &real.concat);
    assert_eq!(parsed.lines, real.lines);
    assert!(parsed.rejects.is_empty(), "the real day has no rejects");

    if let Ok(case) = std::env::var(PEAK_CHILD) {
        peak_child(&case);
        return;
    }
    divan::main();
    let benching = std::env::args().any(|a| a == "--bench");
    if benching && std::env::var_os("D2D_BENCH_NO_TABLES").is_none() {
        cpu_table();
        peak_table();
    }
}

/// The real day, 717 files.
mod real_files {
    use super::*;

    #[divan::bench]
    fn per_file_parse_sources(b: Bencher) {
        let r = &*REAL;
        let (bytes, items) = counters(r.concat.len(), r.lines);
        b.counter(bytes)
            .counter(items)
            .bench(|| parse_sources(black_box(&r.files)));
    }

    #[divan::bench]
    fn per_file_sequential(b: Bencher) {
        let r = &*REAL;
        let (bytes, items) = counters(r.concat.len(), r.lines);
        b.counter(bytes)
            .counter(items)
            .bench(|| super::per_file_sequential(black_box(&r.files)));
    }

    #[divan::bench]
    fn concat_parse_bytes(b: Bencher) {
        let r = &*REAL;
        let (bytes, items) = counters(r.concat.len(), r.lines);
        b.counter(bytes)
            .counter(items)
            .bench(|| parse_bytes("day", black_box(&r.concat)));
    }

    #[divan::bench]
    fn concat_parse_bytes_par(b: Bencher) {
        let r = &*REAL;
        let (bytes, items) = counters(r.concat.len(), r.lines);
        b.counter(bytes)
            .counter(items)
            .bench(|| parse_bytes_par("day", black_box(&r.concat)));
    }

    #[divan::bench]
    fn concat_baseline_value(b: Bencher) {
        let r = &*REAL;
        let (bytes, items) = counters(r.concat.len(), r.lines);
        b.counter(bytes)
            .counter(items)
            .bench(|| value_per_line(black_box(&r.concat)));
    }

    #[divan::bench]
    fn concat_baseline_value_par(b: Bencher) {
        let r = &*REAL;
        let (bytes, items) = counters(r.concat.len(), r.lines);
        b.counter(bytes)
            .counter(items)
            .bench(|| value_per_line_par(black_box(&r.concat)));
    }
}

/// The real day repeated to ~101 MB: few samples, one parse each, to keep the run short.
#[divan::bench_group(sample_count = 8, sample_size = 1)]
mod repeated_100mb {
    use super::*;

    fn big() -> (&'static [u8], BytesCount, ItemsCount) {
        let lines = REAL.lines * COPIES as u64;
        (&BIG, BytesCount::new(BIG.len()), ItemsCount::new(lines))
    }

    #[divan::bench]
    fn parse_bytes(b: Bencher) {
        let (input, bytes, items) = big();
        b.counter(bytes)
            .counter(items)
            .bench(|| super::parse_bytes("big", black_box(input)));
    }

    #[divan::bench]
    fn parse_bytes_par(b: Bencher) {
        let (input, bytes, items) = big();
        b.counter(bytes)
            .counter(items)
            .bench(|| super::parse_bytes_par("big", black_box(input)));
    }

    #[divan::bench]
    fn baseline_value(b: Bencher) {
        let (input, bytes, items) = big();
        b.counter(bytes)
            .counter(items)
            .bench(|| value_per_line(black_box(input)));
    }

    #[divan::bench]
    fn baseline_value_par(b: Bencher) {
        let (input, bytes, items) = big();
        b.counter(bytes)
            .counter(items)
            .bench(|| value_per_line_par(black_box(input)));
    }
}

// ---------------------------------------------------------------------------------------------
// Throughput per CPU second of the one thread doing the work.

/// Nanoseconds this thread has spent on a CPU, from the scheduler's own accounting.
fn thread_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

fn cpu_table() {
    let real = &*REAL;
    let big: &[u8] = &BIG;
    let big_lines = real.lines * COPIES as u64;
    type Case<'a> = (&'a str, usize, u64, Box<dyn Fn() -> usize + 'a>);
    let cases: Vec<Case<'_>> = vec![
        (
            "real_files/concat_parse_bytes",
            real.concat.len(),
            real.lines,
            Box::new(|| parse_bytes("day", black_box(&real.concat)).events.len()),
        ),
        (
            "real_files/per_file_sequential",
            real.concat.len(),
            real.lines,
            Box::new(|| per_file_sequential(black_box(&real.files)).events.len()),
        ),
        (
            "real_files/concat_baseline_value",
            real.concat.len(),
            real.lines,
            Box::new(|| value_per_line(black_box(&real.concat))),
        ),
        (
            "repeated_100mb/parse_bytes",
            big.len(),
            big_lines,
            Box::new(|| parse_bytes("big", black_box(big)).events.len()),
        ),
        (
            "repeated_100mb/baseline_value",
            big.len(),
            big_lines,
            Box::new(|| value_per_line(black_box(big))),
        ),
    ];
    println!();
    println!("single-thread throughput per second of on-CPU time (MB = 10^6 bytes)");
    println!(
        "{:<36} {:>6} {:>10} {:>12}",
        "case", "runs", "MB/s", "lines/s"
    );
    for (name, bytes, lines, run) in cases {
        black_box(run()); // warm up caches and the allocator
        let (Some(start), mut runs) = (thread_cpu_ns(), 0u64) else {
            println!("{name:<36} n/a (no /proc/thread-self/schedstat)");
            continue;
        };
        let mut spent = 0;
        while spent < 1_500_000_000 {
            black_box(run());
            runs += 1;
            spent = thread_cpu_ns().unwrap_or(start).saturating_sub(start);
        }
        let seconds = spent as f64 / 1e9;
        let mb_s = (bytes as u64 * runs) as f64 / 1e6 / seconds;
        let lines_s = (lines * runs) as f64 / seconds;
        println!("{name:<36} {runs:>6} {mb_s:>10.1} {lines_s:>12.0}");
    }
}

// ---------------------------------------------------------------------------------------------
// Peak memory, one child process per case so that no case inherits another's freed pages.

const PEAK_CHILD: &str = "D2D_BENCH_PEAK_CASE";

const PEAK_CASES: [&str; 8] = [
    "real_files/per_file_parse_sources",
    "real_files/per_file_sequential",
    "real_files/concat_parse_bytes",
    "real_files/concat_parse_bytes_par",
    "repeated_100mb/parse_bytes",
    "repeated_100mb/parse_bytes_par",
    "repeated_100mb/baseline_value",
    "repeated_100mb/baseline_value_par",
];

/// Reads a `kB` field of /proc/self/status.
fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
}

fn peak_child(case: &str) {
    let real = &*REAL;
    if case.starts_with("repeated_100mb") {
        LazyLock::force(&BIG);
    }
    // Forget the peak of loading the input; only the parse's own growth is measured.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = status_kb("VmRSS:");
    let kept = match case {
        "real_files/per_file_parse_sources" => parse_sources(&real.files).events.len(),
        "real_files/per_file_sequential" => per_file_sequential(&real.files).events.len(),
        "real_files/concat_parse_bytes" => parse_bytes("day", &real.concat).events.len(),
        "real_files/concat_parse_bytes_par" => parse_bytes_par("day", &real.concat).events.len(),
        "repeated_100mb/parse_bytes" => parse_bytes("big", &BIG).events.len(),
        "repeated_100mb/parse_bytes_par" => parse_bytes_par("big", &BIG).events.len(),
        "repeated_100mb/baseline_value" => value_per_line(&BIG),
        "repeated_100mb/baseline_value_par" => value_per_line_par(&BIG),
        other => panic!("unknown peak case {other}"),
    };
    let after = status_kb("VmHWM:");
    match (reset, before, after) {
        (true, Some(b), Some(a)) => println!("{} {}", a.saturating_sub(b), black_box(kept)),
        _ => println!("n/a {kept}"),
    }
}

fn peak_table() {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("peak memory skipped: {e}");
            return;
        }
    };
    println!();
    println!("peak memory (growth of peak RSS over the loaded input, one fresh process per case)");
    println!("{:<40} {:>12}", "case", "peak MiB");
    for case in PEAK_CASES {
        let out = Command::new(&exe).env(PEAK_CHILD, case).output();
        let cell = match out {
            Ok(o) if o.status.success() => {
                let text = String::from_utf8_lossy(&o.stdout);
                match text.split_whitespace().next().map(str::parse::<u64>) {
                    Some(Ok(kb)) => format!("{:.1}", kb as f64 / 1024.0),
                    _ => text.trim().to_owned(),
                }
            }
            Ok(o) => format!("failed: {}", String::from_utf8_lossy(&o.stderr).trim()),
            Err(e) => format!("failed: {e}"),
        };
        println!("{case:<40} {cell:>12}");
    }
}
