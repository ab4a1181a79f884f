//! Two days racing through their curate phases (a process of its own: the gate is an
//! environment variable). Day 1's run has committed and fixed its snapshot when day 2, which
//! deletes one of day 1's periods, commits; day 1 then writes from its older snapshot. The
//! curated zone must still equal the warehouse once both are done: the zone's lock makes
//! day 2 read and write after day 1.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use arrow_array::cast::AsArray;
use chrono::NaiveDate;
use d2d_pipeline::run::{no_events, run_day, RunConfig};
use d2d_pipeline::store::Store;
use d2d_pipeline::warehouse::Warehouse;
use d2d_testkit::{parquet_batches_under, CurateGate, TempDir, TestDb};

const CREATE: &str = r#"{"event":"create","on":"operating_period","at":"2019-06-01T09:00:00Z","data":{"id":"ID","start":"2019-06-01T10:00:00Z","finish":"2019-06-01T11:00:00Z"},"organization_id":"org"}"#;

fn fix(second: u32, lat: f64) -> String {
    format!(
        r#"{{"event":"update","on":"vehicle","at":"2019-06-01T10:00:{second:02}Z","data":{{"id":"v1","location":{{"lat":{lat},"lng":13.4,"at":"2019-06-01T10:00:{second:02}Z"}}}},"organization_id":"org"}}"#
    )
}

/// The (period, vehicle) pairs of the curated distance files.
async fn curated_pairs(lake: &Store) -> BTreeSet<(String, String)> {
    let mut pairs = BTreeSet::new();
    for b in parquet_batches_under(lake, "curated/vehicle_period_distance/").await {
        let p = b
            .column_by_name("operating_period_id")
            .unwrap()
            .as_string::<i32>();
        let v = b.column_by_name("vehicle_id").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            pairs.insert((p.value(i).to_owned(), v.value(i).to_owned()));
        }
    }
    pairs
}

async fn dwh_pairs(wh: &Warehouse) -> BTreeSet<(String, String)> {
    wh.client()
        .query(
            "SELECT operating_period_id, vehicle_id FROM dwh.vehicle_period_distance",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Polls the warehouse until `sql` (one boolean) is true; the condition, not the time, ends
/// the wait.
async fn until(wh: &Warehouse, sql: &str) {
    while !wh
        .client()
        .query_one(sql, &[])
        .await
        .unwrap()
        .get::<_, bool>(0)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_slower_day_does_not_write_its_older_snapshot_over_a_later_one() {
    let db = TestDb::create().await;
    let (landing, lake_dir) = (TempDir::new("race-landing"), TempDir::new("race-lake"));
    let data = landing.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("2019-06-01-10-0-0-events.txt"),
        [
            CREATE.replace("ID", "op_1"),
            CREATE.replace("ID", "op_2"),
            fix(0, 52.50),
            fix(10, 52.51),
        ]
        .join("\n"),
    )
    .unwrap();
    std::fs::write(
        data.join("2019-06-02-10-0-0-events.txt"),
        CREATE
            .replace("ID", "op_1")
            .replace("\"create\"", "\"delete\"")
            .replace("2019-06-01T09:00:00Z", "2019-06-02T09:00:00Z"),
    )
    .unwrap();
    let gate = CurateGate::close_on("2019-06-01");
    let config = RunConfig::new(
        landing.path().to_str().unwrap(),
        lake_dir.path().to_str().unwrap(),
        &db.url,
    );
    let day_1: NaiveDate = "2019-06-01".parse().unwrap();
    let day_2: NaiveDate = "2019-06-02".parse().unwrap();
    let mut wh = Warehouse::connect(&db.url).await.unwrap();
    wh.migrate().await.unwrap();

    let first = {
        let config = config.clone();
        tokio::spawn(async move { run_day(&config, day_1, &no_events).await })
    };
    // Day 1 has committed and holds its snapshot.
    gate.reached().await;
    let second = {
        let config = config.clone();
        tokio::spawn(async move { run_day(&config, day_2, &no_events).await })
    };
    // Day 2 has committed its delete of op_1.
    until(
        &wh,
        "SELECT EXISTS (SELECT FROM etl.load_run WHERE landing_day = '2019-06-02'
                          AND committed_at IS NOT NULL)",
    )
    .await;
    gate.open();
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();

    let expected = dwh_pairs(&wh).await;
    assert_eq!(
        expected,
        BTreeSet::from([("op_2".to_owned(), "v1".to_owned())])
    );
    let lake = Store::open(lake_dir.path().to_str().unwrap())
        .await
        .unwrap();
    assert_eq!(curated_pairs(&lake).await, expected);
}
