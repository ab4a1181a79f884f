//! Run with: `cargo run --release --example generate_fleet -- --out /tmp/landing`
//!
//! Generates landing days of a simulated fleet in the real feed's format and key layout, for
//! tests and benchmarks: vehicles driving around Berlin at 5–15 m/s, reporting every
//! `--interval` seconds, registering at the start and deregistering at the end of each day;
//! operating periods (some crossing into the next landing day, some deleted, some deleted and
//! created again); and, on request, noise: duplicate lines, malformed lines, fixes delivered a
//! file late, GPS jumps. The same options and seed always give the same bytes.
//!
//! ```text
//! generate_fleet --out DIR                              day 2019-06-01, 100 vehicles, 10 minutes of files
//! generate_fleet --out s3://landing/ --create-bucket    the same into a landing bucket
//! generate_fleet --out DIR --days 3 --vehicles 20 --seconds 300 \
//!     --duplicates 0.01 --malformed 0.01 --out-of-order 0.01 --jumps 0.01   three noisy days
//! generate_fleet --out DIR --events 10000000            about 10 M events per day
//! ```
//!
//! Files go to `data/resources/YYYY/MM/DD/HH/MM/YYYY-MM-DD-H-M-S-events.txt` below `--out`, one
//! per second of the file-name clock that has events; as in the real feed that clock is UTC
//! minus 3 h. Next to them, outside the landing key space, `generator/manifest-YYYY-MM-DD.json`
//! records per day the options, files, bytes, lines, events by kind, duplicates, rejects by
//! d2d-model's reason code and the operating periods, so tests can check a load against it.
//! Every malformed line is checked against d2d-model's parser before it is written.
//!
//! S3 settings come from `--s3-endpoint` / `D2D_S3_ENDPOINT` and the standard AWS chain.
//! Exits 1 with the cause when something fails.

use std::collections::BTreeMap;
use std::error::Error;
use std::f64::consts::PI;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use chrono::{NaiveDate, NaiveTime, Timelike};
use clap::Parser;
use d2d::model::parse_line;
use d2d::pipeline::store::{Store, StoreOptions};
use rayon::prelude::*;
use serde_json::json;

type Result<T, E = Box<dyn Error + Send + Sync>> = std::result::Result<T, E>;

/// Generate landing days of a simulated fleet (deterministic for a given seed).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Where to write: a folder, or `s3://bucket/prefix`.
    #[arg(long, env = "D2D_GENERATE_OUT")]
    out: String,
    /// The first landing day.
    #[arg(long, default_value = "2019-06-01")]
    date: NaiveDate,
    /// Consecutive landing days to generate.
    #[arg(long, default_value_t = 1)]
    days: u32,
    /// Vehicles in the fleet (the same fleet every day).
    #[arg(long, default_value_t = 100)]
    vehicles: u32,
    /// Hours of files per day.
    #[arg(long, conflicts_with_all = ["seconds", "events"])]
    hours: Option<f64>,
    /// Seconds of files per day [default: 600].
    #[arg(long, conflicts_with = "events")]
    seconds: Option<u32>,
    /// Aim at about this many events per day: sets the seconds, and more vehicles when one
    /// day of the fleet is not enough.
    #[arg(long)]
    events: Option<u64>,
    /// File-name clock time of the day's first file [default: 15:17:00, as in the sample,
    /// or earlier when the files would run past midnight].
    #[arg(long)]
    start: Option<NaiveTime>,
    /// Seconds between two fixes of a vehicle.
    #[arg(long, default_value_t = 3.0)]
    interval: f64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Operating periods created per day (in turn: plain, crossing into the next day,
    /// deleted and created again, deleted).
    #[arg(long, default_value_t = 4)]
    periods: u32,
    /// Share of updates repeated verbatim in a later file of the day.
    #[arg(long, default_value_t = 0.0)]
    duplicates: f64,
    /// Share of updates followed by a malformed line (that d2d-model rejects).
    #[arg(long, default_value_t = 0.0)]
    malformed: f64,
    /// Share of updates delivered one file late.
    #[arg(long, default_value_t = 0.0)]
    out_of_order: f64,
    /// Share of fixes off by 300–3,000 m (a GPS jump; the next fix is back on track).
    #[arg(long, default_value_t = 0.0)]
    jumps: f64,
    /// Endpoint of an S3-compatible server, e.g. http://127.0.0.1:59100 (path-style).
    #[arg(long, env = "D2D_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// Create the bucket (or folder) first when it does not exist.
    #[arg(long)]
    create_bucket: bool,
    /// Uploads in flight at once (S3).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("generate_fleet: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The file-name clock runs this far behind UTC (file `15-17-10` holds events at `18:17:10Z`).
const NAME_CLOCK_LAG_S: i64 = 3 * 3600;
const DAY_S: i64 = 86_400;
const ORGANIZATION: &str = "org-id";
const LANDING_PREFIX: &str = "data/resources/";
/// Berlin, where the sample fleet drives.
const CENTER: (f64, f64) = (52.52, 13.405);
/// Vehicles start within this distance of the centre and turn back beyond the next.
const START_RADIUS_M: f64 = 8_000.0;
const MAX_RADIUS_M: f64 = 12_000.0;
const METRES_PER_DEGREE: f64 = 6_371_008.8 * PI / 180.0;
/// Memory per chunk of seconds generated at once (per-second buffers, then files).
const CHUNK_BYTES: f64 = 16e6;
/// Estimated bytes per update line, to size chunks and `--events`.
const UPDATE_LINE_BYTES: f64 = 225.0;

/// The options, resolved.
#[derive(Debug, Clone)]
struct Plan {
    first_day: NaiveDate,
    days: u32,
    vehicles: u32,
    /// First second of each day's files, on the file-name clock.
    start_s: i64,
    /// Seconds of files per day.
    seconds: i64,
    interval_ms: i64,
    seed: u64,
    periods: u32,
    noise: Noise,
}

#[derive(Debug, Clone, Copy)]
struct Noise {
    duplicates: f64,
    malformed: f64,
    out_of_order: f64,
    jumps: f64,
}

impl Plan {
    fn from_args(args: &Args) -> Result<Plan> {
        if !(0.1..=3600.0).contains(&args.interval) {
            return Err("--interval must be between 0.1 and 3600 seconds".into());
        }
        let interval_ms = (args.interval * 1000.0).round() as i64;
        let mut vehicles = args.vehicles;
        let seconds = if let Some(events) = args.events {
            if vehicles == 0 {
                return Err("--events needs at least one vehicle".into());
            }
            let fleet_day = f64::from(vehicles) * DAY_S as f64 * 1000.0 / interval_ms as f64;
            if events as f64 > fleet_day {
                vehicles =
                    (events as f64 * interval_ms as f64 / 1000.0 / DAY_S as f64).ceil() as u32;
                DAY_S
            } else {
                let s = events as f64 * interval_ms as f64 / 1000.0 / f64::from(vehicles);
                (s.ceil() as i64).clamp(1, DAY_S)
            }
        } else if let Some(hours) = args.hours {
            if !(hours > 0.0 && hours <= 24.0) {
                return Err("--hours must be in (0, 24]".into());
            }
            (hours * 3600.0).round() as i64
        } else {
            i64::from(args.seconds.unwrap_or(600))
        };
        if !(1..=DAY_S).contains(&seconds) {
            return Err("a day holds between 1 and 86400 seconds of files".into());
        }
        let start_s = match args.start {
            Some(t) => i64::from(t.num_seconds_from_midnight()),
            // The sample's first file, moved earlier when the day would not fit after it.
            None => (15 * 3600 + 17 * 60).min(DAY_S - seconds),
        };
        if start_s + seconds > DAY_S {
            return Err(format!(
                "--start plus {seconds} s of files runs past the end of the landing day"
            )
            .into());
        }
        for (name, rate) in [
            ("--duplicates", args.duplicates),
            ("--malformed", args.malformed),
            ("--out-of-order", args.out_of_order),
            ("--jumps", args.jumps),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} is a share: between 0 and 1").into());
            }
        }
        if args.days == 0 {
            return Err("--days must be at least 1".into());
        }
        Ok(Plan {
            first_day: args.date,
            days: args.days,
            vehicles,
            start_s,
            seconds,
            interval_ms,
            seed: args.seed,
            periods: args.periods,
            noise: Noise {
                duplicates: args.duplicates,
                malformed: args.malformed,
                out_of_order: args.out_of_order,
                jumps: args.jumps,
            },
        })
    }

    /// Seconds generated at once: enough to keep both cores busy, few enough to bound memory.
    fn chunk_seconds(&self) -> i64 {
        let per_second =
            f64::from(self.vehicles.max(1)) * 1000.0 / self.interval_ms as f64 * UPDATE_LINE_BYTES;
        ((CHUNK_BYTES / per_second) as i64).clamp(1, 600)
    }
}

fn run(args: &Args) -> Result<()> {
    let plan = Plan::from_args(args)?;
    let mut sink = Sink::open(args)?;
    let mut fleet = Fleet::new(&plan);
    for day_index in 0..plan.days {
        let started = Instant::now();
        let summary = generate_day(&plan, day_index, &mut fleet, &mut sink)?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{}: {} files, {:.1} MB, {} lines ({} events, {} duplicates, {} rejects) in {:.2} s ({:.0} MB/s)",
            summary.date,
            summary.files,
            summary.bytes as f64 / 1e6,
            summary.counts.lines,
            summary.counts.events(),
            summary.counts.duplicates,
            summary.counts.rejects(),
            secs,
            summary.bytes as f64 / 1e6 / secs.max(1e-9),
        );
    }
    sink.finish()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Randomness: SplitMix64. Tiny, fast, and good enough for a simulation; every vehicle has its
// own stream so that the output does not depend on how vehicles are spread over threads.

#[derive(Debug, Clone)]
struct Rng(u64);

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        Rng(mix(seed ^ mix(stream.wrapping_add(0x9E37_79B9_7F4A_7C15))))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi); `lo` when the range is empty.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        let n = (hi - lo).max(0) as u64;
        if n == 0 {
            return lo;
        }
        lo + ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as i64
    }

    fn between(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// True with probability `p`; draws nothing when `p` is 0, so noise-free days do not
    /// depend on the noise code.
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
}

// Streams of the seed, kept apart so that adding one kind of draw does not shift another.
const STREAM_VEHICLE: u64 = 0;
const STREAM_VEHICLE_ID: u64 = 1 << 40;
const STREAM_PERIODS: u64 = 2 << 40;

// ---------------------------------------------------------------------------------------------
// Formatting, by hand: `format!` would be the bottleneck at hundreds of MB/s.

fn push_digits(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    while n > 0 || buf.len() - i < width.max(1) {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&buf[i..]);
}

/// (year, month, day) of a day number counted from 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The feed's timestamp: `2019-06-01T18:17:10.101Z`, from milliseconds since the epoch.
fn push_timestamp(out: &mut Vec<u8>, ms: i64) {
    let (y, mo, d) = civil_from_days(ms.div_euclid(86_400_000));
    let in_day = ms.rem_euclid(86_400_000) as u64;
    push_digits(out, y as u64, 4);
    out.push(b'-');
    push_digits(out, u64::from(mo), 2);
    out.push(b'-');
    push_digits(out, u64::from(d), 2);
    out.push(b'T');
    push_digits(out, in_day / 3_600_000, 2);
    out.push(b':');
    push_digits(out, in_day / 60_000 % 60, 2);
    out.push(b':');
    push_digits(out, in_day / 1000 % 60, 2);
    out.push(b'.');
    push_digits(out, in_day % 1000, 3);
    out.push(b'Z');
}

fn timestamp(ms: i64) -> String {
    let mut out = Vec::with_capacity(24);
    push_timestamp(&mut out, ms);
    String::from_utf8_lossy(&out).into_owned()
}

/// Degrees with 5 decimals (about 1 m), trailing zeros dropped, as the feed writes them. The
/// parser reads the decimal exactly, so what d2d-model sees is what this wrote.
fn push_coordinate(out: &mut Vec<u8>, degrees: f64) {
    let units = (degrees * 1e5).round() as i64;
    if units < 0 {
        out.push(b'-');
    }
    let units = units.unsigned_abs();
    push_digits(out, units / 100_000, 1);
    let mut frac = units % 100_000;
    if frac != 0 {
        let mut width = 5;
        while frac.is_multiple_of(10) {
            frac /= 10;
            width -= 1;
        }
        out.push(b'.');
        push_digits(out, frac, width);
    }
}

fn coordinate(degrees: f64) -> String {
    let mut out = Vec::new();
    push_coordinate(&mut out, degrees);
    String::from_utf8_lossy(&out).into_owned()
}

/// A GPS fix as written: where, and when it was taken.
#[derive(Debug, Clone, Copy)]
struct Fix {
    lat: f64,
    lng: f64,
    at_ms: i64,
}

/// A vehicle line exactly as the feed writes it (register/deregister carry no `location`).
fn push_vehicle_line(out: &mut Vec<u8>, verb: &str, at_ms: i64, id: &str, fix: Option<Fix>) {
    out.extend_from_slice(b"{\"event\":\"");
    out.extend_from_slice(verb.as_bytes());
    out.extend_from_slice(b"\",\"on\":\"vehicle\",\"at\":\"");
    push_timestamp(out, at_ms);
    out.extend_from_slice(b"\",\"data\":{\"id\":\"");
    out.extend_from_slice(id.as_bytes());
    out.push(b'"');
    if let Some(f) = fix {
        out.extend_from_slice(b",\"location\":{\"lat\":");
        push_coordinate(out, f.lat);
        out.extend_from_slice(b",\"lng\":");
        push_coordinate(out, f.lng);
        out.extend_from_slice(b",\"at\":\"");
        push_timestamp(out, f.at_ms);
        out.extend_from_slice(b"\"}");
    }
    out.extend_from_slice(b"},\"organization_id\":\"");
    out.extend_from_slice(ORGANIZATION.as_bytes());
    out.extend_from_slice(b"\"}\n");
}

fn push_period_line(out: &mut Vec<u8>, verb: &str, at_ms: i64, period: &PeriodWindow) {
    out.extend_from_slice(b"{\"event\":\"");
    out.extend_from_slice(verb.as_bytes());
    out.extend_from_slice(b"\",\"on\":\"operating_period\",\"at\":\"");
    push_timestamp(out, at_ms);
    out.extend_from_slice(b"\",\"data\":{\"id\":\"");
    out.extend_from_slice(period.id.as_bytes());
    out.extend_from_slice(b"\",\"start\":\"");
    push_timestamp(out, period.start_ms);
    out.extend_from_slice(b"\",\"finish\":\"");
    push_timestamp(out, period.finish_ms);
    out.extend_from_slice(b"\"},\"organization_id\":\"");
    out.extend_from_slice(ORGANIZATION.as_bytes());
    out.extend_from_slice(b"\"}\n");
}

/// The landing key of the file written at second `name_s` of the file-name clock (seconds
/// since the epoch on that clock): `HH`/`MM` folders padded, the name's H-M-S not.
fn landing_key(name_s: i64) -> String {
    let (y, mo, d) = civil_from_days(name_s.div_euclid(DAY_S));
    let t = name_s.rem_euclid(DAY_S);
    let (h, mi, s) = (t / 3600, t / 60 % 60, t % 60);
    format!("{LANDING_PREFIX}{y:04}/{mo:02}/{d:02}/{h:02}/{mi:02}/{y:04}-{mo:02}-{d:02}-{h}-{mi}-{s}-events.txt")
}

// ---------------------------------------------------------------------------------------------
// Malformed lines: one of each reason code d2d-model gives, each built to fail for exactly
// that reason (checked against the parser before it is written).

const MALFORMED: [&str; 10] = [
    "invalid_json",
    "missing_field",
    "invalid_coordinate",
    "invalid_timestamp",
    "unknown_kind",
    "invalid_type",
    "invalid_id",
    "not_an_object",
    "duplicate_field",
    "finish_before_start",
];

fn malformed_line(code: &str, rng: &mut Rng, id: &str, at_ms: i64, fix: Fix) -> String {
    let at = timestamp(at_ms);
    let fix_at = timestamp(fix.at_ms);
    let (lat, lng) = (coordinate(fix.lat), coordinate(fix.lng));
    let update = |event: &str, id: &str, lat: &str, lng: &str, loc_at: &str| {
        format!(
            r#"{{"event":"{event}","on":"vehicle","at":"{at}","data":{{"id":"{id}","location":{{"lat":{lat},"lng":{lng},"at":"{loc_at}"}}}},"organization_id":"{ORGANIZATION}"}}"#
        )
    };
    match code {
        "invalid_json" => {
            // A line cut short, as by a crashed writer: an object never closed.
            let line = update("update", id, &lat, &lng, &fix_at);
            let cut = rng.range(line.len() as i64 / 3, line.len() as i64 * 2 / 3) as usize;
            line[..cut].to_owned()
        }
        "missing_field" => format!(
            r#"{{"event":"update","on":"vehicle","at":"{at}","data":{{"id":"{id}"}},"organization_id":"{ORGANIZATION}"}}"#
        ),
        "invalid_coordinate" => {
            let bad = coordinate(90.0 + rng.between(0.5, 9.5));
            update("update", id, &bad, &lng, &fix_at)
        }
        "invalid_timestamp" => update("update", id, &lat, &lng, &fix_at[..fix_at.len() - 1]),
        "unknown_kind" => update("teleport", id, &lat, &lng, &fix_at),
        "invalid_type" => update("update", id, &format!("\"{lat}\""), &lng, &fix_at),
        "invalid_id" => update("update", "", &lat, &lng, &fix_at),
        "not_an_object" => format!("[{}]", update("update", id, &lat, &lng, &fix_at)),
        "duplicate_field" => update("update", id, &format!("{lat},\"lat\":{lat}"), &lng, &fix_at),
        _ => {
            let start = timestamp(at_ms + 3_600_000);
            format!(
                r#"{{"event":"create","on":"operating_period","at":"{at}","data":{{"id":"op_bad","start":"{start}","finish":"{at}"}},"organization_id":"{ORGANIZATION}"}}"#
            )
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Counts, per day: what the manifest reports.

#[derive(Debug, Clone, Default)]
struct Counts {
    lines: u64,
    register: u64,
    update: u64,
    deregister: u64,
    create: u64,
    delete: u64,
    duplicates: u64,
    out_of_order: u64,
    jumps: u64,
    rejects: BTreeMap<&'static str, u64>,
}

impl Counts {
    fn events(&self) -> u64 {
        self.register + self.update + self.deregister + self.create + self.delete
    }

    fn rejects(&self) -> u64 {
        self.rejects.values().sum()
    }

    fn add(&mut self, o: &Counts) {
        self.lines += o.lines;
        self.register += o.register;
        self.update += o.update;
        self.deregister += o.deregister;
        self.create += o.create;
        self.delete += o.delete;
        self.duplicates += o.duplicates;
        self.out_of_order += o.out_of_order;
        self.jumps += o.jumps;
        for (k, v) in &o.rejects {
            *self.rejects.entry(k).or_default() += v;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The fleet.

/// The bounds of one landing day's files, in UTC milliseconds.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// First second (UTC seconds since the epoch) holding files.
    first_s: i64,
    /// One past the last second.
    end_s: i64,
}

impl Window {
    fn of(plan: &Plan, day_index: u32) -> Window {
        let day = plan.first_day + chrono::Days::new(u64::from(day_index));
        let midnight = day.and_time(NaiveTime::MIN).and_utc().timestamp();
        let first_s = midnight + plan.start_s + NAME_CLOCK_LAG_S;
        Window {
            first_s,
            end_s: first_s + plan.seconds,
        }
    }
}

#[derive(Debug, Clone)]
struct Vehicle {
    id: String,
    rng: Rng,
    lat: f64,
    lng: f64,
    /// Radians, clockwise from north.
    heading: f64,
    speed_mps: f64,
    leg_left_ms: i64,
    /// Time of the last fix (to move the vehicle by the time since).
    last_fix_ms: i64,
    /// The next fix: taken at, and received by the API at.
    next_fix_ms: i64,
    next_received_ms: i64,
    deregister_ms: i64,
    /// Lines for a later second (late fixes, duplicates), in the order they were made.
    pending: Vec<(i64, Vec<u8>)>,
}

fn uuid(rng: &mut Rng) -> String {
    let (a, b) = (rng.next_u64(), rng.next_u64());
    // Version 4, variant 10, like the feed's ids.
    let a = (a & 0xFFFF_FFFF_FFFF_0FFF) | 0x4000;
    let b = (b & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xFFFF,
        a & 0xFFFF,
        b >> 48,
        b & 0xFFFF_FFFF_FFFF
    )
}

impl Vehicle {
    fn new(seed: u64, index: u64) -> Vehicle {
        let id = uuid(&mut Rng::new(seed, STREAM_VEHICLE_ID | index));
        let mut rng = Rng::new(seed, STREAM_VEHICLE | index);
        let r = START_RADIUS_M * rng.unit().sqrt();
        let theta = rng.between(0.0, 2.0 * PI);
        let lat = CENTER.0 + r * theta.cos() / METRES_PER_DEGREE;
        let lng = CENTER.1 + r * theta.sin() / (METRES_PER_DEGREE * lat.to_radians().cos());
        Vehicle {
            id,
            heading: rng.between(0.0, 2.0 * PI),
            speed_mps: rng.between(5.0, 15.0),
            leg_left_ms: rng.range(20_000, 180_000),
            rng,
            lat,
            lng,
            last_fix_ms: 0,
            next_fix_ms: 0,
            next_received_ms: 0,
            deregister_ms: 0,
            pending: Vec::new(),
        }
    }

    /// Drives for `dt_ms`: straight legs of 20–180 s at 5–15 m/s (now and then a stop),
    /// turning at the end of each, and heading back when too far from the centre.
    fn drive(&mut self, mut dt_ms: i64) {
        while dt_ms > 0 {
            let step = dt_ms.min(self.leg_left_ms);
            let d = self.speed_mps * step as f64 / 1000.0;
            self.lat += d * self.heading.cos() / METRES_PER_DEGREE;
            self.lng += d * self.heading.sin() / (METRES_PER_DEGREE * self.lat.to_radians().cos());
            dt_ms -= step;
            self.leg_left_ms -= step;
            if self.leg_left_ms <= 0 {
                self.new_leg();
            }
        }
    }

    fn new_leg(&mut self) {
        let rng = &mut self.rng;
        self.leg_left_ms = rng.range(20_000, 180_000);
        self.speed_mps = if rng.chance(0.1) {
            0.0
        } else {
            rng.between(5.0, 15.0)
        };
        let north = (self.lat - CENTER.0) * METRES_PER_DEGREE;
        let east = (self.lng - CENTER.1) * METRES_PER_DEGREE * self.lat.to_radians().cos();
        if north.hypot(east) > MAX_RADIUS_M {
            self.heading = (-east).atan2(-north) + rng.between(-0.4, 0.4);
        } else {
            // Mostly street corners, sometimes a bend.
            let turn = [0.0, PI / 2.0, -PI / 2.0, PI][rng.range(0, 4) as usize];
            self.heading += turn + rng.between(-0.3, 0.3);
        }
    }

    /// Sets up the day: registered in the window's first second, deregistered in its last,
    /// fixes every interval in between. The vehicle stays where it parked the day before.
    fn start_day(&mut self, window: Window, interval_ms: i64) -> i64 {
        let register_ms = window.first_s * 1000 + self.rng.range(0, 1000);
        self.deregister_ms = (window.end_s - 1) * 1000 + self.rng.range(0, 1000);
        self.next_fix_ms = register_ms + self.rng.range(1, interval_ms.max(2));
        self.last_fix_ms = self.next_fix_ms;
        self.next_received_ms = self.next_fix_ms + self.rng.range(5, 250);
        register_ms
    }

    /// Writes this vehicle's lines for the seconds `[from_s, to_s)` of `window` into
    /// `seconds` (one buffer per second).
    fn run_chunk(
        &mut self,
        plan: &Plan,
        window: Window,
        (from_s, to_s): (i64, i64),
        seconds: &mut [Vec<u8>],
        counts: &mut Counts,
    ) -> Result<()> {
        let slot = |s: i64| (s - from_s) as usize;
        // Lines held back from earlier chunks come first, in the order they were made, as
        // they would have within one chunk.
        let mut kept = Vec::new();
        for (s, line) in std::mem::take(&mut self.pending) {
            if s < to_s {
                seconds[slot(s)].extend_from_slice(&line);
            } else {
                kept.push((s, line));
            }
        }
        self.pending = kept;

        if from_s == window.first_s {
            let register_ms = self.start_day(window, plan.interval_ms);
            push_vehicle_line(
                &mut seconds[slot(register_ms / 1000)],
                "register",
                register_ms,
                &self.id,
                None,
            );
            counts.register += 1;
            counts.lines += 1;
        }
        let last_s = window.end_s - 1;
        // Fixes stop a second before the window's end, which is the deregister's.
        while self.next_received_ms < last_s * 1000 && self.next_received_ms / 1000 < to_s {
            self.emit_fix(plan, last_s, (from_s, to_s), seconds, counts)?;
        }
        if to_s == window.end_s {
            push_vehicle_line(
                &mut seconds[slot(last_s)],
                "deregister",
                self.deregister_ms,
                &self.id,
                None,
            );
            counts.deregister += 1;
            counts.lines += 1;
        }
        Ok(())
    }

    fn emit_fix(
        &mut self,
        plan: &Plan,
        last_s: i64,
        (from_s, to_s): (i64, i64),
        seconds: &mut [Vec<u8>],
        counts: &mut Counts,
    ) -> Result<()> {
        let (fix_ms, received_ms) = (self.next_fix_ms, self.next_received_ms);
        self.drive(fix_ms - self.last_fix_ms);
        self.last_fix_ms = fix_ms;
        self.next_fix_ms = fix_ms + plan.interval_ms;
        self.next_received_ms = self.next_fix_ms + self.rng.range(5, 250);
        let noise = plan.noise;

        let mut fix = Fix {
            lat: self.lat,
            lng: self.lng,
            at_ms: fix_ms,
        };
        if self.rng.chance(noise.jumps) {
            let d = self.rng.between(300.0, 3000.0);
            let bearing = self.rng.between(0.0, 2.0 * PI);
            fix.lat += d * bearing.cos() / METRES_PER_DEGREE;
            fix.lng += d * bearing.sin() / (METRES_PER_DEGREE * fix.lat.to_radians().cos());
            counts.jumps += 1;
        }
        let mut line = Vec::with_capacity(UPDATE_LINE_BYTES as usize + 16);
        push_vehicle_line(&mut line, "update", received_ms, &self.id, Some(fix));
        counts.update += 1;
        counts.lines += 1;

        let mut at_s = received_ms / 1000;
        // Late by one file, but never past the day's last file.
        if at_s < last_s && self.rng.chance(noise.out_of_order) {
            at_s += 1;
            counts.out_of_order += 1;
        }
        let mut place = |s: i64, line: &[u8], pending: &mut Vec<(i64, Vec<u8>)>| {
            if s < to_s {
                seconds[(s - from_s) as usize].extend_from_slice(line);
            } else {
                pending.push((s, line.to_vec()));
            }
        };
        place(at_s, &line, &mut self.pending);
        if self.rng.chance(noise.duplicates) {
            let again = at_s + self.rng.range(1, 6);
            if again <= last_s {
                place(again, &line, &mut self.pending);
                counts.duplicates += 1;
                counts.lines += 1;
            }
        }
        if self.rng.chance(noise.malformed) {
            let code = MALFORMED[self.rng.range(0, MALFORMED.len() as i64) as usize];
            let mut bad = malformed_line(code, &mut self.rng, &self.id, received_ms, fix);
            // Honest counts: the line must fail d2d-model's parser for the reason recorded.
            match parse_line(bad.as_bytes()) {
                Err(reason) if reason.code() == code => {}
                other => {
                    return Err(format!(
                        "generator bug: malformed line meant as {code} parses as {other:?}: {bad}"
                    )
                    .into())
                }
            }
            bad.push('\n');
            place(received_ms / 1000, bad.as_bytes(), &mut self.pending);
            *counts.rejects.entry(code).or_default() += 1;
            counts.lines += 1;
        }
        Ok(())
    }
}

struct Fleet {
    /// Contiguous groups of vehicles, one task each; files list vehicles in index order
    /// whatever the grouping, so the output does not depend on the number of threads.
    shards: Vec<Shard>,
}

struct Shard {
    vehicles: Vec<Vehicle>,
    /// This shard's lines per second of the current chunk. Kept from chunk to chunk: fresh
    /// buffers every chunk cost more in page faults than the generation itself.
    seconds: Vec<Vec<u8>>,
    counts: Counts,
}

impl Fleet {
    fn new(plan: &Plan) -> Fleet {
        let vehicles: Vec<Vehicle> = (0..u64::from(plan.vehicles))
            .into_par_iter()
            .map(|i| Vehicle::new(plan.seed, i))
            .collect();
        let per_shard = vehicles
            .len()
            .div_ceil(rayon::current_num_threads() * 4)
            .max(1);
        let mut shards = Vec::new();
        let mut rest = vehicles.into_iter();
        loop {
            let vehicles: Vec<Vehicle> = rest.by_ref().take(per_shard).collect();
            if vehicles.is_empty() {
                break;
            }
            shards.push(Shard {
                vehicles,
                seconds: Vec::new(),
                counts: Counts::default(),
            });
        }
        Fleet { shards }
    }
}

/// The files of one chunk of seconds, assembled on demand from the shards' buffers.
struct Chunk<'a> {
    from_s: i64,
    period_lines: &'a BTreeMap<i64, Vec<u8>>,
    shards: &'a [Shard],
}

impl Chunk<'_> {
    fn parts(&self, i: usize) -> impl Iterator<Item = &[u8]> {
        let s = self.from_s + i as i64;
        let periods = self.period_lines.get(&s).map_or(&[][..], Vec::as_slice);
        std::iter::once(periods).chain(self.shards.iter().map(move |sh| sh.seconds[i].as_slice()))
    }

    fn len(&self, i: usize) -> usize {
        self.parts(i).map(<[u8]>::len).sum()
    }

    fn key(&self, i: usize) -> String {
        landing_key(self.from_s + i as i64 - NAME_CLOCK_LAG_S)
    }

    fn assemble(&self, i: usize, out: &mut Vec<u8>) {
        out.clear();
        for p in self.parts(i) {
            out.extend_from_slice(p);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Operating periods.

#[derive(Debug, Clone)]
struct PeriodWindow {
    id: String,
    start_ms: i64,
    finish_ms: i64,
}

/// One period of the day and the events about it.
#[derive(Debug, Clone)]
struct PeriodPlan {
    /// The window as it finally stands.
    window: PeriodWindow,
    kind: &'static str,
    deleted: bool,
    /// (at, verb, window) of each event, in time order.
    events: Vec<(i64, &'static str, PeriodWindow)>,
}

/// The day's periods, in turn: `plain` (inside the day), `crosses_day` (from the end of this
/// day's files into the next day's), `recreated` (created, deleted, created again with another
/// window), `deleted` (created, then deleted).
fn plan_periods(plan: &Plan, day_index: u32, date: NaiveDate, window: Window) -> Vec<PeriodPlan> {
    let mut rng = Rng::new(plan.seed, STREAM_PERIODS | u64::from(day_index));
    let (first, end) = (window.first_s * 1000, window.end_s * 1000);
    let span = end - first;
    // Events of the day are sent in its files, before the deregisters of the last second.
    let latest = end - 1001;
    let clamp = |ms: i64| ms.clamp(first, latest.max(first));
    let inside = |rng: &mut Rng, created: i64, id: &str| {
        let start = created + rng.range(0, span / 6);
        PeriodWindow {
            id: id.to_owned(),
            start_ms: start,
            finish_ms: start + rng.range(span / 6, span / 2).max(1000),
        }
    };
    (0..plan.periods)
        .map(|j| {
            let id = format!("op_{}_{}", date.format("%Y%m%d"), j + 1);
            let created = clamp(first + rng.range(0, span / 3));
            match j % 4 {
                0 => {
                    let w = inside(&mut rng, created, &id);
                    PeriodPlan {
                        window: w.clone(),
                        kind: "plain",
                        deleted: false,
                        events: vec![(created, "create", w)],
                    }
                }
                1 => {
                    let w = PeriodWindow {
                        id: id.clone(),
                        start_ms: end - rng.range(span / 10, span / 3).max(1),
                        finish_ms: end
                            + (DAY_S - plan.seconds) * 1000
                            + rng.range(span / 10, span / 3).max(1),
                    };
                    PeriodPlan {
                        window: w.clone(),
                        kind: "crosses_day",
                        deleted: false,
                        events: vec![(created, "create", w)],
                    }
                }
                2 => {
                    let first_window = inside(&mut rng, created, &id);
                    let deleted_at = clamp(created + rng.range(1, span / 3));
                    let recreated_at = clamp(deleted_at + rng.range(1, span / 6));
                    let w = inside(&mut rng, recreated_at, &id);
                    PeriodPlan {
                        window: w.clone(),
                        kind: "recreated",
                        deleted: false,
                        events: vec![
                            (created, "create", first_window.clone()),
                            (deleted_at, "delete", first_window),
                            (recreated_at, "create", w),
                        ],
                    }
                }
                _ => {
                    let w = inside(&mut rng, created, &id);
                    let deleted_at = clamp(created + rng.range(1, span / 3));
                    PeriodPlan {
                        window: w.clone(),
                        kind: "deleted",
                        deleted: true,
                        events: vec![(created, "create", w.clone()), (deleted_at, "delete", w)],
                    }
                }
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// One day.

struct DaySummary {
    date: NaiveDate,
    files: u64,
    bytes: u64,
    counts: Counts,
}

fn generate_day(
    plan: &Plan,
    day_index: u32,
    fleet: &mut Fleet,
    sink: &mut Sink,
) -> Result<DaySummary> {
    let date = plan.first_day + chrono::Days::new(u64::from(day_index));
    let window = Window::of(plan, day_index);
    let periods = plan_periods(plan, day_index, date, window);

    // Period lines by second: a handful per day.
    let mut counts = Counts::default();
    let mut period_lines: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
    for p in &periods {
        for (at, verb, w) in &p.events {
            push_period_line(period_lines.entry(at / 1000).or_default(), verb, *at, w);
            counts.lines += 1;
            if *verb == "create" {
                counts.create += 1;
            } else {
                counts.delete += 1;
            }
        }
    }

    let (mut files, mut bytes) = (0u64, 0u64);
    let (mut first_key, mut last_key) = (None, None);
    let chunk_seconds = plan.chunk_seconds();
    let mut from_s = window.first_s;
    while from_s < window.end_s {
        let to_s = (from_s + chunk_seconds).min(window.end_s);
        let n = (to_s - from_s) as usize;
        fleet
            .shards
            .par_iter_mut()
            .try_for_each(|shard| -> Result<()> {
                shard.seconds.resize_with(n, Vec::new);
                shard.seconds.iter_mut().for_each(Vec::clear);
                shard.counts = Counts::default();
                for v in shard.vehicles.iter_mut() {
                    v.run_chunk(
                        plan,
                        window,
                        (from_s, to_s),
                        &mut shard.seconds,
                        &mut shard.counts,
                    )?;
                }
                Ok(())
            })?;
        for shard in &fleet.shards {
            counts.add(&shard.counts);
        }
        let chunk = Chunk {
            from_s,
            period_lines: &period_lines,
            shards: &fleet.shards,
        };
        // Seconds without events have no file, as in the feed.
        let present: Vec<(usize, usize)> = (0..n)
            .map(|i| (i, chunk.len(i)))
            .filter(|&(_, len)| len > 0)
            .collect();
        files += present.len() as u64;
        bytes += present.iter().map(|&(_, len)| len as u64).sum::<u64>();
        if first_key.is_none() {
            first_key = present.first().map(|&(i, _)| chunk.key(i));
        }
        if let Some(&(i, _)) = present.last() {
            last_key = Some(chunk.key(i));
        }
        sink.write_chunk(&chunk, &present)?;
        from_s = to_s;
    }

    let manifest = manifest(
        plan, day_index, date, window, &periods, &counts, files, bytes, first_key, last_key,
    );
    let mut text = serde_json::to_vec_pretty(&manifest)?;
    text.push(b'\n');
    sink.write_file(format!("generator/manifest-{date}.json"), text)?;
    Ok(DaySummary {
        date,
        files,
        bytes,
        counts,
    })
}

#[allow(clippy::too_many_arguments)]
fn manifest(
    plan: &Plan,
    day_index: u32,
    date: NaiveDate,
    window: Window,
    periods: &[PeriodPlan],
    counts: &Counts,
    files: u64,
    bytes: u64,
    first_key: Option<String>,
    last_key: Option<String>,
) -> serde_json::Value {
    let noise = plan.noise;
    json!({
        "generator": "generate_fleet",
        "format": 1,
        "date": date.to_string(),
        "day_index": day_index,
        "seed": plan.seed,
        "options": {
            "first_date": plan.first_day.to_string(),
            "days": plan.days,
            "vehicles": plan.vehicles,
            "interval_ms": plan.interval_ms,
            "start": NaiveTime::MIN
                .overflowing_add_signed(chrono::TimeDelta::seconds(plan.start_s))
                .0
                .to_string(),
            "seconds": plan.seconds,
            "periods": plan.periods,
            "duplicates": noise.duplicates,
            "malformed": noise.malformed,
            "out_of_order": noise.out_of_order,
            "jumps": noise.jumps,
        },
        "landing_prefix": format!("{LANDING_PREFIX}{}/", date.format("%Y/%m/%d")),
        "first_key": first_key,
        "last_key": last_key,
        "utc_from": timestamp(window.first_s * 1000),
        "utc_to": timestamp(window.end_s * 1000),
        "files": files,
        "bytes": bytes,
        "lines": counts.lines,
        "events": counts.events(),
        "by_kind": {
            "vehicle.register": counts.register,
            "vehicle.update": counts.update,
            "vehicle.deregister": counts.deregister,
            "operating_period.create": counts.create,
            "operating_period.delete": counts.delete,
        },
        "duplicates": counts.duplicates,
        "rejects": counts.rejects(),
        "reject_reasons": counts.rejects,
        "out_of_order": counts.out_of_order,
        "jumps": counts.jumps,
        "vehicles": plan.vehicles,
        "periods": periods.iter().map(|p| json!({
            "id": p.window.id,
            "kind": p.kind,
            "start": timestamp(p.window.start_ms),
            "finish": timestamp(p.window.finish_ms),
            "deleted": p.deleted,
            "events": p.events.len(),
        })).collect::<Vec<_>>(),
    })
}

// ---------------------------------------------------------------------------------------------
// Output.

enum Sink {
    /// A folder: files written from rayon's threads.
    Local { root: PathBuf },
    /// An object store: uploads run on a tokio runtime while the next chunk is generated.
    Store {
        store: Store,
        runtime: tokio::runtime::Runtime,
        uploads: tokio::task::JoinSet<d2d::pipeline::Result<()>>,
        limit: usize,
    },
}

impl Sink {
    fn open(args: &Args) -> Result<Sink> {
        if !args.out.contains("://") {
            let root = PathBuf::from(&args.out);
            std::fs::create_dir_all(&root)
                .map_err(|e| format!("cannot create {}: {e}", root.display()))?;
            return Ok(Sink::Local { root });
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let options = StoreOptions {
            s3_endpoint: args.s3_endpoint.clone().filter(|s| !s.is_empty()),
            ..StoreOptions::default()
        };
        let store = runtime.block_on(async {
            let store = Store::open_with(&args.out, &options).await?;
            if args.create_bucket {
                store.create_if_missing().await?;
            }
            Ok::<_, d2d::pipeline::Error>(store)
        })?;
        Ok(Sink::Store {
            store,
            runtime,
            uploads: tokio::task::JoinSet::new(),
            limit: args.concurrency.max(1),
        })
    }

    /// Writes the files `present` (index in the chunk, size) of `chunk`.
    fn write_chunk(&mut self, chunk: &Chunk<'_>, present: &[(usize, usize)]) -> Result<()> {
        match self {
            Sink::Local { root } => {
                // Minute folders once each, not per file.
                let mut folders: Vec<String> = present
                    .iter()
                    .filter_map(|&(i, _)| chunk.key(i).rsplit_once('/').map(|(d, _)| d.to_owned()))
                    .collect();
                folders.dedup();
                for f in folders {
                    let dir = root.join(f);
                    std::fs::create_dir_all(&dir)
                        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                }
                // One buffer per task rather than per file, for the same page-fault reason
                // as the shards' buffers.
                present
                    .par_iter()
                    .try_for_each_init(Vec::new, |body, &(i, _)| {
                        chunk.assemble(i, body);
                        let path = root.join(chunk.key(i));
                        std::fs::write(&path, &body)
                            .map_err(|e| format!("cannot write {}: {e}", path.display()).into())
                    })
            }
            Sink::Store { .. } => {
                for &(i, len) in present {
                    let mut body = Vec::with_capacity(len);
                    chunk.assemble(i, &mut body);
                    self.write_file(chunk.key(i), body)?;
                }
                Ok(())
            }
        }
    }

    fn write_file(&mut self, key: String, body: Vec<u8>) -> Result<()> {
        match self {
            Sink::Local { root } => {
                let path = root.join(&key);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                }
                std::fs::write(&path, body)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()).into())
            }
            Sink::Store {
                store,
                runtime,
                uploads,
                limit,
            } => {
                while uploads.len() >= *limit {
                    if let Some(done) = runtime.block_on(uploads.join_next()) {
                        done??;
                    }
                }
                let store = store.clone();
                let _guard = runtime.enter();
                uploads.spawn(async move { store.put(&key, body.into()).await });
                Ok(())
            }
        }
    }

    fn finish(&mut self) -> Result<()> {
        if let Sink::Store {
            runtime, uploads, ..
        } = self
        {
            while let Some(done) = runtime.block_on(uploads.join_next()) {
                done??;
            }
        }
        Ok(())
    }
}
