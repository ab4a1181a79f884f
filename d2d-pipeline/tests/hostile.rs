//! Generated hostile events through the whole load, on the real PostgreSQL and a local lake:
//! extreme and subnormal floats, instants at the edges of every range (years 0001 and 9999,
//! leap seconds, offsets up to ±23:59), huge and odd strings, every kind of event. Whatever
//! the lines, each is loaded or refused with a reason, the day succeeds with its curated zone,
//! and a re-run gives the same warehouse.
#![allow(clippy::unwrap_used)]

use chrono::NaiveDate;
use d2d_pipeline::run::{no_events, run_day, RunConfig};
use d2d_pipeline::warehouse::Warehouse;
use d2d_testkit::{TempDir, TestDb};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn june_1() -> NaiveDate {
    "2019-06-01".parse().unwrap()
}

/// A JSON string literal of `s`.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("v1".to_owned()),
        Just("op_1".to_owned()),
        Just(String::new()),
        Just("x".repeat(100_000)),
        Just("\u{0}\u{1f}\"\\".to_owned()),
        Just("🚗 Ω \u{202e}rtl".to_owned()),
        "[a-z0-9_]{1,6}",
        any::<String>(),
    ]
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("4.9e-324".to_owned()),
        Just("2.2250738585072014e-308".to_owned()),
        Just("1e-400".to_owned()),
        Just("-0.0".to_owned()),
        Just("90".to_owned()),
        Just("-90.0".to_owned()),
        Just("180".to_owned()),
        Just("-180.0000000000001".to_owned()),
        Just("1e308".to_owned()),
        Just("1e400".to_owned()),
        Just("\"NaN\"".to_owned()),
        Just("0.1e1".to_owned()),
        (-90.0f64..90.0).prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:e}")),
    ]
}

fn instant() -> impl Strategy<Value = String> {
    let date = prop_oneof![
        Just("0001-01-01".to_owned()),
        Just("0000-12-31".to_owned()),
        Just("9999-12-31".to_owned()),
        Just("2019-06-01".to_owned()),
        Just("2019-02-29".to_owned()),
        Just("1969-12-31".to_owned()),
        (1u32..=9999, 1u32..=12, 1u32..=31).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}")),
    ];
    let time = prop_oneof![
        Just("00:00:00".to_owned()),
        Just("23:59:59.999999999".to_owned()),
        Just("23:59:60".to_owned()),
        Just("12:00:00.0000001".to_owned()),
        (0u32..24, 0u32..60, 0u32..60).prop_map(|(h, m, s)| format!("{h:02}:{m:02}:{s:02}")),
    ];
    let zone = prop_oneof![
        Just("Z".to_owned()),
        Just("+14:00".to_owned()),
        Just("-14:00".to_owned()),
        Just("+23:59".to_owned()),
        Just("-23:59".to_owned()),
        Just("+24:00".to_owned()),
        Just(String::new()),
    ];
    (date, time, zone).prop_map(|(d, t, z)| quoted(&format!("{d}T{t}{z}")))
}

/// One line: an event of any kind with hostile fields, or hostile bytes.
fn line() -> impl Strategy<Value = String> {
    let fix = (id(), number(), number(), instant(), instant()).prop_map(|(v, lat, lng, at, loc_at)| {
        format!(
            r#"{{"event":"update","on":"vehicle","at":{at},"data":{{"id":{},"location":{{"lat":{lat},"lng":{lng},"at":{loc_at}}}}},"organization_id":"org"}}"#,
            quoted(&v)
        )
    });
    let vehicle = (prop_oneof![Just("register"), Just("deregister")], id(), instant()).prop_map(
        |(verb, v, at)| {
            format!(
                r#"{{"event":"{verb}","on":"vehicle","at":{at},"data":{{"id":{}}},"organization_id":{}}}"#,
                quoted(&v),
                quoted(&v)
            )
        },
    );
    let period = (
        prop_oneof![Just("create"), Just("delete")],
        id(),
        instant(),
        instant(),
        instant(),
    )
        .prop_map(|(verb, p, at, start, finish)| {
            format!(
                r#"{{"event":"{verb}","on":"operating_period","at":{at},"data":{{"id":{},"start":{start},"finish":{finish}}},"organization_id":"org"}}"#,
                quoted(&p)
            )
        });
    prop_oneof![
        4 => fix,
        2 => vehicle,
        2 => period,
        1 => any::<String>().prop_map(|s| s.replace(['\n', '\r'], " ")),
    ]
}

#[test]
fn hostile_events_are_each_loaded_or_refused_and_the_day_succeeds() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: 4,
            failure_persistence: None,
            ..Config::default()
        },
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    runner
        .run(&proptest::collection::vec(line(), 150..300), |lines| {
            rt.block_on(load_and_check(&lines));
            Ok(())
        })
        .unwrap();
}

async fn load_and_check(lines: &[String]) {
    let db = TestDb::create().await;
    let (landing, lake) = (
        TempDir::new("hostile-landing"),
        TempDir::new("hostile-lake"),
    );
    let data = landing.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // Two files, so that duplicates across files happen too.
    let (a, b) = lines.split_at(lines.len() / 2);
    std::fs::write(data.join("2019-06-01-10-0-0-events.txt"), a.join("\n")).unwrap();
    std::fs::write(data.join("2019-06-01-10-0-1-events.txt"), b.join("\n")).unwrap();
    let config = RunConfig::new(
        landing.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        &db.url,
    );
    let report = run_day(&config, june_1(), &no_events)
        .await
        .unwrap_or_else(|e| panic!("the day failed: {e}"));
    let c = &report.counts;
    let non_blank = lines.iter().filter(|l| !l.trim().is_empty()).count() as u64;
    assert_eq!(c.lines, non_blank, "{c:?}");
    assert_eq!(c.lines, c.events + c.duplicates + c.rejects, "{c:?}");
    assert!(report.curated.is_some(), "no curated zone written");

    let wh = Warehouse::connect(&db.url).await.unwrap();
    let (rejects, unexplained): (i64, i64) = wh
        .client()
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE coalesce(code, '') = '' OR coalesce(reason, '') = '')
               FROM etl.reject WHERE landing_day = '2019-06-01'",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(rejects as u64, c.rejects);
    assert_eq!(unexplained, 0, "a refused line without code or reason");

    let before = wh.dwh_checksums().await.unwrap();
    run_day(&config, june_1(), &no_events)
        .await
        .unwrap_or_else(|e| panic!("the re-run failed: {e}"));
    assert_eq!(wh.dwh_checksums().await.unwrap(), before);
}
