//! The `d2d-lambda` binary served the way AWS serves it: `cargo lambda watch --only-lambda-apis`
//! emulates the Lambda runtime API, the binary polls it for invocations, and `cargo lambda
//! invoke` sends them — the same runtime protocol, event and response as on AWS, against the
//! local PostgreSQL and the sample day in a local landing folder. Needs the feature:
//! `cargo test -p d2d --features lambda --test lambda_runtime` (scripts/test runs it);
//! `scripts/cargo-lambda` installs cargo-lambda on first use.

// Tests fail loudly on purpose: an unwrap here is an assertion.
#![allow(clippy::unwrap_used)]

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use d2d::pipeline::warehouse::Warehouse;
use d2d_testkit::{landing_dir, TempDir, TestDb};
use serde_json::Value;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn cargo_lambda() -> Command {
    let mut c = Command::new(repo().join("scripts/cargo-lambda"));
    // cargo lambda reads the workspace's metadata: run it at the root.
    c.current_dir(repo());
    c
}

/// A child process killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The emulator of the Lambda runtime API on `port`, once it accepts connections. The first
/// call may install cargo-lambda, hence the long wait.
fn emulator(port: u16) -> Running {
    let child = cargo_lambda()
        // A function that dies must fail the invocation, not hang it.
        .args([
            "watch",
            "--only-lambda-apis",
            "--timeout",
            "300",
            "-A",
            "127.0.0.1",
            "-P",
        ])
        .arg(port.to_string())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(300);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = running.0.try_wait().unwrap() {
            panic!("cargo lambda watch exited with {status} before listening on {port}");
        }
        assert!(
            Instant::now() < deadline,
            "cargo lambda watch is not listening on {port}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    running
}

/// The `d2d-lambda` binary, polling the emulator on `port` for invocations.
fn function(port: u16, database_url: &str, lake: &Path) -> Running {
    let child = Command::new(env!("CARGO_BIN_EXE_d2d-lambda"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        // What the emulator tells a function to set (`cargo lambda watch` prints them);
        // `_` is the emulator's default function.
        .env(
            "AWS_LAMBDA_RUNTIME_API",
            format!("http://127.0.0.1:{port}/.rt"),
        )
        .env("AWS_LAMBDA_FUNCTION_NAME", "_")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
        .env("DATABASE_URL", database_url)
        .env("D2D_LANDING", landing_dir())
        .env("D2D_LAKE", lake)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    Running(child)
}

fn invoke(port: u16, event: &str) -> Output {
    cargo_lambda()
        .args(["invoke", "-A", "127.0.0.1", "-P"])
        .arg(port.to_string())
        .args(["--data-ascii", event])
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn cargo_lambda_invokes_the_binary_and_gets_the_days_summary() {
    let db = TestDb::create_tagged("lambda_runtime").await;
    let lake = TempDir::new("lambda-runtime-lake");
    let port = free_port();
    let _emulator = emulator(port);
    let _function = function(port, &db.url, lake.path());

    let out = invoke(port, r#"{"date":"2019-06-01"}"#);
    assert!(
        out.status.success(),
        "cargo lambda invoke: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(summary["day"], "2019-06-01");
    assert_eq!(summary["files"], 717);
    assert_eq!(summary["events"], 35_290);
    // The summary is what the warehouse holds, not what the function hoped.
    let wh = Warehouse::connect(&db.url).await.unwrap();
    let in_dwh: i64 = wh
        .client()
        .query_one("SELECT count(*) FROM dwh.fact_vehicle_event", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(summary["fact_vehicle_event"], in_dwh);
    let run: i64 = wh
        .client()
        .query_one(
            "SELECT run_id FROM etl.load_run WHERE status = 'succeeded' AND landing_day = $1",
            &[&chrono::NaiveDate::from_ymd_opt(2019, 6, 1).unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(summary["run_id"], run);
    assert!(lake.path().join("raw/dt=2019-06-01").is_dir());

    // A bad event is the invocation's error, naming the field (the runtime's deserializer
    // says it), and the function serves the next one.
    let out = invoke(port, r#"{"date":"2019-13-01"}"#);
    assert!(!out.status.success(), "a bad date must fail the invocation");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("[date]") && said.contains("out of range"),
        "{said}"
    );
    let out = invoke(port, r#"{"date":"2019-06-01"}"#);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
