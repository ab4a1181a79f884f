//! One distance, to the bit: `dwh.vehicle_period_distance`, the curated zone's
//! `vehicle_period_distance` files and `d2d_model::distance::period_distances` (what
//! `d2d.distances` runs in Python) give the same rows and the same `metres` bits, on the real
//! sample day, on generated days with duplicates, malformed, late and out-of-order lines,
//! periods crossing midnight and deleted periods, and on a day whose fixes underflow
//! PostgreSQL's float8 arithmetic (lat 0.0, then 1e-160, then 4.9e-324), which must load. With
//! and without a speed limit, after re-runs and after `--refresh-distances`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
use chrono::NaiveDate;
use d2d::model::distance::{period_distances, DistanceOptions};
use d2d::model::landing::{landing_order, LandingName};
use d2d::model::parse::{parse_bytes, Parsed};
use d2d::model::{period, track};
use d2d::pipeline::run::{no_events, refresh_distances, run_day, run_days, RunConfig};
use d2d::pipeline::store::Store;
use d2d::pipeline::warehouse::{LoadOptions, Warehouse};
use d2d_testkit::{
    copy_tree, generate_fleet, landing_dir, parquet_batches_under, read_tree, TempDir, TestDb,
};

/// (period, vehicle) → (fixes, first_at µs, last_at µs, metres as bits).
type Rows = BTreeMap<(String, String), (i64, i64, i64, u64)>;

fn day(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

/// One vehicle whose fixes make PostgreSQL's float8 multiplication underflow, inside a period.
fn underflow_day(landing: &Path) {
    let dir = landing.join("data/resources/2019/06/05/01/00");
    std::fs::create_dir_all(&dir).unwrap();
    let fix = |at: &str, lat: &str, lng: &str| {
        format!(
            r#"{{"event":"update","on":"vehicle","at":"2019-06-05T{at}Z","data":{{"id":"v-underflow","location":{{"lat":{lat},"lng":{lng},"at":"2019-06-05T{at}Z"}}}},"organization_id":"org-id"}}"#
        )
    };
    let lines = [
        r#"{"event":"create","on":"operating_period","at":"2019-06-05T03:00:00Z","data":{"id":"op_underflow","start":"2019-06-05T03:00:00Z","finish":"2019-06-05T05:00:00Z"},"organization_id":"org-id"}"#.to_owned(),
        fix("04:00:00", "0.0", "0.0"),
        fix("04:00:10", "1e-160", "0.0"),
        fix("04:00:20", "4.9e-324", "1e-200"),
        fix("04:00:30", "0.0", "1e-300"),
        fix("04:00:40", "0.0001", "0.0"),
    ];
    std::fs::write(dir.join("2019-06-05-1-0-0-events.txt"), lines.join("\n")).unwrap();
}

/// What `d2d.distances` gives for every day of `landing` read together: each day's files
/// parsed in landing order (duplicates dropped as the load drops them), days in order.
fn model_rows(landing: &Path, options: &DistanceOptions) -> Rows {
    let mut days: BTreeMap<NaiveDate, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    for (key, bytes) in read_tree(landing) {
        if let Some(name) = LandingName::parse(&key) {
            days.entry(name.datetime().date())
                .or_default()
                .push((key, bytes));
        }
    }
    let mut events = Vec::new();
    for files in days.values_mut() {
        files.sort_by(|a, b| landing_order(&a.0, &b.0));
        let parsed = Parsed::merge(files.iter().map(|(k, b)| parse_bytes(k, b)));
        events.extend(parsed.events.into_iter().map(|r| r.event));
    }
    let periods = period::resolve_periods(&events);
    period_distances(&periods, &track::tracks(&events), options)
        .into_iter()
        .map(|d| {
            (
                (d.period.as_str().to_owned(), d.vehicle.as_str().to_owned()),
                (
                    d.fixes as i64,
                    d.first_at.timestamp_micros(),
                    d.last_at.timestamp_micros(),
                    d.metres.to_bits(),
                ),
            )
        })
        .collect()
}

async fn warehouse_rows(wh: &Warehouse) -> Rows {
    wh.client()
        .query(
            "SELECT operating_period_id, vehicle_id, fixes,
                    (extract(epoch FROM first_at) * 1000000)::bigint,
                    (extract(epoch FROM last_at) * 1000000)::bigint, metres
               FROM dwh.vehicle_period_distance",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let metres: f64 = r.get(5);
            (
                (r.get(0), r.get(1)),
                (r.get(2), r.get(3), r.get(4), metres.to_bits()),
            )
        })
        .collect()
}

async fn curated_rows(lake: &Store) -> Rows {
    let mut rows = Rows::new();
    for b in parquet_batches_under(lake, "curated/vehicle_period_distance/").await {
        let text = |c: &str| b.column_by_name(c).unwrap().as_string::<i32>().clone();
        let (periods, vehicles) = (text("operating_period_id"), text("vehicle_id"));
        let col = |c: &str| b.column_by_name(c).unwrap().clone();
        let (fixes, first, last, metres) =
            (col("fixes"), col("first_at"), col("last_at"), col("metres"));
        for i in 0..b.num_rows() {
            let old = rows.insert(
                (periods.value(i).to_owned(), vehicles.value(i).to_owned()),
                (
                    fixes.as_primitive::<Int64Type>().value(i),
                    first.as_primitive::<TimestampMicrosecondType>().value(i),
                    last.as_primitive::<TimestampMicrosecondType>().value(i),
                    metres.as_primitive::<Float64Type>().value(i).to_bits(),
                ),
            );
            assert!(old.is_none(), "a pair in two curated files");
        }
    }
    rows
}

fn assert_same(what: &str, a: &Rows, b: &Rows) {
    let only_a: Vec<_> = a.keys().filter(|k| !b.contains_key(*k)).take(5).collect();
    let only_b: Vec<_> = b.keys().filter(|k| !a.contains_key(*k)).take(5).collect();
    assert!(
        only_a.is_empty() && only_b.is_empty(),
        "{what}: pairs differ: {only_a:?} / {only_b:?}"
    );
    for (k, x) in a {
        let y = &b[k];
        assert_eq!(
            x,
            y,
            "{what}: {k:?}: metres {} vs {}",
            f64::from_bits(x.3),
            f64::from_bits(y.3)
        );
    }
}

async fn query_i64(wh: &Warehouse, sql: &str) -> i64 {
    wh.client().query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn warehouse_curated_zone_and_model_agree_to_the_bit() {
    let landing = TempDir::new("one-distance-landing");
    copy_tree(&landing_dir(), landing.path());
    generate_fleet(
        landing.path(),
        &[
            "--date",
            "2019-06-02",
            "--days",
            "3",
            "--vehicles",
            "12",
            "--seconds",
            "240",
            "--interval",
            "5",
            "--periods",
            "6",
            "--duplicates",
            "0.03",
            "--malformed",
            "0.02",
            "--out-of-order",
            "0.03",
            "--jumps",
            "0.02",
            "--seed",
            "7",
        ],
    );
    underflow_day(landing.path());

    let db = TestDb::create().await;
    let lake_dir = TempDir::new("one-distance-lake");
    let mut config = RunConfig::new(
        landing.path().to_str().unwrap(),
        lake_dir.path().to_str().unwrap(),
        &db.url,
    );
    let reports = run_days(&config, day("2019-06-01"), day("2019-06-05"), &no_events)
        .await
        .unwrap();
    assert_eq!(reports.len(), 5);
    // A day loaded again (a late re-run) changes nothing.
    run_day(&config, day("2019-06-03"), &no_events)
        .await
        .unwrap();

    let wh = Warehouse::connect(&db.url).await.unwrap();
    let lake = Store::local(lake_dir.path());
    // The cases the test is for are there.
    assert!(
        query_i64(
            &wh,
            "SELECT count(*) FROM dwh.dim_operating_period
              WHERE deleted OR start_at::date <> finish_at::date"
        )
        .await
            >= 2,
        "generated days have deleted periods and periods crossing midnight"
    );
    let crossing = query_i64(
        &wh,
        "SELECT count(*) FROM (
             SELECT d.operating_period_id, d.vehicle_id
               FROM dwh.vehicle_period_distance AS d
               JOIN dwh.dim_operating_period AS p USING (operating_period_id)
               JOIN dwh.fact_vehicle_event AS e
                 ON e.vehicle_id = d.vehicle_id AND e.event = 'update'
                AND e.location_at BETWEEN p.start_at AND p.finish_at
              GROUP BY 1, 2 HAVING count(DISTINCT e.landing_day) > 1) AS t",
    )
    .await;
    assert!(crossing > 0, "some pair's fixes come from two landing days");
    let underflow: f64 = wh
        .client()
        .query_one(
            "SELECT metres FROM dwh.vehicle_period_distance
              WHERE operating_period_id = 'op_underflow' AND vehicle_id = 'v-underflow'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(underflow > 11.0 && underflow < 12.0, "{underflow}");

    let unlimited = model_rows(landing.path(), &DistanceOptions::default());
    assert!(unlimited.len() > 300, "{}", unlimited.len());
    assert_same("warehouse / model", &warehouse_rows(&wh).await, &unlimited);
    assert_same("curated / model", &curated_rows(&lake).await, &unlimited);

    // A new rule, through the documented refresh: every distance again, lake included.
    config.load = LoadOptions {
        max_speed_mps: Some(12.0),
    };
    let refreshed = refresh_distances(&config).await.unwrap();
    assert!(refreshed.curated.distance_partitions_written > 0);
    let limited = model_rows(
        landing.path(),
        &DistanceOptions {
            max_speed_mps: Some(12.0),
        },
    );
    assert_ne!(limited, unlimited, "the rule drops fixes");
    assert_same(
        "limited warehouse / model",
        &warehouse_rows(&wh).await,
        &limited,
    );
    assert_same(
        "limited curated / model",
        &curated_rows(&lake).await,
        &limited,
    );

    // And a load under that rule keeps it.
    run_day(&config, day("2019-06-04"), &no_events)
        .await
        .unwrap();
    assert_same(
        "re-run warehouse / model",
        &warehouse_rows(&wh).await,
        &limited,
    );
    assert_same(
        "re-run curated / model",
        &curated_rows(&lake).await,
        &limited,
    );
}
