//! The fleet generator (`examples/generate_fleet.rs`) as tests and benchmarks rely on it: the
//! same seed gives the same bytes; its manifest says exactly what d2d-model finds in the files;
//! and a noisy multi-day set goes through the daily load with the manifest's counts and, for
//! every (period, vehicle), d2d-model's distance.

// Tests fail loudly on purpose: an unwrap here is an assertion.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use d2d::model::landing::{landing_order, LandingName};
use d2d::model::parse::{parse_bytes, Parsed};
use d2d::model::time::parse_timestamp;
use d2d::model::{check, distance, period, track};
use d2d::pipeline::run::{no_events, run_days, RunConfig};
use d2d::pipeline::warehouse::Warehouse;
use d2d_testkit::{example, read_tree, unique_tag, TempDir, TestDb};
use serde_json::Value;

fn generate(out: &Path, args: &[&str]) {
    generate_with_threads(out, args, None);
}

fn generate_with_threads(out: &Path, args: &[&str], threads: Option<&str>) {
    let mut cmd = Command::new(example("generate_fleet"));
    cmd.arg("--out").arg(out).args(args);
    if let Some(n) = threads {
        cmd.env("RAYON_NUM_THREADS", n);
    }
    let output = cmd.output().expect("generate_fleet runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The landing files of `day` (`data/resources/YYYY/MM/DD/…`), keys relative to `out`.
fn day_files(out: &Path, day: NaiveDate) -> Vec<(String, Vec<u8>)> {
    let prefix = format!("data/resources/{}", day.format("%Y/%m/%d"));
    read_tree(&out.join(&prefix))
        .into_iter()
        .map(|(k, b)| (format!("{prefix}/{k}"), b))
        .collect()
}

fn manifest(out: &Path, day: NaiveDate) -> Value {
    let path = out.join(format!("generator/manifest-{day}.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn parse_in_order(files: &[(String, Vec<u8>)]) -> Parsed {
    Parsed::merge(files.iter().map(|(k, b)| parse_bytes(k, b)))
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

fn day(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

const NOISE: [&str; 8] = [
    "--duplicates",
    "0.02",
    "--malformed",
    "0.02",
    "--out-of-order",
    "0.02",
    "--jumps",
    "0.02",
];

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let tmp = TempDir::new("gen-seed");
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    let common = [
        &["--days", "2", "--vehicles", "15", "--seconds", "60"][..],
        &NOISE[..],
    ]
    .concat();
    generate(&a, &[&common[..], &["--seed", "7"]].concat());
    // One thread instead of several: the same bytes.
    generate_with_threads(&b, &[&common[..], &["--seed", "7"]].concat(), Some("1"));
    generate(&c, &[&common[..], &["--seed", "8"]].concat());
    let (ta, tb, tc) = (read_tree(&a), read_tree(&b), read_tree(&c));
    assert!(ta.len() > 100, "{} files", ta.len());
    assert!(
        ta == tb,
        "same seed, same files and bytes (manifests included)"
    );
    let data = |t: &[(String, Vec<u8>)]| {
        t.iter()
            .filter(|(k, _)| k.starts_with("data/"))
            .map(|(_, b)| b.clone())
            .collect::<Vec<_>>()
    };
    assert_ne!(data(&ta), data(&tc), "another seed, other bytes");
}

/// Whatever the generator says it made and injected is what d2d-model finds, day by day, and
/// the files sit at the landing keys of their day, an hour offset as in the real feed.
#[test]
fn manifest_matches_what_d2d_model_parses() {
    let tmp = TempDir::new("gen-manifest");
    let args = [
        &["--date", "2019-06-01", "--days", "2", "--vehicles", "30"][..],
        &["--seconds", "240", "--seed", "3", "--periods", "6"][..],
        &NOISE[..],
    ]
    .concat();
    generate(tmp.path(), &args);
    for d in [day("2019-06-01"), day("2019-06-02")] {
        let m = manifest(tmp.path(), d);
        let files = day_files(tmp.path(), d);
        let parsed = parse_in_order(&files);
        let profile = check::profile(&parsed, files.len() as u64);
        let c = &profile.counts;
        assert_eq!(u(&m["files"]), c.files, "{d}");
        let bytes: usize = files.iter().map(|f| f.1.len()).sum();
        assert_eq!(u(&m["bytes"]), bytes as u64);
        assert_eq!(u(&m["lines"]), c.lines);
        assert_eq!(u(&m["events"]), c.events);
        assert_eq!(u(&m["duplicates"]), c.duplicates);
        assert_eq!(u(&m["rejects"]), c.rejects);
        for (kind, n) in &c.by_kind {
            assert_eq!(u(&m["by_kind"][kind]), *n, "{d} {kind}");
        }
        let reasons: std::collections::BTreeMap<String, u64> =
            serde_json::from_value(m["reject_reasons"].clone()).unwrap();
        assert_eq!(reasons, c.reject_reasons, "{d}");
        assert_eq!(u(&m["vehicles"]), c.vehicles);
        // Every noise kind was really injected, so the comparisons above mean something.
        for key in ["duplicates", "rejects", "out_of_order", "jumps"] {
            assert!(u(&m[key]) > 0, "{d}: no {key}");
        }
        assert_eq!(m["first_key"].as_str(), files.first().map(|f| f.0.as_str()));
        assert_eq!(m["last_key"].as_str(), files.last().map(|f| f.0.as_str()));

        // The day's periods, as d2d-model resolves them, are the manifest's.
        let events = || parsed.events.iter().map(|r| &r.event);
        let periods = period::resolve_periods(events());
        let listed = m["periods"].as_array().unwrap();
        assert_eq!(periods.len(), listed.len());
        for p in listed {
            let state = periods
                .iter()
                .find(|s| s.period.id().as_str() == p["id"].as_str().unwrap())
                .unwrap();
            assert_eq!(state.deleted, p["deleted"].as_bool().unwrap(), "{p}");
            let at = |k: &str| parse_timestamp(p[k].as_str().unwrap()).unwrap();
            assert_eq!(
                (state.period.start(), state.period.finish()),
                (at("start"), at("finish"))
            );
        }

        // File-name time = UTC minus 3 h: every event of a file was received in its second,
        // or up to a few seconds before when delivered late or repeated.
        for (key, _) in &files {
            let name = LandingName::parse(key).unwrap();
            assert_eq!(name.date, d, "{key}");
        }
        for r in &parsed.events {
            let name = LandingName::parse(&r.source).unwrap();
            let second = name.datetime().and_utc() + TimeDelta::hours(3);
            let lag = second.timestamp() - r.event.at.timestamp();
            assert!(
                (0..=6).contains(&lag),
                "{}: event at {} in file {second}",
                r.source,
                r.event.at
            );
        }
    }
}

/// Three noisy days through the daily load (the generator's output folder as landing, so its
/// manifests sit next to the files the load lists): the runs count what the manifests say, and
/// every (period, vehicle) distance is d2d-model's over all three days — including a period
/// that runs from one landing day into the next and one deleted and created again.
#[tokio::test]
async fn noisy_days_load_with_the_manifest_counts_and_model_distances() {
    let tmp = TempDir::new("gen-load");
    let (landing, lake) = (tmp.path().join("landing"), tmp.path().join("lake"));
    let args = [
        &["--date", "2019-06-01", "--days", "3", "--vehicles", "20"][..],
        &["--seconds", "180", "--seed", "11", "--periods", "4"][..],
        &NOISE[..],
    ]
    .concat();
    generate(&landing, &args);
    let days = [day("2019-06-01"), day("2019-06-02"), day("2019-06-03")];
    let manifests: Vec<Value> = days.iter().map(|d| manifest(&landing, *d)).collect();

    let db = TestDb::create_tagged("fleet").await;
    let config = RunConfig::new(
        landing.to_str().unwrap(),
        lake.to_str().unwrap(),
        db.url.as_str(),
    );
    let reports = run_days(&config, days[0], days[2], &no_events)
        .await
        .unwrap();
    assert_eq!(reports.len(), 3);
    for (r, m) in reports.iter().zip(&manifests) {
        let c = &r.counts;
        assert_eq!(
            (c.files, c.bytes, c.lines, c.events, c.duplicates, c.rejects),
            (
                u(&m["files"]),
                u(&m["bytes"]),
                u(&m["lines"]),
                u(&m["events"]),
                u(&m["duplicates"]),
                u(&m["rejects"])
            ),
            "{}",
            r.day
        );
    }

    let wh = Warehouse::connect(&db.url).await.unwrap();
    let audit = wh
        .client()
        .query(
            "SELECT landing_day, files, lines, events, duplicates, rejects FROM etl.load_run
              WHERE status = 'succeeded' ORDER BY landing_day",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(audit.len(), 3);
    for (row, m) in audit.iter().zip(&manifests) {
        assert_eq!(row.get::<_, NaiveDate>(0).to_string(), m["date"]);
        let got: Vec<i64> = (1..6).map(|i| row.get(i)).collect();
        let want: Vec<i64> = ["files", "lines", "events", "duplicates", "rejects"]
            .iter()
            .map(|k| u(&m[*k]) as i64)
            .collect();
        assert_eq!(got, want, "{}", m["date"]);
    }
    for (d, m) in days.iter().zip(&manifests) {
        let rows = wh
            .client()
            .query(
                "SELECT code, count(*) FROM etl.reject WHERE landing_day = $1 GROUP BY code ORDER BY code",
                &[d],
            )
            .await
            .unwrap();
        let got: serde_json::Map<String, Value> = rows
            .iter()
            .map(|r| (r.get::<_, String>(0), Value::from(r.get::<_, i64>(1))))
            .collect();
        assert_eq!(Value::Object(got), m["reject_reasons"], "{d}");
    }

    // d2d-model over all three days' files, in landing order.
    let files: Vec<_> = days.iter().flat_map(|d| day_files(&landing, *d)).collect();
    let all = parse_in_order(&files);
    let events = || all.events.iter().map(|r| &r.event);
    let periods = period::resolve_periods(events());
    let expected = distance::period_distances(
        &periods,
        &track::tracks(events()),
        &distance::DistanceOptions::default(),
    );
    let got = wh
        .client()
        .query(
            "SELECT operating_period_id, vehicle_id, fixes, first_at, last_at, metres
               FROM dwh.vehicle_period_distance ORDER BY operating_period_id, vehicle_id",
            &[],
        )
        .await
        .unwrap();
    assert!(expected.len() > 20, "{} pairs", expected.len());
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(g.get::<_, String>(0), e.period.as_str());
        assert_eq!(g.get::<_, String>(1), e.vehicle.as_str());
        assert_eq!(g.get::<_, i64>(2) as u64, e.fixes, "{e:?}");
        assert_eq!(g.get::<_, DateTime<Utc>>(3), e.first_at, "{e:?}");
        assert_eq!(g.get::<_, DateTime<Utc>>(4), e.last_at, "{e:?}");
        let metres: f64 = g.get(5);
        assert!(
            (metres - e.metres).abs() <= 1e-9 * e.metres.abs().max(1.0),
            "{metres} vs {e:?}"
        );
    }

    // The set exercises what it claims: a period spanning two landing days has fixes from
    // both, the deleted+recreated one counts, the deleted one does not.
    let crossing = manifests[0]["periods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "crosses_day")
        .unwrap();
    let next_day_from = parse_timestamp(manifests[1]["utc_from"].as_str().unwrap()).unwrap();
    let spans: Vec<_> = expected
        .iter()
        .filter(|e| e.period.as_str() == crossing["id"].as_str().unwrap())
        .collect();
    assert!(!spans.is_empty());
    assert!(spans
        .iter()
        .all(|e| e.first_at < next_day_from && e.last_at > next_day_from));
    for (kind, counted) in [("recreated", true), ("deleted", false)] {
        let p = manifests[1]["periods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["kind"] == kind)
            .unwrap();
        let id = p["id"].as_str().unwrap();
        assert_eq!(
            expected.iter().any(|e| e.period.as_str() == id),
            counted,
            "{kind}"
        );
        let deleted: bool = wh
            .client()
            .query_one(
                "SELECT deleted FROM dwh.dim_operating_period WHERE operating_period_id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(deleted, !counted, "{kind}");
    }
}

/// To an S3 bucket (the real S3-compatible server of `D2D_S3_ENDPOINT`), the same keys and
/// bytes as to a folder.
#[tokio::test]
async fn writes_the_same_objects_to_s3_as_to_a_folder() {
    use d2d::pipeline::store::{Store, StoreOptions};

    assert!(
        std::env::var("D2D_S3_ENDPOINT").is_ok(),
        "D2D_S3_ENDPOINT must name the test S3 server (scripts/test sets it)"
    );
    let tmp = TempDir::new("gen-s3");
    let url = format!("s3://d2d-gen-{}/landing", unique_tag());
    let args = [
        &["--vehicles", "10", "--seconds", "20", "--seed", "5"][..],
        &NOISE[..],
    ]
    .concat();
    generate(tmp.path(), &args);
    let out = Command::new(example("generate_fleet"))
        .args(["--out", &url, "--create-bucket"])
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let store = Store::open_with(&url, &StoreOptions::from_env())
        .await
        .unwrap();
    let mut objects = store.list("").await.unwrap();
    objects.sort_by(|a, b| landing_order(&a.key, &b.key));
    let local = read_tree(tmp.path());
    assert_eq!(objects.len(), local.len());
    for (o, (key, bytes)) in objects.iter().zip(&local) {
        assert_eq!(&o.key, key);
        assert_eq!(
            store.get(key).await.unwrap().as_ref(),
            bytes.as_slice(),
            "{key}"
        );
    }
    for o in objects {
        store.delete(&o.key).await.unwrap();
    }
}
