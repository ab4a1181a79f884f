//! Store conformance: the same suite runs against a local folder and the real S3-compatible
//! server started by `scripts/services` (moto on 127.0.0.1), so both backends behave alike.
//! The S3 half needs `D2D_S3_ENDPOINT` (and the AWS_* variables) as `scripts/services start`
//! prints them; without it that half says so and stops.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use d2d_pipeline::store::{CopyMethod, Store, StoreOptions};
use d2d_pipeline::Error;
use d2d_testkit::TempDir;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

/// A fresh, empty folder for one test, removed when the value is dropped.
fn temp_dir(name: &str) -> TempDir {
    TempDir::new(&format!("store-{name}"))
}

/// An empty prefix in a bucket of the test S3 server, or `None` (with a message) when the
/// server's variables are not set.
async fn s3_store(bucket: &str, name: &str) -> Option<Store> {
    let Ok(endpoint) = std::env::var("D2D_S3_ENDPOINT") else {
        eprintln!(
            "SKIPPED S3 half of {name}: D2D_S3_ENDPOINT is unset; run `eval \"$(scripts/services start)\"` or scripts/test"
        );
        return None;
    };
    let options = StoreOptions {
        s3_endpoint: Some(endpoint),
        ..StoreOptions::default()
    };
    let url = format!("s3://{bucket}/{name}-{}/", std::process::id());
    let store = Store::open_with(&url, &options).await.unwrap();
    store.create_if_missing().await.unwrap();
    clear(&store).await;
    Some(store)
}

async fn clear(store: &Store) {
    let keys: Vec<String> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    stream::iter(keys)
        .map(|k| async move { store.delete(&k).await })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();
}

fn sha(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The behaviour every store must have.
async fn put_get_head_list_delete(store: &Store) {
    assert!(
        store.list("").await.unwrap().is_empty(),
        "{store:?} not empty"
    );

    let body = Bytes::from_static(b"{\"event\":\"update\"}\n");
    store.put("a/b/one.txt", body.clone()).await.unwrap();
    assert_eq!(store.get("a/b/one.txt").await.unwrap(), body);
    let head = store.head("a/b/one.txt").await.unwrap().unwrap();
    assert_eq!(
        (head.key.as_str(), head.size),
        ("a/b/one.txt", body.len() as u64)
    );
    assert!(head.etag.is_some());

    // Overwrite replaces the object and its size.
    let longer = Bytes::from_static(b"{\"event\":\"update\",\"on\":\"vehicle\"}\n");
    store.put("a/b/one.txt", longer.clone()).await.unwrap();
    assert_eq!(store.get("a/b/one.txt").await.unwrap(), longer);
    assert_eq!(
        store.head("a/b/one.txt").await.unwrap().unwrap().size,
        longer.len() as u64
    );

    // Streaming read and checksum agree with the bytes.
    let mut read = Vec::new();
    store
        .get_reader("a/b/one.txt")
        .await
        .unwrap()
        .read_to_end(&mut read)
        .await
        .unwrap();
    assert_eq!(read, longer);
    assert_eq!(
        store.sha256("a/b/one.txt").await.unwrap(),
        (longer.len() as u64, sha(&longer))
    );

    // Empty objects and keys with characters that need encoding survive.
    store.put("a/empty", Bytes::new()).await.unwrap();
    assert_eq!(store.get("a/empty").await.unwrap().len(), 0);
    let odd = "a/with space/dt=2019-06-01/ü+x.txt";
    store.put(odd, Bytes::from_static(b"odd")).await.unwrap();
    assert_eq!(store.get(odd).await.unwrap(), Bytes::from_static(b"odd"));
    store.put("b.txt", Bytes::from_static(b"b")).await.unwrap();

    // Listing: recursive, sorted, plain string prefixes, `/` separators.
    let keys = |objs: Vec<d2d_pipeline::store::ObjectMeta>| {
        objs.into_iter().map(|o| o.key).collect::<Vec<_>>()
    };
    assert_eq!(
        keys(store.list("").await.unwrap()),
        ["a/b/one.txt", "a/empty", odd, "b.txt"]
    );
    assert_eq!(
        keys(store.list("a/").await.unwrap()),
        ["a/b/one.txt", "a/empty", odd]
    );
    assert_eq!(keys(store.list("a/b/on").await.unwrap()), ["a/b/one.txt"]);
    assert_eq!(keys(store.list("a/e").await.unwrap()), ["a/empty"]);
    assert!(store.list("nothing/here/").await.unwrap().is_empty());
    let listed = store.list("a/b/").await.unwrap();
    assert_eq!(listed[0].size, longer.len() as u64);

    // Missing objects: get is NotFound naming store and key; head is None.
    let err = store.get("a/missing.txt").await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(store.url()) && msg.contains("a/missing.txt"),
        "{msg}"
    );
    assert!(matches!(
        store.get_reader("a/missing.txt").await,
        Err(Error::NotFound { .. })
    ));
    assert!(store.head("a/missing.txt").await.unwrap().is_none());

    // Delete, twice: the second is not an error.
    store.delete("a/b/one.txt").await.unwrap();
    assert!(store.head("a/b/one.txt").await.unwrap().is_none());
    store.delete("a/b/one.txt").await.unwrap();
    assert_eq!(keys(store.list("a/").await.unwrap()), ["a/empty", odd]);
    clear(store).await;
    assert!(store.list("").await.unwrap().is_empty());
}

/// More than one S3 page (1,000 keys): every key comes back, once, in order.
async fn lists_past_one_page(store: &Store) {
    let keys: Vec<String> = (0..1_100)
        .map(|i| format!("many/{:02}/k{i:05}", i % 7))
        .collect();
    stream::iter(keys.clone())
        .map(|k| async move {
            let body = Bytes::from(k.clone().into_bytes());
            store.put(&k, body).await
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();
    let mut expected = keys;
    expected.sort();
    let listed = store.list("many/").await.unwrap();
    assert_eq!(listed.len(), 1_100);
    let got: Vec<String> = listed.iter().map(|o| o.key.clone()).collect();
    assert_eq!(got, expected);
    assert!(listed.iter().all(|o| o.size == o.key.len() as u64));
    clear(store).await;
}

/// Copies within the store (server-side) and between stores (get + put).
async fn copies(store: &Store, other: &Store, same_service: bool) {
    let body = Bytes::from_static(b"line 1\nline 2\n");
    store
        .put("src/2019-06-01-15-17-3-events.txt", body.clone())
        .await
        .unwrap();
    let method = store
        .copy_from(
            store,
            "src/2019-06-01-15-17-3-events.txt",
            "raw/dt=2019-06-01/src/x.txt",
        )
        .await
        .unwrap();
    assert_eq!(method, CopyMethod::ServerSide);
    assert_eq!(
        store.get("raw/dt=2019-06-01/src/x.txt").await.unwrap(),
        body
    );
    // The source is untouched.
    assert_eq!(
        store
            .get("src/2019-06-01-15-17-3-events.txt")
            .await
            .unwrap(),
        body
    );

    // Copy over an existing, different object replaces it.
    other
        .put("copied/x.txt", Bytes::from_static(b"stale"))
        .await
        .unwrap();
    let method = other
        .copy_from(store, "src/2019-06-01-15-17-3-events.txt", "copied/x.txt")
        .await
        .unwrap();
    assert_eq!(method == CopyMethod::ServerSide, same_service);
    assert_eq!(other.get("copied/x.txt").await.unwrap(), body);

    let err = other
        .copy_from(store, "src/missing", "copied/y")
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::NotFound { ref key, .. } if key == "src/missing"),
        "{err}"
    );
    assert!(other.head("copied/y").await.unwrap().is_none());
    clear(store).await;
    clear(other).await;
}

#[tokio::test]
async fn local_store_conforms() {
    let dir = temp_dir("conform");
    let store = Store::open(dir.path().to_str().unwrap()).await.unwrap();
    put_get_head_list_delete(&store).await;
    lists_past_one_page(&store).await;
    let other_dir = temp_dir("other");
    let other = Store::open(&format!("file://{}", other_dir.path().display()))
        .await
        .unwrap();
    copies(&store, &other, true).await;
    // Deleting the last object of a folder removes the folders it leaves empty.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn s3_store_conforms() {
    let Some(store) = s3_store("d2d-store-conformance", "main").await else {
        return;
    };
    put_get_head_list_delete(&store).await;
    lists_past_one_page(&store).await;
    // Another bucket of the same server: server-side copy across buckets.
    let other = s3_store("d2d-store-conformance-other", "other")
        .await
        .unwrap();
    copies(&store, &other, true).await;
    // A local folder and S3: bytes pass through the process, both ways.
    let local_dir = temp_dir("s3-local");
    let local = Store::local(local_dir.path());
    copies(&store, &local, false).await;
    copies(&local, &store, false).await;
}

#[tokio::test]
async fn s3_store_prefix_isolates_keys() {
    let Some(inner) = s3_store("d2d-store-conformance", "prefix").await else {
        return;
    };
    let bucket_root = Store::open_with(
        "s3://d2d-store-conformance",
        &StoreOptions {
            s3_endpoint: std::env::var("D2D_S3_ENDPOINT").ok(),
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    inner.put("k.txt", Bytes::from_static(b"k")).await.unwrap();
    let prefix = inner
        .url()
        .trim_start_matches("s3://d2d-store-conformance/");
    assert_eq!(
        bucket_root.get(&format!("{prefix}k.txt")).await.unwrap(),
        Bytes::from_static(b"k")
    );
    assert_eq!(inner.list("").await.unwrap()[0].key, "k.txt");
    assert!(matches!(inner.get("").await, Err(Error::InvalidKey { .. })));
    clear(&inner).await;
}

#[tokio::test]
async fn local_store_refuses_keys_that_escape_its_root() {
    let parent = temp_dir("escape");
    let root = parent.path().join("root");
    let store = Store::local(&root);
    store
        .put("inside.txt", Bytes::from_static(b"ok"))
        .await
        .unwrap();
    for key in [
        "../outside.txt",
        "/tmp/abs.txt",
        "a/../../outside.txt",
        "a//b",
        "a/",
        "",
        "./a",
        "a\\..\\b",
    ] {
        let err = store.put(key, Bytes::from_static(b"x")).await.unwrap_err();
        assert!(matches!(err, Error::InvalidKey { .. }), "{key:?}: {err}");
        assert!(err.to_string().contains(store.url()), "{err}");
        assert!(
            matches!(store.get(key).await, Err(Error::InvalidKey { .. })),
            "{key:?}"
        );
        assert!(
            matches!(store.head(key).await, Err(Error::InvalidKey { .. })),
            "{key:?}"
        );
        assert!(
            matches!(store.delete(key).await, Err(Error::InvalidKey { .. })),
            "{key:?}"
        );
    }
    assert!(matches!(
        store.list("../").await,
        Err(Error::InvalidKey { .. })
    ));
    let mut outside: Vec<_> = std::fs::read_dir(parent.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    outside.sort();
    assert_eq!(outside, ["root"]);
    assert_eq!(store.list("").await.unwrap().len(), 1);
}

#[tokio::test]
async fn local_store_lists_files_only_and_reports_a_missing_root() {
    let tmp = temp_dir("walk");
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("x/empty-dir")).unwrap();
    std::fs::write(dir.join("x/f.txt"), b"f").unwrap();
    // A leftover temporary file from a crashed write is not an object.
    std::fs::write(dir.join("x/.d2d-tmp-1-1"), b"half").unwrap();
    let store = Store::local(dir);
    let listed = store.list("").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, "x/f.txt");
    assert!(store.head("x/empty-dir").await.unwrap().is_none());

    let missing = Store::local(dir.join("does-not-exist"));
    let err = missing.list("").await.unwrap_err();
    assert!(err.to_string().contains("does-not-exist"), "{err}");
}
