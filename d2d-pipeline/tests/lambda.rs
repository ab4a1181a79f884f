//! The Lambda handler (feature `lambda`), invoked as a function against the real services:
//! the sample day on the S3-compatible server, the warehouse URL in its Secrets Manager, the
//! local PostgreSQL; a failing day alerts through its SNS. Run with
//! `cargo test -p d2d-pipeline --features lambda --test lambda`.

// Tests fail loudly on purpose: an unwrap here is an assertion.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use aws_config::BehaviorVersion;
use chrono::{DateTime, NaiveDate, Utc};
use d2d_pipeline::lambda::{handle_with, Event, LambdaConfig, Summary};
use d2d_pipeline::warehouse::Warehouse;
use d2d_pipeline::Error;
use d2d_testkit::{s3_buckets_with, s3_endpoint, sample_day, unique_tag, TestDb};

fn config(vars: &[(&str, &str)]) -> LambdaConfig {
    try_config(vars).unwrap()
}

async fn sdk() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region("us-east-1")
        .load()
        .await
}

/// An SQS queue on moto subscribed to `topic_arn`, so that the test reads what the topic
/// published through the SNS and SQS APIs alone (moto's `/moto-api/data.json` dumps every
/// service's state and fails on S3 objects other tests left behind).
async fn subscribe_queue(
    sns: &aws_sdk_sns::Client,
    topic_arn: &str,
    tag: &str,
) -> (aws_sdk_sqs::Client, String) {
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&sdk().await)
            .endpoint_url(s3_endpoint())
            .build(),
    );
    let url = sqs
        .create_queue()
        .queue_name(format!("d2d-lambda-alerts-{tag}"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap();
    let queue_arn = attributes
        .attributes()
        .unwrap()
        .get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .unwrap()
        .clone();
    sns.subscribe()
        .topic_arn(topic_arn)
        .protocol("sqs")
        .endpoint(queue_arn)
        .send()
        .await
        .unwrap();
    (sqs, url)
}

/// The messages the topic delivered to the queue: (message, subject).
async fn published(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Vec<(String, String)> {
    let received = sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    received
        .messages()
        .iter()
        .map(|m| {
            // SNS's envelope around the message, as SQS receives it.
            let envelope: serde_json::Value = serde_json::from_str(m.body().unwrap()).unwrap();
            (
                envelope["Message"].as_str().unwrap().to_owned(),
                envelope["Subject"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Status, day, files, events and rejects of a run in `etl.load_run`.
async fn load_run(
    db: &TestDb,
    run_id: i64,
) -> (String, NaiveDate, Option<i64>, Option<i64>, Option<i64>) {
    let wh = Warehouse::connect(&db.url).await.unwrap();
    let row = wh
        .client()
        .query_one(
            "SELECT status, landing_day, files, events, rejects FROM etl.load_run WHERE run_id = $1",
            &[&run_id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4))
}

/// The sample day uploaded to an S3 landing bucket; the warehouse URL only in Secrets
/// Manager. One invocation names the day; one without a date, at 2019-06-01 23:30 UTC, loads
/// yesterday in Berlin (where it is 2019-06-02 01:30): the same day again.
#[tokio::test]
async fn the_handler_loads_a_day_from_s3_with_the_url_from_secrets_manager() {
    let db = TestDb::create().await;
    let tag = unique_tag();
    let (landing_url, lake_url) = (
        format!("s3://d2d-lambda-landing-{tag}"),
        format!("s3://d2d-lambda-lake-{tag}/lake"),
    );
    let files = sample_day();
    s3_buckets_with(&landing_url, &lake_url, &files).await;

    let secrets = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(&sdk().await)
            .endpoint_url(s3_endpoint())
            .build(),
    );
    let secret = secrets
        .create_secret()
        .name(format!("d2d/lambda-{tag}/database-url"))
        .secret_string(format!("{}\n", db.url))
        .send()
        .await
        .unwrap();
    let arn = secret.arn().unwrap().to_owned();

    let endpoint = s3_endpoint();
    let vars = [
        ("D2D_LANDING", landing_url.as_str()),
        ("D2D_LAKE", lake_url.as_str()),
        ("D2D_DATABASE_SECRET_ARN", arn.as_str()),
        ("D2D_S3_ENDPOINT", endpoint.as_str()),
        ("D2D_LANDING_LAYOUT", "nested:data/resources"),
        ("D2D_TIME_ZONE", "Europe/Berlin"),
    ];
    let config = config(&vars);
    let june_1: NaiveDate = "2019-06-01".parse().unwrap();
    let now: DateTime<Utc> = "2019-06-01T23:30:00Z".parse().unwrap();

    let event: Event = serde_json::from_str(r#"{"date": "2019-06-01"}"#).unwrap();
    let first = handle_with(&config, event, now).await.unwrap();
    assert_eq!(first.day, june_1);
    assert!(!first.from_lake);
    assert_eq!(first.files, 717);
    assert_eq!(
        first.bytes,
        files.iter().map(|(_, b)| b.len() as u64).sum::<u64>()
    );
    assert_eq!(first.lines, first.events + first.duplicates + first.rejects);
    assert!(first.events > 0 && first.fact_vehicle_event > 0 && first.vehicle_period_distance > 0);
    let (status, day, audit_files, audit_events, audit_rejects) = load_run(&db, first.run_id).await;
    assert_eq!(status, "succeeded");
    assert_eq!(day, june_1);
    assert_eq!(audit_files, Some(717));
    assert_eq!(audit_events, Some(first.events as i64));
    assert_eq!(audit_rejects, Some(first.rejects as i64));

    // `{}`: yesterday in Berlin, where it is already 2019-06-02.
    let event: Event = serde_json::from_str("{}").unwrap();
    let again = handle_with(&config, event, now).await.unwrap();
    assert_eq!(again.day, june_1);
    assert_eq!(again.run_id, first.run_id + 1);
    let counts = |s: &Summary| (s.files, s.lines, s.events, s.duplicates, s.rejects);
    assert_eq!(counts(&again), counts(&first));

    // The summary is the JSON the invocation returns.
    let json = serde_json::to_value(&again).unwrap();
    assert_eq!(json["day"], "2019-06-01");
    assert_eq!(json["run_id"], again.run_id);
    assert_eq!(json["files"], 717);
}

/// A day without files fails the invocation with the run's error, after the summary went to
/// the SNS topic, redacted: the landing URL carries the AWS secret key of the environment.
#[tokio::test]
async fn a_failing_day_is_an_error_and_an_sns_alert() {
    let db = TestDb::create().await;
    let tag = unique_tag();
    let sns = aws_sdk_sns::Client::from_conf(
        aws_sdk_sns::config::Builder::from(&sdk().await)
            .endpoint_url(s3_endpoint())
            .build(),
    );
    let topic = sns
        .create_topic()
        .name(format!("d2d-lambda-alerts-{tag}"))
        .send()
        .await
        .unwrap();
    let topic_arn = topic.topic_arn().unwrap().to_owned();
    let (sqs, queue_url) = subscribe_queue(&sns, &topic_arn, &tag).await;
    let aws_secret = std::env::var("AWS_SECRET_ACCESS_KEY")
        .expect("AWS_SECRET_ACCESS_KEY must be set (scripts/services sets it)");
    assert!(
        aws_secret.len() >= 6,
        "a secret this short is not searched for"
    );
    let landing_url = format!("s3://d2d-lambda-empty-{tag}/in-{aws_secret}");
    let lake_url = format!("s3://d2d-lambda-emptylake-{tag}");
    s3_buckets_with(&landing_url, &lake_url, &[]).await;
    let endpoint = s3_endpoint();
    let config = config(&[
        ("D2D_LANDING", landing_url.as_str()),
        ("D2D_LAKE", lake_url.as_str()),
        ("DATABASE_URL", db.url.as_str()),
        ("D2D_S3_ENDPOINT", endpoint.as_str()),
        ("D2D_ALERT_SNS_TOPIC", topic_arn.as_str()),
    ]);
    let day = Event {
        date: "2019-06-02".parse().ok(),
    };
    let err = handle_with(&config, day, Utc::now()).await.unwrap_err();
    assert!(matches!(err, Error::Run { .. }), "{err}");

    let messages = published(&sqs, &queue_url).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    let (message, subject) = &messages[0];
    assert_eq!(subject, "d2d daily load failed: 2019-06-02");
    for expected in [
        "d2d lambda daily load FAILED",
        "day: 2019-06-02",
        "run: 1 (etl.load_run)",
        "/in-***",
    ] {
        assert!(message.contains(expected), "{expected:?} in {message}");
    }
    assert!(!message.contains(&aws_secret), "{message}");
    let (status, ..) = load_run(&db, 1).await;
    assert_eq!(status, "failed");
}

/// The configuration from these variables alone (not the process environment).
fn try_config(vars: &[(&str, &str)]) -> d2d_pipeline::Result<LambdaConfig> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    LambdaConfig::from_vars(|name| vars.get(name).cloned())
}

const BASE: [(&str, &str); 3] = [
    ("D2D_LANDING", "s3://landing"),
    ("D2D_LAKE", "s3://lake"),
    ("DATABASE_URL", "postgres://u@h/d"),
];

#[test]
fn yesterday_is_taken_in_the_configured_zone() {
    let now: DateTime<Utc> = "2019-06-01T23:30:00Z".parse().unwrap();
    let utc = try_config(&BASE).unwrap();
    assert_eq!(utc.day(&Event::default(), now).to_string(), "2019-05-31");
    let mut vars = BASE.to_vec();
    vars.push(("D2D_TIME_ZONE", "Europe/Berlin"));
    let berlin = try_config(&vars).unwrap();
    assert_eq!(berlin.day(&Event::default(), now).to_string(), "2019-06-01");
    let given = Event {
        date: "2020-01-02".parse().ok(),
    };
    assert_eq!(berlin.day(&given, now).to_string(), "2020-01-02");
}

#[test]
fn events_parse_with_and_without_a_date() {
    let e: Event = serde_json::from_str(r#"{"date":"2019-06-01"}"#).unwrap();
    assert_eq!(e.date.unwrap().to_string(), "2019-06-01");
    let e: Event = serde_json::from_str("{}").unwrap();
    assert_eq!(e.date, None);
    assert!(serde_json::from_str::<Event>(r#"{"date":"June"}"#).is_err());
}

#[test]
fn configuration_errors_name_the_variable() {
    let err = try_config(&BASE[..2]).unwrap_err().to_string();
    assert!(err.contains("D2D_DATABASE_SECRET_ARN"), "{err}");
    let err = try_config(&BASE[1..]).unwrap_err().to_string();
    assert!(err.contains("D2D_LANDING"), "{err}");
    let mut vars = BASE.to_vec();
    vars.push(("D2D_MOVE", "maybe"));
    assert!(try_config(&vars)
        .unwrap_err()
        .to_string()
        .contains("D2D_MOVE"));
    let mut vars = BASE.to_vec();
    vars.push(("D2D_TIME_ZONE", "Mars/Olympus"));
    assert!(try_config(&vars)
        .unwrap_err()
        .to_string()
        .contains("D2D_TIME_ZONE"));
    let secret = try_config(&[
        BASE[0],
        BASE[1],
        ("D2D_DATABASE_SECRET_ARN", "arn:aws:secretsmanager:x"),
        ("D2D_MOVE", "true"),
    ])
    .unwrap();
    assert_eq!(
        secret.database,
        d2d_pipeline::lambda::DatabaseSource::Secret("arn:aws:secretsmanager:x".into())
    );
    assert!(secret.run.move_landing);
}

#[test]
fn timeouts_attempts_and_concurrency_are_read_like_daily_loads() {
    let defaults = try_config(&BASE).unwrap();
    assert_eq!(
        defaults.run.store_options,
        d2d_pipeline::store::StoreOptions::default()
    );
    assert_eq!(defaults.run.lake_options.concurrency, 16);
    assert_eq!(defaults.run.db_connect_timeout, None);

    let mut vars = BASE.to_vec();
    vars.extend([
        ("D2D_S3_CONNECT_TIMEOUT", "0.5"),
        ("D2D_S3_READ_TIMEOUT", "20"),
        ("D2D_S3_ATTEMPTS", "2"),
        ("D2D_DB_CONNECT_TIMEOUT", "4"),
        ("D2D_CONCURRENCY", "3"),
    ]);
    let set = try_config(&vars).unwrap();
    let s3 = &set.run.store_options;
    assert_eq!(s3.s3_connect_timeout, std::time::Duration::from_millis(500));
    assert_eq!(s3.s3_read_timeout, std::time::Duration::from_secs(20));
    assert_eq!(s3.s3_max_attempts, 2);
    assert_eq!(
        set.run.db_connect_timeout,
        Some(std::time::Duration::from_secs(4))
    );
    assert_eq!(set.run.lake_options.concurrency, 3);

    for (name, bad) in [
        ("D2D_S3_READ_TIMEOUT", "0"),
        ("D2D_S3_CONNECT_TIMEOUT", "soon"),
        ("D2D_S3_ATTEMPTS", "0"),
        ("D2D_CONCURRENCY", "-1"),
        ("D2D_DB_CONNECT_TIMEOUT", "inf"),
    ] {
        let mut vars = BASE.to_vec();
        vars.push((name, bad));
        let err = try_config(&vars).unwrap_err().to_string();
        assert!(err.contains(name) && err.contains(bad), "{err}");
    }
}
