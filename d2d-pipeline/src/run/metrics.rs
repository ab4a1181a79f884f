//! A run's outcome as one CloudWatch Embedded Metric Format (EMF) log line: CloudWatch Logs
//! turns it into metrics by itself (Lambda, ECS/EKS with the awslogs driver, or any agent
//! shipping the line), so an alarm on failed runs, on the reject ratio or on a day without
//! files needs no metrics client in the job. See the README's "Alarms".

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{json, Map, Value};

use super::RunReport;
use crate::error::Error;

/// The namespace of d2d's metrics.
pub const NAMESPACE: &str = "d2d";

/// What the metrics of a run say: a finished run's report, or a failure (its counts are not
/// known then).
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// The run succeeded.
    Succeeded(&'a RunReport),
    /// The run failed.
    Failed {
        /// The landing day.
        day: NaiveDate,
        /// Its id in `etl.load_run`, when it got that far.
        run_id: Option<i64>,
        /// What it was doing (`archiving`, ...), when known.
        doing: Option<&'a str>,
        /// Its load had committed before a later step failed ([`Error::AfterCommit`]).
        committed: bool,
    },
}

impl<'a> Outcome<'a> {
    /// The failure `error` of a run of `day` (the day the error names, if it names one).
    pub fn failed(error: &'a Error, day: NaiveDate) -> Outcome<'a> {
        match error {
            Error::Run {
                day, run_id, phase, ..
            } => Outcome::Failed {
                day: *day,
                run_id: *run_id,
                doing: Some(phase),
                committed: false,
            },
            Error::AfterCommit {
                day, run_id, phase, ..
            } => Outcome::Failed {
                day: *day,
                run_id: *run_id,
                doing: Some(phase),
                committed: true,
            },
            _ => Outcome::Failed {
                day,
                run_id: None,
                doing: None,
                committed: false,
            },
        }
    }
}

/// The EMF line of one run of `job` (the `Job` dimension: `daily_load`, `lambda`), stamped
/// `at`. Metrics (unit): `Runs`, `Succeeded`, `Failed`, `Files`, `Bytes`, `Lines`, `Events`,
/// `Duplicates`, `Rejects` (Count), `RejectRatio` (None: rejects ÷ lines, 0 for no lines), and
/// `<Phase>Seconds` for list, archive, parse, copy, merge, quarantine, curate, cleanup and the
/// total (Seconds); a failed run has `Runs`, `Succeeded` and `Failed` only. Properties, not
/// dimensions (so metrics stay one series per job): `Day`, `RunId`, and for a failure
/// `FailedWhile` and `Committed` (its load stands: a failure after the commit).
///
/// ```
/// use d2d_pipeline::run::metrics::{emf_line, Outcome};
/// let day = chrono::NaiveDate::from_ymd_opt(2019, 6, 1).unwrap();
/// let failed = Outcome::Failed { day, run_id: None, doing: None, committed: false };
/// let line = emf_line("daily_load", &failed, chrono::Utc::now());
/// let v: serde_json::Value = serde_json::from_str(&line).unwrap();
/// assert_eq!(v["Failed"], 1);
/// assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Namespace"], "d2d");
/// ```
pub fn emf_line(job: &str, outcome: &Outcome<'_>, at: DateTime<Utc>) -> String {
    let mut fields = Map::new();
    let mut metrics = Vec::new();
    let mut put = |name: &str, unit: &str, value: Value| {
        metrics.push(json!({ "Name": name, "Unit": unit }));
        fields.insert(name.to_owned(), value);
    };
    put("Runs", "Count", json!(1));
    let (day, run) = match outcome {
        Outcome::Succeeded(report) => {
            let c = &report.counts;
            let p = &report.phases;
            put("Succeeded", "Count", json!(1));
            put("Failed", "Count", json!(0));
            put("Files", "Count", json!(c.files));
            put("Bytes", "Bytes", json!(c.bytes));
            put("Lines", "Count", json!(c.lines));
            put("Events", "Count", json!(c.events));
            put("Duplicates", "Count", json!(c.duplicates));
            put("Rejects", "Count", json!(c.rejects));
            let ratio = if c.lines == 0 {
                0.0
            } else {
                c.rejects as f64 / c.lines as f64
            };
            put("RejectRatio", "None", json!(ratio));
            for (name, d) in [
                ("ListSeconds", p.list),
                ("ArchiveSeconds", p.archive),
                ("ParseSeconds", p.parse),
                ("CopySeconds", p.copy),
                ("MergeSeconds", p.merge),
                ("QuarantineSeconds", p.quarantine),
                ("CurateSeconds", p.curate),
                ("CleanupSeconds", p.cleanup),
                ("TotalSeconds", p.total),
            ] {
                put(name, "Seconds", json!(seconds(d)));
            }
            (report.day, Some(report.run.0))
        }
        Outcome::Failed {
            day,
            run_id,
            doing,
            committed,
        } => {
            put("Succeeded", "Count", json!(0));
            put("Failed", "Count", json!(1));
            if let Some(doing) = doing {
                fields.insert("FailedWhile".into(), json!(doing));
            }
            fields.insert("Committed".into(), json!(committed));
            (*day, *run_id)
        }
    };
    fields.insert("Job".into(), json!(job));
    fields.insert("Day".into(), json!(day.to_string()));
    if let Some(run) = run {
        fields.insert("RunId".into(), json!(run));
    }
    fields.insert(
        "_aws".into(),
        json!({
            "Timestamp": at.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Job"]],
                "Metrics": metrics,
            }],
        }),
    );
    Value::Object(fields).to_string()
}

/// Seconds, to the millisecond.
fn seconds(d: Duration) -> f64 {
    d.as_millis() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::warehouse::{PhaseTimes, RunCounts, RunId};

    fn report() -> RunReport {
        let config = crate::run::RunConfig::new("landing", "lake", "postgres://");
        let day = NaiveDate::from_ymd_opt(2019, 6, 1).unwrap();
        let mut report = crate::run::new_report(&config, day, RunId(7), &[], true);
        report.counts = RunCounts {
            files: 2,
            bytes: 300,
            lines: 8,
            events: 5,
            duplicates: 1,
            rejects: 2,
            ..RunCounts::default()
        };
        report.phases = PhaseTimes {
            merge: Duration::from_millis(1500),
            total: Duration::from_millis(4250),
            ..PhaseTimes::default()
        };
        report
    }

    /// What CloudWatch requires of an EMF line: `_aws` with a millisecond timestamp, every
    /// dimension a string field, every metric a number field.
    fn assert_valid_emf(v: &Value) -> Vec<String> {
        assert!(v["_aws"]["Timestamp"].as_i64().unwrap() > 0);
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        for set in directive["Dimensions"].as_array().unwrap() {
            for d in set.as_array().unwrap() {
                assert!(v[d.as_str().unwrap()].is_string(), "dimension {d}");
            }
        }
        directive["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let name = m["Name"].as_str().unwrap();
                assert!(v[name].is_number(), "metric {name} is {}", v[name]);
                name.to_owned()
            })
            .collect()
    }

    #[test]
    fn a_success_has_its_counts_ratio_and_phase_seconds() {
        let report = report();
        let line = emf_line("daily_load", &Outcome::Succeeded(&report), Utc::now());
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        let names = assert_valid_emf(&v);
        assert!(names.contains(&"RejectRatio".to_owned()), "{names:?}");
        assert_eq!(
            (v["Succeeded"].as_u64(), v["Failed"].as_u64()),
            (Some(1), Some(0))
        );
        assert_eq!(
            (v["Events"].as_u64(), v["Rejects"].as_u64()),
            (Some(5), Some(2))
        );
        assert_eq!(v["RejectRatio"].as_f64(), Some(0.25));
        assert_eq!(v["MergeSeconds"].as_f64(), Some(1.5));
        assert_eq!(v["TotalSeconds"].as_f64(), Some(4.25));
        assert_eq!(
            (v["Job"].as_str(), v["Day"].as_str()),
            (Some("daily_load"), Some("2019-06-01"))
        );
        assert_eq!(v["RunId"].as_i64(), Some(7));
    }

    #[test]
    fn a_failure_counts_one_failed_run_and_says_what_it_was_doing() {
        let day = NaiveDate::from_ymd_opt(2019, 6, 2).unwrap();
        let error = Error::Run {
            day,
            run_id: Some(3),
            phase: "archiving",
            source: Box::new(Error::Config("boom".into())),
        };
        let line = emf_line("lambda", &Outcome::failed(&error, day), Utc::now());
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(assert_valid_emf(&v), ["Runs", "Succeeded", "Failed"]);
        assert_eq!(
            (v["Failed"].as_u64(), v["Succeeded"].as_u64()),
            (Some(1), Some(0))
        );
        assert_eq!(v["FailedWhile"], "archiving");
        assert_eq!(
            (v["Day"].as_str(), v["RunId"].as_i64()),
            (Some("2019-06-02"), Some(3))
        );
        assert_eq!(v["Committed"], false);
    }

    #[test]
    fn a_day_without_lines_has_a_zero_reject_ratio() {
        let mut report = report();
        report.counts = RunCounts::default();
        let line = emf_line("daily_load", &Outcome::Succeeded(&report), Utc::now());
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            (v["Files"].as_u64(), v["RejectRatio"].as_f64()),
            (Some(0), Some(0.0))
        );
    }
}
