//! The warehouse on a real PostgreSQL (DATABASE_URL's server; one fresh database per test):
//! migrations, the load of the sample day checked against d2d-model, idempotency, deletions
//! and late files, failure atomicity, roles.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, NaiveDate, Utc};
use d2d_model::distance::{averages, period_distances, DistanceOptions};
use d2d_model::parse::{parse_bytes, Parsed};
use d2d_model::period::resolve_periods;
use d2d_model::track::tracks;
use d2d_pipeline::warehouse::{LoadOptions, TableChecksum, Warehouse, MIGRATIONS};
use d2d_testkit::{sample_day, TestDb};

fn day(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

async fn fresh(db: &TestDb) -> Warehouse {
    let mut wh = Warehouse::connect(&db.url).await.unwrap();
    wh.migrate().await.unwrap();
    wh
}

/// Loads (key, bytes) files as landing day `d`; returns the parses, in order.
async fn load(
    wh: &mut Warehouse,
    d: NaiveDate,
    files: &[(String, Vec<u8>)],
    options: LoadOptions,
) -> (Vec<Parsed>, d2d_pipeline::warehouse::DayLoadReport) {
    let parsed: Vec<Parsed> = files.iter().map(|(k, b)| parse_bytes(k, b)).collect();
    let mut day_load = wh.begin_day(d, options).await.unwrap();
    for ((key, _), p) in files.iter().zip(&parsed) {
        day_load.add_file(key, p).await.unwrap();
    }
    let report = day_load.commit().await.unwrap();
    (parsed, report)
}

async fn checksums(wh: &Warehouse) -> Vec<TableChecksum> {
    wh.dwh_checksums().await.unwrap()
}

async fn staging_rows(wh: &Warehouse) -> i64 {
    wh.client()
        .query_one(
            "SELECT (SELECT count(*) FROM staging.vehicle_event) + (SELECT count(*) FROM staging.period_event) + (SELECT count(*) FROM staging.reject)",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn migrations_apply_once_concurrently_and_refuse_tampering() {
    let db = TestDb::create().await;
    let (mut a, mut b) = (
        Warehouse::connect(&db.url).await.unwrap(),
        Warehouse::connect(&db.url).await.unwrap(),
    );
    assert_eq!(
        a.pending_migrations().await.unwrap().len(),
        MIGRATIONS.len()
    );
    // Two runners at once: the advisory lock makes one apply everything, the other nothing.
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let mut applied = [ra.applied.clone(), rb.applied.clone()];
    applied.sort();
    let all: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(applied, [vec![], all.clone()]);

    let again = a.migrate().await.unwrap();
    assert!(again.applied.is_empty());
    assert_eq!(again.already_applied, all);
    assert!(a.pending_migrations().await.unwrap().is_empty());

    let schemas: Vec<String> = a
        .client()
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE nspname IN ('staging','dwh','bi','etl') ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(schemas, ["bi", "dwh", "etl", "staging"]);

    // An applied migration whose text changed is refused, and nothing is applied.
    a.client()
        .execute(
            "UPDATE etl.schema_migration SET checksum = repeat('0', 64) WHERE version = 2",
            &[],
        )
        .await
        .unwrap();
    let err = a.migrate().await.unwrap_err().to_string();
    assert!(
        err.contains("migration 2") && err.contains("changed"),
        "{err}"
    );
}

#[tokio::test]
async fn sample_day_matches_d2d_model() {
    let db = TestDb::create().await;
    let mut wh = fresh(&db).await;
    let files = sample_day();
    let started = std::time::Instant::now();
    let (parsed, report) = load(&mut wh, day("2019-06-01"), &files, LoadOptions::default()).await;
    eprintln!(
        "sample day loaded in {:?} (copy {:?}, merge {:?})",
        started.elapsed(),
        report.copy,
        report.merge
    );

    // The same files through d2d-model alone.
    let all = Parsed::merge(parsed);
    let events = || all.events.iter().map(|r| &r.event);
    let periods = resolve_periods(events());
    let rows = period_distances(&periods, &tracks(events()), &DistanceOptions::default());
    let all_averages = averages(&periods, &rows);
    let (expected, overall) = (all_averages.periods, all_averages.overall);
    assert!(!rows.is_empty() && expected.len() >= 2);

    assert_eq!(report.files, 717);
    assert_eq!(report.lines, all.lines);
    assert_eq!(report.rejects, all.rejects.len() as u64);
    assert_eq!(report.duplicates, all.duplicates);
    assert_eq!(
        report.rows.fact_vehicle_event + report.rows.fact_period_event,
        all.events.len() as u64
    );
    assert_eq!(report.rows.dim_operating_period, periods.len() as u64);
    assert_eq!(report.rows.vehicle_period_distance, rows.len() as u64);

    let got = wh.period_averages().await.unwrap();
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(g.operating_period_id, e.period.as_str());
        assert_eq!(g.vehicles as u64, e.vehicles);
        assert!(
            (g.total_metres - e.total_metres).abs() < 1e-6,
            "{g:?} vs {e:?}"
        );
        match (g.avg_metres, e.avg_metres) {
            (Some(a), Some(b)) => assert!((a - b).abs() < 1e-6, "{g:?} vs {e:?}"),
            (a, b) => assert_eq!(a, b),
        }
    }
    let got_overall = wh.overall_average().await.unwrap();
    assert_eq!(got_overall.pairs as usize, rows.len());
    assert!((got_overall.avg_metres.unwrap() - overall.unwrap()).abs() < 1e-6);

    let pairs = wh
        .client()
        .query(
            "SELECT operating_period_id, vehicle_id, fixes, first_at, last_at, metres
               FROM dwh.vehicle_period_distance ORDER BY operating_period_id, vehicle_id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(pairs.len(), rows.len());
    for (p, r) in pairs.iter().zip(&rows) {
        assert_eq!(p.get::<_, String>(0), r.period.as_str());
        assert_eq!(p.get::<_, String>(1), r.vehicle.as_str());
        assert_eq!(p.get::<_, i64>(2) as u64, r.fixes);
        assert_eq!(p.get::<_, DateTime<Utc>>(3), r.first_at);
        assert_eq!(p.get::<_, DateTime<Utc>>(4), r.last_at);
        assert!((p.get::<_, f64>(5) - r.metres).abs() < 1e-6, "{r:?}");
    }

    let dims = wh
        .client()
        .query(
            "SELECT operating_period_id, start_at, finish_at, deleted, updated_at
               FROM dwh.dim_operating_period ORDER BY operating_period_id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(dims.len(), periods.len());
    for (d, p) in dims.iter().zip(&periods) {
        assert_eq!(d.get::<_, String>(0), p.period.id().as_str());
        assert_eq!(d.get::<_, DateTime<Utc>>(1), p.period.start());
        assert_eq!(d.get::<_, DateTime<Utc>>(2), p.period.finish());
        assert_eq!(d.get::<_, bool>(3), p.deleted);
        assert_eq!(d.get::<_, DateTime<Utc>>(4), p.updated_at);
    }
    let vehicles: i64 = wh
        .client()
        .query_one("SELECT count(*) FROM dwh.dim_vehicle", &[])
        .await
        .unwrap()
        .get(0);
    let expected_vehicles: std::collections::BTreeSet<_> =
        events().filter_map(|e| e.kind.vehicle()).collect();
    assert_eq!(vehicles as usize, expected_vehicles.len());
    assert_eq!(
        staging_rows(&wh).await,
        0,
        "staging is emptied by the merge"
    );
}

#[tokio::test]
async fn speed_limit_matches_d2d_model_and_switching_back_restores() {
    let db = TestDb::create().await;
    let mut wh = fresh(&db).await;
    let files = sample_day();
    let d = day("2019-06-01");
    let (parsed, _) = load(&mut wh, d, &files, LoadOptions::default()).await;
    let plain = checksums(&wh).await;

    let limited = LoadOptions {
        max_speed_mps: Some(50.0),
    };
    load(&mut wh, d, &files, limited).await;
    let all = Parsed::merge(parsed);
    let events = || all.events.iter().map(|r| &r.event);
    let periods = resolve_periods(events());
    let options = DistanceOptions {
        max_speed_mps: Some(50.0),
    };
    let rows = period_distances(&periods, &tracks(events()), &options);
    let pairs = wh
        .client()
        .query(
            "SELECT fixes, last_at, metres FROM dwh.vehicle_period_distance
              ORDER BY operating_period_id, vehicle_id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(pairs.len(), rows.len());
    let mut dropped_some = false;
    for (p, r) in pairs.iter().zip(&rows) {
        assert_eq!(p.get::<_, i64>(0) as u64, r.fixes);
        assert_eq!(p.get::<_, DateTime<Utc>>(1), r.last_at);
        assert!((p.get::<_, f64>(2) - r.metres).abs() < 1e-6);
        dropped_some |= p.get::<_, f64>(2) > 0.0 && r.fixes > 1;
    }
    assert!(dropped_some);
    assert_ne!(checksums(&wh).await, plain, "the limit changes distances");

    load(&mut wh, d, &files, LoadOptions::default()).await;
    assert_eq!(checksums(&wh).await, plain);
}

const CREATE: &str = r#"{"event":"create","on":"operating_period","at":"2019-06-01T10:00:00Z","data":{"id":"P","start":"2019-06-01T10:00:00Z","finish":"2019-06-01T11:00:00Z"},"organization_id":"o"}"#;

fn period(verb: &str, id: &str, at: &str, start: &str, finish: &str) -> String {
    CREATE
        .replace("\"create\"", &format!("\"{verb}\""))
        .replace("\"P\"", &format!("\"{id}\""))
        .replace(
            "\"at\":\"2019-06-01T10:00:00Z\"",
            &format!("\"at\":\"{at}\""),
        )
        .replace(
            "\"start\":\"2019-06-01T10:00:00Z\"",
            &format!("\"start\":\"{start}\""),
        )
        .replace("2019-06-01T11:00:00Z", finish)
}

fn fix(vehicle: &str, at: &str, lat: f64, lng: f64) -> String {
    format!(
        r#"{{"event":"update","on":"vehicle","at":"{at}","data":{{"id":"{vehicle}","location":{{"lat":{lat},"lng":{lng},"at":"{at}"}}}},"organization_id":"o"}}"#
    )
}

fn file(key: &str, lines: &[String]) -> (String, Vec<u8>) {
    (key.to_owned(), lines.join("\n").into_bytes())
}

/// Two landing days with every case of the period rule and of the replacement of a day.
type Files = Vec<(String, Vec<u8>)>;

fn two_days() -> (Files, Files) {
    let d1 = vec![
        file(
            "data/2019-06-01-9-0-0-events.json",
            &[
                period(
                    "create",
                    "A",
                    "2019-06-01T09:00:00Z",
                    "2019-06-01T10:00:00Z",
                    "2019-06-01T11:00:00Z",
                ),
                period(
                    "create",
                    "B",
                    "2019-06-01T09:00:00Z",
                    "2019-06-01T10:00:00Z",
                    "2019-06-01T12:00:00Z",
                ),
                period(
                    "create",
                    "C",
                    "2019-06-01T09:00:00Z",
                    "2019-06-01T10:30:00Z",
                    "2019-06-01T10:45:00Z",
                ),
                fix("v1", "2019-06-01T10:00:00Z", 52.0, 13.0),
                fix("v1", "2019-06-01T10:10:00Z", 52.01, 13.0),
                "not json".to_owned(),
                register("v1", "2019-06-01T09:59:00Z"),
            ],
        ),
        file(
            "data/2019-06-01-9-0-10-events.json",
            &[
                // The same event again in another file: counted as a duplicate, kept once.
                fix("v1", "2019-06-01T10:10:00Z", 52.01, 13.0),
                fix("v1", "2019-06-01T10:40:00Z", 52.02, 13.01),
                fix("v2", "2019-06-01T10:40:00Z", 48.0, 2.0),
                fix("v2", "2019-06-01T10:41:00Z", 48.001, 2.0),
                // Same `at` as the create of 9-0-9, which comes first in landing order (not in
                // text order): the delete is the later event and wins.
                period(
                    "delete",
                    "B",
                    "2019-06-01T09:30:00Z",
                    "2019-06-01T10:00:00Z",
                    "2019-06-01T12:00:00Z",
                ),
            ],
        ),
        file(
            // Sorts after 9-0-10 by landing order though not by text.
            "data/2019-06-01-9-0-9-events.json",
            &[period(
                "create",
                "B",
                "2019-06-01T09:30:00Z",
                "2019-06-01T10:05:00Z",
                "2019-06-01T12:00:00Z",
            )],
        ),
    ];
    let d2 = vec![file(
        "data/2019-06-02-9-0-0-events.json",
        &[
            // A late fix for period A's window, landed the next day.
            fix("v2", "2019-06-01T10:30:00Z", 48.002, 2.0),
            // C is deleted by a later event of day 2; D exists only as a delete.
            period(
                "delete",
                "C",
                "2019-06-01T12:00:00Z",
                "2019-06-01T10:30:00Z",
                "2019-06-01T10:45:00Z",
            ),
            period(
                "delete",
                "D",
                "2019-06-01T12:00:00Z",
                "2019-06-01T10:30:00Z",
                "2019-06-01T10:45:00Z",
            ),
            // A create after the delete brings B back, with this window.
            period(
                "create",
                "B",
                "2019-06-01T13:00:00Z",
                "2019-06-01T10:05:00Z",
                "2019-06-01T12:00:00Z",
            ),
            deregister("v1", "2019-06-02T08:00:00Z"),
        ],
    )];
    (d1, d2)
}

fn register(v: &str, at: &str) -> String {
    format!(
        r#"{{"event":"register","on":"vehicle","at":"{at}","data":{{"id":"{v}"}},"organization_id":"o"}}"#
    )
}

fn deregister(v: &str, at: &str) -> String {
    register(v, at).replace("register", "deregister")
}

/// What d2d-model says about a set of files, merged in the given order.
fn model_answer(files: &[&(String, Vec<u8>)]) -> Vec<(String, i64, Option<f64>, f64)> {
    let all = Parsed::merge(files.iter().map(|(k, b)| parse_bytes(k, b)));
    let events = || all.events.iter().map(|r| &r.event);
    let periods = resolve_periods(events());
    let rows = period_distances(&periods, &tracks(events()), &DistanceOptions::default());
    averages(&periods, &rows)
        .periods
        .into_iter()
        .map(|a| {
            (
                a.period.as_str().to_owned(),
                a.vehicles as i64,
                a.avg_metres,
                a.total_metres,
            )
        })
        .collect()
}

async fn bi_answer(wh: &Warehouse) -> Vec<(String, i64, Option<f64>, f64)> {
    wh.period_averages()
        .await
        .unwrap()
        .into_iter()
        .map(|a| {
            (
                a.operating_period_id,
                a.vehicles,
                a.avg_metres,
                a.total_metres,
            )
        })
        .collect()
}

#[tokio::test]
async fn days_in_any_order_and_reruns_give_the_same_warehouse() {
    let (d1, d2) = two_days();
    let (day1, day2) = (day("2019-06-01"), day("2019-06-02"));

    let db = TestDb::create().await;
    let mut wh = fresh(&db).await;
    let (_, r1) = load(&mut wh, day1, &d1, LoadOptions::default()).await;
    assert_eq!(r1.duplicates, 1);
    assert_eq!(r1.rejects, 1);
    load(&mut wh, day2, &d2, LoadOptions::default()).await;
    let reference = checksums(&wh).await;

    // The model sees both days as one input, in landing order (day 1 first).
    let mut ordered: Vec<&(String, Vec<u8>)> = d1.iter().chain(&d2).collect();
    ordered.sort_by(|a, b| d2d_model::landing::landing_order(&a.0, &b.0));
    let answer = bi_answer(&wh).await;
    let expected = model_answer(&ordered);
    assert_eq!(answer.len(), expected.len());
    for (a, e) in answer.iter().zip(&expected) {
        assert_eq!((&a.0, a.1), (&e.0, e.1));
        assert!((a.3 - e.3).abs() < 1e-6, "{a:?} vs {e:?}");
    }
    // A: v1 and v2 (with its late fix); B deleted on day 1, restored on day 2 with a 10:05
    // start; C deleted on day 2; D only ever deleted.
    let ids: Vec<&str> = answer.iter().map(|a| a.0.as_str()).collect();
    assert_eq!(ids, ["A", "B"]);
    let b_start: DateTime<Utc> = wh
        .client()
        .query_one(
            "SELECT start_at FROM dwh.dim_operating_period WHERE operating_period_id = 'B' AND NOT deleted",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(b_start.to_rfc3339(), "2019-06-01T10:05:00+00:00");
    let status: String = wh
        .client()
        .query_one(
            "SELECT status FROM dwh.dim_vehicle WHERE vehicle_id = 'v1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "deregistered");

    // Re-running either day, any number of times, changes nothing.
    for _ in 0..2 {
        load(&mut wh, day1, &d1, LoadOptions::default()).await;
        load(&mut wh, day2, &d2, LoadOptions::default()).await;
        assert_eq!(checksums(&wh).await, reference);
    }

    // Loading the days in the other order gives the same tables.
    let other = TestDb::create().await;
    let mut wh2 = fresh(&other).await;
    load(&mut wh2, day2, &d2, LoadOptions::default()).await;
    load(&mut wh2, day1, &d1, LoadOptions::default()).await;
    assert_eq!(checksums(&wh2).await, reference);
}

#[tokio::test]
async fn rerun_drops_removed_files_and_takes_late_ones() {
    let (d1, _) = two_days();
    let d = day("2019-06-01");
    let late = file(
        "data/2019-06-01-23-59-59-events.json",
        &[
            fix("v3", "2019-06-01T10:20:00Z", 40.0, -3.0),
            fix("v3", "2019-06-01T10:21:00Z", 40.01, -3.0),
        ],
    );
    // Second run: the second file was deleted from the lake's raw/dt=D/ (the only way a file
    // leaves a day: the run loads what the lake holds), a late file has arrived.
    let second: Vec<(String, Vec<u8>)> = vec![d1[0].clone(), d1[2].clone(), late];

    let db = TestDb::create().await;
    let mut wh = fresh(&db).await;
    load(&mut wh, d, &d1, LoadOptions::default()).await;
    load(&mut wh, d, &second, LoadOptions::default()).await;
    let after_rerun = checksums(&wh).await;

    let fresh_db = TestDb::create().await;
    let mut wh2 = fresh(&fresh_db).await;
    load(&mut wh2, d, &second, LoadOptions::default()).await;
    assert_eq!(
        after_rerun,
        checksums(&wh2).await,
        "as if only the final files had ever been loaded"
    );

    let sources: Vec<String> = wh
        .client()
        .query(
            "SELECT DISTINCT source_key FROM dwh.fact_vehicle_event ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        sources,
        [
            "data/2019-06-01-23-59-59-events.json",
            "data/2019-06-01-9-0-0-events.json"
        ]
    );
    let refs: Vec<&(String, Vec<u8>)> = second.iter().collect();
    let expected = model_answer(&refs);
    let answer = bi_answer(&wh).await;
    for (a, e) in answer.iter().zip(&expected) {
        assert_eq!((&a.0, a.1), (&e.0, e.1));
        assert!((a.3 - e.3).abs() < 1e-6);
    }
    // B's delete came from the removed file: B is live again, with the 9-0-9 window.
    assert!(answer.iter().any(|a| a.0 == "B"));
    let mut first: Vec<&(String, Vec<u8>)> = d1.iter().collect();
    first.sort_by(|a, b| d2d_model::landing::landing_order(&a.0, &b.0));
    assert!(!model_answer(&first).iter().any(|a| a.0 == "B"));
}

#[tokio::test]
async fn failed_merge_leaves_the_warehouse_as_it_was() {
    let (d1, d2) = two_days();
    let db = TestDb::create().await;
    let mut wh = fresh(&db).await;
    load(&mut wh, day("2019-06-01"), &d1, LoadOptions::default()).await;
    let before = checksums(&wh).await;
    let rejects_before: i64 = wh
        .client()
        .query_one("SELECT count(*) FROM etl.reject", &[])
        .await
        .unwrap()
        .get(0);

    // Day 2 adds a fix to period A, whose recomputed distance row will break this rule.
    wh.client()
        .batch_execute(
            "ALTER TABLE dwh.vehicle_period_distance
                 ADD CONSTRAINT injected_failure CHECK (vehicle_id <> 'v2' OR fixes < 3)",
        )
        .await
        .unwrap();
    let parsed: Vec<Parsed> = d2.iter().map(|(k, b)| parse_bytes(k, b)).collect();
    let mut day_load = wh
        .begin_day(day("2019-06-02"), LoadOptions::default())
        .await
        .unwrap();
    for ((key, _), p) in d2.iter().zip(&parsed) {
        day_load.add_file(key, p).await.unwrap();
    }
    let err = day_load.commit().await.unwrap_err().to_string();
    assert!(err.contains("injected_failure"), "{err}");
    // The distances are the merge's last step, computed by the loader in its transaction.
    assert!(err.contains("distances of landing day 2019-06-02"), "{err}");

    assert_eq!(checksums(&wh).await, before);
    assert_eq!(staging_rows(&wh).await, 0);
    let rejects_after: i64 = wh
        .client()
        .query_one("SELECT count(*) FROM etl.reject", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rejects_after, rejects_before);

    // Adding the same file twice is refused before anything is written.
    let mut day_load = wh
        .begin_day(day("2019-06-02"), LoadOptions::default())
        .await
        .unwrap();
    day_load.add_file(&d2[0].0, &parsed[0]).await.unwrap();
    let err = day_load.add_file(&d2[0].0, &parsed[0]).await.unwrap_err();
    assert!(err.to_string().contains("already added"), "{err}");
    drop(day_load);
    assert_eq!(checksums(&wh).await, before);
}

#[tokio::test]
async fn rejects_are_kept_with_their_reasons_and_nul_bytes_survive() {
    let db = TestDb::create().await;
    let mut wh = fresh(&db).await;
    let key = "data/2019-06-01-9-0-0-events.json";
    let mut bytes = fix("v1", "2019-06-01T10:00:00Z", 52.0, 13.0).into_bytes();
    bytes.extend_from_slice(b"\n{\"event\":\"update\",\"bad\0byte\xff\"}\n");
    bytes.extend_from_slice(fix("v1", "2019-06-01T10:00:00Z", 91.5, 13.0).as_bytes());
    load(
        &mut wh,
        day("2019-06-01"),
        &[(key.to_owned(), bytes)],
        LoadOptions::default(),
    )
    .await;
    let rows = wh
        .client()
        .query(
            "SELECT source_key, line, code, field, reason, raw FROM etl.reject ORDER BY line",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get::<_, String>(0), key);
    assert_eq!(rows[0].get::<_, i64>(1), 2);
    assert_eq!(rows[0].get::<_, String>(2), "invalid_utf8");
    assert!(rows[0].get::<_, String>(5).contains("bad\u{FFFD}byte"));
    assert_eq!(rows[1].get::<_, i64>(1), 3);
    assert_eq!(rows[1].get::<_, String>(2), "invalid_coordinate");
    assert_eq!(
        rows[1].get::<_, Option<String>>(3).as_deref(),
        Some("data.location.lat")
    );
    assert!(rows[1].get::<_, String>(4).contains("91.5 is outside"));
    let facts: i64 = wh
        .client()
        .query_one("SELECT count(*) FROM dwh.fact_vehicle_event", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(facts, 1, "the valid line is loaded");
}

#[tokio::test]
async fn loader_role_loads_and_bi_role_reads_only_bi() {
    let (d1, _) = two_days();
    let db = TestDb::create().await;
    let mut wh = fresh(&db).await;
    wh.client()
        .batch_execute("SET ROLE d2d_loader")
        .await
        .unwrap();
    load(&mut wh, day("2019-06-01"), &d1, LoadOptions::default()).await;
    wh.client()
        .batch_execute("RESET ROLE; SET ROLE d2d_bi")
        .await
        .unwrap();
    assert!(!wh.period_averages().await.unwrap().is_empty());
    assert!(wh.overall_average().await.unwrap().pairs > 0);
    for forbidden in [
        "SELECT count(*) FROM dwh.fact_vehicle_event",
        "SELECT count(*) FROM etl.load_run",
        "SELECT count(*) FROM staging.reject",
    ] {
        let err = wh.client().query_one(forbidden, &[]).await.unwrap_err();
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{forbidden}"
        );
    }
    let err = wh
        .begin_day(day("2019-06-01"), LoadOptions::default())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("permission denied"), "{err}");
}

#[tokio::test]
async fn roles_reach_objects_created_by_later_migrations() {
    let db = TestDb::create().await;
    let wh = fresh(&db).await;
    // What a future migration would do, as the same owner that ran the others.
    wh.client()
        .batch_execute(
            "CREATE TABLE dwh.later_table (n int);
             CREATE PROCEDURE dwh.later_proc() LANGUAGE sql AS 'SELECT 1';
             CREATE VIEW bi.later_view AS SELECT 1 AS one;",
        )
        .await
        .unwrap();
    // The loader reads a later dwh table; it writes dwh only through the owner's procedures.
    wh.client()
        .batch_execute(
            "SET ROLE d2d_loader;
             SELECT count(*) FROM dwh.later_table;
             CALL dwh.later_proc();",
        )
        .await
        .unwrap();
    let err = wh
        .client()
        .batch_execute("INSERT INTO dwh.later_table VALUES (1)")
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );
    wh.client()
        .batch_execute("RESET ROLE; SET ROLE d2d_bi")
        .await
        .unwrap();
    let one: i32 = wh
        .client()
        .query_one("SELECT one FROM bi.later_view", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(one, 1);
    let err = wh
        .client()
        .query_one("SELECT count(*) FROM dwh.later_table", &[])
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );
}

#[tokio::test]
async fn tls_modes_against_a_server_without_tls() {
    let db = TestDb::create().await;
    // `prefer` falls back to plain TCP; `require` must not.
    let prefer = format!("{}?sslmode=prefer", db.url);
    let wh = Warehouse::connect(&prefer).await.unwrap();
    let one: i32 = wh.client().query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    let require = format!("{}?sslmode=require", db.url);
    let err = Warehouse::connect(&require)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("connect with TLS"), "{err}");
}

#[tokio::test]
async fn concurrent_loads_of_two_days_are_serialised_and_both_land() {
    let (d1, d2) = two_days();
    let db = TestDb::create().await;
    let mut a = fresh(&db).await;
    let mut b = Warehouse::connect(&db.url).await.unwrap();
    let ((_, r1), (_, r2)) = tokio::join!(
        load(&mut a, day("2019-06-01"), &d1, LoadOptions::default()),
        load(&mut b, day("2019-06-02"), &d2, LoadOptions::default()),
    );
    assert!(r1.rows.fact_vehicle_event > 0 && r2.rows.fact_vehicle_event > 0);

    let sequential = TestDb::create().await;
    let mut c = fresh(&sequential).await;
    load(&mut c, day("2019-06-01"), &d1, LoadOptions::default()).await;
    load(&mut c, day("2019-06-02"), &d2, LoadOptions::default()).await;
    assert_eq!(checksums(&a).await, checksums(&c).await);
}

/// Stages and merges a day exactly as the loader of migration 7 did (its COPY columns and its
/// `CALL dwh.merge_day`), to build a warehouse on the old schema.
async fn load_on_v7(wh: &mut Warehouse, d: NaiveDate, files: &[(String, Vec<u8>)]) {
    use d2d_model::event::EventKind;
    use d2d_model::landing::LandingName;
    use tokio_postgres::binary_copy::BinaryCopyInWriter;
    use tokio_postgres::types::{ToSql, Type};

    let client = wh.client();
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute("TRUNCATE staging.vehicle_event, staging.period_event, staging.reject")
        .await
        .unwrap();
    for (key, bytes) in files {
        let parsed = parse_bytes(key, bytes);
        let time = LandingName::parse(key).map(|n| n.datetime());
        let sink = client
            .copy_in(
                "COPY staging.vehicle_event (source_key, source_time, line, event, vehicle_id, \
                 organization_id, event_at, lat, lng, location_at) FROM STDIN (FORMAT binary)",
            )
            .await
            .unwrap();
        let types = [
            Type::TEXT,
            Type::TIMESTAMP,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TIMESTAMPTZ,
            Type::FLOAT8,
            Type::FLOAT8,
            Type::TIMESTAMPTZ,
        ];
        let mut w = std::pin::pin!(BinaryCopyInWriter::new(sink, &types));
        let mut periods = Vec::new();
        for r in &parsed.events {
            let e = &r.event;
            let line = r.line as i64;
            match &e.kind {
                EventKind::PeriodCreate(p) | EventKind::PeriodDelete(p) => periods.push((
                    line,
                    e.kind.verb(),
                    p.clone(),
                    e.organization_id.clone(),
                    e.at,
                )),
                kind => {
                    let l = kind.location();
                    let (vehicle, org) = (
                        kind.vehicle().unwrap().as_str().to_owned(),
                        e.organization_id.as_str().to_owned(),
                    );
                    let (lat, lng, at) = (
                        l.map(|l| l.position.lat()),
                        l.map(|l| l.position.lng()),
                        l.map(|l| l.at),
                    );
                    let row: [&(dyn ToSql + Sync); 10] = [
                        key,
                        &time,
                        &line,
                        &kind.verb(),
                        &vehicle,
                        &org,
                        &e.at,
                        &lat,
                        &lng,
                        &at,
                    ];
                    w.as_mut().write(&row).await.unwrap();
                }
            }
        }
        w.finish().await.unwrap();
        for (line, verb, p, org, at) in periods {
            client
                .execute(
                    "INSERT INTO staging.period_event (source_key, source_time, line, event, \
                     operating_period_id, organization_id, event_at, start_at, finish_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    &[
                        key,
                        &time,
                        &line,
                        &verb,
                        &p.id().as_str(),
                        &org.as_str(),
                        &at,
                        &p.start(),
                        &p.finish(),
                    ],
                )
                .await
                .unwrap();
        }
        for r in &parsed.rejects {
            client
                .execute(
                    "INSERT INTO staging.reject (source_key, source_time, line, code, field, \
                     reason, raw) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[
                        key,
                        &time,
                        &(r.line as i64),
                        &r.reason.code(),
                        &r.reason.field(),
                        &r.reason.to_string(),
                        &String::from_utf8_lossy(&r.raw).replace('\0', "\u{FFFD}"),
                    ],
                )
                .await
                .unwrap();
        }
    }
    client
        .execute(
            "CALL dwh.merge_day($1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
            &[&d],
        )
        .await
        .unwrap();
    client.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test]
async fn migration_8_keeps_a_warehouse_of_migration_7_and_reloads_give_the_same_tables() {
    let db = TestDb::create().await;
    let mut wh = Warehouse::connect(&db.url).await.unwrap();
    wh.migrate_to(7).await.unwrap();
    let (d1, d2) = two_days();
    let sample = sample_day();
    load_on_v7(&mut wh, day("2019-06-01"), &sample).await;
    load_on_v7(&mut wh, day("2019-05-31"), &d1).await;
    load_on_v7(&mut wh, day("2019-06-02"), &d2).await;
    let before = checksums(&wh).await;
    let answer = bi_answer(&wh).await;
    assert!(before
        .iter()
        .any(|c| c.table == "fact_vehicle_event" && c.rows > 35_000));

    let report = wh.migrate().await.unwrap();
    assert!(report.applied.contains(&8), "{report:?}");
    assert_eq!(
        checksums(&wh).await,
        before,
        "migration 8 loses or changes no row"
    );
    assert_eq!(bi_answer(&wh).await, answer);
    let partitions: i64 = wh
        .client()
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_inherits
              WHERE inhparent = 'dwh.fact_vehicle_event'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(partitions, 3, "one partition per landing day");

    // The new loader, on the same files, writes the very rows the old one wrote.
    load(&mut wh, day("2019-06-01"), &sample, LoadOptions::default()).await;
    load(&mut wh, day("2019-05-31"), &d1, LoadOptions::default()).await;
    load(&mut wh, day("2019-06-02"), &d2, LoadOptions::default()).await;
    assert_eq!(checksums(&wh).await, before);
    assert_eq!(bi_answer(&wh).await, answer);
}
