//! The lake on the real sample day (testdata/landing: 717 files of 2019-06-01): selection,
//! verified archiving local→S3, S3→S3 (server-side) and local→local, rebuilding the day from
//! the lake alone, `--move`, and the quarantine file. The S3 parts use the moto server that
//! `scripts/services start` runs; without `D2D_S3_ENDPOINT` they say so and stop.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Mutex;

use bytes::Bytes;
use chrono::NaiveDate;
use d2d_pipeline::lake::{
    self, no_progress, ArchiveAction, ArchivedFile, DayLayout, LakeOptions, Progress,
};
use d2d_pipeline::store::{CopyMethod, Store, StoreOptions};
use d2d_pipeline::Error;
use d2d_testkit::{copy_tree, landing_dir, sample_day, TempDir};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

const FAST: LakeOptions = LakeOptions {
    concurrency: 32,
    replace_changed: false,
};

fn day() -> NaiveDate {
    "2019-06-01".parse().unwrap()
}

/// Every file of the sample day on disk: key → (size, SHA-256), read without any store code.
fn sample_files() -> BTreeMap<String, (u64, [u8; 32])> {
    sample_day()
        .into_iter()
        .map(|(key, bytes)| (key, (bytes.len() as u64, Sha256::digest(&bytes).into())))
        .collect()
}

/// A store on a fresh local folder, which lives as long as the returned [`TempDir`].
fn local_store(tag: &str) -> (TempDir, Store) {
    let dir = TempDir::new(&format!("lake-{tag}"));
    let store = Store::local(dir.path());
    (dir, store)
}

/// Files that must never be taken for 2019-06-01: neighbouring days filed among the day's
/// files, and names that are not landing names.
const DECOYS: [&str; 4] = [
    "data/resources/2019/06/01/15/17/2019-06-02-15-17-3-events.txt",
    "data/resources/2019/06/01/15/17/2019-05-31-23-59-59-events.txt",
    "data/resources/2019/06/01/15/17/notes-2019-06-01.txt",
    "data/2019-06-01-15-17-3-event.txt",
];

async fn put_decoys(landing: &Store) {
    for key in DECOYS {
        landing
            .put(key, Bytes::from_static(b"{\"decoy\":true}\n"))
            .await
            .unwrap();
    }
}

/// A copy of the sample day plus decoys in a fresh local folder.
async fn local_landing() -> (TempDir, Store) {
    let (dir, store) = local_store("landing");
    copy_tree(&landing_dir(), dir.path());
    put_decoys(&store).await;
    (dir, store)
}

fn s3_options() -> Option<StoreOptions> {
    match std::env::var("D2D_S3_ENDPOINT") {
        Ok(endpoint) => Some(StoreOptions {
            s3_endpoint: Some(endpoint),
            ..StoreOptions::default()
        }),
        Err(_) => {
            eprintln!("SKIPPED S3 part: D2D_S3_ENDPOINT is unset; run `eval \"$(scripts/services start)\"` or scripts/test");
            None
        }
    }
}

/// An empty prefix of a bucket on the test S3 server.
async fn s3_store(options: &StoreOptions, bucket: &str, name: &str) -> Store {
    let url = format!("s3://{bucket}/{name}-{}/", std::process::id());
    let store = Store::open_with(&url, options).await.unwrap();
    store.create_if_missing().await.unwrap();
    let keys: Vec<String> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    stream::iter(keys)
        .map(|k| {
            let store = &store;
            async move { store.delete(&k).await }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();
    store
}

/// Uploads `keys` of the sample day and the decoys to `landing`.
async fn upload_sample(landing: &Store, keys: &[String]) {
    stream::iter(keys)
        .map(|key| async move {
            let bytes = std::fs::read(landing_dir().join(key)).unwrap();
            landing.put(key, Bytes::from(bytes)).await
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();
    put_decoys(landing).await;
}

fn summary(files: &[ArchivedFile]) -> Vec<(String, String, u64, [u8; 32])> {
    files
        .iter()
        .map(|f| (f.landing_key.clone(), f.lake_key.clone(), f.size, f.sha256))
        .collect()
}

/// The whole lake cycle on the sample day: select, archive and verify against the files on
/// disk, re-run, lose the landing files, rebuild from the lake alone.
async fn archive_and_rebuild(
    landing: &Store,
    lake: &Store,
    expected_method: CopyMethod,
    forget_landing: impl std::future::Future<Output = ()>,
) {
    let expected = sample_files();
    assert_eq!(expected.len(), 717, "the sample day has 717 files");

    // Selection: exactly the day's files, by either listing rule, in landing order.
    let selected = lake::list_day(landing, day(), &DayLayout::Scan)
        .await
        .unwrap();
    assert_eq!(selected.len(), 717);
    let nested = lake::list_day(landing, day(), &"nested:data/resources/".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(nested, selected);
    let keys: Vec<&String> = selected.iter().map(|o| &o.key).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(sorted, expected.keys().collect::<Vec<_>>());
    assert!(keys.iter().all(|k| !DECOYS.contains(&k.as_str())));
    // Landing order is by the time in the name, numerically (15-17-9 before 15-17-10).
    assert!(
        keys[0].ends_with("2019-06-01-15-17-3-events.txt"),
        "{}",
        keys[0]
    );
    assert!(
        keys[716].ends_with("2019-06-01-15-29-2-events.txt"),
        "{}",
        keys[716]
    );

    // Archive, with progress.
    let seen = Mutex::new(Vec::new());
    let report = |p: Progress<'_>| {
        seen.lock()
            .unwrap()
            .push((p.files_done, p.files_total, p.bytes_done, p.bytes_total))
    };
    let archived = lake::archive_day(landing, lake, day(), &selected, &FAST, &report)
        .await
        .unwrap();
    assert_eq!(archived.len(), 717);
    for (file, object) in archived.iter().zip(&selected) {
        assert_eq!(file.landing_key, object.key);
        assert_eq!(file.lake_key, format!("raw/dt=2019-06-01/{}", object.key));
        let (size, sha) = expected[&file.landing_key];
        assert_eq!(
            (file.size, file.sha256),
            (size, sha),
            "{}",
            file.landing_key
        );
        assert_eq!(file.action, ArchiveAction::Copied(expected_method));
        assert_eq!(file.sha256_hex().len(), 64);
    }
    let total: u64 = expected.values().map(|(s, _)| s).sum();
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.len(), 717);
    assert_eq!(seen.last(), Some(&(717, 717, total, total)));

    // The lake holds exactly the day, nothing else.
    let in_lake = lake.list("").await.unwrap();
    assert_eq!(in_lake.len(), 717);
    assert!(in_lake.iter().all(|o| o
        .key
        .starts_with("raw/dt=2019-06-01/data/resources/2019/06/01/")));

    // Re-running changes nothing and copies nothing.
    let again = lake::archive_day(landing, lake, day(), &selected, &FAST, &no_progress)
        .await
        .unwrap();
    assert_eq!(summary(&again), summary(&archived));
    assert!(again
        .iter()
        .all(|f| f.action == ArchiveAction::AlreadyArchived));

    // The landing files are lost: the lake alone gives back the same list.
    forget_landing.await;
    assert!(lake::list_day(landing, day(), &DayLayout::Scan)
        .await
        .map(|l| l.is_empty())
        .unwrap_or(true));
    let rebuilt = lake::list_archived(lake, day(), &FAST, &no_progress)
        .await
        .unwrap();
    assert_eq!(summary(&rebuilt), summary(&archived));
    assert!(rebuilt
        .iter()
        .all(|f| f.action == ArchiveAction::FromLake && f.landing_etag.is_none()));
    // Another day has nothing in the lake.
    let other = NaiveDate::from_ymd_opt(2019, 6, 2).unwrap();
    assert!(lake::list_archived(lake, other, &FAST, &no_progress)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn sample_day_local_landing_to_s3_lake() {
    let Some(options) = s3_options() else { return };
    let (dir, landing) = local_landing().await;
    let lake = s3_store(&options, "d2d-lake-tests", "local-to-s3").await;
    archive_and_rebuild(&landing, &lake, CopyMethod::GetPut, async {
        std::fs::remove_dir_all(dir.path()).unwrap();
    })
    .await;
}

/// Landing and lake on the same S3 service: objects are copied inside the server. The
/// full day goes through the local→S3 test; here 60 of its files keep the test quick, as
/// moto answers some 100 requests a second.
#[tokio::test]
async fn s3_landing_to_s3_lake_copies_server_side() {
    let Some(options) = s3_options() else { return };
    let expected = sample_files();
    let keys: Vec<String> = expected.keys().take(60).cloned().collect();
    let landing = s3_store(&options, "d2d-landing-tests", "s3-to-s3").await;
    upload_sample(&landing, &keys).await;
    let lake = s3_store(&options, "d2d-lake-tests", "s3-to-s3").await;

    let selected = lake::list_day(&landing, day(), &DayLayout::Scan)
        .await
        .unwrap();
    let mut got: Vec<String> = selected.iter().map(|o| o.key.clone()).collect();
    got.sort();
    assert_eq!(got, keys);
    let archived = lake::archive_day(&landing, &lake, day(), &selected, &FAST, &no_progress)
        .await
        .unwrap();
    for f in &archived {
        assert_eq!(
            (f.size, f.sha256),
            expected[&f.landing_key],
            "{}",
            f.landing_key
        );
        assert_eq!(f.action, ArchiveAction::Copied(CopyMethod::ServerSide));
        assert_eq!(
            lake.get(&f.lake_key).await.unwrap(),
            std::fs::read(landing_dir().join(&f.landing_key)).unwrap()
        );
    }
    for k in &keys {
        landing.delete(k).await.unwrap();
    }
    let rebuilt = lake::list_archived(&lake, day(), &FAST, &no_progress)
        .await
        .unwrap();
    assert_eq!(summary(&rebuilt), summary(&archived));
}

#[tokio::test]
async fn sample_day_local_landing_to_local_lake() {
    let (dir, landing) = local_landing().await;
    let (_lake_dir, lake) = local_store("lake");
    archive_and_rebuild(&landing, &lake, CopyMethod::ServerSide, async {
        std::fs::remove_dir_all(dir.path()).unwrap();
    })
    .await;
}

#[tokio::test]
async fn flat_layout_lists_one_day_by_prefix() {
    let (_landing_dir, landing) = local_store("flat");
    let names = [
        "data/2019-06-01-9-5-10-events.json",
        "data/2019-06-01-9-5-9-events.json",
        "data/2019-06-01-10-0-0-events.json",
        "data/2019-06-02-0-0-0-events.json",
        "data/2019-05-31-23-59-59-events.json",
        "data/2019-06-01-events.json",
        "data/sub/2019-06-01-1-0-0-events.json",
    ];
    for n in names {
        landing.put(n, Bytes::from_static(b"{}\n")).await.unwrap();
    }
    let keys =
        |l: Vec<d2d_pipeline::store::ObjectMeta>| l.into_iter().map(|o| o.key).collect::<Vec<_>>();
    let flat = lake::list_day(&landing, day(), &"flat:data/".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        keys(flat),
        [
            "data/2019-06-01-9-5-9-events.json",
            "data/2019-06-01-9-5-10-events.json",
            "data/2019-06-01-10-0-0-events.json",
        ]
    );
    // Scanning also finds the file in a sub-folder.
    let scan = lake::list_day(&landing, day(), &DayLayout::Scan)
        .await
        .unwrap();
    assert_eq!(scan.len(), 4);
    assert_eq!(scan[0].key, "data/sub/2019-06-01-1-0-0-events.json");
}

#[tokio::test]
async fn scan_skips_the_lake_when_landing_and_lake_share_a_store() {
    let (_both_dir, both) = local_store("shared");
    let key = "data/2019-06-01-9-5-10-events.json";
    both.put(key, Bytes::from_static(b"{}\n")).await.unwrap();
    let selected = lake::list_day(&both, day(), &DayLayout::Scan)
        .await
        .unwrap();
    lake::archive_day(&both, &both, day(), &selected, &FAST, &no_progress)
        .await
        .unwrap();
    let again = lake::list_day(&both, day(), &DayLayout::Scan)
        .await
        .unwrap();
    assert_eq!(again, selected);
}

#[tokio::test]
async fn archiving_refuses_other_days_and_detects_a_changing_landing_file() {
    let (_landing_dir, landing) = local_store("changing");
    let (_lake_dir, lake) = local_store("changing-lake");
    let key = "data/2019-06-01-9-5-10-events.json";
    landing
        .put(key, Bytes::from_static(b"{\"a\":1}\n"))
        .await
        .unwrap();
    landing
        .put(
            "data/2019-06-02-0-0-0-events.json",
            Bytes::from_static(b"{}\n"),
        )
        .await
        .unwrap();

    let everything = landing.list("").await.unwrap();
    let err = lake::archive_day(&landing, &lake, day(), &everything, &FAST, &no_progress)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Config(ref m) if m.contains("2019-06-02-0-0-0")),
        "{err}"
    );
    assert!(lake.list("").await.map(|l| l.is_empty()).unwrap_or(true));

    let selected = lake::list_day(&landing, day(), &DayLayout::Scan)
        .await
        .unwrap();
    // Rewritten (longer) between listing and archiving.
    landing
        .put(key, Bytes::from_static(b"{\"a\":1}\n{\"b\":2}\n"))
        .await
        .unwrap();
    let err = lake::archive_day(&landing, &lake, day(), &selected, &FAST, &no_progress)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Verify { ref landing_key, .. } if landing_key == key),
        "{err}"
    );
}

#[tokio::test]
async fn a_different_lake_object_is_kept_unless_replacing_is_allowed() {
    let (_landing_dir, landing) = local_store("replace");
    let (_lake_dir, lake) = local_store("replace-lake");
    let key = "data/2019-06-01-9-5-10-events.json";
    landing
        .put(key, Bytes::from_static(b"{\"a\":1}\n"))
        .await
        .unwrap();
    // Same size, other bytes: only the checksum tells them apart.
    lake.put(
        &lake::raw_key(day(), key),
        Bytes::from_static(b"{\"a\":2}\n"),
    )
    .await
    .unwrap();
    let selected = lake::list_day(&landing, day(), &DayLayout::Scan)
        .await
        .unwrap();
    let err = lake::archive_day(&landing, &lake, day(), &selected, &FAST, &no_progress)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(&err, Error::Verify { landing_key, .. } if landing_key == key),
        "{text}"
    );
    for b in [&b"{\"a\":2}\n"[..], &b"{\"a\":1}\n"[..]] {
        let sha = hex::encode(Sha256::digest(b));
        assert!(
            text.contains(&format!("8 bytes with SHA-256 {sha}")),
            "{text}"
        );
    }
    assert_eq!(
        lake.get(&lake::raw_key(day(), key)).await.unwrap(),
        Bytes::from_static(b"{\"a\":2}\n")
    );

    let replace = LakeOptions {
        replace_changed: true,
        ..FAST
    };
    let archived = lake::archive_day(&landing, &lake, day(), &selected, &replace, &no_progress)
        .await
        .unwrap();
    assert_eq!(
        archived[0].action,
        ArchiveAction::Copied(CopyMethod::ServerSide)
    );
    assert_eq!(
        lake.get(&lake::raw_key(day(), key)).await.unwrap(),
        Bytes::from_static(b"{\"a\":1}\n")
    );
}

async fn move_day(landing: &Store, lake: &Store) {
    let keys = [
        "data/resources/2019/06/01/15/17/2019-06-01-15-17-3-events.txt",
        "data/resources/2019/06/01/15/17/2019-06-01-15-17-4-events.txt",
        "data/resources/2019/06/01/15/18/2019-06-01-15-18-0-events.txt",
        "data/resources/2019/06/01/15/18/2019-06-01-15-18-1-events.txt",
    ];
    for (i, k) in keys.iter().enumerate() {
        let body = format!("{{\"n\":{i}}}\n");
        landing.put(k, Bytes::from(body)).await.unwrap();
    }
    let decoy = "data/resources/2019/06/01/15/18/2019-06-02-15-18-1-events.txt";
    landing
        .put(decoy, Bytes::from_static(b"{}\n"))
        .await
        .unwrap();
    let selected = lake::list_day(landing, day(), &DayLayout::Scan)
        .await
        .unwrap();
    assert_eq!(selected.len(), 4);
    let archived = lake::archive_day(landing, lake, day(), &selected, &FAST, &no_progress)
        .await
        .unwrap();

    // A list rebuilt from the lake was never compared with landing: refused, nothing deleted.
    let from_lake = lake::list_archived(lake, day(), &FAST, &no_progress)
        .await
        .unwrap();
    let err = lake::delete_landing(landing, lake, &from_lake, &FAST, &no_progress)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert_eq!(landing.list("").await.unwrap().len(), 5);

    // A landing file rewritten after archiving is not deleted.
    landing
        .put(keys[1], Bytes::from_static(b"{\"n\":1,\"late\":true}\n"))
        .await
        .unwrap();
    let one = LakeOptions {
        concurrency: 1,
        ..FAST
    };
    let err = lake::delete_landing(landing, lake, &archived[1..2], &one, &no_progress)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Verify { ref landing_key, .. } if landing_key == keys[1]),
        "{err}"
    );
    assert!(landing.head(keys[1]).await.unwrap().is_some());

    // A lake copy that went missing keeps its landing file.
    lake.delete(&archived[2].lake_key).await.unwrap();
    let err = lake::delete_landing(landing, lake, &archived[2..3], &one, &no_progress)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Verify { ref landing_key, .. } if landing_key == keys[2]),
        "{err}"
    );
    assert!(landing.head(keys[2]).await.unwrap().is_some());

    // Verified files go; a second move finds them gone and deletes nothing.
    let verified = [archived[0].clone(), archived[3].clone()];
    let deleted = lake::delete_landing(landing, lake, &verified, &FAST, &no_progress)
        .await
        .unwrap();
    assert_eq!(deleted, 2);
    assert_eq!(
        lake::delete_landing(landing, lake, &verified, &FAST, &no_progress)
            .await
            .unwrap(),
        0
    );
    let left: Vec<String> = landing
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(left, [keys[1], keys[2], decoy]);
    for f in &verified {
        assert!(lake.head(&f.lake_key).await.unwrap().is_some());
    }
}

#[tokio::test]
async fn move_deletes_landing_only_after_verification_local() {
    let (_landing_dir, landing) = local_store("move");
    let (_lake_dir, lake) = local_store("move-lake");
    move_day(&landing, &lake).await;
}

#[tokio::test]
async fn move_deletes_landing_only_after_verification_s3() {
    let Some(options) = s3_options() else { return };
    let landing = s3_store(&options, "d2d-landing-tests", "move").await;
    let lake = s3_store(&options, "d2d-lake-tests", "move").await;
    move_day(&landing, &lake).await;
}

async fn quarantine_round_trip(lake: &Store) {
    let parsed = d2d_model::parse::parse_bytes(
        "data/2019-06-01-9-5-10-events.json",
        b"{not json\n{\"event\":\"update\"}\n\xff\n",
    );
    assert_eq!(parsed.rejects.len(), 3);
    let written = lake::write_quarantine(lake, day(), &parsed.rejects)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(written.key, "quarantine/dt=2019-06-01/rejects.ndjson");
    assert_eq!(written.rejects, 3);
    let body = lake.get(&written.key).await.unwrap();
    assert_eq!(body.len() as u64, written.size);
    let lines: Vec<serde_json::Value> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2]["raw_hex"], "ff");
    assert_eq!(lines[1]["source"], "data/2019-06-01-9-5-10-events.json");

    // A re-run replaces the file; a run without rejects removes it.
    let written = lake::write_quarantine(lake, day(), &parsed.rejects[..1])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(written.rejects, 1);
    assert_eq!(
        lake.get(&written.key)
            .await
            .unwrap()
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count(),
        1
    );
    assert!(lake::write_quarantine(lake, day(), &[])
        .await
        .unwrap()
        .is_none());
    assert!(lake.head(&written.key).await.unwrap().is_none());
}

#[tokio::test]
async fn quarantine_is_replaced_per_day_local() {
    let (_dir, lake) = local_store("quarantine");
    quarantine_round_trip(&lake).await;
}

#[tokio::test]
async fn quarantine_is_replaced_per_day_s3() {
    let Some(options) = s3_options() else { return };
    quarantine_round_trip(&s3_store(&options, "d2d-lake-tests", "quarantine").await).await;
}

/// A landing file larger than what the archive holds in memory goes from one service to the
/// other through a scratch file, both ways: the lake copy is the same bytes, verified, and
/// the scratch file is gone after.
#[tokio::test]
async fn a_large_file_crosses_services_through_a_scratch_file() {
    let Some(options) = s3_options() else { return };
    let key = "data/2019-06-01-9-0-0-events.txt";
    // 20 MiB, above the 8 MiB read whole, and no two lines alike.
    let body: Vec<u8> = (0..200_000u32)
        .flat_map(|i| format!("{i:0>104}\n").into_bytes())
        .collect();
    let scratch = || {
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("d2d-archive-"))
            .count()
    };
    let (_dir, local) = local_store("large");
    local.put(key, Bytes::from(body.clone())).await.unwrap();
    let s3 = s3_store(&options, "d2d-lake-tests", "large").await;
    let (_lake_dir, local_lake) = local_store("large-lake");
    for (landing, lake) in [(&local, &s3), (&s3, &local_lake)] {
        if landing.is_s3() {
            landing.put(key, Bytes::from(body.clone())).await.unwrap();
        }
        let selected = lake::list_day(landing, day(), &DayLayout::Scan)
            .await
            .unwrap();
        let archived = lake::archive_day(landing, lake, day(), &selected, &FAST, &no_progress)
            .await
            .unwrap();
        assert_eq!(
            archived[0].action,
            ArchiveAction::Copied(CopyMethod::GetPut)
        );
        assert_eq!(archived[0].sha256, <[u8; 32]>::from(Sha256::digest(&body)));
        assert_eq!(lake.get(&archived[0].lake_key).await.unwrap(), body);
        assert_eq!(scratch(), 0, "the scratch file is removed");
    }
}
