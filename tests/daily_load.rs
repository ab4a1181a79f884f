//! The `setup_warehouse` and `daily_load` binaries as an operator runs them, against the real
//! PostgreSQL of `DATABASE_URL` (a fresh database for the test): settings from flags and from
//! the environment, JSON logs off a terminal, the summary and the BI answer, and on failure
//! exit status 1, the cause, and the alert command with the failure summary.

// Tests fail loudly on purpose: an unwrap here is an assertion.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use d2d::pipeline::warehouse::Warehouse;
use d2d_testkit::{example, s3_endpoint, sample_day, unique_tag, TempDir, TestDb};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const PERIOD: &str = r#"{"event":"create","on":"operating_period","at":"2019-06-01T18:00:00Z","data":{"id":"op_1","start":"2019-06-01T18:00:00Z","finish":"2019-06-01T19:00:00Z"},"organization_id":"org-id"}"#;
const FIX: &str = r#"{"event":"update","on":"vehicle","at":"2019-06-01T18:17:10.101Z","data":{"id":"v1","location":{"lat":52.45,"lng":13.46,"at":"2019-06-01T18:17:10.101Z"}},"organization_id":"org-id"}"#;

fn write_landing(dir: &Path) {
    let nested = dir.join("data/resources/2019/06/01/15/17");
    std::fs::create_dir_all(&nested).unwrap();
    std::fs::write(
        nested.join("2019-06-01-15-17-3-events.txt"),
        format!("{PERIOD}\n{FIX}\n"),
    )
    .unwrap();
    std::fs::write(
        nested.join("2019-06-01-15-17-4-events.txt"),
        FIX.replace("10.101Z", "20.000Z").replace("52.45", "52.46"),
    )
    .unwrap();
}

fn run(name: &str, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(example(name));
    cmd.args(args).env_remove("DATABASE_URL");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap_or_else(|e| panic!("{name} runs: {e}"))
}

#[tokio::test]
async fn setup_then_load_then_fail_with_an_alert() {
    let db = TestDb::create_tagged("cli").await;
    let tmp_dir = TempDir::new("cli");
    let tmp = tmp_dir.path();
    let (landing, lake) = (tmp.join("landing"), tmp.join("lake"));
    write_landing(&landing);

    let out = run("setup_warehouse", &["--database-url", &db.url], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("applied 0001_schemas_and_audit"));
    let out = run("setup_warehouse", &[], &[("DATABASE_URL", &db.url)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("(0 applied now"),
        "{}",
        text(&out.stdout)
    );

    // Settings from the environment; stderr is not a terminal, so logs are JSON lines.
    let envs = [
        ("DATABASE_URL", db.url.as_str()),
        ("D2D_LANDING", landing.to_str().unwrap()),
        ("D2D_LAKE", lake.to_str().unwrap()),
    ];
    let out = run("daily_load", &["--date", "2019-06-01"], &envs);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("d2d daily load of 2019-06-01 — run 1 succeeded"),
        "{stdout}"
    );
    assert!(stdout.contains("files             2"), "{stdout}");
    assert!(stdout.contains("op_1"), "{stdout}");
    assert!(
        stdout.contains("over all 1 (period, vehicle) pairs of 1 periods"),
        "{stdout}"
    );
    let logs: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(logs
        .iter()
        .any(|l| l["fields"]["message"] == "run summary" && l["fields"]["files"] == 2));
    // And one CloudWatch EMF line: the run's metrics.
    let emf: Vec<&serde_json::Value> = logs.iter().filter(|l| l.get("_aws").is_some()).collect();
    assert_eq!(emf.len(), 1, "{stderr}");
    assert_eq!(emf[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"], "d2d");
    assert_eq!(
        (
            &emf[0]["Job"],
            &emf[0]["Succeeded"],
            &emf[0]["Files"],
            &emf[0]["Events"]
        ),
        (&"daily_load".into(), &1.into(), &2.into(), &3.into())
    );
    assert!(lake
        .join("raw/dt=2019-06-01/data/resources/2019/06/01/15/17/2019-06-01-15-17-3-events.txt")
        .exists());

    // D2D_DATE in the environment does not conflict with a back-fill: --from/--to win.
    let mut with_date = envs.to_vec();
    with_date.push(("D2D_DATE", "2019-06-09"));
    let out = run(
        "daily_load",
        &["--from", "2019-06-01", "--to", "2019-06-01"],
        &with_date,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("d2d daily load of 2019-06-01 — run 2 succeeded"),
        "{}",
        text(&out.stdout)
    );

    // A back-fill that fails on its second day still reports the first, and logs the
    // failure as one JSON error event naming day, run and phase.
    let out = run(
        "daily_load",
        &["--from", "2019-06-01", "--to", "2019-06-02"],
        &envs,
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stdout.contains("d2d daily load of 2019-06-01 — run 3 succeeded"),
        "{stdout}"
    );
    assert!(
        stderr.contains("no landing files of 2019-06-02"),
        "{stderr}"
    );
    let errors: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["level"] == "ERROR")
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    let f = &errors[0]["fields"];
    assert_eq!(
        (&f["day"], &f["run"]),
        (&"2019-06-02".into(), &4.into()),
        "{f}"
    );
    assert!(f["phase"].is_string() && f["error"].is_string(), "{f}");
    // Metrics for both days: day 1 succeeded, day 2 failed.
    let emf: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with("{\"") && l.contains("\"_aws\""))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|l| serde_json::json!([l["Day"], l["Succeeded"], l["Failed"], l["RunId"]]))
        .collect();
    assert_eq!(
        emf,
        [
            serde_json::json!(["2019-06-01", 1, 0, 3]),
            serde_json::json!(["2019-06-02", 0, 1, 4])
        ],
        "{stderr}"
    );

    // The same with day 2 listed and archived ahead (--days-parallel): day 1 is reported,
    // day 2's failure is logged once, in its turn, as run 6 in the archive phase.
    let out = run(
        "daily_load",
        &[
            "--from",
            "2019-06-01",
            "--to",
            "2019-06-02",
            "--days-parallel",
            "2",
        ],
        &envs,
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stdout.contains("d2d daily load of 2019-06-01 — run 5 succeeded"),
        "{stdout}"
    );
    let errors: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["level"] == "ERROR")
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    let f = &errors[0]["fields"];
    assert_eq!(
        (&f["day"], &f["run"], &f["phase"]),
        (&"2019-06-02".into(), &6.into(), &"archive".into()),
        "{f}"
    );
    let out = run(
        "daily_load",
        &[
            "--from",
            "2019-06-01",
            "--to",
            "2019-06-02",
            "--days-parallel",
            "0",
        ],
        &envs,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    // A warehouse that cannot be reached is logged the same way.
    let unreachable = [
        ("DATABASE_URL", "postgres://d2d:d2d@127.0.0.1:1/d2d"),
        envs[1],
        envs[2],
    ];
    let out = run("daily_load", &["--date", "2019-06-01"], &unreachable);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.lines().filter(|l| l.starts_with('{')).any(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["level"] == "ERROR"
                && v["fields"]["phase"] == "setup"
                && v["fields"]["day"] == "2019-06-01"
        }),
        "{stderr}"
    );

    // A late file and a merge that cannot succeed: exit 1, cause on stderr, alert run.
    std::fs::write(
        landing.join("data/resources/2019/06/01/15/17/2019-06-01-15-17-5-events.txt"),
        FIX.replace("10.101Z", "30.000Z").replace("52.45", "52.47"),
    )
    .unwrap();
    Warehouse::connect(&db.url)
        .await
        .unwrap()
        .client()
        .batch_execute(
            "ALTER TABLE dwh.vehicle_period_distance ADD CONSTRAINT injected_failure CHECK (false) NOT VALID",
        )
        .await
        .unwrap();
    let alert = tmp.join("alert.txt");
    let command = format!(
        "cat > '{0}' && printf '%s' \"$D2D_ALERT_SUMMARY\" > '{0}.env'",
        alert.display()
    );
    let out = run(
        "daily_load",
        &["--date", "2019-06-01", "--alert-command", &command],
        &envs,
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("d2d daily_load FAILED"), "{stderr}");
    assert!(stderr.contains("injected_failure"), "{stderr}");
    let summary = std::fs::read_to_string(&alert).unwrap();
    for expected in [
        "d2d daily_load FAILED",
        "day: 2019-06-01",
        "run: 7 (etl.load_run)",
        "phase: merging",
        "injected_failure",
    ] {
        assert!(summary.contains(expected), "{expected:?} in {summary}");
    }
    assert_eq!(
        std::fs::read_to_string(tmp.join("alert.txt.env")).unwrap(),
        summary.trim_end()
    );

    // The audit says what happened; the failed run changed nothing in dwh.
    let wh = Warehouse::connect(&db.url).await.unwrap();
    let runs: Vec<(String, Option<i64>)> = wh
        .client()
        .query(
            "SELECT status, files FROM etl.load_run ORDER BY run_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        runs,
        [
            ("succeeded".into(), Some(2)),
            ("succeeded".into(), Some(2)),
            ("succeeded".into(), Some(2)),
            ("failed".into(), Some(0)),
            ("succeeded".into(), Some(2)),
            ("failed".into(), Some(0)),
            ("failed".into(), Some(3))
        ]
    );
    let facts: i64 = wh
        .client()
        .query_one("SELECT count(*) FROM dwh.fact_vehicle_event", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(facts, 2);

    // Bad arguments are refused by the parser, before anything runs.
    let out = run(
        "daily_load",
        &["--date", "2019-06-01", "--from", "2019-06-01"],
        &envs,
    );
    assert_eq!(out.status.code(), Some(2));
}

/// The sample day through the binaries on the real S3-compatible server, as issue 3 asks:
/// `populate_landing` uploads the files, `daily_load` loads and re-loads from landing, then
/// rebuilds from the lake once landing is empty; the warehouse never changes, and the `bi` view
/// equals d2d-model's averages.
#[tokio::test]
async fn sample_day_on_s3_through_the_binaries() {
    use d2d::model::{distance, parse, period, track};
    use d2d::pipeline::store::{Store, StoreOptions};

    s3_endpoint();
    let db = TestDb::create_tagged("s3cli").await;
    let tag = unique_tag();
    let landing_url = format!("s3://d2d-cli-landing-{tag}/data");
    let lake_url = format!("s3://d2d-cli-lake-{tag}");
    let options = StoreOptions::from_env();
    Store::open_with(&lake_url, &options)
        .await
        .unwrap()
        .create_if_missing()
        .await
        .unwrap();

    let out = run(
        "populate_landing",
        &[
            "--from",
            "testdata/landing/data",
            "--to",
            &landing_url,
            "--create-bucket",
            "--concurrency",
            "32",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let envs = [
        ("DATABASE_URL", db.url.as_str()),
        ("D2D_LANDING", landing_url.as_str()),
        ("D2D_LAKE", lake_url.as_str()),
        ("D2D_CONCURRENCY", "32"),
    ];
    let checksums = || async {
        let wh = Warehouse::connect(&db.url).await.unwrap();
        wh.dwh_checksums().await.unwrap()
    };

    let first = run("daily_load", &["--date", "2019-06-01"], &envs);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(
        text(&first.stdout).contains("files           717"),
        "{}",
        text(&first.stdout)
    );
    let after_first = checksums().await;
    assert!(after_first
        .iter()
        .any(|t| t.table == "fact_vehicle_event" && t.rows == 35_288));

    let second = run("daily_load", &["--date", "2019-06-01"], &envs);
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert!(
        text(&second.stdout).contains("717 already in the lake"),
        "{}",
        text(&second.stdout)
    );
    assert_eq!(checksums().await, after_first);

    // Landing loses every file; the lake alone rebuilds the same warehouse.
    let landing_store = Store::open_with(&landing_url, &options).await.unwrap();
    for object in landing_store.list("").await.unwrap() {
        landing_store.delete(&object.key).await.unwrap();
    }
    assert!(landing_store.list("").await.unwrap().is_empty());
    let rebuilt = run(
        "daily_load",
        &["--date", "2019-06-01", "--from-lake"],
        &envs,
    );
    assert!(rebuilt.status.success(), "{}", text(&rebuilt.stderr));
    assert_eq!(checksums().await, after_first);

    // BI's answer equals d2d-model's on the same files.
    let parsed = parse::parse_sources(&sample_day());
    let events = || parsed.events.iter().map(|r| &r.event);
    let periods = period::resolve_periods(events());
    let rows = distance::period_distances(&periods, &track::tracks(events()), &Default::default());
    let expected = distance::averages(&periods, &rows).periods;

    let wh = Warehouse::connect(&db.url).await.unwrap();
    let view = wh
        .client()
        .query(
            "SELECT operating_period_id, vehicles, avg_metres, total_metres \
               FROM bi.avg_distance_per_operating_period ORDER BY operating_period_id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(view.len(), expected.len());
    for (row, want) in view.iter().zip(&expected) {
        assert_eq!(row.get::<_, String>(0), want.period.as_str());
        assert_eq!(row.get::<_, i64>(1) as u64, want.vehicles);
        let avg: f64 = row.get(2);
        assert!(
            (avg - want.avg_metres.unwrap()).abs() < 1e-6,
            "{avg} vs {want:?}"
        );
        assert!((row.get::<_, f64>(3) - want.total_metres).abs() < 1e-6);
    }
}

/// SNS and SQS clients on the moto server of `D2D_S3_ENDPOINT`.
async fn sns_and_sqs() -> (aws_sdk_sns::Client, aws_sdk_sqs::Client) {
    let endpoint = std::env::var("D2D_S3_ENDPOINT")
        .expect("D2D_S3_ENDPOINT must name the test S3 server (scripts/test sets it)");
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region("us-east-1")
        .load()
        .await;
    (
        aws_sdk_sns::Client::from_conf(
            aws_sdk_sns::config::Builder::from(&sdk)
                .endpoint_url(&endpoint)
                .build(),
        ),
        aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(&sdk)
                .endpoint_url(&endpoint)
                .build(),
        ),
    )
}

/// `--alert-sns-topic`: a failing day (no landing files) publishes the failure summary to the
/// topic on moto's SNS, with the day in the subject and the secrets of the job's environment
/// redacted (the landing path carries the AWS secret key); the command alert runs as well.
#[tokio::test]
async fn a_failing_day_alerts_by_sns() {
    let db = TestDb::create_tagged("sns").await;
    let tag = unique_tag();
    let name = format!("d2d-alerts-{tag}");
    // The topic's messages are read back through a subscribed SQS queue: the SNS and SQS APIs
    // alone (moto's `/moto-api/data.json` dumps every service and fails on S3 objects that
    // other tests left behind).
    let (sns, sqs) = sns_and_sqs().await;
    let arn = sns
        .create_topic()
        .name(&name)
        .send()
        .await
        .unwrap()
        .topic_arn
        .unwrap();
    let queue_url = sqs
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()
        .remove(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .unwrap();
    sns.subscribe()
        .topic_arn(&arn)
        .protocol("sqs")
        .endpoint(queue_arn)
        .send()
        .await
        .unwrap();
    let secret = format!("wJalrXUtnFEMI-d2d-test-{tag}");
    let tmp_dir = TempDir::new("sns");
    let tmp = tmp_dir.path();
    let landing = tmp.join(format!("landing-{secret}"));
    std::fs::create_dir_all(&landing).unwrap();
    let alert = tmp.join("alert.txt");
    let command = format!("cat > '{}'", alert.display());
    let out = run(
        "daily_load",
        &[
            "--date",
            "2019-06-02",
            "--alert-sns-topic",
            &arn,
            "--alert-command",
            &command,
        ],
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("D2D_LANDING", landing.to_str().unwrap()),
            ("D2D_LAKE", tmp.join("lake").to_str().unwrap()),
            ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
        ],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("SNS alert failed"), "{stderr}");

    let sent: Vec<serde_json::Value> = sqs
        .receive_message()
        .queue_url(&queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap()
        .messages()
        .iter()
        .map(|m| serde_json::from_str(m.body().unwrap()).unwrap())
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    // SNS's envelope around the message, as SQS receives it.
    let (message, subject) = (
        sent[0]["Message"].as_str().unwrap(),
        sent[0]["Subject"].as_str().unwrap(),
    );
    assert_eq!(subject, "d2d daily_load failed: 2019-06-02");
    for expected in [
        "d2d daily_load FAILED",
        "day: 2019-06-02",
        "run: 1 (etl.load_run)",
        "landing-***",
    ] {
        assert!(message.contains(expected), "{expected:?} in {message}");
    }
    assert!(!message.contains(&secret), "{message}");
    // The command alert got the same summary.
    assert_eq!(std::fs::read_to_string(&alert).unwrap().trim_end(), message);
}

#[tokio::test]
async fn days_the_warehouse_cannot_name_are_refused_before_anything_runs() {
    use d2d::pipeline::run::{no_events, run_day, run_days, RunConfig};
    let db = TestDb::create_tagged("baddays").await;
    let tmp_dir = TempDir::new("baddays");
    let (landing, lake) = (tmp_dir.path().join("landing"), tmp_dir.path().join("lake"));
    write_landing(&landing);
    let envs = [
        ("DATABASE_URL", db.url.as_str()),
        ("D2D_LANDING", landing.to_str().unwrap()),
        ("D2D_LAKE", lake.to_str().unwrap()),
    ];
    let out = run("daily_load", &["--date", "2019-06-01"], &envs);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let wh = Warehouse::connect(&db.url).await.unwrap();
    let before = wh.dwh_checksums().await.unwrap();

    // A BC date once named 2019-06-01's partition and emptied it, reporting success.
    for date in [
        "-2018-06-01",
        "+2019-06-01",
        "12019-06-01",
        "0000-06-01",
        "2019-6-1",
    ] {
        let out = run(
            "daily_load",
            &[&format!("--date={date}"), "--allow-empty"],
            &envs,
        );
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--date={date}: {stderr}");
        assert!(stderr.contains(date), "--date={date}: {stderr}");
        let out = run(
            "daily_load",
            &[
                "--from",
                "2019-06-01",
                &format!("--to={date}"),
                "--allow-empty",
            ],
            &envs,
        );
        assert_eq!(
            out.status.code(),
            Some(2),
            "--to={date}: {}",
            text(&out.stderr)
        );
    }
    let mut with_date = envs.to_vec();
    with_date.push(("D2D_DATE", "-2018-06-01"));
    let out = run("daily_load", &["--allow-empty"], &with_date);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("D2D_DATE"),
        "{}",
        text(&out.stderr)
    );

    // The library refuses such a day too, before it records a run.
    let mut config = RunConfig::new(landing.to_str().unwrap(), lake.to_str().unwrap(), &db.url);
    config.allow_empty = true;
    let bc = chrono::NaiveDate::from_ymd_opt(-2018, 6, 1).unwrap();
    let june_1 = chrono::NaiveDate::from_ymd_opt(2019, 6, 1).unwrap();
    let far = chrono::NaiveDate::from_ymd_opt(10_000, 1, 1).unwrap();
    for result in [
        run_day(&config, bc, &no_events).await.map(|_| ()),
        run_days(&config, june_1, far, &no_events).await.map(|_| ()),
    ] {
        let error = result.unwrap_err().to_string();
        assert!(error.contains("outside the days d2d loads"), "{error}");
    }
    assert_eq!(wh.dwh_checksums().await.unwrap(), before);
    let runs: i64 = wh
        .client()
        .query_one("SELECT count(*) FROM etl.load_run", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(runs, 1);
}

#[tokio::test]
async fn credentials_put_in_urls_reach_no_output_log_or_audit_row() {
    let db = TestDb::create_tagged("secrets").await;
    let tmp_dir = TempDir::new("secrets");
    let lake = tmp_dir.path().join("lake");
    // A port nothing listens on: every S3 request is refused at once, and retried.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let planted = ["pw-endpoint-7f3a9c", "pw-landing-2b8c1d", "pw-lake-91d0e4"];
    let endpoint = format!("http://d2d:{}@127.0.0.1:{port}", planted[0]);
    let landing = format!("s3://d2d:{}@landing-bucket/data", planted[1]);
    let file_lake = format!("file://d2d:{}@{}", planted[2], lake.display());
    let mut outputs = Vec::new();
    for (landing, lake) in [
        ("s3://landing-bucket/data", lake.to_str().unwrap()),
        (landing.as_str(), lake.to_str().unwrap()),
        ("s3://landing-bucket/data", file_lake.as_str()),
    ] {
        let out = run(
            "daily_load",
            &["--date", "2019-06-01", "--s3-attempts", "2"],
            &[
                ("DATABASE_URL", db.url.as_str()),
                ("D2D_LANDING", landing),
                ("D2D_LAKE", lake),
                ("D2D_S3_ENDPOINT", endpoint.as_str()),
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
                ("AWS_REGION", "us-east-1"),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        outputs.push(text(&out.stdout));
        outputs.push(text(&out.stderr));
    }
    let wh = Warehouse::connect(&db.url).await.unwrap();
    let audit: Vec<String> = wh
        .client()
        .query("SELECT to_jsonb(r)::text FROM etl.load_run AS r", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Not vacuous: the first run was recorded and failed reaching S3, after retrying.
    assert!(
        audit
            .iter()
            .any(|r| r.contains("\"failed\"") && r.contains("landing-bucket")),
        "{audit:?}"
    );
    assert!(
        outputs.iter().any(|o| o.contains("retrying S3 request")),
        "{outputs:?}"
    );
    for secret in planted {
        for place in outputs.iter().chain(&audit) {
            assert!(!place.contains(secret), "{secret} leaked into: {place}");
        }
    }
}
