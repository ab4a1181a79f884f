//! The daily run end to end, on the real services: a local-folder landing and lake, moto S3
//! for both, the real PostgreSQL (a fresh database per test). Re-runs, rebuilds from the lake,
//! `--move`, rejects, failures and back-fills.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use chrono::NaiveDate;
use d2d_model::distance::{averages, period_distances, DistanceOptions};
use d2d_model::parse::{parse_bytes, Parsed};
use d2d_model::period::resolve_periods;
use d2d_model::track::tracks;
use d2d_pipeline::run::{no_events, run_day, run_days, Phase, RunConfig, RunEvent};
use d2d_pipeline::store::StoreOptions;
use d2d_pipeline::warehouse::Warehouse;
use d2d_pipeline::Error;
use d2d_testkit::{
    copy_tree, landing_dir, read_tree, s3_buckets_with, s3_endpoint, sample_day, unique_tag,
    TempDir, TestDb,
};

fn june_1() -> NaiveDate {
    "2019-06-01".parse().unwrap()
}

async fn query_i64(db: &TestDb, sql: &str) -> i64 {
    let wh = Warehouse::connect(&db.url).await.unwrap();
    wh.client().query_one(sql, &[]).await.unwrap().get(0)
}

/// The bi view must equal d2d-model on the same files (1e-6 m).
async fn assert_bi_matches_model(db: &TestDb, files: &[(String, Vec<u8>)]) {
    let all = Parsed::merge(files.iter().map(|(k, b)| parse_bytes(k, b)));
    let events = || all.events.iter().map(|r| &r.event);
    let periods = resolve_periods(events());
    let rows = period_distances(&periods, &tracks(events()), &DistanceOptions::default());
    let expected = averages(&periods, &rows).periods;
    let wh = Warehouse::connect(&db.url).await.unwrap();
    let got = wh.period_averages().await.unwrap();
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(g.operating_period_id, e.period.as_str());
        assert_eq!(g.vehicles as u64, e.vehicles);
        assert!(
            (g.total_metres - e.total_metres).abs() < 1e-6,
            "{g:?} {e:?}"
        );
        assert_eq!(g.avg_metres.is_some(), e.avg_metres.is_some());
        if let (Some(a), Some(b)) = (g.avg_metres, e.avg_metres) {
            assert!((a - b).abs() < 1e-6, "{g:?} {e:?}");
        }
    }
}

#[tokio::test]
async fn local_day_reruns_moves_and_rebuilds_from_the_lake() {
    let db = TestDb::create().await;
    let (landing, lake) = (TempDir::new("landing"), TempDir::new("lake"));
    copy_tree(&landing_dir(), landing.path());
    let mut config = RunConfig::new(
        landing.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        &db.url,
    );
    config.layout = "nested:data/resources".parse().unwrap();

    // Phases are announced in order and each finishes.
    let seen = Mutex::new(Vec::new());
    let record = |e: &RunEvent<'_>| {
        if let RunEvent::PhaseFinished { phase, .. } = e {
            seen.lock().unwrap().push(*phase);
        }
    };
    let started = std::time::Instant::now();
    let first = run_day(&config, june_1(), &record).await.unwrap();
    eprintln!(
        "first run of the sample day: {:?} {:?}",
        started.elapsed(),
        first.phases
    );
    assert_eq!(
        seen.into_inner().unwrap(),
        [
            Phase::List,
            Phase::Archive,
            Phase::Load,
            Phase::Merge,
            Phase::Quarantine,
            Phase::Curate
        ]
    );
    let files = sample_day();
    assert_eq!(first.counts.files, 717);
    assert_eq!(
        first.counts.bytes,
        files.iter().map(|(_, b)| b.len() as u64).sum::<u64>()
    );
    assert_eq!(first.counts.lines, 35_290);
    // The summary's identity: every line is a loaded event, a duplicate or a reject.
    let c = &first.counts;
    assert_eq!(c.lines, c.events + c.duplicates + c.rejects);
    assert_eq!(
        c.events,
        c.rows.fact_vehicle_event + c.rows.fact_period_event
    );
    assert_eq!(first.copied_server_side, 717);
    assert!(first.quarantine.is_none());
    assert_bi_matches_model(&db, &files).await;
    let reference = db.checksums().await;

    // Every archived file is byte-identical to its landing file.
    let archived = read_tree(&lake.path().join("raw/dt=2019-06-01"));
    assert_eq!(archived, files);

    // Three runs in all: the lake is already complete, the warehouse unchanged.
    for _ in 0..2 {
        let again = run_day(&config, june_1(), &no_events).await.unwrap();
        assert_eq!(again.already_archived, 717);
        assert_eq!(db.checksums().await, reference);
    }

    // Landing loses ten files (retention, a manual clean-up): the lake still has them, and
    // the day keeps them.
    for (key, _) in &files[..10] {
        std::fs::remove_file(landing.path().join(key)).unwrap();
    }
    let lost = run_day(&config, june_1(), &no_events).await.unwrap();
    assert_eq!(
        (
            lost.counts.files,
            lost.already_archived,
            lost.kept_from_lake
        ),
        (717, 707, 10)
    );
    assert_eq!(db.checksums().await, reference);

    // --move: the landing files go, after the load.
    config.move_landing = true;
    let moved = run_day(&config, june_1(), &no_events).await.unwrap();
    assert_eq!(moved.landing_deleted, 707);
    assert!(read_tree(landing.path()).is_empty());
    assert_eq!(db.checksums().await, reference);

    // Landing is empty now: a plain run loads the day the lake holds.
    config.move_landing = false;
    let after_move = run_day(&config, june_1(), &no_events).await.unwrap();
    assert_eq!(
        (after_move.counts.files, after_move.kept_from_lake),
        (717, 717)
    );
    assert_eq!(db.checksums().await, reference);

    // A day neither landing nor the lake holds fails, and says why.
    let err = run_day(&config, "2019-06-02".parse().unwrap(), &no_events)
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::Run { phase, .. } if *phase == Phase::Archive.doing()));
    assert!(
        err.to_string().contains("no landing files of 2019-06-02"),
        "{err}"
    );
    config.from_lake = true;
    let rebuilt = run_day(&config, june_1(), &no_events).await.unwrap();
    assert_eq!(rebuilt.counts.files, 717);
    assert_eq!(db.checksums().await, reference);

    let runs = Warehouse::connect(&db.url).await.unwrap();
    let statuses: Vec<(String, bool, Option<i64>, Option<String>)> = runs
        .client()
        .query(
            "SELECT status, from_lake, files, error FROM etl.load_run ORDER BY run_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let status: Vec<&str> = statuses.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        status,
        [
            "succeeded",
            "succeeded",
            "succeeded",
            "succeeded",
            "succeeded",
            "succeeded",
            "failed",
            "succeeded"
        ]
    );
    assert!(statuses[7].1);
    assert!(statuses[6]
        .3
        .as_deref()
        .unwrap()
        .contains("no landing files"));
    // Each archiving run's manifest lists the 717 files with the same checksums.
    assert_eq!(
        query_i64(
            &db,
            "SELECT count(DISTINCT (landing_key, lake_key, size, sha256)) FROM etl.file_manifest"
        )
        .await,
        717
    );
    assert_eq!(
        query_i64(&db, "SELECT count(*) FROM etl.file_manifest").await,
        717 * 7
    );

    // A file leaves the day only when deleted from the lake's raw/dt=D/.
    let (gone, _) = &files[0];
    std::fs::remove_file(lake.path().join("raw/dt=2019-06-01").join(gone)).unwrap();
    config.from_lake = false;
    let smaller = run_day(&config, june_1(), &no_events).await.unwrap();
    assert_eq!(smaller.counts.files, 716);
    assert_bi_matches_model(&db, &files[1..]).await;
    let left: i64 = Warehouse::connect(&db.url)
        .await
        .unwrap()
        .client()
        .query_one(
            "SELECT count(*) FROM dwh.fact_vehicle_event WHERE source_key = $1",
            &[gone],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

/// A late file of the sample day, for a vehicle of its own.
const LATE_KEY: &str = "data/resources/2019/06/01/23/59/2019-06-01-23-59-59-events.json";

fn late_file() -> Vec<u8> {
    format!(
        "{}\n{}\n",
        GOOD.replace("\"v1\"", "\"late\""),
        GOOD.replace("\"v1\"", "\"late\"")
            .replace("10.101Z", "40.000Z")
            .replace("13.46", "13.47")
    )
    .into_bytes()
}

#[tokio::test]
async fn late_file_after_move_loads_the_whole_lake_day() {
    let db = TestDb::create().await;
    let (landing, lake) = (TempDir::new("landing"), TempDir::new("lake"));
    copy_tree(&landing_dir(), landing.path());
    let mut config = RunConfig::new(
        landing.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        &db.url,
    );
    config.layout = "nested:data/resources".parse().unwrap();
    config.move_landing = true;
    let moved = run_day(&config, june_1(), &no_events).await.unwrap();
    assert_eq!(moved.landing_deleted, 717);
    let before: i64 = query_i64(&db, "SELECT count(*) FROM dwh.fact_vehicle_event").await;

    // One late file lands; the day is re-run (and moved again).
    let late = landing.path().join(LATE_KEY);
    std::fs::create_dir_all(late.parent().unwrap()).unwrap();
    std::fs::write(&late, late_file()).unwrap();
    let rerun = run_day(&config, june_1(), &no_events).await.unwrap();
    assert_eq!(
        (
            rerun.counts.files,
            rerun.kept_from_lake,
            rerun.landing_deleted
        ),
        (718, 717, 1)
    );
    assert_eq!(
        query_i64(&db, "SELECT count(*) FROM dwh.fact_vehicle_event").await,
        before + 2
    );

    // The same as a fresh warehouse loaded with all 718 files at once.
    let all_db = TestDb::create().await;
    let (all_landing, all_lake) = (TempDir::new("landing"), TempDir::new("lake"));
    copy_tree(&landing_dir(), all_landing.path());
    let late = all_landing.path().join(LATE_KEY);
    std::fs::create_dir_all(late.parent().unwrap()).unwrap();
    std::fs::write(&late, late_file()).unwrap();
    let mut all = RunConfig::new(
        all_landing.path().to_str().unwrap(),
        all_lake.path().to_str().unwrap(),
        &all_db.url,
    );
    all.layout = config.layout.clone();
    let once = run_day(&all, june_1(), &no_events).await.unwrap();
    assert_eq!(once.counts.files, 718);
    assert_eq!(db.checksums().await, all_db.checksums().await);
    let mut files = sample_day();
    files.push((LATE_KEY.to_owned(), late_file()));
    assert_bi_matches_model(&db, &files).await;
}

#[tokio::test]
async fn a_failure_after_the_commit_keeps_the_load_and_says_so() {
    let db = TestDb::create().await;
    let (landing, lake) = (TempDir::new("landing"), TempDir::new("lake"));
    let key = "data/2019-06-01-15-17-10-events.json";
    std::fs::create_dir_all(landing.path().join("data")).unwrap();
    std::fs::write(landing.path().join(key), format!("{PERIOD}\n{GOOD}\n")).unwrap();
    let mut config = RunConfig::new(
        landing.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        &db.url,
    );
    config.move_landing = true;
    // The landing file is rewritten just as the clean-up starts: --move must not delete it.
    let path = landing.path().join(key);
    let rewrite = |e: &RunEvent<'_>| {
        if let RunEvent::PhaseStarted {
            phase: Phase::Cleanup,
            ..
        } = e
        {
            std::fs::write(&path, format!("{PERIOD}\n{GOOD}\n{GOOD}\n")).unwrap();
        }
    };
    let err = run_day(&config, june_1(), &rewrite).await.unwrap_err();
    let Error::AfterCommit { run_id, phase, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*phase, Phase::Cleanup.doing());
    assert!(err.to_string().contains("the load stands"), "{err}");
    assert!(path.exists());
    assert_eq!(
        query_i64(&db, "SELECT count(*) FROM dwh.fact_vehicle_event").await,
        1
    );
    let wh = Warehouse::connect(&db.url).await.unwrap();
    let row = wh
        .client()
        .query_one(
            "SELECT status, error FROM etl.load_run WHERE run_id = $1",
            &[&run_id.unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "succeeded");
    let text: String = row.get(1);
    assert!(text.starts_with("cleanup: "), "{text}");
    assert!(text.contains(key), "{text}");
}

#[tokio::test]
async fn an_unusable_lake_is_blamed_on_the_stores() {
    let db = TestDb::create().await;
    let landing = TempDir::new("landing");
    let config = RunConfig::new(landing.path().to_str().unwrap(), "/proc/nope", &db.url);
    let err = run_day(&config, june_1(), &no_events).await.unwrap_err();
    assert!(
        matches!(&err, Error::Run { phase, .. } if *phase == Phase::List.doing()),
        "{err}"
    );
    assert!(!err.to_string().contains("warehouse"), "{err}");
    assert!(err.to_string().contains("/proc/nope"), "{err}");
}

#[tokio::test]
async fn s3_landing_and_lake_on_moto() {
    let db = TestDb::create().await;
    let tag = unique_tag();
    let landing_url = format!("s3://d2d-run-landing-{tag}/incoming");
    let lake_url = format!("s3://d2d-run-lake-{tag}");
    let files = sample_day();
    let started = std::time::Instant::now();
    let landing = s3_buckets_with(&landing_url, &lake_url, &files).await;
    eprintln!(
        "populated moto with the sample day in {:?}",
        started.elapsed()
    );

    // One run archives (server-side), loads and moves; a second rebuilds from the lake alone.
    let mut config = RunConfig::new(&landing_url, &lake_url, &db.url);
    config.layout = "nested:data/resources".parse().unwrap();
    config.move_landing = true;
    let started = std::time::Instant::now();
    let report = run_day(&config, june_1(), &no_events).await.unwrap();
    eprintln!(
        "S3 run of the sample day: {:?} {:?}",
        started.elapsed(),
        report.phases
    );
    assert_eq!(report.counts.files, 717);
    assert_eq!(report.copied_server_side, 717, "same service: CopyObject");
    assert_eq!(report.landing_deleted, 717);
    assert!(landing.list("").await.unwrap().is_empty());
    assert_bi_matches_model(&db, &files).await;
    let reference = db.checksums().await;

    config.move_landing = false;
    config.from_lake = true;
    let rebuilt = run_day(&config, june_1(), &no_events).await.unwrap();
    assert_eq!(rebuilt.counts.files, 717);
    assert_eq!(db.checksums().await, reference);
}

/// A plain HTTP/1.1 relay in front of the S3 server that records the body size of every
/// GET response by request path: what really crosses the network, whatever the client does.
struct CountingProxy {
    url: String,
    gets: Arc<Mutex<Vec<(String, u64)>>>,
}

impl CountingProxy {
    async fn start(upstream: &str) -> CountingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let gets = Arc::new(Mutex::new(Vec::new()));
        let recorded = gets.clone();
        tokio::spawn(async move {
            loop {
                let (client, _) = listener.accept().await.unwrap();
                let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                tokio::spawn(relay(client, server, recorded.clone()));
            }
        });
        CountingProxy { url, gets }
    }

    /// Body bytes of the GETs of objects (not listings) under any of `prefixes`
    /// (`/bucket/key-prefix`), and forgets every GET seen so far.
    fn take_object_bytes(&self, prefixes: &[String]) -> u64 {
        let mut gets = self.gets.lock().unwrap();
        let total = gets
            .iter()
            .filter(|(path, _)| {
                prefixes.iter().any(|p| path.starts_with(p)) && !path.contains("list-type=")
            })
            .map(|(_, n)| n)
            .sum();
        gets.clear();
        total
    }
}

/// Reads an HTTP head (up to the empty line); `None` at the end of the stream.
async fn read_head(r: &mut (impl tokio::io::AsyncBufRead + Unpin)) -> Option<Vec<u8>> {
    use tokio::io::AsyncBufReadExt;
    let mut head = Vec::new();
    loop {
        let start = head.len();
        if r.read_until(b'\n', &mut head).await.ok()? == 0 {
            return None;
        }
        if &head[start..] == b"\r\n" {
            return Some(head);
        }
    }
}

fn header(head: &[u8], name: &str) -> Option<String> {
    String::from_utf8_lossy(head).lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

async fn relay(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    gets: Arc<Mutex<Vec<(String, u64)>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
    let (cr, mut cw) = client.into_split();
    let (sr, mut sw) = server.into_split();
    let (mut cr, mut sr) = (BufReader::new(cr), BufReader::new(sr));
    let length = |head: &[u8]| -> Option<u64> {
        assert!(
            header(head, "transfer-encoding").is_none(),
            "the counting proxy does not speak chunked transfer: {}",
            String::from_utf8_lossy(head)
        );
        header(head, "content-length").map(|v| v.parse().unwrap())
    };
    while let Some(request) = read_head(&mut cr).await {
        let line = String::from_utf8_lossy(&request)
            .lines()
            .next()
            .unwrap()
            .to_owned();
        let mut parts = line.split(' ');
        let (method, path) = (
            parts.next().unwrap().to_owned(),
            parts.next().unwrap().to_owned(),
        );
        // A side that closes the connection ends the relay: the client may drop a connection
        // it no longer wants (a retry, a timeout), which is not the relay's to judge. What
        // counts is only what was read to the end.
        if sw.write_all(&request).await.is_err() {
            return;
        }
        let sent = length(&request).unwrap_or(0);
        if tokio::io::copy(&mut (&mut cr).take(sent), &mut sw)
            .await
            .is_err()
        {
            return;
        }
        let Some(mut response) = read_head(&mut sr).await else {
            return;
        };
        while response.starts_with(b"HTTP/1.1 100") {
            if cw.write_all(&response).await.is_err() {
                return;
            }
            let Some(next) = read_head(&mut sr).await else {
                return;
            };
            response = next;
        }
        let status = String::from_utf8_lossy(&response[9..12]).to_string();
        if cw.write_all(&response).await.is_err() {
            return;
        }
        let body = if method == "HEAD" || status == "204" || status == "304" {
            0
        } else if let Some(n) = length(&response) {
            match tokio::io::copy(&mut (&mut sr).take(n), &mut cw).await {
                Ok(copied) if copied == n => copied,
                // Cut short: the bytes may have crossed all the same, so they count (a
                // retried read then shows as bytes read twice, and the test says so).
                Ok(copied) => {
                    if method == "GET" {
                        gets.lock().unwrap().push((path, copied));
                    }
                    return;
                }
                Err(_) => {
                    if method == "GET" {
                        gets.lock().unwrap().push((path, n));
                    }
                    return;
                }
            }
        } else {
            // No length: the body runs to the end of the connection.
            let Ok(n) = tokio::io::copy(&mut sr, &mut cw).await else {
                // Unknown length, cut short: the test's byte count will not add up.
                if method == "GET" {
                    gets.lock().unwrap().push((path, u64::MAX / 4));
                }
                return;
            };
            if method == "GET" {
                gets.lock().unwrap().push((path, n));
            }
            return;
        };
        if method == "GET" {
            gets.lock().unwrap().push((path, body));
        }
    }
}

/// Issue 7: on S3, each landing byte crosses the network at most once per run. Counted by a
/// relay in front of the S3 server: the GETs of landing and lake objects during a run sum to
/// exactly the day's bytes (the parser's one read of each lake copy; the archive copies
/// server-side and is verified by S3's SHA-256), on a first run, a re-run and a rebuild from
/// the lake.
#[tokio::test]
async fn s3_run_reads_each_landing_byte_once() {
    let db = TestDb::create().await;
    let endpoint = s3_endpoint();
    let tag = unique_tag();
    let (landing_bucket, lake_bucket) = (
        format!("d2d-net-landing-{tag}"),
        format!("d2d-net-lake-{tag}"),
    );
    let landing_url = format!("s3://{landing_bucket}/incoming");
    let lake_url = format!("s3://{lake_bucket}");
    let files = sample_day();
    s3_buckets_with(&landing_url, &lake_url, &files).await;
    let day_bytes: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();

    let proxy = CountingProxy::start(&endpoint).await;
    let mut config = RunConfig::new(&landing_url, &lake_url, &db.url);
    config.layout = "nested:data/resources".parse().unwrap();
    config.store_options = StoreOptions {
        s3_endpoint: Some(proxy.url.clone()),
        ..StoreOptions::from_env()
    };
    // Landing bytes and their copies in the lake's raw/ (the curated zone's own small reads,
    // such as its fingerprints, are not landing bytes).
    let objects = [
        format!("/{landing_bucket}/incoming/"),
        format!("/{lake_bucket}/raw/"),
    ];
    let read = |proxy: &CountingProxy| proxy.take_object_bytes(&objects);

    let first = run_day(&config, june_1(), &no_events).await.unwrap();
    assert_eq!(first.copied_server_side, 717);
    assert_eq!(first.counts.bytes, day_bytes);
    let gets = proxy.gets.lock().unwrap().len();
    assert!(
        gets >= 717,
        "the relay saw {gets} GETs: is the run going through it?"
    );
    assert_eq!(read(&proxy), day_bytes, "first run");
    assert_bi_matches_model(&db, &files).await;
    let reference = db.checksums().await;

    let again = run_day(&config, june_1(), &no_events).await.unwrap();
    assert_eq!(again.already_archived, 717);
    assert_eq!(read(&proxy), day_bytes, "re-run");

    config.from_lake = true;
    let rebuilt = run_day(&config, june_1(), &no_events).await.unwrap();
    assert_eq!(rebuilt.counts.files, 717);
    assert_eq!(read(&proxy), day_bytes, "rebuild from the lake");
    assert_eq!(db.checksums().await, reference);
}

const GOOD: &str = r#"{"event":"update","on":"vehicle","at":"2019-06-01T18:17:10.101Z","data":{"id":"v1","location":{"lat":52.45,"lng":13.46,"at":"2019-06-01T18:17:10.101Z"}},"organization_id":"org-id"}"#;
const PERIOD: &str = r#"{"event":"create","on":"operating_period","at":"2019-06-01T18:00:00Z","data":{"id":"op_1","start":"2019-06-01T18:00:00Z","finish":"2019-06-01T19:00:00Z"},"organization_id":"org-id"}"#;

#[tokio::test]
async fn rejects_go_to_the_quarantine_and_etl_reject_and_valid_lines_load() {
    let db = TestDb::create().await;
    let (landing, lake) = (TempDir::new("landing"), TempDir::new("lake"));
    let key = "data/2019-06-01-15-17-10-events.json";
    let second = GOOD.replace("10.101Z", "11.000Z").replace("52.45", "52.46");
    let bad = format!(
        "{PERIOD}\n{GOOD}\n{{\"event\":\"update\"\n{}\n\n{second}\n",
        GOOD.replace("52.45", "91.2")
    );
    std::fs::create_dir_all(landing.path().join("data")).unwrap();
    std::fs::write(landing.path().join(key), &bad).unwrap();
    let config = RunConfig::new(
        landing.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        &db.url,
    );
    let report = run_day(&config, june_1(), &no_events).await.unwrap();
    assert_eq!((report.counts.lines, report.counts.rejects), (5, 2));
    assert_eq!(report.counts.rows.fact_vehicle_event, 2);
    assert_eq!(report.counts.rows.vehicle_period_distance, 1);

    let q = report.quarantine.unwrap();
    assert_eq!(q.key, "quarantine/dt=2019-06-01/rejects.ndjson");
    let text = std::fs::read_to_string(lake.path().join(&q.key)).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["source"], key);
    assert_eq!(lines[0]["line"], 3);
    assert_eq!(lines[0]["code"], "invalid_json");
    assert_eq!(lines[1]["line"], 4);
    assert_eq!(lines[1]["field"], "data.location.lat");
    assert!(lines[1]["reason"]
        .as_str()
        .unwrap()
        .contains("91.2 is outside"));

    let wh = Warehouse::connect(&db.url).await.unwrap();
    let rows = wh
        .client()
        .query(
            "SELECT source_key, line, code, reason, raw FROM etl.reject ORDER BY line",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get::<_, String>(0), key);
    assert_eq!(rows[0].get::<_, i64>(1), 3);
    assert_eq!(rows[0].get::<_, String>(4), "{\"event\":\"update\"");
    assert_eq!(rows[1].get::<_, String>(2), "invalid_coordinate");

    // The file is fixed in landing under the same name: the lake keeps its original, so the
    // re-run refuses, naming the key, both sizes and both checksums...
    let fixed = format!("{PERIOD}\n{GOOD}\n{second}\n");
    std::fs::write(landing.path().join(key), &fixed).unwrap();
    let err = run_day(&config, june_1(), &no_events).await.unwrap_err();
    let Error::Run { source, .. } = &err else {
        panic!("{err:?}")
    };
    let Error::Verify { landing_key, .. } = source.as_ref() else {
        panic!("{err:?}")
    };
    assert_eq!(landing_key, key);
    let text = err.to_string();
    let sha = |b: &[u8]| {
        use sha2::Digest;
        sha2::Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    };
    for part in [
        format!("{} bytes with SHA-256 {}", bad.len(), sha(bad.as_bytes())),
        format!(
            "{} bytes with SHA-256 {}",
            fixed.len(),
            sha(fixed.as_bytes())
        ),
    ] {
        assert!(text.contains(&part), "{text} lacks {part}");
    }
    assert_eq!(
        std::fs::read_to_string(lake.path().join("raw/dt=2019-06-01").join(key)).unwrap(),
        bad
    );
    // ...unless replacing changed files is allowed: rejects and quarantine are then gone.
    let mut config = config;
    config.lake_options.replace_changed = true;
    let report = run_day(&config, june_1(), &no_events).await.unwrap();
    assert_eq!(report.counts.rejects, 0);
    assert!(report.quarantine.is_none());
    assert!(!lake
        .path()
        .join("quarantine/dt=2019-06-01/rejects.ndjson")
        .exists());
    assert_eq!(query_i64(&db, "SELECT count(*) FROM etl.reject").await, 0);
}

#[tokio::test]
async fn failure_mid_load_is_recorded_and_leaves_dwh_unchanged() {
    let db = TestDb::create().await;
    let (landing, lake) = (TempDir::new("landing"), TempDir::new("lake"));
    let key = "data/2019-06-01-15-17-10-events.json";
    std::fs::create_dir_all(landing.path().join("data")).unwrap();
    std::fs::write(landing.path().join(key), format!("{PERIOD}\n{GOOD}\n")).unwrap();
    let config = RunConfig::new(
        landing.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        &db.url,
    );
    run_day(&config, june_1(), &no_events).await.unwrap();
    let before = db.checksums().await;

    // A late file arrives, with a bad line; the merge will hit a rule that no new distance
    // row can pass.
    std::fs::write(
        landing.path().join("data/2019-06-01-15-17-11-events.json"),
        format!(
            "{}\nnot json\n",
            GOOD.replace("10.101Z", "12.000Z").replace("13.46", "13.47")
        ),
    )
    .unwrap();
    Warehouse::connect(&db.url)
        .await
        .unwrap()
        .client()
        .batch_execute(
            "ALTER TABLE dwh.vehicle_period_distance
                 ADD CONSTRAINT injected_failure CHECK (false) NOT VALID",
        )
        .await
        .unwrap();
    let err = run_day(&config, june_1(), &no_events).await.unwrap_err();
    let Error::Run { run_id, phase, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*phase, Phase::Merge.doing());
    assert!(err.to_string().contains("injected_failure"), "{err}");
    assert_eq!(db.checksums().await, before);
    // The quarantine describes committed loads only.
    assert!(!lake
        .path()
        .join("quarantine/dt=2019-06-01/rejects.ndjson")
        .exists());

    let wh = Warehouse::connect(&db.url).await.unwrap();
    let row = wh
        .client()
        .query_one(
            "SELECT status, error, files, finished_at IS NOT NULL FROM etl.load_run WHERE run_id = $1",
            &[&run_id.unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "failed");
    assert!(row.get::<_, String>(1).contains("injected_failure"));
    assert_eq!(row.get::<_, Option<i64>>(2), Some(2));
    assert!(row.get::<_, bool>(3));
    assert_eq!(
        query_i64(
            &db,
            "SELECT (SELECT count(*) FROM staging.vehicle_event) + (SELECT count(*) FROM staging.reject)"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn back_fill_runs_each_day_of_the_range() {
    let db = TestDb::create().await;
    let (landing, lake) = (TempDir::new("landing"), TempDir::new("lake"));
    std::fs::create_dir_all(landing.path().join("data")).unwrap();
    for (name, line) in [
        ("data/2019-06-01-23-0-0-events.json", PERIOD.to_owned()),
        ("data/2019-06-01-23-0-1-events.json", GOOD.to_owned()),
        (
            "data/2019-06-02-0-0-0-events.json",
            GOOD.replace("2019-06-01T18:17:10.101Z", "2019-06-01T18:30:00Z")
                .replace("52.45", "52.5"),
        ),
    ] {
        std::fs::write(landing.path().join(name), line).unwrap();
    }
    let mut config = RunConfig::new(
        landing.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        &db.url,
    );
    config.layout = "flat:data".parse().unwrap();
    let reports = run_days(&config, june_1(), "2019-06-02".parse().unwrap(), &no_events)
        .await
        .unwrap();
    let days: Vec<(String, u64)> = reports
        .iter()
        .map(|r| (r.day.to_string(), r.counts.files))
        .collect();
    assert_eq!(days, [("2019-06-01".into(), 2), ("2019-06-02".into(), 1)]);
    assert!(lake
        .path()
        .join("raw/dt=2019-06-02/data/2019-06-02-0-0-0-events.json")
        .exists());
    // The late fix of day 2 counts in op_1 (18:00-19:00) with day 1's fix.
    let wh = Warehouse::connect(&db.url).await.unwrap();
    let avg = wh.period_averages().await.unwrap();
    assert_eq!(avg.len(), 1);
    assert_eq!(avg[0].vehicles, 1);
    // Hand-written haversine of the two fixes (52.45, 13.46) and (52.5, 13.46).
    let (p1, p2) = ((52.45f64, 13.46f64), (52.5f64, 13.46f64));
    let (f1, f2) = (p1.0.to_radians(), p2.0.to_radians());
    let (dphi, dlambda) = (f2 - f1, (p2.1 - p1.1).to_radians());
    let a = (dphi / 2.0).sin().powi(2) + f1.cos() * f2.cos() * (dlambda / 2.0).sin().powi(2);
    let expected = 2.0 * 6_371_008.8 * a.sqrt().asin();
    assert!(
        (avg[0].total_metres - expected).abs() < 1e-6,
        "{} vs {expected}",
        avg[0].total_metres
    );

    // A range with a day without files stops there, and says which.
    let err = run_days(&config, june_1(), "2019-06-03".parse().unwrap(), &no_events)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("2019-06-03"), "{err}");
    assert!(
        run_days(&config, "2019-06-02".parse().unwrap(), june_1(), &no_events)
            .await
            .is_err()
    );
}
