//! Back-fills with `days_parallel` above 1 (`run/backfill.rs`), on the real services: three
//! days made from the sample (its first files, the date moved), a local-folder landing and
//! lake, the real PostgreSQL (a fresh database per warehouse).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use chrono::NaiveDate;
use d2d_pipeline::run::{no_events, run_backfill, run_day, Phase, RunConfig};
use d2d_pipeline::warehouse::{TableChecksum, Warehouse};
use d2d_pipeline::Error;
use d2d_testkit::{sample_day, TempDir, TestDb};

/// Files of the sample taken per day: enough for several parse batches, quick in a debug build.
const FILES_PER_DAY: usize = 150;

fn day(n: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2019, 6, n).unwrap()
}

/// Writes days 2019-06-01 ..= 2019-06-`days` into `landing`: the sample's first files, with
/// the date in their keys and in their events moved to the day.
fn write_days(landing: &Path, days: u32) {
    let sample = sample_day();
    for n in 1..=days {
        let (dash, slash) = (format!("2019-06-{n:02}"), format!("2019/06/{n:02}"));
        for (key, body) in sample.iter().take(FILES_PER_DAY) {
            let key = key
                .replace("2019-06-01", &dash)
                .replace("2019/06/01", &slash);
            let body = String::from_utf8(body.clone())
                .unwrap()
                .replace("2019-06-01", &dash);
            let path = landing.join(key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, body).unwrap();
        }
    }
}

fn config(landing: &TempDir, lake: &TempDir, db: &TestDb) -> RunConfig {
    let mut config = RunConfig::new(
        landing.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        &db.url,
    );
    // Small batches: each day's load crosses several of them.
    config.batch_files = 16;
    config
}

async fn checksums(db: &TestDb) -> Vec<TableChecksum> {
    Warehouse::connect(&db.url)
        .await
        .unwrap()
        .dwh_checksums()
        .await
        .unwrap()
}

/// `(landing_day, status, list_ms)` of every run, in run order.
async fn runs(db: &TestDb) -> Vec<(String, String, Option<i64>)> {
    let wh = Warehouse::connect(&db.url).await.unwrap();
    wh.client()
        .query(
            "SELECT landing_day::text, status, list_ms FROM etl.load_run ORDER BY run_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// The warehouse after `--days-parallel 3` equals the one after the days run one by one, and
/// the runs are recorded in day order, the days archived ahead with `list_ms` 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn days_parallel_gives_the_warehouse_of_sequential_runs() {
    let landing = TempDir::new("bf-landing");
    write_days(landing.path(), 3);

    // One by one (days_parallel 1, the default): each day lists and archives in its turn.
    let (one_db, one_lake) = (TestDb::create().await, TempDir::new("bf-lake-1"));
    let one = config(&landing, &one_lake, &one_db);
    assert_eq!(one.days_parallel, 1);
    let one_done = run_backfill(&one, day(1), day(3), &no_events).await;
    assert!(one_done.error.is_none(), "{:?}", one_done.error);
    let one_reports = one_done.reports;
    assert!(one_reports.iter().all(|r| r.phases.list > Duration::ZERO));

    // Three days in flight.
    let (par_db, par_lake) = (TestDb::create().await, TempDir::new("bf-lake-3"));
    let mut par = config(&landing, &par_lake, &par_db);
    par.days_parallel = 3;
    let done = run_backfill(&par, day(1), day(3), &no_events).await;
    assert!(done.error.is_none(), "{:?}", done.error);
    assert_eq!(done.reports.len(), 3);

    let sums = checksums(&par_db).await;
    assert!(sums.iter().any(|t| t.rows > 0), "{sums:?}");
    assert_eq!(sums, checksums(&one_db).await);
    for (p, o) in done.reports.iter().zip(&one_reports) {
        assert_eq!(p.day, o.day);
        assert_eq!(p.counts, o.counts);
        assert_eq!(p.counts.files, FILES_PER_DAY as u64);
        assert_eq!(
            p.copied_through + p.copied_server_side,
            FILES_PER_DAY as u64
        );
    }
    // Days 2 and 3 were listed and archived ahead: their runs did no listing of their own.
    assert_eq!(done.reports[1].phases.list, Duration::ZERO);
    assert_eq!(done.reports[2].phases.list, Duration::ZERO);
    let recorded = runs(&par_db).await;
    let summary: Vec<(&str, &str)> = recorded
        .iter()
        .map(|(d, s, _)| (d.as_str(), s.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("2019-06-01", "succeeded"),
            ("2019-06-02", "succeeded"),
            ("2019-06-03", "succeeded")
        ]
    );
    assert_eq!(recorded[1].2, Some(0));
    assert_eq!(recorded[2].2, Some(0));
    // The lakes hold the same raw files.
    for n in 1..=3 {
        let dir = format!("raw/dt=2019-06-{n:02}");
        assert_eq!(
            d2d_testkit::read_tree(&par_lake.path().join(&dir)),
            d2d_testkit::read_tree(&one_lake.path().join(&dir)),
            "{dir}"
        );
    }

    // Again, on the loaded warehouse: a re-run changes nothing.
    let again = run_backfill(&par, day(1), day(3), &no_events).await;
    assert!(again.error.is_none(), "{:?}", again.error);
    assert_eq!(checksums(&par_db).await, sums);
    assert!(again
        .reports
        .iter()
        .all(|r| r.already_archived == FILES_PER_DAY as u64));
}

/// A middle day that fails in its load stops the back-fill: the day before stays committed,
/// the failing day is recorded as failed, the day after — archived ahead — is not merged.
/// A middle day that fails ahead (no files: its archive phase fails) does the same, and is
/// recorded as failed while archiving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_middle_day_stops_the_later_merges() {
    let landing = TempDir::new("bf-landing");
    write_days(landing.path(), 3);
    // Day 2 gets a file of lines that do not parse: far more than 1 % of its lines.
    let junk = landing
        .path()
        .join("data/resources/2019/06/02/20/59/2019-06-02-20-59-59-events.txt");
    std::fs::create_dir_all(junk.parent().unwrap()).unwrap();
    std::fs::write(&junk, "not json\n".repeat(2_000)).unwrap();

    // The reference: day 1 alone.
    let (ref_db, ref_lake) = (TestDb::create().await, TempDir::new("bf-lake-ref"));
    run_day(&config(&landing, &ref_lake, &ref_db), day(1), &no_events)
        .await
        .unwrap();
    let day_1_only = checksums(&ref_db).await;

    let (db, lake) = (TestDb::create().await, TempDir::new("bf-lake"));
    let mut par = config(&landing, &lake, &db);
    par.days_parallel = 3;
    par.max_reject_ratio = Some(0.01);
    let done = run_backfill(&par, day(1), day(3), &no_events).await;
    let days: Vec<NaiveDate> = done.reports.iter().map(|r| r.day).collect();
    assert_eq!(days, [day(1)]);
    let err = done.error.unwrap();
    let Error::Run {
        day: failed,
        phase,
        source,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!((*failed, *phase), (day(2), Phase::Load.doing()));
    assert!(matches!(**source, Error::TooManyRejects { .. }), "{err}");
    assert_eq!(checksums(&db).await, day_1_only);
    let statuses: Vec<(String, String)> = runs(&db)
        .await
        .into_iter()
        .map(|(d, s, _)| (d, s))
        .collect();
    assert_eq!(
        statuses,
        [
            ("2019-06-01".into(), "succeeded".into()),
            ("2019-06-02".into(), "failed".into())
        ]
    );

    // Day 2 without files: its list and archive run ahead and fail; the failure is recorded
    // in its turn, in the archive phase, and day 3 is not merged.
    std::fs::remove_dir_all(landing.path().join("data/resources/2019/06/02")).unwrap();
    let (db, lake) = (TestDb::create().await, TempDir::new("bf-lake-empty"));
    let mut par = config(&landing, &lake, &db);
    par.days_parallel = 3;
    let done = run_backfill(&par, day(1), day(3), &no_events).await;
    assert_eq!(done.reports.len(), 1);
    let err = done.error.unwrap();
    let Error::Run {
        day: failed, phase, ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!((*failed, *phase), (day(2), Phase::Archive.doing()));
    assert!(
        err.to_string().contains("no landing files of 2019-06-02"),
        "{err}"
    );
    assert_eq!(checksums(&db).await, day_1_only);
    let wh = Warehouse::connect(&db.url).await.unwrap();
    let row = wh
        .client()
        .query_one(
            "SELECT status, error FROM etl.load_run WHERE landing_day = '2019-06-02'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "failed");
    assert!(row
        .get::<_, String>(1)
        .contains("no landing files of 2019-06-02"));
    assert_eq!(runs(&db).await.len(), 2, "day 3 has no run");
}

/// `days_parallel` 0 is refused before anything runs.
#[tokio::test]
async fn days_parallel_zero_is_refused() {
    let (landing, lake, db) = (
        TempDir::new("bf-l"),
        TempDir::new("bf-k"),
        TestDb::create().await,
    );
    let mut c = config(&landing, &lake, &db);
    c.days_parallel = 0;
    let done = run_backfill(&c, day(1), day(2), &no_events).await;
    assert!(done.reports.is_empty());
    let err = done.error.unwrap().to_string();
    assert!(err.contains("--days-parallel"), "{err}");
}
