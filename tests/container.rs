//! The image users get, run as they run it: `scripts/test-container` builds the Dockerfile's
//! runtime stage with podman (its base made with debootstrap, its build stage replaced by the
//! binaries cargo built) and names it in `D2D_CONTAINER_IMAGE`; these tests run it against
//! the test PostgreSQL servers. Without that variable they say so and stop (the plain
//! `cargo test` step of `scripts/test` runs before the image exists).
//!
//! The job loads the sample day as the host's binary does, as the unprivileged user the
//! Dockerfile sets; a failing run exits 1 with its JSON log on stderr; `podman stop`'s
//! SIGTERM ends a run as `abandoned`, exit 143; `verify-full` TLS to PostgreSQL works from
//! inside; the image holds CA certificates and no secrets.

// Tests fail loudly on purpose: an unwrap here is an assertion.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use d2d::pipeline::warehouse::Warehouse;
use d2d_testkit::{example, landing_dir, repo_root, unique_tag, TempDir, TestDb};

/// The image under test, or `None` (and a note) when no script built one.
fn image() -> Option<String> {
    let image = std::env::var("D2D_CONTAINER_IMAGE").ok();
    if image.is_none() {
        eprintln!("SKIPPED: D2D_CONTAINER_IMAGE is unset; scripts/test-container builds the image and sets it");
    }
    image
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("podman runs: {e}"))
}

/// A container of the tests: removed when dropped, whatever the test's outcome.
struct Named(String);

impl Named {
    fn new(what: &str) -> Self {
        Named(format!("d2d-test-{what}-{}", unique_tag()))
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        let _ = podman(&["rm", "--force", "--time", "0", &self.0]);
    }
}

/// `podman run` of the image on the host's network (the test servers listen on 127.0.0.1),
/// with `env` and `mounts` (`host:container[:ro]`), the entrypoint `binary` and `args`.
fn run(
    image: &str,
    name: &Named,
    binary: &str,
    env: &[(&str, &str)],
    mounts: &[String],
    args: &[&str],
) -> Output {
    let mut cmd: Vec<String> = ["run", "--name", &name.0, "--network", "host"]
        .map(String::from)
        .to_vec();
    cmd.extend(["--entrypoint".into(), binary.into()]);
    for (k, v) in env {
        cmd.extend(["--env".into(), format!("{k}={v}")]);
    }
    for m in mounts {
        cmd.extend(["--volume".into(), m.clone()]);
    }
    cmd.push(image.into());
    cmd.extend(args.iter().map(|a| a.to_string()));
    let out = podman(&cmd.iter().map(String::as_str).collect::<Vec<_>>());
    let _ = podman(&["rm", "--force", &name.0]);
    out
}

/// A lake folder the image's user (65534) may write.
fn lake_dir(tag: &str) -> TempDir {
    let lake = TempDir::new(tag);
    std::fs::set_permissions(lake.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    lake
}

async fn bi_answer(wh: &Warehouse) -> Vec<(String, i64, f64)> {
    wh.client()
        .query(
            "SELECT operating_period_id, vehicles::bigint, avg_metres::float8
               FROM bi.avg_distance_per_operating_period ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// The sample day loaded by the host's own binaries into a fresh database: the reference the
/// image's runs are held to.
async fn host_load(tag: &str) -> (TestDb, Warehouse) {
    let db = TestDb::create_tagged(tag).await;
    let lake = TempDir::new(&format!("{tag}-lake"));
    let day = ["--date", "2019-06-01", "--landing"];
    for (binary, args) in [("setup_warehouse", &[][..]), ("daily_load", &day[..])] {
        let mut cmd = Command::new(example(binary));
        cmd.args(args).env("DATABASE_URL", &db.url);
        if binary == "daily_load" {
            cmd.arg(landing_dir()).arg("--lake").arg(lake.path());
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let wh = db.connect().await;
    (db, wh)
}

/// `daily_load`'s arguments for the sample day inside the image: landing and lake mounted at
/// `/landing` ([`landing_mount`]) and `/lake`.
const IN_IMAGE_DAY: [&str; 6] = [
    "--date",
    "2019-06-01",
    "--landing",
    "/landing",
    "--lake",
    "/lake",
];

/// `out` is the sample day's first run, succeeded.
fn assert_first_run_succeeded(out: &Output) {
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("d2d daily load of 2019-06-01 — run 1 succeeded"),
        "{}",
        text(&out.stdout)
    );
}

fn landing_mount() -> String {
    format!("{}:/landing:ro", landing_dir().display())
}

#[tokio::test]
async fn the_image_loads_the_sample_day_as_the_host_binary_does() {
    let Some(image) = image() else { return };
    let db = TestDb::create_tagged("ctr").await;
    let lake = lake_dir("ctr-lake");
    let env = [("DATABASE_URL", db.url.as_str())];
    let mounts = [landing_mount(), format!("{}:/lake", lake.path().display())];

    let out = run(
        &image,
        &Named::new("setup"),
        "setup_warehouse",
        &env,
        &[],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(
        &image,
        &Named::new("load"),
        "daily_load",
        &env,
        &mounts,
        &IN_IMAGE_DAY,
    );
    assert_first_run_succeeded(&out);

    // The host's own binary, on another database: the same answer.
    let (_host_db, host_wh) = host_load("ctr_host").await;
    let wh = db.connect().await;
    let answer = bi_answer(&wh).await;
    assert_eq!(answer.len(), 2, "the sample day's two periods: {answer:?}");
    assert_eq!(answer, bi_answer(&host_wh).await);
    assert_eq!(
        wh.dwh_checksums().await.unwrap(),
        host_wh.dwh_checksums().await.unwrap()
    );

    // Written by the Dockerfile's user, not root.
    let archived = lake.path().join("raw/dt=2019-06-01");
    let meta = std::fs::metadata(&archived).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
}

#[tokio::test]
async fn a_failing_run_exits_1_with_its_json_log_on_stderr() {
    let Some(image) = image() else { return };
    let lake = lake_dir("ctr-fail-lake");
    let out = run(
        &image,
        &Named::new("fail"),
        "daily_load",
        // Nothing listens on port 1.
        &[("DATABASE_URL", "postgres://d2d:d2d@127.0.0.1:1/d2d")],
        &[landing_mount(), format!("{}:/lake", lake.path().display())],
        &IN_IMAGE_DAY,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    // The JSON log lines (the run's, then its CloudWatch metrics line), then the failure
    // summary for whoever reads the container's log by eye.
    let stderr = text(&out.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .take_while(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 2, "{stderr}");
    assert!(stderr.contains("d2d daily_load FAILED"), "{stderr}");
    assert!(
        lines.iter().any(|l| l["level"] == "ERROR"),
        "an ERROR line names the failure:\n{stderr}"
    );
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
    assert!(
        !stderr.contains("d2d:d2d@"),
        "no password in the log: {stderr}"
    );
}

#[tokio::test]
async fn podman_stop_ends_a_run_as_abandoned_with_exit_143() {
    let Some(image) = image() else { return };
    let db = TestDb::create_tagged("ctr_stop").await;
    let lake = lake_dir("ctr-stop-lake");
    let out = run(
        &image,
        &Named::new("stop-setup"),
        "setup_warehouse",
        &[("DATABASE_URL", &db.url)],
        &[],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    // The image's binaries are the tests' debug builds: the test-only pause holds the run in
    // its load phase until the stop comes.
    let name = Named::new("stop");
    let lake_mount = format!("{}:/lake", lake.path().display());
    let env_url = format!("DATABASE_URL={}", db.url);
    let out = podman(
        &[
            "run",
            "--detach",
            "--name",
            &name.0,
            "--network",
            "host",
            "--env",
            &env_url,
            "--env",
            "D2D_TEST_PAUSE_AT=load",
            "--volume",
            &landing_mount(),
            "--volume",
            &lake_mount,
            &image,
        ]
        .into_iter()
        .chain(IN_IMAGE_DAY)
        .collect::<Vec<_>>(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let started = Instant::now();
    loop {
        let logs = podman(&["logs", &name.0]);
        if text(&logs.stderr).contains("paused at load") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the run never reached its load phase:\n{}",
            text(&logs.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = podman(&["stop", "--time", "30", &name.0]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = podman(&["inspect", "--format", "{{.State.ExitCode}}", &name.0]);
    assert_eq!(text(&out.stdout).trim(), "143", "{}", text(&out.stderr));

    let wh = db.connect().await;
    let row = wh
        .client()
        .query_one("SELECT status, phase FROM etl.load_run", &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, Option<String>>(1)),
        ("abandoned".to_owned(), Some("load".to_owned()))
    );
}

#[tokio::test]
async fn verify_full_tls_works_inside_and_the_image_holds_ca_certificates_and_no_secrets() {
    let Some(image) = image() else { return };
    let tls = std::env::var("D2D_TLS_DATABASE_URL")
        .expect("D2D_TLS_DATABASE_URL names the TLS-only test server (scripts/services)");
    let ca = std::env::var("D2D_TLS_CA").expect("D2D_TLS_CA names its CA (scripts/services)");
    assert!(tls.contains("sslmode=verify-full"), "{tls}");
    let db = TestDb::create_on(&tls, "ctr_tls").await;
    // The URL names the CA by its host path: mounted at the same path inside.
    let out = run(
        &image,
        &Named::new("tls"),
        "setup_warehouse",
        &[("DATABASE_URL", &db.url)],
        &[format!("{ca}:{ca}:ro")],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = run(
        &image,
        &Named::new("certs"),
        "/bin/sh",
        &[],
        &[],
        &["-c", "test -s /etc/ssl/certs/ca-certificates.crt && id -u"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "65534");

    let out = podman(&["image", "inspect", "--format", "{{json .Config}}", &image]);
    let config = text(&out.stdout);
    let history = text(&podman(&["history", "--no-trunc", &image]).stdout);
    for secret in ["DATABASE_URL", "PASSWORD", "AWS_SECRET", "d2d:d2d"] {
        assert!(
            !config.contains(secret),
            "{secret} in the image's config: {config}"
        );
        assert!(!history.contains(secret), "{secret} in the image's history");
    }
}

/// A free port on 127.0.0.1 for the stack to publish (the test servers hold the defaults).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether an HTTP server answers on 127.0.0.1:`port`.
fn answers_http(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut answer = [0u8; 5];
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok()
        && stream.read_exact(&mut answer).is_ok()
        && &answer == b"HTTP/"
}

/// compose.yaml's stack, brought down (volumes and network too) when dropped.
struct Stack {
    project: String,
    override_file: String,
    env: Vec<(&'static str, String)>,
}

impl Stack {
    fn compose(&self, args: &[&str]) -> Output {
        Command::new("podman-compose")
            .current_dir(repo_root())
            .args([
                "-p",
                &self.project,
                "-f",
                "compose.yaml",
                "-f",
                &self.override_file,
            ])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap_or_else(|e| panic!("podman-compose runs: {e}"))
    }

    fn container(&self, service: &str) -> String {
        format!("{}_{service}_1", self.project)
    }

    fn down(&self) -> Output {
        let out = self.compose(&["down", "-v", "-t", "1"]);
        // podman-compose 1.0 leaves the project's network behind.
        let _ = podman(&["network", "rm", &format!("{}_default", self.project)]);
        out
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.down();
    }
}

/// compose.yaml up and down, with the images that cannot be pulled here stood in for
/// (`tests/containers/compose.test.yaml`, named by `D2D_COMPOSE_OVERRIDE`): the set-up and
/// the sample upload run once, the scheduled job's container loads the day, its answer is the
/// host binary's, and `down` leaves no container, volume or network of the stack.
#[tokio::test]
async fn compose_yaml_comes_up_loads_the_day_and_goes_down() {
    let Some(image) = image() else { return };
    let Ok(override_file) = std::env::var("D2D_COMPOSE_OVERRIDE") else {
        eprintln!("SKIPPED: D2D_COMPOSE_OVERRIDE is unset; scripts/test-container sets it");
        return;
    };
    let (pg_port, s3_port) = (free_port(), free_port());
    let stack = Stack {
        project: format!("d2d-test-stack-{}", std::process::id()),
        override_file,
        env: vec![
            ("D2D_TEST_IMAGE", image.clone()),
            ("COMPOSE_PG_PORT", pg_port.to_string()),
            ("COMPOSE_S3_PORT", s3_port.to_string()),
        ],
    };
    // podman 4.3 cannot wait for `service_healthy`: the database and the S3 server first,
    // until PostgreSQL's own check passes, then the rest as compose.yaml orders it.
    let out = stack.compose(&["up", "-d", "--no-build", "postgres", "s3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let started = Instant::now();
    let postgres = stack.container("postgres");
    while !podman(&[
        "exec",
        &postgres,
        "pg_isready",
        "-U",
        "d2d",
        "-d",
        "d2d",
        "-q",
    ])
    .status
    .success()
    {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "PostgreSQL never came up"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // And until the S3 server answers (moto takes a few seconds to start).
    while !answers_http(s3_port) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the S3 server never answered"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let out = stack.compose(&["up", "-d", "--no-build"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = podman(&[
        "wait",
        &stack.container("setup"),
        &stack.container("sample"),
    ]);
    let logs = |service: &str| text(&podman(&["logs", &stack.container(service)]).stderr);
    assert_eq!(
        text(&out.stdout).split_whitespace().collect::<Vec<_>>(),
        ["0", "0"],
        "setup:\n{}\nsample:\n{}",
        logs("setup"),
        logs("sample")
    );

    // The day, loaded now by the scheduled job's container, with its environment.
    let out = podman(&[
        "exec",
        &stack.container("daily"),
        "daily_load",
        "--date",
        "2019-06-01",
    ]);
    assert_first_run_succeeded(&out);
    let url = format!("postgres://d2d:d2d@127.0.0.1:{pg_port}/d2d");
    let answer = bi_answer(&Warehouse::connect(&url).await.unwrap()).await;

    let (_host_db, host_wh) = host_load("ctr_stack_host").await;
    assert_eq!(answer, bi_answer(&host_wh).await);
    assert_eq!(answer.len(), 2, "{answer:?}");

    let listed = |kind: &str| {
        let format = if kind == "container" {
            "{{.Names}}"
        } else {
            "{{.Name}}"
        };
        let mut args = vec![kind, "ls", "--format", format];
        if kind == "container" {
            args.push("--all");
        }
        text(&podman(&args).stdout)
    };
    let kinds = ["container", "volume", "network"];
    for kind in kinds {
        assert!(
            listed(kind).contains(&stack.project),
            "the stack has {kind}s"
        );
    }
    let out = stack.down();
    assert!(out.status.success(), "{}", text(&out.stderr));
    for kind in kinds {
        let names = listed(kind);
        assert!(
            !names.contains(&stack.project),
            "{kind}s of the stack left: {names}"
        );
    }
}
