//! Issue 8, bounded waits: an S3 or PostgreSQL endpoint that accepts connections and then never
//! answers must fail the operation within the configured limits, naming the endpoint and the
//! operation, instead of keeping the job waiting. The endpoint here is a real TCP listener that
//! accepts and reads but never writes. (The fault matrix against the real S3-compatible server,
//! through a fault-injecting proxy, runs the `daily_load` binary: `tests/faults/` of the `d2d`
//! package.)
//!
//! Limits are configured short (1–2 s) and the assertions generous (60 s), so a loaded
//! machine cannot make them fail; before the fix the S3 error did not name the endpoint and a
//! silent PostgreSQL server kept `Warehouse::connect` waiting for ever.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use d2d_pipeline::run::{no_events, run_day, RunConfig};
use d2d_pipeline::store::{Store, StoreOptions};
use d2d_pipeline::warehouse::Warehouse;
use d2d_pipeline::Error;
use d2d_testkit::TestDb;
use tokio::io::AsyncReadExt;

/// Far above every configured limit below: only a wait without bound can exceed it.
const GENEROUS: Duration = Duration::from_secs(60);

/// A TCP endpoint that accepts every connection, reads whatever comes, and never answers.
struct SilentEndpoint {
    addr: String,
    connections: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl SilentEndpoint {
    async fn start() -> SilentEndpoint {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let connections = Arc::new(AtomicU32::new(0));
        let counted = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut sink = [0u8; 4096];
                    while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {}
                });
            }
        });
        SilentEndpoint {
            addr,
            connections,
            task,
        }
    }
}

impl Drop for SilentEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn a_silent_s3_endpoint_fails_each_request_in_bounded_time_naming_it() {
    let silent = SilentEndpoint::start().await;
    let endpoint = format!("http://{}", silent.addr);
    let options = StoreOptions {
        s3_endpoint: Some(endpoint.clone()),
        s3_max_attempts: 3,
        s3_connect_timeout: Duration::from_secs(1),
        s3_read_timeout: Duration::from_secs(1),
    };
    let store = Store::open_with("s3://silent-bucket/landing", &options)
        .await
        .unwrap();
    let started = Instant::now();
    let err = tokio::time::timeout(GENEROUS, store.list("data/"))
        .await
        .expect("an S3 listing against a silent endpoint must fail, not wait for ever")
        .unwrap_err();
    let took = started.elapsed();
    let text = err.to_string();
    assert!(matches!(err, Error::S3 { op: "list", .. }), "{text}");
    assert!(text.contains(&endpoint), "names the endpoint: {text}");
    assert!(text.contains("timeout"), "says it timed out: {text}");
    // Every attempt waited its read timeout: at least 3 s, far less than a minute.
    assert!(took >= Duration::from_secs(3), "{took:?}");
    assert_eq!(
        silent.connections.load(Ordering::SeqCst),
        3,
        "one connection per attempt, 3 attempts"
    );
}

#[tokio::test]
async fn a_silent_postgres_server_fails_the_connect_within_its_timeout() {
    let silent = SilentEndpoint::start().await;
    let url = format!(
        "postgres://d2d:secret@{}/d2d?connect_timeout=1",
        silent.addr
    );
    let started = Instant::now();
    let err = tokio::time::timeout(GENEROUS, Warehouse::connect(&url))
        .await
        .expect("connecting to a silent PostgreSQL must fail, not wait for ever")
        .err()
        .expect("no connection to a server that never answers");
    let text = err.to_string();
    assert!(
        matches!(
            err,
            Error::Timeout {
                operation: "connect",
                ..
            }
        ),
        "{text}"
    );
    assert!(text.contains(&silent.addr), "names the server: {text}");
    assert!(!text.contains("secret"), "never the password: {text}");
    assert!(started.elapsed() >= Duration::from_secs(1));
}

/// The daily run takes its limit from `RunConfig::db_connect_timeout`, over the URL's, and
/// reports the failure as a setup failure of the day.
#[tokio::test]
async fn a_run_against_a_silent_warehouse_fails_in_setup() {
    let silent = SilentEndpoint::start().await;
    let mut config = RunConfig::new(
        d2d_testkit::landing_dir().to_str().unwrap(),
        d2d_testkit::TempDir::new("silent-wh-lake")
            .path()
            .to_str()
            .unwrap(),
        format!(
            "postgres://d2d:d2d@{}/d2d?connect_timeout=3600",
            silent.addr
        ),
    );
    config.db_connect_timeout = Some(Duration::from_secs(1));
    let day = "2019-06-01".parse().unwrap();
    let err = tokio::time::timeout(GENEROUS, run_day(&config, day, &no_events))
        .await
        .expect("the run must fail, not wait for ever")
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("failed while connecting to or recording in the warehouse"),
        "{text}"
    );
    assert!(text.contains("no answer within 1s"), "{text}");
}

/// The default limit applies when the URL sets none, and a healthy server is unaffected.
#[tokio::test]
async fn the_real_server_still_connects_with_the_default_limit() {
    let db = TestDb::create().await;
    let wh = Warehouse::connect(&db.url).await.unwrap();
    wh.client().simple_query("SELECT 1").await.unwrap();
}
