//! Issue 8, faults of the services, as the operator meets them: the `daily_load` binary against
//! the real PostgreSQL and the real S3-compatible server, with a fault-injecting proxy
//! ([`proxy`]) between the job and S3, a lake whose disk fills up, and an alert command that
//! dumps what it was given.
//!
//! Every S3 fault ends in one of two ways, and both are checked:
//!
//! - **a retried success** — the fault hits the first attempt of each request it targets; the
//!   job exits 0, logs one `retrying S3 request` warning per retry, and the warehouse equals a
//!   clean run's (`etl.dwh_checksums()`);
//! - **a clean failure** — the fault hits every attempt; the job exits 1, names the endpoint,
//!   records a `failed` run in `etl.load_run`, fires the alert, and leaves the warehouse as it
//!   was; with the fault gone, a re-run loads the day.
//!
//! Limits are short (2 s timeouts, 3 or 4 attempts) so that failures come quickly; bounds on
//! elapsed time are generous (60 s).

// Tests fail loudly on purpose: an unwrap here is an assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use d2d::pipeline::store::{Store, StoreOptions};
use d2d::pipeline::warehouse::TableChecksum;
use d2d_testkit::{example, file_paths, landing_dir, read_tree, unique_tag, TempDir, TestDb};
use proxy::{Fault, FaultProxy, Matcher, Rule, When};
use serde_json::Value;

/// Files of the sample day in the first load, and in all.
const HALF: usize = 12;
const ALL: usize = 24;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `<tag>-<pid>-<counter>-<nanos>`: a bucket name of its own.
fn unique(tag: &str) -> String {
    format!("{tag}-{}", unique_tag())
}

/// The first `n` files of the sample day, in landing order: (key, path).
fn sample(n: usize) -> Vec<(String, PathBuf)> {
    let root = landing_dir();
    let files: Vec<_> = read_tree(&root)
        .into_iter()
        .take(n)
        .map(|(key, _)| {
            let path = root.join(&key);
            (key, path)
        })
        .collect();
    assert_eq!(files.len(), n);
    files
}

/// Copies sample files into a landing folder.
fn write_folder(dir: &Path, files: &[(String, PathBuf)]) {
    for (key, path) in files {
        let to = dir.join(key);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(path, to).unwrap();
    }
}

/// Runs `daily_load --date 2019-06-01` with `args`, the environment of the test (S3
/// credentials) plus `envs`, and JSON logs; returns its output and how long it took.
async fn daily_load(args: &[&str], envs: &[(&str, &str)]) -> (Output, Duration) {
    let mut cmd = tokio::process::Command::new(example("daily_load"));
    cmd.args(["--date", "2019-06-01", "--output", "json"])
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("D2D_S3_ENDPOINT")
        .env("RUST_LOG", "info");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let out = cmd.output().await.expect("daily_load runs");
    (out, started.elapsed())
}

/// The JSON log lines of a run.
fn logs(out: &Output) -> Vec<Value> {
    text(&out.stderr)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The `retrying S3 request` warnings of a run.
fn retries(out: &Output) -> Vec<Value> {
    logs(out)
        .into_iter()
        .filter(|l| l["level"] == "WARN" && l["fields"]["message"] == "retrying S3 request")
        .collect()
}

/// What a clean run of the first `HALF` and then all `ALL` files gives: computed once, from
/// folders, without any proxy.
struct Reference {
    half: Vec<TableChecksum>,
    all: Vec<TableChecksum>,
}

static REFERENCE: tokio::sync::OnceCell<Reference> = tokio::sync::OnceCell::const_new();

async fn reference() -> &'static Reference {
    REFERENCE
        .get_or_init(|| async {
            let db = TestDb::create_tagged("faults").await;
            let (landing, lake) = (
                TempDir::new("faults-ref-landing"),
                TempDir::new("faults-ref-lake"),
            );
            let files = sample(ALL);
            let run = || async {
                let (out, _) = daily_load(
                    &[
                        "--landing",
                        landing.path().to_str().unwrap(),
                        "--lake",
                        lake.path().to_str().unwrap(),
                    ],
                    &[("DATABASE_URL", &db.url)],
                )
                .await;
                assert!(out.status.success(), "{}", text(&out.stderr));
            };
            write_folder(landing.path(), &files[..HALF]);
            run().await;
            let half = db.checksums().await;
            write_folder(landing.path(), &files[HALF..]);
            run().await;
            let all = db.checksums().await;
            assert_ne!(half, all, "the second half adds events");
            Reference { half, all }
        })
        .await
}

/// A landing and a lake bucket on the real S3-compatible server, reached through the proxy.
struct Buckets {
    landing: String,
    lake: String,
    /// `/lake-bucket/` — the path prefix of lake requests, for [`Matcher`]s.
    lake_path: String,
    /// The landing store, straight to the server (not through the proxy).
    landing_store: Store,
}

impl Buckets {
    async fn create(server: &str) -> Buckets {
        let options = StoreOptions {
            s3_endpoint: Some(server.to_owned()),
            ..StoreOptions::default()
        };
        let (landing_bucket, lake_bucket) =
            (unique("d2d-faults-landing"), unique("d2d-faults-lake"));
        let landing = format!("s3://{landing_bucket}/incoming");
        let lake = format!("s3://{lake_bucket}");
        let landing_store = Store::open_with(&landing, &options).await.unwrap();
        landing_store.create_if_missing().await.unwrap();
        Store::open_with(&lake, &options)
            .await
            .unwrap()
            .create_if_missing()
            .await
            .unwrap();
        Buckets {
            landing,
            lake,
            lake_path: format!("/{lake_bucket}/"),
            landing_store,
        }
    }

    async fn upload(&self, files: &[(String, PathBuf)]) {
        for (key, path) in files {
            self.landing_store.put_file(key, path).await.unwrap();
        }
    }
}

fn s3_server() -> String {
    std::env::var("D2D_S3_ENDPOINT")
        .expect("D2D_S3_ENDPOINT must name the S3-compatible test server (scripts/test sets it)")
}

/// One fault, both ways: `retried` (first attempts only) must end in a success equal to a
/// clean run, `failing` (every attempt) in a clean failure during `phase`; a re-run without
/// faults then loads the day. Returns the failing run's output for further checks.
///
/// The rules are made for the lake bucket's path prefix (`/bucket/`), which each test creates.
async fn retried_or_clean_failure(
    retried: impl Fn(&str) -> Vec<Rule>,
    failing: impl Fn(&str) -> Vec<Rule>,
    phase: &str,
) -> Output {
    let reference = reference().await;
    let db = TestDb::create_tagged("faults").await;
    let server = s3_server();
    let buckets = Buckets::create(&server).await;
    let proxy = FaultProxy::start(&server).await;
    let files = sample(ALL);
    let alerts = TempDir::new("faults-alert");
    let alert_file = alerts.path().join("alert.txt");
    let alert_command = format!("cat > '{}'", alert_file.display());
    let args = [
        "--landing",
        &buckets.landing,
        "--lake",
        &buckets.lake,
        "--s3-endpoint",
        &proxy.url,
        "--s3-connect-timeout",
        "2",
        "--s3-read-timeout",
        "2",
        "--s3-attempts",
        "4",
        "--alert-command",
        &alert_command,
    ];
    let envs = [("DATABASE_URL", db.url.as_str())];

    // Faults on first attempts: retried, logged, and the warehouse is a clean run's.
    buckets.upload(&files[..HALF]).await;
    proxy.set_rules(retried(&buckets.lake_path));
    let (out, _) = daily_load(&args, &envs).await;
    let stderr = text(&out.stderr);
    assert!(
        out.status.success(),
        "retried faults must not fail the run: {stderr}"
    );
    assert!(
        proxy.injected() > 0,
        "the proxy injected no fault: {stderr}"
    );
    let warnings = retries(&out);
    assert!(!warnings.is_empty(), "each retry is logged: {stderr}");
    for w in &warnings {
        let f = &w["fields"];
        assert_eq!(f["endpoint"], Value::from(proxy.url.as_str()), "{w}");
        assert!(f["attempt"].as_u64().unwrap() >= 2, "{w}");
        assert!(f["operation"].is_string() && f["cause"].is_string(), "{w}");
    }
    assert!(!alert_file.exists(), "no alert for a success");
    eprintln!(
        "retried: {} faults injected, {} retries logged, the first: {}",
        proxy.injected(),
        warnings.len(),
        warnings[0]["fields"]
    );
    assert_eq!(db.checksums().await, reference.half);

    // Faults on every attempt: a clean failure.
    buckets.upload(&files[HALF..]).await;
    proxy.set_rules(failing(&buckets.lake_path));
    let before = proxy.injected();
    let (out, took) = daily_load(&args, &envs).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        proxy.injected() > before,
        "the proxy injected no fault: {stderr}"
    );
    assert!(took < Duration::from_secs(60), "failed only after {took:?}");
    assert!(
        stderr.contains(&proxy.url),
        "the error names the endpoint: {stderr}"
    );
    assert!(stderr.contains(&format!("phase: {phase}")), "{stderr}");
    let summary = std::fs::read_to_string(&alert_file).expect("the alert fired");
    eprintln!("failing: after {took:?}, alert:\n{summary}");
    assert!(summary.contains("d2d daily_load FAILED"), "{summary}");
    assert!(summary.contains(&proxy.url), "{summary}");
    let (status, error) = db.last_run().await;
    assert_eq!(status, "failed");
    assert!(error.unwrap_or_default().contains(&proxy.url));
    assert_eq!(
        db.checksums().await,
        reference.half,
        "the warehouse is unchanged"
    );

    // The fault is gone: the day loads.
    proxy.set_rules(Vec::new());
    let (again, _) = daily_load(&args, &envs).await;
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(db.checksums().await, reference.all);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_500s_are_retried_and_persistent_ones_fail_cleanly() {
    let error = Fault::Status(500, "InternalError");
    retried_or_clean_failure(
        |_| vec![Rule::new(Matcher::any(), When::FirstAttempt, error.clone())],
        |_| vec![Rule::new(Matcher::any(), When::Always, error.clone())],
        "listing",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowdown_503s_are_retried_and_persistent_ones_fail_cleanly() {
    let slow_down = Fault::Status(503, "SlowDown");
    let failing = retried_or_clean_failure(
        |_| {
            vec![Rule::new(
                Matcher::any(),
                When::FirstAttempt,
                slow_down.clone(),
            )]
        },
        // Only the lake's reads: the day is archived, then fails to load.
        |lake| {
            vec![Rule::new(
                Matcher::object_gets(lake),
                When::Always,
                slow_down.clone(),
            )]
        },
        "parsing and loading",
    )
    .await;
    assert!(text(&failing.stderr).contains("SlowDown"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_resets_are_retried_and_persistent_ones_fail_cleanly() {
    retried_or_clean_failure(
        |_| vec![Rule::new(Matcher::any(), When::FirstAttempt, Fault::Reset)],
        // Only the archive's server-side copies.
        |lake| vec![Rule::new(Matcher::copies(lake), When::Always, Fault::Reset)],
        "archiving",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_bodies_are_read_again_and_persistent_ones_fail_cleanly() {
    retried_or_clean_failure(
        |lake| {
            vec![Rule::new(
                Matcher::object_gets(lake),
                When::FirstAttempt,
                Fault::Truncate,
            )]
        },
        |lake| {
            vec![Rule::new(
                Matcher::object_gets(lake),
                When::Always,
                Fault::Truncate,
            )]
        },
        "parsing and loading",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_load_and_stalled_ones_are_retried_or_fail_cleanly() {
    let slow = Fault::Slow {
        bytes: 2048,
        pause: Duration::from_millis(100),
    };
    retried_or_clean_failure(
        |lake| {
            vec![
                // A stalled first attempt, then a slow but steady body (rules apply in order).
                Rule::new(Matcher::object_gets(lake), When::FirstAttempt, Fault::Stall),
                Rule::new(Matcher::object_gets(lake), When::Always, slow.clone()),
            ]
        },
        |lake| {
            vec![Rule::new(
                Matcher::object_gets(lake),
                When::Always,
                Fault::Stall,
            )]
        },
        "parsing and loading",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_endpoint_is_retried_and_a_dead_one_fails_within_a_minute() {
    let failing = retried_or_clean_failure(
        |lake| {
            vec![Rule::new(
                Matcher::object_gets(lake),
                When::FirstAttempt,
                Fault::Silent,
            )]
        },
        |_| vec![Rule::new(Matcher::any(), When::Always, Fault::Silent)],
        "listing",
    )
    .await;
    // Each retry of the listing was logged: attempts 2, 3 and 4 of 4.
    let attempts: Vec<u64> = retries(&failing)
        .iter()
        .map(|w| w["fields"]["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, [2, 3, 4], "{}", text(&failing.stderr));
    assert!(text(&failing.stderr).contains("timeout"));
}

/// Every regular file under `dir`, as paths relative to it.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    file_paths(dir)
        .into_iter()
        .map(|path| path.strip_prefix(dir).unwrap().to_owned())
        .collect()
}

/// A lake on a full disk — simulated by a file-size limit (RLIMIT_FSIZE) on the job, with
/// SIGXFSZ ignored so that a write past it fails with EFBIG as on a full disk rather than
/// killing the process — fails cleanly: exit 1, an error naming the file, the alert, a failed
/// run, the warehouse unchanged, and no partial file in the lake: every file there is a whole
/// copy of its landing file. With space again, a re-run loads the day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_lake_disk_fails_cleanly_and_a_rerun_with_space_loads_the_day() {
    let reference = reference().await;
    let db = TestDb::create_tagged("faults").await;
    let (landing, lake, alerts) = (
        TempDir::new("faults-full-landing"),
        TempDir::new("faults-full-lake"),
        TempDir::new("faults-full-alert"),
    );
    let files = sample(ALL);
    let alert_file = alerts.path().join("alert.txt");
    let alert_command = format!("cat > '{}'", alert_file.display());
    let args = [
        "--landing",
        landing.path().to_str().unwrap(),
        "--lake",
        lake.path().to_str().unwrap(),
        "--alert-command",
        &alert_command,
    ];
    let envs = [("DATABASE_URL", db.url.as_str())];
    write_folder(landing.path(), &files[..HALF]);
    let (out, _) = daily_load(&args, &envs).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(db.checksums().await, reference.half);

    // The rest of the day arrives; the lake can take no file over 4 KiB (the sample's are
    // about 11 KiB).
    write_folder(landing.path(), &files[HALF..]);
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(r#"trap '' XFSZ; exec prlimit --fsize=4096 -- "$0" "$@""#)
        .arg(example("daily_load"))
        .args(["--date", "2019-06-01", "--output", "json"])
        .args(args)
        .env_remove("DATABASE_URL")
        .env("DATABASE_URL", &db.url);
    let out = cmd.output().await.unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("phase: archiving"), "{stderr}");
    assert!(
        stderr.contains("File too large"),
        "names the cause: {stderr}"
    );
    assert!(
        stderr.contains("raw/dt=2019-06-01/data/resources/2019/06/01/"),
        "names the file: {stderr}"
    );
    let summary = std::fs::read_to_string(&alert_file).expect("the alert fired");
    eprintln!("full disk: alert:\n{summary}");
    assert!(summary.contains("File too large"), "{summary}");
    assert_eq!(db.last_run().await.0, "failed");
    assert_eq!(
        db.checksums().await,
        reference.half,
        "the warehouse is unchanged"
    );
    // Nothing half-written: no temporary file, and every lake file equal to its source.
    let sources: std::collections::HashMap<String, &PathBuf> =
        files.iter().map(|(k, p)| (k.clone(), p)).collect();
    let in_lake = files_under(lake.path());
    assert!(in_lake.len() >= HALF, "{in_lake:?}");
    for rel in &in_lake {
        let rel_text = rel.to_str().unwrap();
        // The curated zone of the earlier, committed load of half the day: written whole by
        // that run, and untouched by this one, which failed before its commit.
        if rel_text.starts_with("curated/") {
            continue;
        }
        let key = rel_text
            .strip_prefix("raw/dt=2019-06-01/")
            .unwrap_or_else(|| panic!("only raw/ files in the lake, found {rel_text}"));
        let source = sources
            .get(key)
            .unwrap_or_else(|| panic!("{rel_text}: no such source"));
        assert_eq!(
            std::fs::read(lake.path().join(rel)).unwrap(),
            std::fs::read(source).unwrap(),
            "{rel_text} is a partial copy"
        );
    }

    // Space again: the day loads.
    std::fs::remove_file(&alert_file).unwrap();
    let (out, _) = daily_load(&args, &envs).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!alert_file.exists());
    assert_eq!(db.checksums().await, reference.all);
}

/// The alert command gets a scrubbed environment — no database URL, no AWS secret, no
/// PostgreSQL password — plus what the operator passes on purpose with `--alert-env`; the
/// summary it receives (and the job's stderr) has passwords in URLs and secret values
/// redacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_command_gets_no_secrets() {
    let db = TestDb::create_tagged("faults").await;
    let (landing, out_dir) = (
        TempDir::new("faults-alert-landing"),
        TempDir::new("faults-alert-out"),
    );
    write_folder(landing.path(), &sample(2));
    let env_file = out_dir.path().join("env.txt");
    let summary_file = out_dir.path().join("summary.txt");
    let command = format!(
        "env > '{}'; cat > '{}'",
        env_file.display(),
        summary_file.display()
    );
    // A lake URL with credentials in it: not a supported store, so the run fails, and the
    // failure summary quotes it.
    let lake = "https://lake-user:lake-password-31415@lake.example.invalid/lake";
    let secrets = [
        ("AWS_SECRET_ACCESS_KEY", "aws-secret-key-0123456789"),
        ("AWS_SESSION_TOKEN", "aws-session-token-abcdef"),
        ("PGPASSWORD", "pg-password-271828"),
    ];
    let mut envs = vec![
        ("DATABASE_URL", db.url.as_str()),
        ("AWS_ACCESS_KEY_ID", "AKIAFAULTSTEST"),
        ("D2D_WEBHOOK", "https://hooks.example.invalid/T0/B0"),
        ("D2D_NOT_PASSED", "left-behind"),
    ];
    envs.extend(secrets);
    let (out, _) = daily_load(
        &[
            "--landing",
            landing.path().to_str().unwrap(),
            "--lake",
            lake,
            "--alert-command",
            &command,
            "--alert-env",
            "D2D_WEBHOOK",
        ],
        &envs,
    )
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let env = std::fs::read_to_string(&env_file).expect("the alert ran");
    let summary = std::fs::read_to_string(&summary_file).unwrap();
    let names: Vec<&str> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(n, _)| n)
        .collect();
    for forbidden in [
        "DATABASE_URL",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ACCESS_KEY_ID",
        "PGPASSWORD",
        "D2D_NOT_PASSED",
    ] {
        assert!(
            !names.contains(&forbidden),
            "{forbidden} reached the alert: {env}"
        );
    }
    for wanted in ["PATH", "D2D_WEBHOOK", "D2D_ALERT_SUMMARY"] {
        assert!(names.contains(&wanted), "{wanted} missing: {env}");
    }
    assert!(env.contains("D2D_WEBHOOK=https://hooks.example.invalid/T0/B0"));
    let db_password = {
        let rest = db.url.split_once("://").unwrap().1;
        let userinfo = rest.split_once('@').unwrap().0;
        userinfo.split_once(':').unwrap().1.to_owned()
    };
    for (what, seen) in [("env", &env), ("summary", &summary), ("stderr", &stderr)] {
        for (_, secret) in secrets {
            assert!(!seen.contains(secret), "{secret} in the {what}: {seen}");
        }
        assert!(
            !seen.contains("lake-password-31415"),
            "lake password in the {what}: {seen}"
        );
        assert!(
            !seen.contains(&format!(":{db_password}@")),
            "database password in the {what}: {seen}"
        );
    }
    assert!(summary.contains("d2d daily_load FAILED"), "{summary}");
    assert!(
        summary.contains("https://lake-user:***@lake.example.invalid/lake"),
        "{summary}"
    );
}
