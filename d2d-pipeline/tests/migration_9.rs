//! Migration 9 on a warehouse loaded under migration 8 (the real PostgreSQL of DATABASE_URL,
//! a fresh database): no row of dwh or of the audit trail changes, the rewritten distance
//! procedure gives the very distances migration 8's did (with and without a speed limit), the
//! loader loses every write it had (on the partitions loaded before too), a run left `running`
//! before the upgrade is closed as abandoned with its commit unknown, and reloading gives the
//! same tables.
#![allow(clippy::unwrap_used)]

use chrono::NaiveDate;
use d2d_model::parse::parse_bytes;
use d2d_pipeline::warehouse::{LoadOptions, TableChecksum, Warehouse};
use d2d_testkit::{sample_day, TestDb};

fn day(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

/// Loads (key, bytes) files as landing day `d` with the loader of this build, whose COPYs and
/// procedure calls are those of migration 8 too.
async fn load(wh: &mut Warehouse, d: NaiveDate, files: &[(String, Vec<u8>)]) {
    let mut day_load = wh.begin_day(d, LoadOptions::default()).await.unwrap();
    for (key, bytes) in files {
        day_load
            .add_file(key, &parse_bytes(key, bytes))
            .await
            .unwrap();
    }
    day_load.commit().await.unwrap();
}

/// A small second day: a period over the sample's evening and fixes of one of its vehicles.
fn june_2() -> Vec<(String, Vec<u8>)> {
    let vehicle = "f0b87796-b25c-40b0-9145-8822509c17e1";
    let period = r#"{"event":"create","on":"operating_period","at":"2019-06-02T08:00:00Z","data":{"id":"op_late","start":"2019-06-01T18:00:00Z","finish":"2019-06-02T09:00:00Z"},"organization_id":"org-id"}"#;
    let fix = |at: &str, lat: f64| {
        format!(
            r#"{{"event":"update","on":"vehicle","at":"{at}","data":{{"id":"{vehicle}","location":{{"lat":{lat},"lng":13.4,"at":"{at}"}}}},"organization_id":"org-id"}}"#
        )
    };
    let body = [
        period.to_owned(),
        fix("2019-06-02T08:00:00Z", 52.50),
        fix("2019-06-02T08:00:10Z", 52.51),
        fix("2019-06-02T08:00:20Z", 52.53),
        "not json".to_owned(),
    ]
    .join("\n");
    vec![(
        "data/2019-06-02-5-0-0-events.json".to_owned(),
        body.into_bytes(),
    )]
}

async fn checksums(wh: &Warehouse) -> Vec<TableChecksum> {
    wh.dwh_checksums().await.unwrap()
}

async fn texts(wh: &Warehouse, sql: &str) -> Vec<String> {
    wh.client()
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The distances under speed limit `limit` (m/s; `None`: none), recomputed from scratch by
/// the warehouse's own procedure, as the owner.
async fn distances_with(wh: &Warehouse, limit: Option<f64>) -> Vec<String> {
    wh.client()
        .execute("UPDATE dwh.distance_rule SET max_speed_mps = $1", &[&limit])
        .await
        .unwrap();
    wh.client()
        .batch_execute("CALL dwh.refresh_vehicle_period_distance(NULL)")
        .await
        .unwrap();
    texts(
        wh,
        "SELECT d::text FROM dwh.vehicle_period_distance AS d
          ORDER BY operating_period_id, vehicle_id",
    )
    .await
}

const AUDIT: [&str; 3] = [
    // The columns migration 8 knew.
    "SELECT (to_jsonb(r) - ARRAY['phase', 'phase_at', 'committed_at'])::text
       FROM etl.load_run AS r ORDER BY run_id",
    "SELECT m::text FROM etl.file_manifest AS m ORDER BY run_id, landing_key",
    "SELECT r::text FROM etl.reject AS r ORDER BY landing_day, source_key, line",
];

#[tokio::test]
async fn migration_9_keeps_a_warehouse_of_migration_8_and_takes_the_loaders_writes() {
    let db = TestDb::create().await;
    let mut wh = Warehouse::connect(&db.url).await.unwrap();
    wh.migrate_to(8).await.unwrap();
    let sample = sample_day();
    load(&mut wh, day("2019-06-01"), &sample).await;
    // This build's loader writes the reject columns of migration 10, which a migration-8
    // warehouse lacks: its files go in without their bad line, and the reject row that
    // migration 8's loader wrote for it is written by hand below.
    let clean: Vec<(String, Vec<u8>)> = june_2()
        .into_iter()
        .map(|(k, b)| {
            let text = String::from_utf8(b).unwrap();
            let kept: Vec<&str> = text.lines().filter(|l| *l != "not json").collect();
            (k, kept.join("\n").into_bytes())
        })
        .collect();
    load(&mut wh, day("2019-06-02"), &clean).await;
    // The audit trail as migration 8's loader wrote it: a closed run with its manifest, one
    // that died and stayed running, and a refused line.
    wh.client()
        .batch_execute(
            "INSERT INTO etl.reject (landing_day, source_key, line, code, field, reason, raw)
                  VALUES ('2019-06-02', 'data/2019-06-02-5-0-0-events.json', 5, 'invalid_json',
                          NULL, 'expected value at line 1 column 1', 'not json');
             INSERT INTO etl.load_run (landing_day, from_lake, move_landing, lake)
                  VALUES ('2019-06-01', false, false, 'lake');
             INSERT INTO etl.file_manifest (run_id, landing_day, landing_key, lake_key, size, sha256)
                  VALUES (1, '2019-06-01', 'data/a', 'raw/dt=2019-06-01/data/a', 3, repeat('ab', 32));
             UPDATE etl.load_run SET status = 'succeeded', files = 1, finished_at = now()
              WHERE run_id = 1;
             INSERT INTO etl.load_run (landing_day, from_lake, move_landing, lake)
                  VALUES ('2019-06-02', false, false, 'lake');",
        )
        .await
        .unwrap();
    let limited_v8 = distances_with(&wh, Some(100.0)).await;
    let unlimited_v8 = distances_with(&wh, None).await;
    assert!(limited_v8.len() > 100 && limited_v8 != unlimited_v8);
    let before = checksums(&wh).await;
    let answer = wh.period_averages().await.unwrap();
    let mut audit = Vec::new();
    for sql in AUDIT {
        audit.push(texts(&wh, sql).await);
    }
    assert!(audit.iter().all(|rows| !rows.is_empty()));

    let report = wh.migrate_to(9).await.unwrap();
    assert_eq!(report.applied, [9], "{report:?}");
    assert_eq!(checksums(&wh).await, before, "dwh keeps every row");
    assert_eq!(wh.period_averages().await.unwrap(), answer);
    for (sql, rows) in AUDIT.iter().zip(&audit) {
        assert_eq!(&texts(&wh, sql).await, rows, "{sql}");
    }

    // The distance procedure, rewritten, computes what migration 8's did, bit for bit.
    assert_eq!(distances_with(&wh, Some(100.0)).await, limited_v8);
    assert_eq!(distances_with(&wh, None).await, unlimited_v8);
    assert_eq!(checksums(&wh).await, before);

    // Privileges: every table, the partitions loaded under migration 8 included.
    let wrong = texts(
        &wh,
        "SELECT format('%s.%s: %s for %s', n.nspname, c.relname, p.privilege, r.role)
           FROM pg_catalog.pg_class AS c
           JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
          CROSS JOIN (VALUES ('SELECT'), ('INSERT'), ('UPDATE'), ('DELETE'), ('TRUNCATE'))
                AS p (privilege)
          CROSS JOIN (VALUES ('d2d_loader'), ('d2d_bi')) AS r (role)
          WHERE n.nspname IN ('staging', 'dwh', 'etl', 'bi') AND c.relkind IN ('r', 'p', 'v')
            AND has_table_privilege(r.role, c.oid, p.privilege) <> CASE
                    WHEN r.role = 'd2d_bi' THEN n.nspname = 'bi' AND p.privilege = 'SELECT'
                    WHEN n.nspname = 'staging' THEN p.privilege IN ('SELECT', 'INSERT')
                    ELSE p.privilege = 'SELECT'
                END
          ORDER BY 1",
    )
    .await;
    assert!(wrong.is_empty(), "wrong privileges:\n{}", wrong.join("\n"));
    let partitions: i64 = wh
        .client()
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_inherits
              WHERE inhparent = 'dwh.fact_vehicle_event'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        partitions, 2,
        "the partitions were among the tables checked"
    );

    // The run that died before the upgrade is closed; whether it committed is unknown.
    let closed = wh.abandon_dead_runs().await.unwrap();
    assert_eq!(closed.len(), 1);
    assert_eq!((closed[0].run.0, closed[0].phase.as_deref()), (2, None));
    let (status, error): (String, String) = {
        let r = wh
            .client()
            .query_one(
                "SELECT status, error FROM etl.load_run WHERE run_id = 2",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(status, "abandoned");
    assert!(error.contains("unknown"), "{error}");

    // The loader of this build, on the same files, writes the very rows again (once the
    // warehouse has the reject columns it writes).
    // From migration 11 on the loader computes the distances with d2d_model's kernel: the
    // very bits migration 8's SQL gave, with and without a speed limit.
    wh.migrate().await.unwrap();
    load(&mut wh, day("2019-06-02"), &june_2()).await;
    load(&mut wh, day("2019-06-01"), &sample).await;
    assert_eq!(checksums(&wh).await, before);
    assert_eq!(wh.period_averages().await.unwrap(), answer);
    let all = "SELECT d::text FROM dwh.vehicle_period_distance AS d
                ORDER BY operating_period_id, vehicle_id";
    let limited = LoadOptions {
        max_speed_mps: Some(100.0),
    };
    wh.refresh_distances(limited).await.unwrap();
    assert_eq!(texts(&wh, all).await, limited_v8);
    wh.refresh_distances(LoadOptions::default()).await.unwrap();
    assert_eq!(texts(&wh, all).await, unlimited_v8);
    assert_eq!(checksums(&wh).await, before);
}
