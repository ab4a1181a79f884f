//! Files stay where they belong: a landing link leading out of the landing folder is never
//! read, lake writes never leave the lake, odd S3 keys are refused one by one (the same with a
//! folder lake and an S3 lake), and temporary files that killed writers left in the lake are
//! removed by the next run. Real PostgreSQL, real S3-compatible server.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use chrono::NaiveDate;
use d2d_pipeline::run::{no_events, run_day, RunConfig};
use d2d_pipeline::store::Store;
use d2d_pipeline::warehouse::Warehouse;
use d2d_pipeline::Error;
use d2d_testkit::{read_tree, sample_day, unique_tag, TempDir, TestDb};

fn june_1() -> NaiveDate {
    "2019-06-01".parse().unwrap()
}

/// The first `n` files of the sample day, at their keys under `dir`.
fn some_sample_files(dir: &Path, n: usize) -> Vec<(String, Vec<u8>)> {
    let files: Vec<(String, Vec<u8>)> = sample_day().into_iter().take(n).collect();
    for (key, bytes) in &files {
        let path = dir.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    files
}

/// Every file under `dir` (links not followed) as (path relative to `dir`, bytes).
fn lake_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    read_tree(dir)
}

async fn etl_rejects(db: &TestDb) -> Vec<(String, i64, String, String)> {
    let wh = Warehouse::connect(&db.url).await.unwrap();
    wh.client()
        .query(
            "SELECT source_key, line, code, reason FROM etl.reject ORDER BY source_key, line",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

#[tokio::test]
async fn a_landing_link_leading_out_is_reported_and_never_read() {
    let db = TestDb::create().await;
    let (landing, lake, elsewhere) = (
        TempDir::new("links-landing"),
        TempDir::new("links-lake"),
        TempDir::new("links-elsewhere"),
    );
    let files = some_sample_files(landing.path(), 20);
    // A secret outside landing, and a link to it named like a file of the day.
    let secret = elsewhere.path().join("secret.txt");
    std::fs::write(&secret, "root:x:0:0:the secret outside landing\n").unwrap();
    let link_key = "data/resources/2019/06/01/23/50/2019-06-01-23-50-8-events.txt";
    std::fs::create_dir_all(landing.path().join("data/resources/2019/06/01/23/50")).unwrap();
    std::os::unix::fs::symlink(&secret, landing.path().join(link_key)).unwrap();
    // The issue's own case, and a link inside landing to a landing file (followed: loaded).
    let passwd_key = "data/2019-06-01-23-50-9-events.txt";
    std::os::unix::fs::symlink("/etc/passwd", landing.path().join(passwd_key)).unwrap();
    // A linked folder is never entered, whatever it holds: named in the summary.
    std::os::unix::fs::symlink(elsewhere.path(), landing.path().join("linked")).unwrap();
    let inner_key = "data/2019-06-01-23-51-0-events.txt";
    std::os::unix::fs::symlink(
        landing.path().join(&files[1].0),
        landing.path().join(inner_key),
    )
    .unwrap();

    let config = RunConfig::new(
        landing.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        &db.url,
    );
    let report = run_day(&config, june_1(), &no_events).await.unwrap();
    assert_eq!(
        report.counts.files, 21,
        "20 files and the link inside landing"
    );
    let refused: Vec<(&str, &str, Option<NaiveDate>)> = report
        .refused
        .iter()
        .map(|r| (r.key.as_str(), r.code, r.day))
        .collect();
    assert_eq!(
        refused,
        [
            (passwd_key, "link_outside", Some(june_1())),
            (link_key, "link_outside", Some(june_1())),
            ("linked", "link_outside", None)
        ]
    );

    // Nothing of either target reached the lake or the warehouse.
    for (path, bytes) in lake_files(lake.path()) {
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("the secret outside landing") && !text.contains("root:x:0:0"),
            "{path} holds bytes from outside landing"
        );
    }
    let rejects = etl_rejects(&db).await;
    let codes: Vec<(&str, i64, &str)> = rejects
        .iter()
        .map(|(k, l, c, _)| (k.as_str(), *l, c.as_str()))
        .collect();
    assert_eq!(
        codes,
        [
            (passwd_key, 0, "link_outside"),
            (link_key, 0, "link_outside")
        ]
    );
    assert!(rejects[0].3.contains("symbolic link"), "{rejects:?}");
    let quarantine =
        std::fs::read_to_string(lake.path().join(report.quarantine.unwrap().key)).unwrap();
    assert_eq!(quarantine.lines().count(), 2);
    assert!(
        quarantine.contains("\"code\":\"link_outside\""),
        "{quarantine}"
    );

    // A re-run gives the same: the links are refused every time, never fatal.
    let again = run_day(&config, june_1(), &no_events).await.unwrap();
    assert_eq!(again.refused.len(), 3);
    assert_eq!(etl_rejects(&db).await, rejects);
}

#[tokio::test]
async fn lake_writes_never_follow_a_link_out_of_the_lake() {
    let (lake_dir, elsewhere) = (TempDir::new("lake-links"), TempDir::new("lake-elsewhere"));
    let lake = Store::local(lake_dir.path());
    lake.put("keep/a.txt", Bytes::from_static(b"a"))
        .await
        .unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), lake_dir.path().join("out")).unwrap();
    std::fs::write(elsewhere.path().join("victim.txt"), "untouched").unwrap();

    // Writes, copies and deletions through the folder link are refused.
    let refused = |r: Result<(), Error>| {
        let err = r.unwrap_err();
        assert!(
            matches!(&err, Error::InvalidKey { reason, .. } if reason.contains("symbolic link")),
            "{err}"
        );
    };
    refused(lake.put("out/new.txt", Bytes::from_static(b"x")).await);
    refused(lake.delete("out/victim.txt").await);
    refused(
        lake.copy_from(&lake, "keep/a.txt", "out/copy.txt")
            .await
            .map(|_| ()),
    );
    // Reads through it too: it leads out of the lake.
    let err = lake.get("out/victim.txt").await.unwrap_err();
    assert!(matches!(&err, Error::InvalidKey { .. }), "{err}");
    assert!(lake.head("out/victim.txt").await.unwrap().is_none());
    let listing = lake.list_checked("").await.unwrap();
    let keys: Vec<&str> = listing.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["keep/a.txt"]);
    assert_eq!(
        std::fs::read_dir(elsewhere.path()).unwrap().count(),
        1,
        "nothing written outside the lake"
    );
    assert_eq!(
        std::fs::read_to_string(elsewhere.path().join("victim.txt")).unwrap(),
        "untouched"
    );

    // A daily run whose lake partition is a link out of the lake fails, writing nothing there.
    let db = TestDb::create().await;
    let landing = TempDir::new("lake-links-landing");
    some_sample_files(landing.path(), 3);
    std::fs::create_dir_all(lake_dir.path().join("raw")).unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), lake_dir.path().join("raw/dt=2019-06-01"))
        .unwrap();
    let config = RunConfig::new(
        landing.path().to_str().unwrap(),
        lake_dir.path().to_str().unwrap(),
        &db.url,
    );
    let err = run_day(&config, june_1(), &no_events).await.unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 1);
}

/// Landing keys S3 allows but no lake path can hold, each named for 2019-06-01.
const ODD_KEYS: [&str; 5] = [
    "../x/2019-06-01-23-50-1-events.txt",
    "data/./2019-06-01-23-50-2-events.txt",
    "data//2019-06-01-23-50-3-events.txt",
    "/abs/2019-06-01-23-50-4-events.txt",
    "data\\2019-06-01-23-50-5-events.txt",
];

/// A fresh bucket on the test S3 server.
async fn bucket(kind: &str) -> String {
    let url = format!("s3://d2d-files-{kind}-{}", unique_tag());
    Store::open(&url)
        .await
        .unwrap()
        .create_if_missing()
        .await
        .unwrap();
    url
}

/// Runs the day from an S3 landing holding 10 sample files and the odd keys into `lake_url`;
/// returns what the lake holds, the rejects and the dwh checksums.
async fn odd_keys_run(
    landing_url: &str,
    lake_url: &str,
) -> (
    Vec<String>,
    Vec<(String, i64, String, String)>,
    Vec<d2d_pipeline::warehouse::TableChecksum>,
) {
    let db = TestDb::create().await;
    let config = RunConfig::new(landing_url, lake_url, &db.url);
    let report = run_day(&config, june_1(), &no_events).await.unwrap();
    assert_eq!(report.counts.files, 10);
    let mut refused: Vec<(&str, &str)> = report
        .refused
        .iter()
        .map(|r| (r.key.as_str(), r.code))
        .collect();
    refused.sort();
    let mut expected: Vec<(&str, &str)> = ODD_KEYS.iter().map(|k| (*k, "unsafe_key")).collect();
    expected.sort();
    assert_eq!(refused, expected);
    // Re-runs never fail on them either.
    run_day(&config, june_1(), &no_events).await.unwrap();

    let lake = Store::open(lake_url).await.unwrap();
    let keys: Vec<String> = lake
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    for key in &keys {
        assert!(
            !key.split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
                && !key.contains('\\'),
            "odd lake key {key:?}"
        );
    }
    let wh = Warehouse::connect(&db.url).await.unwrap();
    let odd_sources: i64 = wh
        .client()
        .query_one(
            "SELECT count(*) FROM (SELECT source_key FROM dwh.fact_vehicle_event
                UNION ALL SELECT source_key FROM dwh.fact_period_event) AS f
              WHERE source_key ~ '(^|/)\\.{1,2}(/|$)' OR source_key LIKE '%//%'
                 OR source_key LIKE '/%' OR position(E'\\\\' in source_key) > 0",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(odd_sources, 0, "no odd key in dwh.source_key");
    let rejects = etl_rejects(&db).await;
    assert_eq!(rejects.len(), ODD_KEYS.len());
    assert!(rejects
        .iter()
        .all(|(_, line, code, _)| *line == 0 && code == "unsafe_key"));
    let checksums = wh.dwh_checksums().await.unwrap();
    let raw_keys = keys
        .into_iter()
        .filter_map(|k| k.strip_prefix("raw/dt=2019-06-01/").map(str::to_owned))
        .collect();
    (raw_keys, rejects, checksums)
}

#[tokio::test]
async fn odd_s3_keys_are_refused_one_by_one_alike_for_folder_and_s3_lakes() {
    let landing_url = bucket("landing").await;
    let landing = Store::open(&landing_url).await.unwrap();
    let files: Vec<(String, Vec<u8>)> = sample_day().into_iter().take(10).collect();
    for (key, bytes) in &files {
        landing.put(key, Bytes::from(bytes.clone())).await.unwrap();
    }
    for (i, key) in ODD_KEYS.iter().enumerate() {
        // Bytes of a real file, so that only the key is at fault.
        landing
            .put(key, Bytes::from(files[i].1.clone()))
            .await
            .unwrap();
    }
    let listed: Vec<String> = landing
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    for key in ODD_KEYS {
        assert!(
            listed.iter().any(|k| k == key),
            "the S3 server keeps {key:?}: {listed:?}"
        );
    }

    let folder_lake = TempDir::new("odd-keys-lake");
    let from_folder = odd_keys_run(&landing_url, folder_lake.path().to_str().unwrap()).await;
    let s3_lake = bucket("lake").await;
    let from_s3 = odd_keys_run(&landing_url, &s3_lake).await;
    let mut sample_keys: Vec<String> = files.iter().map(|(k, _)| k.clone()).collect();
    sample_keys.sort();
    assert_eq!(from_folder.0, sample_keys);
    assert_eq!(
        from_folder, from_s3,
        "a folder lake and an S3 lake end alike"
    );
}

/// A process id that no longer runs: a child that has exited and been waited for.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

fn write_aged(path: &Path, age: Duration, ahead: bool) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = std::fs::File::create(path).unwrap();
    std::io::Write::write_all(&mut &f, b"half a file").unwrap();
    let now = SystemTime::now();
    let when = if ahead { now + age } else { now - age };
    f.set_modified(when).unwrap();
}

#[tokio::test]
async fn temporary_files_of_killed_writers_are_removed_by_the_next_run() {
    let db = TestDb::create().await;
    let (landing, lake) = (TempDir::new("tmp-landing"), TempDir::new("tmp-lake"));
    some_sample_files(landing.path(), 5);
    let (dead, alive) = (dead_pid(), std::process::id());
    let hour = Duration::from_secs(3600);
    let l = lake.path();
    let stale = [
        l.join(format!(
            "raw/dt=2019-06-01/data/resources/2019/06/01/15/17/.d2d-tmp-{dead}-0"
        )),
        l.join(format!("quarantine/dt=2019-06-01/.d2d-tmp-{dead}-1")),
    ];
    let kept = [
        // A live writer's, however old.
        l.join(format!("raw/dt=2019-06-01/.d2d-tmp-{alive}-7")),
        // Written after this run started: a writer still at work elsewhere.
        l.join(format!("raw/dt=2019-06-01/data/.d2d-tmp-{dead}-2")),
        // Another day's partition is that day's run's business.
        l.join(format!("raw/dt=2019-06-02/.d2d-tmp-{dead}-3")),
        // Not a temporary file name.
        l.join("raw/dt=2019-06-01/.d2d-tmp-notes"),
    ];
    for path in &stale {
        write_aged(path, hour, false);
    }
    for (i, path) in kept.iter().enumerate() {
        write_aged(path, hour, i == 1);
    }
    // Readers never see them.
    let store = Store::local(l);
    assert!(store
        .list("")
        .await
        .unwrap()
        .iter()
        .all(|o| !o.key.contains(".d2d-tmp-")));

    let config = RunConfig::new(
        landing.path().to_str().unwrap(),
        l.to_str().unwrap(),
        &db.url,
    );
    let report = run_day(&config, june_1(), &no_events).await.unwrap();
    assert_eq!(report.counts.files, 5);
    for path in &stale {
        assert!(!path.exists(), "{} is still there", path.display());
    }
    for path in &kept {
        assert!(path.exists(), "{} was removed", path.display());
    }
    assert_eq!(report.stale_temporaries_removed, 2);
    let listed: Vec<String> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert!(
        listed.iter().all(|k| !k.contains(".d2d-tmp-")),
        "{listed:?}"
    );
}
