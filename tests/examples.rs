//! Runs the example binaries, as a user would, and checks what they print.
//!
//! `cargo test` builds the examples next to the test binary (`target/<profile>/examples/`).

// Tests fail loudly on purpose: an unwrap here is an assertion.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use d2d_testkit::{example, TempDir};

fn data_check(args: &[&str]) -> Output {
    Command::new(example("data_check"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("data_check runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn data_check_json_reports_the_sample_day() {
    let out = data_check(&["--json", "testdata/landing"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "exactly one JSON object");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["files"], 717);
    assert_eq!(v["lines"], 35_290);
    assert_eq!(v["events"], 35_290);
    assert_eq!(v["by_kind"]["vehicle.update"], 35_091);
    assert_eq!(v["vehicles"], 100);
    assert_eq!(v["periods"], 2);
    let by_kind: u64 = v["by_kind"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(by_kind, v["events"].as_u64().unwrap());
}

#[test]
fn data_check_reports_rejects_and_keeps_going() {
    let tmp = TempDir::new("data-check");
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("nested")).unwrap();
    let good = std::fs::read_to_string(
        "testdata/landing/data/resources/2019/06/01/15/17/2019-06-01-15-17-4-events.txt",
    )
    .unwrap();
    let first = good.lines().nth(1).unwrap();
    std::fs::write(
        dir.join("nested/a.txt"),
        format!(
            "{first}\n{{\"on\":\"vehicle\"}}\n\n{}\n{first}\n",
            first.replace("register", "teleport")
        ),
    )
    .unwrap();
    let path = dir.to_str().unwrap();

    let out = data_check(&["--json", path]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        (v["lines"].as_u64(), v["events"].as_u64()),
        (Some(4), Some(1))
    );
    assert_eq!(
        (v["duplicates"].as_u64(), v["rejects"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(v["reject_reasons"]["missing_field"], 1);
    assert_eq!(v["reject_reasons"]["unknown_kind"], 1);

    let out = data_check(&["--rejects", path]);
    let rejects: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rejects.len(), 2);
    assert!(rejects[0]["source"]
        .as_str()
        .unwrap()
        .ends_with("nested/a.txt"));
    assert_eq!(rejects[0]["line"], 2);
    assert_eq!(rejects[0]["reason"], "event: missing or null");
    assert_eq!(rejects[1]["line"], 4);
}

#[test]
fn data_check_distances_are_csv_only() {
    let out = data_check(&["--distances", "testdata/landing"]);
    assert!(out.status.success());
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("period,vehicle,fixes,first_at,last_at,metres")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 144, "44 vehicles in op_1, 100 in op_2");
    assert!(rows
        .iter()
        .all(|r| r.len() == 6 && r[5].parse::<f64>().unwrap() >= 0.0));
}

/// Ids are free text: a comma or a quote in one is quoted as CSV says, so a CSV reader reads
/// back the ids the files hold (a line break cannot occur: the parser rejects such an id).
#[test]
fn data_check_distances_quote_ids_that_need_it() {
    let tmp = TempDir::new("data-check-csv");
    let (period, vehicle) = (r#"op,"1""#, "v,1");
    let lines = [
        serde_json::json!({"event": "create", "on": "operating_period", "at": "2019-06-01T18:00:00Z",
            "data": {"id": period, "start": "2019-06-01T18:00:00Z", "finish": "2019-06-01T19:00:00Z"},
            "organization_id": "org"}),
        serde_json::json!({"event": "update", "on": "vehicle", "at": "2019-06-01T18:17:10.101Z",
            "data": {"id": vehicle, "location": {"lat": 52.45, "lng": 13.46, "at": "2019-06-01T18:17:10.101Z"}},
            "organization_id": "org"}),
        serde_json::json!({"event": "update", "on": "vehicle", "at": "2019-06-01T18:17:20.101Z",
            "data": {"id": vehicle, "location": {"lat": 52.46, "lng": 13.46, "at": "2019-06-01T18:17:20.101Z"}},
            "organization_id": "org"}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(tmp.path().join("2019-06-01-15-17-10-events.txt"), text).unwrap();

    let out = data_check(&["--distances", tmp.path().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv_text = stdout(&out);
    let row = csv_text.lines().nth(1).unwrap();
    assert!(row.starts_with(r#""op,""1""","v,1",2,"#), "{row}");
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 1, "{csv_text}");
    assert_eq!(
        records[0].iter().take(5).collect::<Vec<_>>(),
        [
            period,
            vehicle,
            "2",
            "2019-06-01T18:17:10.101Z",
            "2019-06-01T18:17:20.101Z"
        ]
    );
    let metres: f64 = records[0][5].parse().unwrap();
    assert!(
        metres > 1000.0 && metres < 1200.0,
        "0.01° of latitude: {metres}"
    );
}

#[test]
fn data_check_fails_clearly_on_an_unreadable_path() {
    let out = data_check(&["--json", "no/such/folder"]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read no/such/folder"), "{err}");
    assert!(Path::new("testdata/landing").exists());
}
