//! The curated zone's vehicle-event files are written from the rows the loader spilled while
//! parsing, not read back from PostgreSQL: each must equal, batch for batch and bit for bit,
//! the file written from the day's partition in the warehouse (`curated::write_day`), on the
//! sample day and on generated days with duplicate lines across files, malformed, late and
//! out-of-order lines, and after a re-run.
#![allow(clippy::unwrap_used)]

use chrono::NaiveDate;
use d2d::pipeline::curated::{self, vehicle_event_key};
use d2d::pipeline::run::{no_events, run_day, run_days, RunConfig};
use d2d::pipeline::store::Store;
use d2d::pipeline::warehouse::Warehouse;
use d2d_testkit::{copy_tree, generate_fleet, landing_dir, parquet_batches, TempDir, TestDb};

fn day(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

#[tokio::test]
async fn vehicle_event_files_from_the_load_equal_the_warehouse_partitions() {
    let landing = TempDir::new("curated-rows-landing");
    copy_tree(&landing_dir(), landing.path());
    generate_fleet(
        landing.path(),
        &[
            "--date",
            "2019-06-02",
            "--days",
            "2",
            "--vehicles",
            "150",
            "--seconds",
            "120",
            "--duplicates",
            "0.05",
            "--malformed",
            "0.02",
            "--out-of-order",
            "0.05",
            "--seed",
            "11",
        ],
    );
    let db = TestDb::create().await;
    let lake_dir = TempDir::new("curated-rows-lake");
    let config = RunConfig::new(
        landing.path().to_str().unwrap(),
        lake_dir.path().to_str().unwrap(),
        &db.url,
    );
    let reports = run_days(&config, day("2019-06-01"), day("2019-06-03"), &no_events)
        .await
        .unwrap();
    // The merge dropped duplicates across files: the rows it reported are left out.
    let dropped: u64 = reports.iter().map(|r| r.counts.duplicates).sum();
    assert!(dropped > 100, "{dropped}");
    run_day(&config, day("2019-06-02"), &no_events)
        .await
        .unwrap();

    let lake = Store::local(lake_dir.path());
    let from_warehouse = TempDir::new("curated-rows-from-warehouse");
    let reference = Store::local(from_warehouse.path());
    let mut wh = Warehouse::connect(&db.url).await.unwrap();
    for d in ["2019-06-01", "2019-06-02", "2019-06-03"].map(day) {
        curated::write_day(&mut wh, &reference, d).await.unwrap();
        let ours = parquet_batches(&lake, &vehicle_event_key(d)).await;
        let theirs = parquet_batches(&reference, &vehicle_event_key(d)).await;
        assert!(ours.iter().map(|b| b.num_rows()).sum::<usize>() > 5_000);
        assert_eq!(ours.len(), theirs.len(), "{d}: batches");
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert_eq!(a, b, "{d}: batch {i}");
        }
    }
}
