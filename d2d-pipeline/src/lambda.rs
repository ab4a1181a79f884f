//! The daily run as an AWS Lambda function (cargo feature `lambda`).
//!
//! [`handle`] takes an [`Event`] — `{"date": "YYYY-MM-DD"}`, or `{}` for yesterday in
//! `D2D_TIME_ZONE` (an IANA name such as `Europe/Berlin`; default UTC) — runs the same
//! [`run::run_day`] as `daily_load`, and returns a [`Summary`] (day, run id, counts). A failed
//! run is an error, after the failure summary was published to `D2D_ALERT_SNS_TOPIC` when set.
//! [`run`] serves it with `lambda_runtime`; `handle` itself needs no Lambda runtime, so tests
//! and other schedulers call it directly.
//!
//! Configured from the environment ([`LambdaConfig::from_env`]), with the names `daily_load`
//! reads:
//!
//! | variable | meaning |
//! |---|---|
//! | `D2D_LANDING`, `D2D_LAKE` | the stores (`s3://bucket/prefix`), required |
//! | `DATABASE_URL` | the warehouse's libpq URL, or else: |
//! | `D2D_DATABASE_SECRET_ARN` | an AWS Secrets Manager secret whose `SecretString` is that URL |
//! | `D2D_S3_ENDPOINT` | an S3-compatible endpoint (also used for SNS and Secrets Manager) |
//! | `D2D_LANDING_LAYOUT` | `scan` (default), `nested:<root>` or `flat:<dir>` |
//! | `D2D_FROM_LAKE`, `D2D_MOVE`, `D2D_ALLOW_EMPTY`, `D2D_REPLACE_CHANGED` | `true`/`false` |
//! | `D2D_MAX_SPEED_MPS`, `D2D_MAX_REJECT_RATIO` | numbers, off when unset |
//! | `D2D_ALERT_SNS_TOPIC` | the topic ARN failures are published to |
//! | `D2D_TIME_ZONE` | the zone whose yesterday an event without date loads |
//! | `D2D_S3_CONNECT_TIMEOUT`, `D2D_S3_READ_TIMEOUT` | seconds (default 3 and 8), as `daily_load`'s |
//! | `D2D_S3_ATTEMPTS` | attempts per S3 request (default 5) |
//! | `D2D_DB_CONNECT_TIMEOUT` | seconds to reach PostgreSQL (default: the URL's, else 10) |
//! | `D2D_CONCURRENCY` | S3 requests in flight while archiving (default 16) |
//!
//! ```no_run
//! # async fn demo() -> d2d_pipeline::Result<()> {
//! use d2d_pipeline::lambda::{handle, Event};
//! let summary = handle(Event { date: "2019-06-01".parse().ok() }).await?;
//! println!("{}", serde_json::to_string(&summary).unwrap_or_default());
//! # Ok(()) }
//! ```

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::alert::SnsAlert;
use crate::error::{Error, Result};
use crate::lake::{DayLayout, LakeOptions};
use crate::run::{self, RunConfig, RunReport};
use crate::store::s3::{describe, sdk_config};
use crate::store::StoreOptions;
use crate::warehouse::LoadOptions;

/// The invocation's payload: `{"date": "2019-06-01"}`, or `{}` for yesterday.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Event {
    /// The landing day to load; `None`: yesterday in the configured time zone.
    #[serde(default)]
    pub date: Option<NaiveDate>,
}

/// What a successful invocation returns (as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// The landing day loaded.
    pub day: NaiveDate,
    /// Its run id in `etl.load_run`.
    pub run_id: i64,
    /// Rebuilt from the lake alone.
    pub from_lake: bool,
    /// Source files of the day.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Non-blank lines (`events + duplicates + rejects`).
    pub lines: u64,
    /// Distinct valid events loaded.
    pub events: u64,
    /// Events equal to an earlier one of the day.
    pub duplicates: u64,
    /// Refused lines.
    pub rejects: u64,
    /// Rows written to `dwh.fact_vehicle_event`.
    pub fact_vehicle_event: u64,
    /// Rows written to `dwh.fact_period_event`.
    pub fact_period_event: u64,
    /// Rows written to `dwh.vehicle_period_distance`.
    pub vehicle_period_distance: u64,
    /// Wall-clock milliseconds of the run.
    pub total_ms: u64,
}

impl From<&RunReport> for Summary {
    fn from(r: &RunReport) -> Self {
        let c = &r.counts;
        Self {
            day: r.day,
            run_id: r.run.0,
            from_lake: r.from_lake,
            files: c.files,
            bytes: c.bytes,
            lines: c.lines,
            events: c.events,
            duplicates: c.duplicates,
            rejects: c.rejects,
            fact_vehicle_event: c.rows.fact_vehicle_event,
            fact_period_event: c.rows.fact_period_event,
            vehicle_period_distance: c.rows.vehicle_period_distance,
            total_ms: u64::try_from(r.phases.total.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// Where the warehouse's URL comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseSource {
    /// The URL itself (`DATABASE_URL`).
    Url(String),
    /// The ARN (or name) of a Secrets Manager secret whose `SecretString` is the URL.
    Secret(String),
}

/// The function's configuration; see the module documentation for the variables.
#[derive(Debug, Clone)]
pub struct LambdaConfig {
    /// The run's settings; its `database_url` is filled from [`Self::database`] per call.
    pub run: RunConfig,
    /// Where the warehouse's URL comes from.
    pub database: DatabaseSource,
    /// The topic failures are published to.
    pub alert_sns_topic: Option<String>,
    /// The zone whose yesterday an event without date loads.
    pub time_zone: Tz,
}

impl LambdaConfig {
    /// From the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// From `var`, which gives a variable's value (or `None` when unset); blank values count
    /// as unset.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let required = |name: &str| {
            var(name).ok_or_else(|| Error::Config(format!("{name} must be set for the Lambda")))
        };
        let flag = |name: &str| -> Result<bool> {
            match var(name).map(|v| v.trim().to_ascii_lowercase()).as_deref() {
                None | Some("0" | "false" | "no" | "off") => Ok(false),
                Some("1" | "true" | "yes" | "on") => Ok(true),
                Some(other) => Err(Error::Config(format!(
                    "{name}={other:?} is not true or false"
                ))),
            }
        };
        let number = |name: &str| -> Result<Option<f64>> {
            var(name)
                .map(|v| {
                    v.trim()
                        .parse::<f64>()
                        .map_err(|e| Error::Config(format!("{name}={v:?} is not a number: {e}")))
                })
                .transpose()
        };
        let seconds = |name: &str| -> Result<Option<Duration>> {
            var(name)
                .map(|v| run::parse_seconds(&v).map_err(|e| Error::Config(format!("{name}={e}"))))
                .transpose()
        };
        let count = |name: &str| -> Result<Option<usize>> {
            var(name)
                .map(|v| match v.trim().parse::<usize>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(Error::Config(format!(
                        "{name}={v:?} is not a positive whole number"
                    ))),
                })
                .transpose()
        };
        let database = match (var("DATABASE_URL"), var("D2D_DATABASE_SECRET_ARN")) {
            (Some(url), _) => DatabaseSource::Url(url),
            (None, Some(arn)) => DatabaseSource::Secret(arn),
            (None, None) => {
                return Err(Error::Config(
                    "set DATABASE_URL or D2D_DATABASE_SECRET_ARN for the Lambda".into(),
                ))
            }
        };
        let time_zone = match var("D2D_TIME_ZONE") {
            None => Tz::UTC,
            Some(name) => name.trim().parse::<Tz>().map_err(|e| {
                Error::Config(format!("D2D_TIME_ZONE={name:?} is not a time zone: {e}"))
            })?,
        };
        let mut run = RunConfig::new(required("D2D_LANDING")?, required("D2D_LAKE")?, "");
        if let Some(layout) = var("D2D_LANDING_LAYOUT") {
            run.layout = layout
                .parse::<DayLayout>()
                .map_err(|e| Error::Config(format!("D2D_LANDING_LAYOUT={layout:?}: {e}")))?;
        }
        run.from_lake = flag("D2D_FROM_LAKE")?;
        run.move_landing = flag("D2D_MOVE")?;
        run.allow_empty = flag("D2D_ALLOW_EMPTY")?;
        run.max_reject_ratio = number("D2D_MAX_REJECT_RATIO")?;
        run.load = LoadOptions {
            max_speed_mps: number("D2D_MAX_SPEED_MPS")?,
        };
        let lake_defaults = LakeOptions::default();
        run.lake_options = LakeOptions {
            replace_changed: flag("D2D_REPLACE_CHANGED")?,
            concurrency: count("D2D_CONCURRENCY")?.unwrap_or(lake_defaults.concurrency),
        };
        let store_defaults = StoreOptions::default();
        run.store_options = StoreOptions {
            s3_endpoint: var("D2D_S3_ENDPOINT"),
            s3_connect_timeout: seconds("D2D_S3_CONNECT_TIMEOUT")?
                .unwrap_or(store_defaults.s3_connect_timeout),
            s3_read_timeout: seconds("D2D_S3_READ_TIMEOUT")?
                .unwrap_or(store_defaults.s3_read_timeout),
            s3_max_attempts: match count("D2D_S3_ATTEMPTS")? {
                None => store_defaults.s3_max_attempts,
                Some(n) => u32::try_from(n)
                    .map_err(|_| Error::Config(format!("D2D_S3_ATTEMPTS={n} is too large")))?,
            },
        };
        run.db_connect_timeout = seconds("D2D_DB_CONNECT_TIMEOUT")?;
        Ok(Self {
            run,
            database,
            alert_sns_topic: var("D2D_ALERT_SNS_TOPIC"),
            time_zone,
        })
    }

    /// The day an event names, or the day before `now` in [`Self::time_zone`].
    pub fn day(&self, event: &Event, now: DateTime<Utc>) -> NaiveDate {
        event.date.unwrap_or_else(|| {
            let today = now.with_timezone(&self.time_zone).date_naive();
            today.pred_opt().unwrap_or(today)
        })
    }

    /// The warehouse's URL: given, or read from Secrets Manager.
    pub async fn database_url(&self) -> Result<String> {
        match &self.database {
            DatabaseSource::Url(url) => Ok(url.clone()),
            DatabaseSource::Secret(arn) => read_secret(arn, &self.run.store_options)
                .await
                .map(|s| s.trim().to_owned()),
        }
    }
}

/// The `SecretString` of secret `arn` (an ARN or a name).
pub async fn read_secret(arn: &str, options: &StoreOptions) -> Result<String> {
    let sdk = sdk_config(options).await;
    let mut config = aws_sdk_secretsmanager::config::Builder::from(&sdk);
    if let Some(endpoint) = &options.s3_endpoint {
        config = config.endpoint_url(endpoint);
    }
    let client = aws_sdk_secretsmanager::Client::from_conf(config.build());
    let fail = |detail: String| Error::Secret {
        secret: arn.to_owned(),
        detail,
    };
    let out = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| fail(describe(&e)))?;
    out.secret_string()
        .map(str::to_owned)
        .ok_or_else(|| fail("has no SecretString (a binary secret?)".into()))
}

/// Runs the day of `event` with the configuration of the environment; see the module docs.
pub async fn handle(event: Event) -> Result<Summary> {
    let config = LambdaConfig::from_env()?;
    handle_with(&config, event, Utc::now()).await
}

/// Runs the day of `event` (yesterday of `now` when it names none) with `config`. On
/// failure, publishes the redacted failure summary to the configured SNS topic (a failed
/// publication is logged) and returns the run's error.
pub async fn handle_with(
    config: &LambdaConfig,
    event: Event,
    now: DateTime<Utc>,
) -> Result<Summary> {
    let day = config.day(&event, now);
    // Kept for the alert's redaction, also when it came from Secrets Manager.
    let mut database_url = None;
    let result = match config.database_url().await {
        Ok(url) => {
            let mut run = config.run.clone();
            run.database_url = url;
            let result = run::run_day(&run, day, &run::no_events).await;
            database_url = Some(run.database_url);
            result
        }
        Err(e) => Err(e),
    };
    // One CloudWatch EMF line per invocation: Lambda's logs turn it into metrics.
    let outcome = match &result {
        Ok(report) => run::metrics::Outcome::Succeeded(report),
        Err(error) => run::metrics::Outcome::failed(error, day),
    };
    println!("{}", run::metrics::emf_line("lambda", &outcome, Utc::now()));
    match result {
        Ok(report) => {
            let summary = Summary::from(&report);
            tracing::info!(day = %summary.day, run = summary.run_id, events = summary.events, rejects = summary.rejects, "lambda run succeeded");
            Ok(summary)
        }
        Err(error) => {
            tracing::error!(day = %day, error = %error, "lambda run failed");
            if let Some(topic) = &config.alert_sns_topic {
                let mut alert = SnsAlert::new(topic);
                if let Some(url) = &database_url {
                    alert = alert.database_url(url);
                }
                let subject = format!("d2d daily load failed: {day}");
                let summary = failure_summary(config, day, &error);
                if let Err(e) = alert
                    .publish(&subject, &summary, &config.run.store_options)
                    .await
                {
                    tracing::error!(error = %e, "the SNS alert failed");
                }
            }
            Err(error)
        }
    }
}

/// The text an alert carries: day, run, phase, stores and error (redacted when published).
pub fn failure_summary(config: &LambdaConfig, day: NaiveDate, error: &Error) -> String {
    let (run, phase) = match error {
        Error::Run { run_id, phase, .. } | Error::AfterCommit { run_id, phase, .. } => (
            run_id.map_or_else(|| "not recorded".to_owned(), |r| r.to_string()),
            (*phase).to_owned(),
        ),
        _ => ("not recorded".to_owned(), "?".to_owned()),
    };
    let what = match error {
        Error::AfterCommit { .. } => "FAILED AFTER COMMITTING ITS LOAD",
        _ => "FAILED",
    };
    format!(
        "d2d lambda daily load {what}\nday: {day}\nrun: {run} (etl.load_run)\nphase: {phase}\nlanding: {}\nlake: {}\nerror: {error}",
        if config.run.from_lake { "(not read: from the lake)" } else { &config.run.landing },
        config.run.lake
    )
}

/// Serves [`handle`] with `lambda_runtime` until the Lambda service stops the process.
pub async fn run() -> std::result::Result<(), lambda_runtime::Error> {
    lambda_runtime::run(lambda_runtime::service_fn(
        |event: lambda_runtime::LambdaEvent<Event>| async move {
            handle(event.payload)
                .await
                .map_err(lambda_runtime::Error::from)
        },
    ))
    .await
}
