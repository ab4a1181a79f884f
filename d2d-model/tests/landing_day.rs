//! The real landing day (testdata/landing: 717 files of 2019-06-01), checked against facts
//! established without d2d-model: line and kind counts from the files themselves, and distances
//! recomputed here from `serde_json::Value` with a haversine written out by hand, then pinned
//! to totals computed independently in Python (`math` module) on the same files.

// Tests fail loudly on purpose: an unwrap here is an assertion.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use d2d_model::{check, distance, landing, parse, period, track};

fn landing_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/landing")
}

/// Every file of the sample day as (key relative to `testdata/landing`, bytes), in landing
/// order.
fn day() -> Vec<(String, Vec<u8>)> {
    let root = landing_dir();
    let mut out: Vec<_> = walkdir::WalkDir::new(&root)
        .follow_links(true)
        .into_iter()
        .map(|entry| entry.unwrap())
        .filter(|entry| !entry.file_type().is_dir())
        .map(|entry| {
            let name = entry
                .path()
                .strip_prefix(&root)
                .unwrap()
                .display()
                .to_string();
            (name, std::fs::read(entry.path()).unwrap())
        })
        .collect();
    out.sort_by(|a, b| landing::landing_order(&a.0, &b.0));
    out
}

#[test]
fn counts_match_the_files() {
    let sources = day();
    assert_eq!(sources.len(), 717);
    let raw_lines: usize = sources
        .iter()
        .map(|(_, b)| b.split(|&c| c == b'\n').filter(|l| !l.is_empty()).count())
        .sum();
    let parsed = parse::parse_sources(&sources);
    let p = check::profile(&parsed, sources.len() as u64);
    let c = &p.counts;
    assert_eq!(raw_lines, 35_290);
    assert_eq!(c.lines, 35_290);
    assert_eq!((c.events, c.duplicates, c.rejects), (35_290, 0, 0));
    let expected: BTreeMap<String, u64> = [
        ("operating_period.create", 2),
        ("operating_period.delete", 0),
        ("vehicle.deregister", 97),
        ("vehicle.register", 100),
        ("vehicle.update", 35_091),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(c.by_kind, expected);
    assert_eq!((c.vehicles, c.periods), (100, 2));
    // Register and deregister lines carry no location key.
    assert_eq!(p.missing["data.location"], 197);
    // Files are named 3 h behind UTC: the first file, 15-17-3, holds an event at 18:17:03Z.
    assert_eq!(
        d2d_model::time::format_timestamp(&p.time_ranges["at"].min),
        "2019-06-01T18:17:03.087Z"
    );
    // Every line is traced back to its file and line.
    let first = &parsed.events[0];
    assert!(first.source.ends_with("2019-06-01-15-17-3-events.txt"));
    assert_eq!(first.line, 1);
}

#[test]
fn parallel_file_parse_equals_one_big_sequential_parse() {
    let sources = day();
    let per_file = parse::parse_sources(&sources);
    let joined: Vec<u8> = sources.iter().flat_map(|(_, b)| b.clone()).collect();
    let seq = parse::parse_bytes("day", &joined);
    let par = parse::parse_bytes_par("day", &joined);
    assert_eq!(seq, par);
    let events = |p: &parse::Parsed| p.events.iter().map(|r| r.event.clone()).collect::<Vec<_>>();
    assert_eq!(events(&seq), events(&per_file));
}

/// Haversine written out from the textbook formula, independent of `geo`.
fn haversine(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (p1, p2) = (a.0.to_radians(), b.0.to_radians());
    let dp = p2 - p1;
    let dl = (b.1 - a.1).to_radians();
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6_371_008.8 * h.sqrt().asin()
}

fn ts(v: &serde_json::Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

#[test]
fn distances_match_an_independent_computation() {
    let sources = day();
    // Independent path: untyped JSON, BTreeSet for de-duplication and ordering.
    let mut windows = BTreeMap::new();
    let mut fixes: BTreeMap<String, BTreeSet<(DateTime<Utc>, u64, u64)>> = BTreeMap::new();
    for (_, bytes) in &sources {
        for line in bytes.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(line).unwrap();
            let d = &v["data"];
            match (v["on"].as_str().unwrap(), v["event"].as_str().unwrap()) {
                ("operating_period", "create") => {
                    windows.insert(
                        d["id"].as_str().unwrap().to_owned(),
                        (ts(&d["start"]), ts(&d["finish"])),
                    );
                }
                ("vehicle", "update") => {
                    let l = &d["location"];
                    let fix = (
                        ts(&l["at"]),
                        l["lat"].as_f64().unwrap().to_bits(),
                        l["lng"].as_f64().unwrap().to_bits(),
                    );
                    fixes
                        .entry(d["id"].as_str().unwrap().to_owned())
                        .or_default()
                        .insert(fix);
                }
                _ => {}
            }
        }
    }
    let mut expected = Vec::new();
    for (period, (start, finish)) in &windows {
        for (vehicle, track) in &fixes {
            let w: Vec<_> = track
                .iter()
                .filter(|f| *start <= f.0 && f.0 <= *finish)
                .collect();
            if w.is_empty() {
                continue;
            }
            let pt = |f: &(DateTime<Utc>, u64, u64)| (f64::from_bits(f.1), f64::from_bits(f.2));
            let metres: f64 = w.windows(2).map(|p| haversine(pt(p[0]), pt(p[1]))).sum();
            expected.push((period.clone(), vehicle.clone(), w.len() as u64, metres));
        }
    }

    let parsed = parse::parse_sources(&sources);
    let events = || parsed.events.iter().map(|r| &r.event);
    let periods = period::resolve_periods(events());
    let rows = distance::period_distances(&periods, &track::tracks(events()), &Default::default());

    assert_eq!(rows.len(), expected.len());
    for (row, (p, v, n, m)) in rows.iter().zip(&expected) {
        assert_eq!(
            (row.period.as_str(), row.vehicle.as_str(), row.fixes),
            (p.as_str(), v.as_str(), *n)
        );
        assert!(
            (row.metres - m).abs() < 1e-6,
            "{p}/{v}: {} vs {m}",
            row.metres
        );
    }

    // Pinned totals, computed in Python from the raw files (json + math, own haversine).
    let distance::Averages {
        periods: avg,
        overall,
        ..
    } = distance::averages(&periods, &rows);
    let by_period = |id: &str| avg.iter().find(|a| a.period.as_str() == id).unwrap();
    let fixes_in = |id: &str| {
        rows.iter()
            .filter(|r| r.period.as_str() == id)
            .map(|r| r.fixes)
            .sum::<u64>()
    };
    assert_eq!((by_period("op_1").vehicles, fixes_in("op_1")), (44, 6_211));
    assert_eq!(
        (by_period("op_2").vehicles, fixes_in("op_2")),
        (100, 25_655)
    );
    assert!((by_period("op_1").total_metres - 217_289.327_347).abs() < 1e-3);
    assert!((by_period("op_2").total_metres - 901_687.770_106).abs() < 1e-3);
    assert!((by_period("op_1").avg_metres.unwrap() - 4_938.393_803).abs() < 1e-3);
    assert!((by_period("op_2").avg_metres.unwrap() - 9_016.877_701).abs() < 1e-3);
    assert!((overall.unwrap() - (217_289.327_347 + 901_687.770_106) / 144.0).abs() < 1e-3);

    // The sped-up replay: a 30 m/s limit (108 km/h) throws away a large share of the distance.
    let limited = distance::period_distances(
        &periods,
        &track::tracks(events()),
        &distance::DistanceOptions {
            max_speed_mps: Some(30.0),
        },
    );
    let total = |r: &[distance::PeriodDistance]| r.iter().map(|r| r.metres).sum::<f64>();
    assert!(total(&limited) < 0.9 * total(&rows));
}
