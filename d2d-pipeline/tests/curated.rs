//! The lake's curated zone, written by the daily run on the real services: it equals the
//! warehouse, a re-run replaces it whole, an emptied day leaves nothing stale, and a rebuild
//! from `raw/` alone writes it again.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use bytes::Bytes;
use chrono::NaiveDate;
use d2d_pipeline::curated::{
    distance_fingerprints_key, distance_key, period_event_key, vehicle_event_key,
};
use d2d_pipeline::run::{no_events, run_day, RunConfig};
use d2d_pipeline::store::Store;
use d2d_pipeline::warehouse::Warehouse;
use d2d_testkit::{
    landing_dir, parquet_batches, parquet_batches_under, read_tree, sample_day, TempDir, TestDb,
};
use futures_util::{StreamExt, TryStreamExt};
use parquet::file::reader::{FileReader, SerializedFileReader};

fn june_1() -> NaiveDate {
    "2019-06-01".parse().unwrap()
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// Every file under the lake's `curated/`, relative to the lake.
fn curated_files(lake: &Path) -> Vec<String> {
    read_tree(lake)
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("curated/"))
        .collect()
}

async fn query_i64(wh: &Warehouse, sql: &str) -> i64 {
    wh.client().query_one(sql, &[]).await.unwrap().get(0)
}

/// The warehouse's average distance per period (`bi`), and the same computed from the curated
/// distance files.
async fn averages(wh: &Warehouse, lake: &Store) -> (BTreeMap<String, f64>, BTreeMap<String, f64>) {
    let from_dwh: BTreeMap<String, f64> = wh
        .period_averages()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|p| Some((p.operating_period_id, p.avg_metres?)))
        .collect();
    let mut sums: BTreeMap<String, (f64, u32)> = BTreeMap::new();
    for b in parquet_batches_under(lake, "curated/vehicle_period_distance/").await {
        let ids = b
            .column_by_name("operating_period_id")
            .unwrap()
            .as_string::<i32>();
        let metres = b
            .column_by_name("metres")
            .unwrap()
            .as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            let e = sums.entry(ids.value(i).to_string()).or_default();
            e.0 += metres.value(i);
            e.1 += 1;
        }
    }
    let from_lake = sums
        .into_iter()
        .map(|(k, (sum, n))| (k, sum / f64::from(n)))
        .collect();
    (from_dwh, from_lake)
}

fn assert_close(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, x) in a {
        assert!((x - b[k]).abs() < 1e-6, "{k}: {x} vs {}", b[k]);
    }
}

#[tokio::test]
async fn the_curated_zone_equals_the_warehouse_and_reruns_replace_it_whole() {
    let db = TestDb::create().await;
    let lake_dir = TempDir::new("curated-lake");
    let config = RunConfig::new(
        landing_dir().to_str().unwrap(),
        lake_dir.path().to_str().unwrap(),
        &db.url,
    );
    let report = run_day(&config, june_1(), &no_events).await.unwrap();
    let curated = report.curated.clone().unwrap();
    let lake = Store::local(lake_dir.path());
    let wh = Warehouse::connect(&db.url).await.unwrap();

    // Row for row what the warehouse holds of the day, in the warehouse's names and types.
    let vehicle = parquet_batches(&lake, &vehicle_event_key(june_1())).await;
    let in_dwh = query_i64(&wh, "SELECT count(*) FROM dwh.fact_vehicle_event").await;
    assert_eq!(rows(&vehicle) as i64, in_dwh);
    assert_eq!(curated.vehicle_events as i64, in_dwh);
    assert_eq!(
        in_dwh, 35_288,
        "the sample day: 35,290 lines, 2 of them period events"
    );
    let periods = parquet_batches(&lake, &period_event_key(june_1())).await;
    assert_eq!(
        rows(&periods) as i64,
        query_i64(&wh, "SELECT count(*) FROM dwh.fact_period_event").await
    );
    let schema = vehicle[0].schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "source_key",
            "line",
            "source_time",
            "event",
            "vehicle_id",
            "organization_id",
            "event_at",
            "lat",
            "lng",
            "location_at"
        ]
    );
    // Sorted by vehicle, then time; the file says so, and statistics and page indexes are on.
    let mut last: Option<(String, Option<i64>)> = None;
    for b in &vehicle {
        let v = b.column_by_name("vehicle_id").unwrap().as_string::<i32>();
        let t = b
            .column_by_name("location_at")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        for i in 0..b.num_rows() {
            let key = (v.value(i).to_string(), t.is_valid(i).then(|| t.value(i)));
            if let Some(prev) = &last {
                assert!(
                    prev.0 < key.0 || (prev.0 == key.0 && cmp_nulls_last(prev.1, key.1)),
                    "{prev:?} before {key:?}"
                );
            }
            last = Some(key);
        }
    }
    let file =
        SerializedFileReader::new(lake.get(&vehicle_event_key(june_1())).await.unwrap()).unwrap();
    let meta = file.metadata();
    let group = meta.row_group(0);
    assert_eq!(group.sorting_columns().unwrap().len(), 5);
    assert!(group.column(0).statistics().is_some());
    assert!(
        group.column(0).column_index_offset().is_some(),
        "page index"
    );
    assert!(format!("{:?}", group.column(0).compression()).starts_with("ZSTD"));

    let (dwh_avg, lake_avg) = averages(&wh, &lake).await;
    assert_eq!(dwh_avg.len(), 2);
    assert_close(&dwh_avg, &lake_avg);
    assert_eq!(curated.distance_partitions_written, 1);

    // A re-run replaces each file in place: the same files, the same rows, no second copy;
    // the distances did not change, so their partition is not rewritten.
    let before = curated_files(lake_dir.path());
    let again = run_day(&config, june_1(), &no_events).await.unwrap();
    let again = again.curated.unwrap();
    assert_eq!(curated_files(lake_dir.path()), before);
    assert_eq!(again.vehicle_events, curated.vehicle_events);
    assert_eq!(again.distance_partitions_written, 0);
    assert_eq!(again.distance_partitions_unchanged, 1);

    // With a speed rule every distance changes: the partition is rewritten and still equals
    // the warehouse.
    let mut slow = config.clone();
    slow.load.max_speed_mps = Some(30.0);
    let third = run_day(&slow, june_1(), &no_events).await.unwrap();
    assert_eq!(third.curated.unwrap().distance_partitions_written, 1);
    let (dwh_avg, lake_avg) = averages(&wh, &lake).await;
    assert_close(&dwh_avg, &lake_avg);

    // The curated zone can be rebuilt from raw/ alone.
    std::fs::remove_dir_all(lake_dir.path().join("curated")).unwrap();
    let mut rebuild = slow.clone();
    rebuild.from_lake = true;
    run_day(&rebuild, june_1(), &no_events).await.unwrap();
    assert_eq!(curated_files(lake_dir.path()), before);
    let rebuilt = parquet_batches(&lake, &vehicle_event_key(june_1())).await;
    assert_eq!(rows(&rebuilt), rows(&vehicle));
    let (dwh_avg, lake_avg) = averages(&wh, &lake).await;
    assert_close(&dwh_avg, &lake_avg);

    // A day emptied of its files leaves no stale partition: its facts and the distances of
    // the periods it defined are gone from the warehouse, so from the lake too.
    std::fs::remove_dir_all(lake_dir.path().join("raw")).unwrap();
    let mut empty = rebuild.clone();
    empty.allow_empty = true;
    let emptied = run_day(&empty, june_1(), &no_events).await.unwrap();
    let emptied = emptied.curated.unwrap();
    assert_eq!(emptied.vehicle_events, 0);
    assert_eq!(emptied.distance_partitions_deleted, 1);
    assert_eq!(
        curated_files(lake_dir.path()),
        ["curated/vehicle_period_distance/_fingerprints.json"]
    );
    assert!(lake.head(&distance_key(june_1())).await.unwrap().is_none());
    let fingerprints = lake.get(&distance_fingerprints_key()).await.unwrap();
    assert_eq!(&fingerprints[..], b"{}");
}

/// `a` comes before or with `b` when NULLs sort last.
fn cmp_nulls_last(a: Option<i64>, b: Option<i64>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => x <= y,
        (Some(_), None) | (None, None) => true,
        (None, Some(_)) => false,
    }
}

#[tokio::test]
async fn an_s3_lake_gets_the_same_curated_files() {
    let db = TestDb::create().await;
    let tag = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let landing_url = format!("s3://d2d-cur-landing-{tag}/incoming");
    let lake_url = format!("s3://d2d-cur-lake-{tag}");
    let landing = Store::open(&landing_url).await.unwrap();
    landing.create_if_missing().await.unwrap();
    let lake = Store::open(&lake_url).await.unwrap();
    lake.create_if_missing().await.unwrap();
    futures_util::stream::iter(sample_day().into_iter().map(|(key, bytes)| {
        let landing = landing.clone();
        async move { landing.put(&key, Bytes::from(bytes)).await }
    }))
    .buffer_unordered(16)
    .try_collect::<Vec<()>>()
    .await
    .unwrap();

    let config = RunConfig::new(&landing_url, &lake_url, &db.url);
    run_day(&config, june_1(), &no_events).await.unwrap();
    let keys: Vec<String> = lake
        .list("curated/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(
        keys,
        [
            period_event_key(june_1()),
            vehicle_event_key(june_1()),
            distance_fingerprints_key(),
            distance_key(june_1()),
        ]
    );
    let wh = Warehouse::connect(&db.url).await.unwrap();
    let vehicle = parquet_batches(&lake, &vehicle_event_key(june_1())).await;
    assert_eq!(
        rows(&vehicle) as i64,
        query_i64(&wh, "SELECT count(*) FROM dwh.fact_vehicle_event").await
    );
    let (dwh_avg, lake_avg) = averages(&wh, &lake).await;
    assert_close(&dwh_avg, &lake_avg);
}

#[tokio::test]
async fn sub_microsecond_instants_are_one_instant_in_the_model_the_warehouse_and_the_lake() {
    // Before 1970, before 2000 and after: truncated towards the past everywhere (PostgreSQL's
    // driver once rounded times before 2000 towards it, Parquet's microseconds did not).
    let texts = [
        "1969-12-31T23:59:59.9999999Z",
        "1999-12-31T23:59:59.0000019Z",
        "2019-06-01T18:17:10.1234567Z",
    ];
    let landing = TempDir::new("subus-landing");
    let data = landing.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let lines: Vec<String> = texts
        .iter()
        .map(|t| {
            format!(
                r#"{{"event":"update","on":"vehicle","at":"{t}","data":{{"id":"v1","location":{{"lat":52.5,"lng":13.4,"at":"{t}"}}}},"organization_id":"org"}}"#
            )
        })
        .collect();
    std::fs::write(data.join("2019-06-01-10-0-0-events.txt"), lines.join("\n")).unwrap();
    let db = TestDb::create().await;
    let lake_dir = TempDir::new("subus-lake");
    let config = RunConfig::new(
        landing.path().to_str().unwrap(),
        lake_dir.path().to_str().unwrap(),
        &db.url,
    );
    run_day(&config, june_1(), &no_events).await.unwrap();

    let model: Vec<i64> = texts
        .iter()
        .map(|t| {
            d2d_model::time::parse_timestamp(t)
                .unwrap()
                .timestamp_micros()
        })
        .collect();
    let wh = Warehouse::connect(&db.url).await.unwrap();
    let warehouse: Vec<i64> = wh
        .client()
        .query(
            "SELECT location_at FROM dwh.fact_vehicle_event ORDER BY location_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            r.get::<_, chrono::DateTime<chrono::Utc>>(0)
                .timestamp_micros()
        })
        .collect();
    let lake = Store::local(lake_dir.path());
    let mut curated: Vec<i64> = parquet_batches(&lake, &vehicle_event_key(june_1()))
        .await
        .iter()
        .flat_map(|b| {
            let c = b
                .column_by_name("location_at")
                .unwrap()
                .as_primitive::<TimestampMicrosecondType>()
                .clone();
            (0..c.len()).map(move |i| c.value(i))
        })
        .collect();
    curated.sort_unstable();
    assert_eq!(
        model,
        [-1, 946_684_799_000_001, 1_559_413_030_123_456],
        "{texts:?}"
    );
    assert_eq!(warehouse, model);
    assert_eq!(curated, model);
}
