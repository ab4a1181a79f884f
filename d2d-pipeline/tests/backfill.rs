//! Back-fills with `days_parallel` above 1 (`run/backfill.rs`: later days listed, archived and
//! parsed ahead into spools), on the real services: three days made from the sample (its
//! first files, the date moved, plus refused lines and an undecodable file), a local-folder
//! landing and lake, the real PostgreSQL (a fresh database per warehouse).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use chrono::NaiveDate;
use d2d_pipeline::run::{no_events, run_backfill, run_day, Phase, RunConfig, RunEvent};
use d2d_pipeline::warehouse::Warehouse;
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
    write_days_with_rejects(landing, days, false);
}

/// The same, and with `rejects` each day also gets refused lines (in a file of their own and
/// in one of the sample's files) and a `.gz` file that does not decode (refused whole).
fn write_days_with_rejects(landing: &Path, days: u32, rejects: bool) {
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
            let body = match rejects && key.ends_with("0-events.txt") {
                true => format!("{body}not json {n}\n{{\"event\": 1}}\n"),
                false => body,
            };
            let path = landing.join(key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, body).unwrap();
        }
        if rejects {
            let dir = landing.join(format!("data/resources/{slash}/21/00"));
            std::fs::create_dir_all(&dir).unwrap();
            let lines: String = (0..n * 7).map(|i| format!("bad line {i}\n")).collect();
            std::fs::write(dir.join(format!("{dash}-21-00-01-events.txt")), lines).unwrap();
            std::fs::write(
                dir.join(format!("{dash}-21-00-02-events.txt.gz")),
                b"not gzip at all",
            )
            .unwrap();
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

/// Every run's record but its id, times and phase durations, in run order: day, status, the
/// phase it ended in, counts, rows per table, error.
async fn records(db: &TestDb) -> Vec<String> {
    let wh = Warehouse::connect(&db.url).await.unwrap();
    wh.client()
        .query(
            "SELECT format('%s', ROW(landing_day, status, phase, from_lake, files, bytes, lines,
                    events, duplicates, rejects, rows_fact_vehicle_event, rows_fact_period_event,
                    rows_dim_vehicle, rows_dim_operating_period, rows_vehicle_period_distance,
                    rows_reject, error, committed_at IS NOT NULL))
             FROM etl.load_run ORDER BY run_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Every `etl.reject` row, in key order, as text.
async fn rejects(db: &TestDb) -> Vec<String> {
    let wh = Warehouse::connect(&db.url).await.unwrap();
    wh.client()
        .query(
            "SELECT r::text FROM etl.reject r ORDER BY landing_day, source_key, line",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The entries of `dir` (empty when every spool in it is gone).
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
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

/// Load-phase progress events per day: a day parsed in its turn reports its files as they
/// are staged; a day parsed ahead reports none (its parse happened before its run).
fn load_progress(days: &std::sync::Mutex<Vec<(NaiveDate, u64)>>, e: &RunEvent<'_>) {
    let mut days = days.lock().unwrap();
    match e {
        RunEvent::DayStarted { day, .. } => days.push((*day, 0)),
        RunEvent::Progress {
            phase: Phase::Load, ..
        } => days.last_mut().unwrap().1 += 1,
        _ => {}
    }
}

/// The warehouse after `--days-parallel 3` equals the one after the days run one by one —
/// facts, rejects, run records, quarantine and curated files — and the runs are recorded in
/// day order, the days done ahead with `list_ms` 0; their spools are gone afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn days_parallel_gives_the_warehouse_of_sequential_runs() {
    let landing = TempDir::new("bf-landing");
    write_days_with_rejects(landing.path(), 3, true);
    let files_per_day = FILES_PER_DAY as u64 + 2;

    // One by one (days_parallel 1, the default): each day lists and archives in its turn.
    let (one_db, one_lake) = (TestDb::create().await, TempDir::new("bf-lake-1"));
    let one = config(&landing, &one_lake, &one_db);
    assert_eq!(one.days_parallel, 1);
    let one_done = run_backfill(&one, day(1), day(3), &no_events).await;
    assert!(one_done.error.is_none(), "{:?}", one_done.error);
    let one_reports = one_done.reports;
    assert!(one_reports.iter().all(|r| r.phases.list > Duration::ZERO));

    // Three days in flight, spooling into a folder of the test's own.
    let (par_db, par_lake) = (TestDb::create().await, TempDir::new("bf-lake-3"));
    let spools = TempDir::new("bf-spool");
    let mut par = config(&landing, &par_lake, &par_db);
    par.days_parallel = 3;
    par.spool_dir = Some(spools.path().to_owned());
    let progress = std::sync::Mutex::new(Vec::new());
    let done = run_backfill(&par, day(1), day(3), &|e| load_progress(&progress, e)).await;
    assert!(done.error.is_none(), "{:?}", done.error);
    assert_eq!(done.reports.len(), 3);
    assert!(
        entries(spools.path()).is_empty(),
        "{:?}",
        entries(spools.path())
    );
    let progress = progress.into_inner().unwrap();
    assert_eq!(progress.len(), 3);
    assert!(
        progress[0].1 > 0,
        "day 1 is parsed in its turn: {progress:?}"
    );
    assert_eq!(
        (progress[1].1, progress[2].1),
        (0, 0),
        "days 2 and 3 are parsed ahead: {progress:?}"
    );

    let sums = par_db.checksums().await;
    assert!(sums.iter().any(|t| t.rows > 0), "{sums:?}");
    assert_eq!(sums, one_db.checksums().await);
    let refused = rejects(&par_db).await;
    // Per day: n * 7 bad lines, 2 per edited sample file, and the undecodable file (line 0).
    assert!(refused.len() > 3 * 9, "{}", refused.len());
    assert!(
        refused.iter().any(|r| r.contains(",0,")),
        "a file refused whole"
    );
    assert_eq!(refused, rejects(&one_db).await);
    assert_eq!(records(&par_db).await, records(&one_db).await);
    for (p, o) in done.reports.iter().zip(&one_reports) {
        assert_eq!(p.day, o.day);
        assert_eq!(p.counts, o.counts);
        assert!(p.counts.rejects > 0);
        assert_eq!(p.counts.files, files_per_day);
        assert_eq!(p.copied_through + p.copied_server_side, files_per_day);
        assert_eq!(p.refused, o.refused);
        assert_eq!(p.quarantine, o.quarantine);
        assert!(p.quarantine.is_some());
        assert_eq!(p.curated, o.curated);
    }
    for zone in ["quarantine", "curated"] {
        assert_eq!(
            d2d_testkit::read_tree(&par_lake.path().join(zone)),
            d2d_testkit::read_tree(&one_lake.path().join(zone)),
            "{zone}"
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
    assert_eq!(par_db.checksums().await, sums);
    assert!(again
        .reports
        .iter()
        .all(|r| r.already_archived == files_per_day));
    assert!(entries(spools.path()).is_empty());
}

/// A middle day that fails in its load stops the back-fill: the day before stays committed,
/// the failing day is recorded as failed, the day after — parsed ahead — is not merged, and
/// its spool is removed.
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
    let day_1_only = ref_db.checksums().await;

    let (db, lake) = (TestDb::create().await, TempDir::new("bf-lake"));
    let spools = TempDir::new("bf-spool");
    let mut par = config(&landing, &lake, &db);
    par.days_parallel = 3;
    par.max_reject_ratio = Some(0.01);
    par.spool_dir = Some(spools.path().to_owned());
    let done = run_backfill(&par, day(1), day(3), &no_events).await;
    assert!(
        entries(spools.path()).is_empty(),
        "{:?}",
        entries(spools.path())
    );
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
    assert_eq!(db.checksums().await, day_1_only);
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
    assert_eq!(db.checksums().await, day_1_only);
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

/// A day whose parse fails ahead (here: its spool cannot be created) is recorded, in its
/// turn, as failed while loading, with that error; the back-fill stops there, the day before
/// stays committed, the day after is not merged. The days run one by one (no spool) load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_ahead_is_recorded_in_its_turn_in_its_phase() {
    let landing = TempDir::new("bf-landing");
    write_days(landing.path(), 3);
    let not_a_folder = TempDir::new("bf-spool");
    let file = not_a_folder.path().join("a-file");
    std::fs::write(&file, "not a folder").unwrap();

    let (ref_db, ref_lake) = (TestDb::create().await, TempDir::new("bf-lake-ref"));
    run_day(&config(&landing, &ref_lake, &ref_db), day(1), &no_events)
        .await
        .unwrap();
    let day_1_only = ref_db.checksums().await;

    let (db, lake) = (TestDb::create().await, TempDir::new("bf-lake"));
    let mut par = config(&landing, &lake, &db);
    par.days_parallel = 3;
    par.spool_dir = Some(file.clone());
    let done = run_backfill(&par, day(1), day(3), &no_events).await;
    let days: Vec<NaiveDate> = done.reports.iter().map(|r| r.day).collect();
    assert_eq!(
        days,
        [day(1)],
        "day 1 is not ahead of anything: it needs no spool"
    );
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
    assert!(matches!(**source, Error::Io { op: "create", .. }), "{err}");
    assert!(err.to_string().contains("spool"), "{err}");
    assert_eq!(db.checksums().await, day_1_only);
    let wh = Warehouse::connect(&db.url).await.unwrap();
    let rows = wh
        .client()
        .query(
            "SELECT landing_day::text, status, phase, error, files,
                    (SELECT count(*) FROM etl.file_manifest m WHERE m.run_id = r.run_id)
             FROM etl.load_run r ORDER BY run_id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "day 3 has no run");
    let (status, phase, error): (String, Option<String>, String) =
        (rows[1].get(1), rows[1].get(2), rows[1].get(3));
    assert_eq!(
        (rows[1].get::<_, String>(0).as_str(), status.as_str()),
        ("2019-06-02", "failed")
    );
    assert_eq!(phase.as_deref(), Some("load"));
    assert!(error.contains("spool"), "{error}");
    // As in a day's own run, the manifest was recorded before the load failed.
    assert_eq!(rows[1].get::<_, i64>(5), FILES_PER_DAY as i64);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a folder");

    // The same days one by one need no spool: they all load.
    let (db, lake) = (TestDb::create().await, TempDir::new("bf-lake-1"));
    let mut one = config(&landing, &lake, &db);
    one.spool_dir = Some(file);
    let done = run_backfill(&one, day(1), day(3), &no_events).await;
    assert!(done.error.is_none(), "{:?}", done.error);
    assert_eq!(done.reports.len(), 3);
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
