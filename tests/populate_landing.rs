//! Runs the `populate_landing` example as a user would: to a local folder and to the moto S3
//! server of `scripts/services` (that half needs `D2D_S3_ENDPOINT`; without it, it says so).
//!
//! `cargo test` builds the examples next to the test binary (`target/<profile>/examples/`).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};

use d2d::pipeline::store::{Store, StoreOptions};
use d2d_testkit::{example, sample_day, TempDir};

fn populate_landing(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(example("populate_landing"));
    command
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("D2D_LANDING")
        .env_remove("D2D_POPULATE_DATE");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("populate_landing runs")
}

/// The sample day by key (relative to `testdata/landing`, with `/`), sorted as a listing is.
fn sample() -> BTreeMap<String, Vec<u8>> {
    sample_day().into_iter().collect()
}

async fn assert_holds_sample(store: &Store) {
    let expected = sample();
    let listed = store.list("").await.unwrap();
    let keys: Vec<&String> = listed.iter().map(|o| &o.key).collect();
    assert_eq!(keys, expected.keys().collect::<Vec<_>>());
    for (key, bytes) in &expected {
        assert_eq!(&store.get(key).await.unwrap()[..], &bytes[..], "{key}");
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// A folder that does not exist yet (populate_landing creates it), inside a temporary
/// folder removed when the returned value is dropped.
fn new_folder(name: &str) -> (TempDir, PathBuf) {
    let tmp = TempDir::new(&format!("populate-{name}"));
    let dir = tmp.path().join("landing");
    (tmp, dir)
}

#[tokio::test]
async fn uploads_the_sample_day_to_a_folder() {
    let (_tmp, dir) = new_folder("local");
    let to = dir.to_str().unwrap();
    let text = ok(&populate_landing(
        &["--from", "testdata/landing", "--to", to],
        &[],
    ));
    assert!(text.starts_with("uploaded 717 files"), "{text}");
    assert_holds_sample(&Store::local(&dir)).await;

    // Again: same content, nothing half-written or duplicated.
    ok(&populate_landing(&["--to", to], &[]));
    assert_holds_sample(&Store::local(&dir)).await;

    // One day only, from the environment: no file of 2019-06-02 exists.
    let (_other_tmp, other) = new_folder("other-day");
    let text = ok(&populate_landing(
        &[],
        &[
            ("D2D_LANDING", other.to_str().unwrap()),
            ("D2D_POPULATE_DATE", "2019-06-02"),
        ],
    ));
    assert!(text.starts_with("uploaded 0 files"), "{text}");
}

#[tokio::test]
async fn uploads_the_sample_day_to_s3() {
    let Ok(endpoint) = std::env::var("D2D_S3_ENDPOINT") else {
        eprintln!("SKIPPED: D2D_S3_ENDPOINT is unset; run `eval \"$(scripts/services start)\"` or scripts/test");
        return;
    };
    let url = format!("s3://d2d-populate-tests/run-{}/", std::process::id());
    let text = ok(&populate_landing(
        &["--to", &url, "--create-bucket", "--date", "2019-06-01"],
        &[],
    ));
    assert!(text.starts_with("uploaded 717 files"), "{text}");
    let options = StoreOptions {
        s3_endpoint: Some(endpoint),
        ..StoreOptions::default()
    };
    assert_holds_sample(&Store::open_with(&url, &options).await.unwrap()).await;
}

#[test]
fn fails_with_the_cause() {
    let out = populate_landing(&["--from", "does/not/exist", "--to", "unused"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("does/not/exist") && err.contains("does not exist"),
        "{err}"
    );

    let out = populate_landing(&["--from", "testdata/landing"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr).unwrap().contains("--to"));
}
