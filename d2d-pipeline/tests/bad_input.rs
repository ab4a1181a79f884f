//! The bad-input corpus (`testdata/bad/`): every row of its README table is put into a landing
//! folder under its landing key, one daily run loads the day, and each row's documented
//! outcome is asserted (events loaded, rejects with code and line, files refused as a whole).
//! Also: `etl.reject.raw` is bounded whatever the line, and `--max-reject-ratio` fails a day
//! before anything of it is committed.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use d2d_pipeline::run::{no_events, run_day, RunConfig};
use d2d_pipeline::warehouse::Warehouse;
use d2d_pipeline::Error;
use d2d_testkit::{file_paths, repo_root, TempDir, TestDb};
use sha2::{Digest, Sha256};

fn june_1() -> NaiveDate {
    "2019-06-01".parse().unwrap()
}

/// What the table says of a landing key.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// Loaded: this many events, these rejects (`code`, line).
    Loaded(i64, Vec<(String, i64)>),
    /// Refused, but of no day: in the run summary only, with this code.
    SummaryOnly(String),
    /// Not an event file of the day: neither loaded nor reported.
    Ignored,
}

#[derive(Debug, Clone)]
struct Row {
    file: String,
    key: String,
    outcome: Outcome,
}

fn corpus_dir() -> PathBuf {
    repo_root().join("testdata/bad")
}

/// The rows of the table in testdata/bad/README.md.
fn table() -> Vec<Row> {
    let text = std::fs::read_to_string(corpus_dir().join("README.md")).unwrap();
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in text.lines() {
        if line.starts_with("| file |") {
            in_table = true;
            continue;
        }
        if !in_table || line.starts_with("|---") {
            continue;
        }
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
        assert_eq!(cells.len(), 5, "a row of 5 cells: {line}");
        let (file, key, events, rejects) = (cells[0], cells[1], cells[3], cells[4]);
        let outcome = match events {
            "summary only" => Outcome::SummaryOnly(rejects.to_owned()),
            "ignored" => Outcome::Ignored,
            n => {
                let rejects = if rejects == "-" {
                    Vec::new()
                } else {
                    rejects
                        .split(' ')
                        .map(|r| {
                            let (code, line) = r.split_once('@').unwrap();
                            (code.to_owned(), line.parse().unwrap())
                        })
                        .collect()
                };
                Outcome::Loaded(n.parse().unwrap(), rejects)
            }
        };
        rows.push(Row {
            file: file.to_owned(),
            key: key.to_owned(),
            outcome,
        });
    }
    rows
}

/// Bytes of the generated 100 MB line.
const HUGE: usize = 100 * 1024 * 1024;

/// The generated line: an unterminated string, `HUGE` bytes long.
fn huge_line() -> Vec<u8> {
    let mut line = b"{\"event\":\"".to_vec();
    line.resize(HUGE, b'a');
    line
}

/// Puts the row's file at its key under `landing`.
fn place(row: &Row, landing: &Path) {
    let path = landing.join(&row.key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    match row.file.as_str() {
        "generated:huge-line" => {
            let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
            f.write_all(&huge_line()).unwrap();
            f.write_all(b"\n").unwrap();
            f.flush().unwrap();
        }
        "generated:link-outside" => std::os::unix::fs::symlink("/etc/passwd", &path).unwrap(),
        "generated:broken-link" => {
            std::os::unix::fs::symlink("/nonexistent/d2d-nowhere", &path).unwrap()
        }
        "generated:fifo" => {
            let status = std::process::Command::new("mkfifo")
                .arg(&path)
                .status()
                .unwrap();
            assert!(status.success(), "mkfifo {}", path.display());
        }
        file => {
            std::fs::copy(corpus_dir().join(file), &path).unwrap();
        }
    }
}

async fn rows_of(wh: &Warehouse, sql: &str) -> Vec<tokio_postgres::Row> {
    wh.client().query(sql, &[]).await.unwrap()
}

#[tokio::test]
async fn every_kind_of_bad_input_has_its_documented_outcome() {
    let rows = table();
    assert!(
        rows.len() >= 30,
        "the corpus documents at least 30 kinds of bad input, has {}",
        rows.len()
    );
    let db = TestDb::create().await;
    let (landing, lake) = (TempDir::new("bad-landing"), TempDir::new("bad-lake"));
    for row in &rows {
        place(row, landing.path());
    }
    let config = RunConfig::new(
        landing.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        &db.url,
    );
    let report = run_day(&config, june_1(), &no_events).await.unwrap();
    let c = &report.counts;
    assert_eq!(c.lines, c.events + c.duplicates + c.rejects, "{c:?}");

    let wh = Warehouse::connect(&db.url).await.unwrap();
    let mut events: BTreeMap<String, i64> = BTreeMap::new();
    for r in rows_of(
        &wh,
        "SELECT source_key, count(*) FROM (
             SELECT source_key FROM dwh.fact_vehicle_event
             UNION ALL SELECT source_key FROM dwh.fact_period_event) AS f GROUP BY 1",
    )
    .await
    {
        events.insert(r.get(0), r.get(1));
    }
    let mut rejects: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    for r in rows_of(
        &wh,
        "SELECT source_key, code, line FROM etl.reject ORDER BY source_key, line",
    )
    .await
    {
        rejects
            .entry(r.get(0))
            .or_default()
            .push((r.get(1), r.get(2)));
    }
    let manifest: Vec<String> = rows_of(&wh, "SELECT landing_key FROM etl.file_manifest")
        .await
        .iter()
        .map(|r| r.get(0))
        .collect();

    let mut failures = Vec::new();
    let mut expected_rejects = 0;
    for row in &rows {
        let got_events = events.get(&row.key).copied().unwrap_or(0);
        let got_rejects = rejects.get(&row.key).cloned().unwrap_or_default();
        let refused = report.refused.iter().find(|r| r.key == row.key);
        let archived = manifest.contains(&row.key);
        let fine = match &row.outcome {
            Outcome::Loaded(n, want) => {
                expected_rejects += want.len();
                let whole_file = want.iter().any(|(_, line)| *line == 0);
                // Refused at listing: never archived; a gzip that does not decode is.
                let listed_only = whole_file && !want[0].0.contains("gzip");
                got_events == *n
                    && got_rejects == *want
                    && archived != listed_only
                    && refused.is_some() == whole_file
            }
            Outcome::SummaryOnly(code) => {
                got_events == 0
                    && got_rejects.is_empty()
                    && !archived
                    && refused.is_some_and(|r| r.day.is_none() && r.code == code)
            }
            Outcome::Ignored => {
                got_events == 0 && got_rejects.is_empty() && !archived && refused.is_none()
            }
        };
        if !fine {
            failures.push(format!(
                "{} at {:?}: expected {:?}, got {got_events} events, rejects {got_rejects:?}, archived {archived}, refused {refused:?}",
                row.file, row.key, row.outcome
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    let total: usize = rejects.values().map(Vec::len).sum();
    assert_eq!(
        total, expected_rejects,
        "etl.reject holds only the table's rejects"
    );

    // The link's target was never read: nothing of /etc/passwd in the lake or the warehouse
    // (the archived 100 MB line is known to be all `a`s: not worth scanning).
    let huge_key = &rows
        .iter()
        .find(|r| r.file == "generated:huge-line")
        .unwrap()
        .key;
    let huge_copy = lake.path().join("raw/dt=2019-06-01").join(huge_key);
    let passwd = std::fs::read("/etc/passwd").unwrap();
    let first_line = passwd.split(|b| *b == b'\n').next().unwrap().to_vec();
    for path in file_paths(lake.path()) {
        if path != huge_copy {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes
                    .windows(first_line.len())
                    .any(|w| w == first_line.as_slice()),
                "{} holds a line of /etc/passwd",
                path.display()
            );
        }
    }
    let leaked: i64 = wh
        .client()
        .query_one(
            "SELECT count(*) FROM etl.reject WHERE position($1 in raw) > 0",
            &[&String::from_utf8_lossy(&first_line).into_owned()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leaked, 0);

    // Every reject keeps at most 4 KiB of its line, with the whole line's length and SHA-256.
    let longest: i32 = wh
        .client()
        .query_one("SELECT max(octet_length(raw)) FROM etl.reject", &[])
        .await
        .unwrap()
        .get(0);
    assert!(longest <= 4096, "{longest}");
    let row = wh
        .client()
        .query_one(
            "SELECT octet_length(raw), raw_length, raw_sha256 FROM etl.reject WHERE source_key = $1",
            &[huge_key],
        )
        .await
        .unwrap();
    let expected_sha: [u8; 32] = Sha256::digest(huge_line()).into();
    assert_eq!(row.get::<_, i32>(0), 4096);
    assert_eq!(row.get::<_, Option<i64>>(1), Some(HUGE as i64));
    assert_eq!(
        row.get::<_, Option<String>>(2),
        Some(hex::encode(expected_sha))
    );
    let unmeasured: i64 = wh
        .client()
        .query_one(
            "SELECT count(*) FROM etl.reject WHERE (line = 0) <> (raw_length IS NULL)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        unmeasured, 0,
        "every refused line has a length, no refused file has"
    );

    // The quarantine holds the same rejects, just as bounded.
    let quarantine = report.quarantine.as_ref().unwrap();
    assert_eq!(quarantine.rejects as usize, expected_rejects);
    let text = std::fs::read(lake.path().join(&quarantine.key)).unwrap();
    assert!(
        text.len() < 1024 * 1024,
        "the quarantine does not hold the 100 MB line: {} bytes",
        text.len()
    );
    for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_slice(line).unwrap();
        assert!(v["raw"].as_str().unwrap().len() <= 3 * 4096, "{v}");
        if v["source"] == huge_key.as_str() {
            assert_eq!(v["raw_length"], HUGE as u64);
        }
    }

    // The first and last instants kept reach the warehouse's distances and the curated zone
    // (a year-0 start once broke every later run's curate phase); the day re-runs, and the
    // next day loads.
    let distances: Vec<(String, i64, f64)> = rows_of(
        &wh,
        "SELECT operating_period_id, fixes, metres FROM dwh.vehicle_period_distance
          WHERE vehicle_id = 'yr' ORDER BY 1",
    )
    .await
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect();
    assert_eq!(
        distances,
        [
            ("op_first".to_owned(), 1, 0.0),
            ("op_last".to_owned(), 1, 0.0)
        ]
    );
    for day in ["0001-01-01", "9999-12-31"] {
        let partition = lake
            .path()
            .join(format!("curated/vehicle_period_distance/start_day={day}"));
        assert!(partition.is_dir(), "{} is missing", partition.display());
    }
    run_day(&config, june_1(), &no_events).await.unwrap();
    std::fs::write(
        landing.path().join("data/2019-06-02-10-0-0-events.txt"),
        std::fs::read(corpus_dir().join("timestamp-offsets.txt")).unwrap(),
    )
    .unwrap();
    run_day(&config, "2019-06-02".parse().unwrap(), &no_events)
        .await
        .unwrap();
}

/// A small day of `n` files with one valid update each.
fn good_files(landing: &Path, n: u32) {
    for i in 0..n {
        let path = landing.join(format!("data/2019-06-01-11-0-{i}-events.txt"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            path,
            format!(
                "{{\"event\":\"update\",\"on\":\"vehicle\",\"at\":\"2019-06-01T11:00:{i:02}Z\",\"data\":{{\"id\":\"v{i}\",\"location\":{{\"lat\":52.5,\"lng\":13.4,\"at\":\"2019-06-01T11:00:{i:02}Z\"}}}},\"organization_id\":\"org\"}}\n"
            ),
        )
        .unwrap();
    }
}

#[tokio::test]
async fn max_reject_ratio_fails_the_day_before_anything_is_committed() {
    let db = TestDb::create().await;
    let (landing, lake) = (TempDir::new("ratio-landing"), TempDir::new("ratio-lake"));
    good_files(landing.path(), 8);
    std::fs::write(
        landing.path().join("data/2019-06-01-11-1-0-events.txt"),
        "not json\n",
    )
    .unwrap();
    let mut config = RunConfig::new(
        landing.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        &db.url,
    );
    // 1 of 9 lines refused: 0.111 <= 0.2, the day loads.
    config.max_reject_ratio = Some(0.2);
    let first = run_day(&config, june_1(), &no_events).await.unwrap();
    assert_eq!((first.counts.lines, first.counts.rejects), (9, 1));
    let wh = Warehouse::connect(&db.url).await.unwrap();
    let before = wh.dwh_checksums().await.unwrap();
    let rejects_before = rows_of(
        &wh,
        "SELECT source_key, line, raw FROM etl.reject ORDER BY 1, 2",
    )
    .await
    .iter()
    .map(|r| {
        (
            r.get::<_, String>(0),
            r.get::<_, i64>(1),
            r.get::<_, String>(2),
        )
    })
    .collect::<Vec<_>>();
    let quarantine_key = first.quarantine.as_ref().unwrap().key.clone();
    let quarantine_before = std::fs::read(lake.path().join(&quarantine_key)).unwrap();

    // Two more bad lines: 3 of 11 refused, 0.2727 > 0.2.
    std::fs::write(
        landing.path().join("data/2019-06-01-11-1-1-events.txt"),
        "[]\n{}\n",
    )
    .unwrap();
    let err = run_day(&config, june_1(), &no_events).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(&err, Error::Run { source, .. } if matches!(**source, Error::TooManyRejects { rejects: 3, lines: 11, .. })),
        "{err:?}"
    );
    assert!(
        text.contains("3 of 11 lines refused") && text.contains("0.2727") && text.contains("0.2"),
        "{text}"
    );
    // Nothing half-written: dwh, etl.reject and the quarantine file are as after the first run,
    // and the run is on record as failed with the ratio in its error.
    assert_eq!(wh.dwh_checksums().await.unwrap(), before);
    let rejects_after = rows_of(
        &wh,
        "SELECT source_key, line, raw FROM etl.reject ORDER BY 1, 2",
    )
    .await
    .iter()
    .map(|r| {
        (
            r.get::<_, String>(0),
            r.get::<_, i64>(1),
            r.get::<_, String>(2),
        )
    })
    .collect::<Vec<_>>();
    assert_eq!(rejects_after, rejects_before);
    assert_eq!(
        std::fs::read(lake.path().join(&quarantine_key)).unwrap(),
        quarantine_before
    );
    let (status, error) = db.last_run().await;
    assert_eq!(status, "failed");
    assert!(error.unwrap().contains("0.2727"));

    // Without the limit the same day loads.
    config.max_reject_ratio = None;
    let again = run_day(&config, june_1(), &no_events).await.unwrap();
    assert_eq!(again.counts.rejects, 3);

    // A ratio outside [0, 1] is a configuration error.
    config.max_reject_ratio = Some(1.5);
    let err = run_day(&config, june_1(), &no_events).await.unwrap_err();
    assert!(err.to_string().contains("between 0 and 1"), "{err}");
}
