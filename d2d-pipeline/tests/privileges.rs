//! Least privilege on the real PostgreSQL: a warehouse owned by an ordinary role (no
//! superuser), a login in `d2d_loader` running full daily loads and re-runs, a login in
//! `d2d_bi` reading the answers — and every other statement refused to each: writes to every
//! table of dwh and etl (the migration ledger, runs, file manifests, rejects, the distance
//! rule, the merge settings, each day's partition), DDL, the owner's procedures, and the
//! misuses of the audit functions the loader may call.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU32, Ordering};

use chrono::NaiveDate;
use d2d_pipeline::run::{no_events, run_day, RunConfig};
use d2d_pipeline::warehouse::{TableChecksum, Warehouse};
use d2d_testkit::{TempDir, TestDb};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

const PASSWORD: &str = "d2d-test-login";

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn admin_url() -> String {
    std::env::var("DATABASE_URL").expect("DATABASE_URL names the test PostgreSQL server")
}

/// `url` with its user and password replaced.
fn with_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{user}:{PASSWORD}@{host}")
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// Login roles of one test (cluster-wide, so uniquely named), dropped when the value is:
/// declare it before the test's database, which must go first.
struct Logins {
    names: Vec<String>,
}

impl Logins {
    fn new() -> Logins {
        Logins { names: Vec::new() }
    }

    /// Creates login role `<tag>_<unique>` with `options` (`CREATEROLE`, `IN ROLE d2d_loader`).
    async fn create(&mut self, tag: &str, options: &str) -> String {
        let name = format!(
            "d2d_t_{tag}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        // Our own [a-z0-9_] name and a constant password: safe to splice.
        connect(&admin_url())
            .await
            .batch_execute(&format!(
                "CREATE ROLE {name} LOGIN PASSWORD '{PASSWORD}' {options}"
            ))
            .await
            .unwrap();
        self.names.push(name.clone());
        name
    }
}

impl Drop for Logins {
    fn drop(&mut self) {
        if self.names.is_empty() {
            return;
        }
        let sql = format!("DROP ROLE IF EXISTS {}", self.names.join(", "));
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (client, connection) = tokio_postgres::connect(&admin_url(), NoTls).await?;
                tokio::spawn(connection);
                client.batch_execute(&sql).await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test roles {:?}: {dropped:?}", self.names);
        }
    }
}

/// A migrated warehouse owned by an ordinary role, and a loader and a BI login.
struct Setup {
    // Field order is drop order: the database before the roles that own or use it.
    _db: TestDb,
    owner_url: String,
    loader_url: String,
    bi_url: String,
    _logins: Logins,
}

async fn setup() -> Setup {
    let mut logins = Logins::new();
    // CREATEROLE: migration 6 creates d2d_loader and d2d_bi if the cluster lacks them.
    let owner = logins.create("owner", "CREATEROLE").await;
    let db = TestDb::create().await;
    connect(&admin_url())
        .await
        .batch_execute(&format!("ALTER DATABASE {} OWNER TO {owner}", db.name()))
        .await
        .unwrap();
    let owner_url = with_user(&db.url, &owner);
    let mut wh = Warehouse::connect(&owner_url).await.unwrap();
    wh.migrate().await.unwrap();
    let loader = logins.create("loader", "IN ROLE d2d_loader").await;
    let bi = logins.create("bi", "IN ROLE d2d_bi").await;
    Setup {
        owner_url,
        loader_url: with_user(&db.url, &loader),
        bi_url: with_user(&db.url, &bi),
        _db: db,
        _logins: logins,
    }
}

fn june_1() -> NaiveDate {
    "2019-06-01".parse().unwrap()
}

const PERIOD: &str = r#"{"event":"create","on":"operating_period","at":"2019-06-01T18:00:00Z","data":{"id":"op_1","start":"2019-06-01T18:00:00Z","finish":"2019-06-01T19:00:00Z"},"organization_id":"org-id"}"#;
const FIX: &str = r#"{"event":"update","on":"vehicle","at":"2019-06-01T18:17:10.101Z","data":{"id":"v1","location":{"lat":52.45,"lng":13.46,"at":"2019-06-01T18:17:10.101Z"}},"organization_id":"org-id"}"#;

/// Two landing files of 2019-06-01: a period, three fixes, one refused line.
fn write_landing(dir: &std::path::Path) {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("2019-06-01-15-17-10-events.json"),
        format!("{PERIOD}\n{FIX}\nnot json\n"),
    )
    .unwrap();
    std::fs::write(
        data.join("2019-06-01-15-17-11-events.json"),
        format!(
            "{}\n{}\n",
            FIX.replace("10.101Z", "20.000Z").replace("52.45", "52.46"),
            FIX.replace("10.101Z", "30.000Z").replace("52.45", "52.50")
        ),
    )
    .unwrap();
}

/// `None` if `sql` fails with one of `codes`; otherwise what happened instead.
async fn refused(client: &Client, sql: &str, codes: &[SqlState]) -> Option<String> {
    match client.batch_execute(sql).await {
        Ok(()) => Some(format!("{sql}: ALLOWED")),
        Err(e) if e.code().is_some_and(|c| codes.contains(c)) => None,
        Err(e) => Some(format!("{sql}: failed with {:?} instead: {e:?}", e.code())),
    }
}

/// Every table (`r`, `p`) and view (`v`) of our four schemas: (schema, name, kind, a column
/// that may be assigned).
async fn relations(owner: &Client) -> Vec<(String, String, String, String)> {
    owner
        .query(
            "SELECT n.nspname, c.relname, c.relkind::text,
                    (SELECT a.attname FROM pg_catalog.pg_attribute AS a
                      WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                        AND a.attidentity = '' AND a.attgenerated = ''
                      ORDER BY a.attnum LIMIT 1)
               FROM pg_catalog.pg_class AS c
               JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
              WHERE n.nspname IN ('staging', 'dwh', 'etl', 'bi') AND c.relkind IN ('r', 'p', 'v')
              ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

const DENIED: &[SqlState] = &[SqlState::INSUFFICIENT_PRIVILEGE];
/// A view that is not automatically updatable refuses writes before privileges are checked.
const VIEW_DENIED: &[SqlState] = &[
    SqlState::INSUFFICIENT_PRIVILEGE,
    SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
];
const NOT_RUNNING: &[SqlState] = &[SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE];

/// `etl.finish_run(run, status, 0 × 20, 'test')`.
fn finish_sql(run: i64, status: &str) -> String {
    format!(
        "SELECT etl.finish_run({run}, '{status}', {}, 'test')",
        ["0"; 20].join(", ")
    )
}

/// A setup with the day loaded once by the loader, and the landing and lake it used.
async fn loaded() -> (Setup, RunConfig, TempDir, TempDir) {
    let s = setup().await;
    let (landing, lake) = (TempDir::new("landing"), TempDir::new("lake"));
    write_landing(landing.path());
    let config = RunConfig::new(
        landing.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        &s.loader_url,
    );
    let first = run_day(&config, june_1(), &no_events).await.unwrap();
    assert_eq!((first.counts.files, first.counts.rejects), (2, 1));
    (s, config, landing, lake)
}

#[tokio::test]
async fn the_loader_runs_the_daily_load_and_its_reruns() {
    // The whole daily run as the loader: a first load (in `loaded`), a re-run, a change of
    // the distance rule and back.
    let (s, mut config, _landing, _lake) = loaded().await;
    run_day(&config, june_1(), &no_events).await.unwrap();
    config.load.max_speed_mps = Some(30.0);
    run_day(&config, june_1(), &no_events).await.unwrap();
    config.load.max_speed_mps = None;
    run_day(&config, june_1(), &no_events).await.unwrap();

    let owner = connect(&s.owner_url).await;
    let runs: Vec<(String, bool, Option<String>, i64)> = owner
        .query(
            "SELECT r.status, r.committed_at IS NOT NULL, r.phase,
                    (SELECT count(*) FROM etl.file_manifest AS m WHERE m.run_id = r.run_id)
               FROM etl.load_run AS r ORDER BY r.run_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        runs,
        vec![("succeeded".to_owned(), true, Some("curate".to_owned()), 2); 4]
    );
    let rule: Option<f64> = owner
        .query_one("SELECT max_speed_mps FROM dwh.distance_rule", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rule, None);
    let rejects: i64 = owner
        .query_one("SELECT count(*) FROM etl.reject", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rejects, 1);
    // ... and what it reads: dwh fingerprints, the bi answer.
    let as_loader = Warehouse::connect(&s.loader_url).await.unwrap();
    assert!(!as_loader.dwh_checksums().await.unwrap().is_empty());
    assert_eq!(as_loader.period_averages().await.unwrap().len(), 1);
}

#[tokio::test]
async fn the_loader_may_not_write_outside_staging_nor_change_the_schema() {
    let (s, config, _landing, _lake) = loaded().await;
    let owner = connect(&s.owner_url).await;
    let loader = connect(&s.loader_url).await;
    let mut wrong = Vec::new();
    for (schema, table, _kind, column) in relations(&owner).await {
        let name = format!("{schema}.{table}");
        let writes = [
            format!("INSERT INTO {name} DEFAULT VALUES"),
            format!("UPDATE {name} SET {column} = {column}"),
            format!("DELETE FROM {name}"),
            format!("TRUNCATE {name}"),
        ];
        match schema.as_str() {
            // The whole of dwh and etl: the migration ledger, the audit trail, the distance
            // rule and merge settings, the facts and each day's partition.
            "dwh" | "etl" => {
                for sql in &writes {
                    wrong.extend(refused(&loader, sql, DENIED).await);
                }
            }
            // staging: COPY (INSERT) only; dwh.begin_day empties it.
            "staging" => {
                for sql in &writes[1..] {
                    wrong.extend(refused(&loader, sql, DENIED).await);
                }
            }
            _ => {
                for sql in &writes[..3] {
                    wrong.extend(refused(&loader, sql, VIEW_DENIED).await);
                }
            }
        }
    }
    for sql in [
        "CREATE SCHEMA d2d_intruder",
        "CREATE TABLE staging.d2d_intruder (n int)",
        "CREATE TABLE dwh.d2d_intruder (n int)",
        "CREATE TABLE etl.d2d_intruder (n int)",
        "CREATE TABLE bi.d2d_intruder (n int)",
        "CREATE FUNCTION etl.d2d_intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "DROP TABLE etl.schema_migration",
        "ALTER TABLE etl.load_run DISABLE TRIGGER ALL",
        "ALTER TABLE dwh.distance_rule DROP CONSTRAINT distance_rule_max_speed_mps_check",
        "DROP PROCEDURE dwh.merge_day",
        // The owner's procedures: the partition swap, the rejects, distances by hand (and,
        // from migration 9, the merge without the run's stamp).
        "CALL dwh.swap_day_partition('2019-06-01')",
        "CALL etl.replace_rejects('2019-06-01')",
        "CALL dwh.merge_staged_day('2019-06-01')",
        "CALL dwh.stage_all_distance_pairs()",
        // Staged by the merge, not by the loader.
        "INSERT INTO staging.distance_pair VALUES ('op', 'v', now(), now())",
        // Written by the merge and the refresh only; the runs' keys are their own.
        "INSERT INTO staging.distance_permit VALUES (pg_current_xact_id(), NULL)",
        "SELECT * FROM etl.run_key",
    ] {
        wrong.extend(refused(&loader, sql, DENIED).await);
    }
    assert!(
        wrong.is_empty(),
        "not refused to the loader:\n{}",
        wrong.join("\n")
    );
    // The refusals changed nothing: the job still starts and loads.
    let migrations: i64 = owner
        .query_one("SELECT count(*) FROM etl.schema_migration", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(migrations, d2d_pipeline::warehouse::MIGRATIONS.len() as i64);
    run_day(&config, june_1(), &no_events).await.unwrap();
}

#[tokio::test]
async fn the_loader_changes_a_run_only_while_it_runs_and_only_its_own() {
    let (s, _config, _landing, _lake) = loaded().await;
    let loader = connect(&s.loader_url).await;
    let mut wrong = Vec::new();
    // Run 1 is closed (succeeded): it never changes again, nor gains files.
    for sql in [finish_sql(1, "failed"), finish_sql(1, "succeeded")] {
        wrong.extend(refused(&loader, &sql, NOT_RUNNING).await);
    }
    // Its key is not the loader's to read, and no guess writes its phase.
    wrong.extend(refused(&loader, "SELECT etl.run_key(1)", DENIED).await);
    wrong.extend(
        refused(
            &loader,
            "SELECT etl.run_phase(1, gen_random_uuid(), 'load')",
            DENIED,
        )
        .await,
    );
    wrong.extend(
        refused(
            &loader,
            "SELECT etl.record_manifest(1, '2019-06-01', '{k}', '{raw/k}', '{1}', '{0}')",
            DENIED,
        )
        .await,
    );
    wrong.extend(
        refused(
            &loader,
            &finish_sql(1, "running"),
            &[SqlState::INVALID_PARAMETER_VALUE],
        )
        .await,
    );

    // A run of this session cannot claim success without a merge that committed.
    let run: i64 = loader
        .query_one(
            "SELECT etl.start_run('2019-06-02', false, false, NULL, NULL)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    wrong.extend(
        refused(
            &loader,
            &finish_sql(run, "succeeded"),
            &[SqlState::CHECK_VIOLATION],
        )
        .await,
    );
    // Another session can neither close it, nor add files to it, nor abandon it while it
    // lives, nor read its key; with the key (the run's second connection has it) it may
    // record a phase, and only a phase a run has.
    let key: String = loader
        .query_one("SELECT etl.run_key($1)::text", &[&run])
        .await
        .unwrap()
        .get(0);
    let other = connect(&s.loader_url).await;
    wrong.extend(refused(&other, &format!("SELECT etl.run_key({run})"), DENIED).await);
    wrong.extend(
        refused(
            &other,
            &format!("SELECT etl.run_phase({run}, gen_random_uuid(), 'list')"),
            DENIED,
        )
        .await,
    );
    for phase in ["merge''); DROP TABLE x; --", "", "LOAD"] {
        wrong.extend(
            refused(
                &other,
                &format!("SELECT etl.run_phase({run}, '{key}', '{phase}')"),
                &[SqlState::INVALID_PARAMETER_VALUE],
            )
            .await,
        );
    }
    wrong.extend(refused(&other, &finish_sql(run, "failed"), DENIED).await);
    wrong.extend(
        refused(
            &other,
            &format!(
                "SELECT etl.record_manifest({run}, '2019-06-02', '{{k}}', '{{raw/k}}', '{{1}}', '{{0}}')"
            ),
            DENIED,
        )
        .await,
    );
    other
        .batch_execute(&format!("SELECT etl.run_phase({run}, '{key}', 'list')"))
        .await
        .unwrap();
    let phase: String = other
        .query_one("SELECT phase FROM etl.load_run WHERE run_id = $1", &[&run])
        .await
        .unwrap()
        .get(0);
    assert_eq!(phase, "list");
    let abandoned = other
        .query("SELECT run_id FROM etl.abandon_dead_runs()", &[])
        .await
        .unwrap();
    assert!(abandoned.is_empty(), "a live run was abandoned");
    loader
        .batch_execute(&finish_sql(run, "failed"))
        .await
        .unwrap();
    assert!(
        wrong.is_empty(),
        "not refused to the loader:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test]
async fn the_loader_touches_a_day_only_inside_a_run_of_that_day() {
    let (s, config, _landing, _lake) = loaded().await;
    let owner = connect(&s.owner_url).await;
    let before = etl_and_dwh(&s.owner_url).await;
    let loader = connect(&s.loader_url).await;
    let mut wrong = Vec::new();
    // No run at all: neither the start of a load, nor a merge, nor applying distances.
    for sql in [
        "BEGIN; CALL dwh.begin_day('2019-06-01'); CALL dwh.merge_day('2019-06-01', 0.001); COMMIT;",
        "CALL dwh.merge_day('2019-06-01')",
        "CALL dwh.apply_distances(NULL)",
    ] {
        wrong.extend(refused(&loader, sql, DENIED).await);
        loader.batch_execute("ROLLBACK").await.unwrap();
    }
    // A run of another day: not this day.
    let run: i64 = loader
        .query_one(
            "SELECT etl.start_run('2030-01-01', false, false, NULL, NULL)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    for sql in [
        "BEGIN; CALL dwh.begin_day('2019-06-01'); COMMIT;",
        "BEGIN; CALL dwh.merge_day('2019-06-01'); COMMIT;",
    ] {
        wrong.extend(refused(&loader, sql, DENIED).await);
        loader.batch_execute("ROLLBACK").await.unwrap();
    }
    // Its own day, but distances applied without the merge that asks for them.
    wrong.extend(
        refused(
            &loader,
            "BEGIN; CALL dwh.begin_day('2030-01-01'); CALL dwh.apply_distances(NULL); COMMIT;",
            DENIED,
        )
        .await,
    );
    loader.batch_execute("ROLLBACK").await.unwrap();
    loader
        .batch_execute(&finish_sql(run, "failed"))
        .await
        .unwrap();
    // Days the warehouse cannot name apart from real ones: refused to everyone.
    for (client, sql) in [
        (
            &loader,
            "SELECT etl.start_run('2019-06-01 BC', false, false, NULL, NULL)",
        ),
        (
            &loader,
            "SELECT etl.start_run('10000-01-01', false, false, NULL, NULL)",
        ),
        (
            &owner,
            "BEGIN; CALL dwh.begin_day('2019-06-01 BC'); COMMIT;",
        ),
        (
            &owner,
            "BEGIN; CALL dwh.merge_day('2019-06-01 BC'); COMMIT;",
        ),
    ] {
        wrong.extend(refused(client, sql, &[SqlState::INVALID_PARAMETER_VALUE]).await);
        client.batch_execute("ROLLBACK").await.unwrap();
    }
    assert!(
        wrong.is_empty(),
        "not refused to the loader:\n{}",
        wrong.join("\n")
    );
    // Nothing of the warehouse changed but the failed run's own record.
    assert_eq!(etl_and_dwh(&s.owner_url).await, before);
    // And a refresh is on record.
    let mut wh = Warehouse::connect(&config.database_url).await.unwrap();
    let rows = wh
        .refresh_distances(d2d_pipeline::warehouse::LoadOptions::default())
        .await
        .unwrap();
    let recorded: (String, Option<i64>, bool) = owner
        .query_one(
            "SELECT role::text, rows, applied_at IS NOT NULL FROM etl.distance_refresh",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .unwrap();
    assert!(recorded.0.starts_with("d2d_t_loader_"), "{recorded:?}");
    assert_eq!((recorded.1, recorded.2), (Some(rows as i64), true));
}

/// Row counts and fingerprints of every dwh table, and the runs' records but for their times
/// and the failed ones.
async fn etl_and_dwh(owner_url: &str) -> (Vec<TableChecksum>, Vec<String>) {
    let owner = Warehouse::connect(owner_url).await.unwrap();
    let runs = owner
        .client()
        .query(
            "SELECT format('%s %s %s', run_id, landing_day, status) FROM etl.load_run
              WHERE status <> 'failed' ORDER BY run_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    (owner.dwh_checksums().await.unwrap(), runs)
}

#[tokio::test]
async fn the_bi_role_reads_the_bi_views_and_nothing_else() {
    let s = setup().await;
    let (landing, lake) = (TempDir::new("landing"), TempDir::new("lake"));
    write_landing(landing.path());
    let config = RunConfig::new(
        landing.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        &s.loader_url,
    );
    run_day(&config, june_1(), &no_events).await.unwrap();

    let owner = connect(&s.owner_url).await;
    let bi = connect(&s.bi_url).await;
    let mut wrong = Vec::new();
    for (schema, table, _, column) in relations(&owner).await {
        let name = format!("{schema}.{table}");
        if schema == "bi" {
            bi.query(&format!("SELECT * FROM {name}"), &[])
                .await
                .unwrap_or_else(|e| panic!("bi reads {name}: {e:?}"));
            for sql in [
                format!("INSERT INTO {name} DEFAULT VALUES"),
                format!("UPDATE {name} SET {column} = {column}"),
                format!("DELETE FROM {name}"),
            ] {
                wrong.extend(refused(&bi, &sql, VIEW_DENIED).await);
            }
        } else {
            for sql in [
                format!("SELECT * FROM {name}"),
                format!("INSERT INTO {name} DEFAULT VALUES"),
                format!("DELETE FROM {name}"),
                format!("TRUNCATE {name}"),
            ] {
                wrong.extend(refused(&bi, &sql, DENIED).await);
            }
        }
    }
    for sql in [
        "CREATE SCHEMA d2d_intruder",
        "CREATE TABLE bi.d2d_intruder (n int)",
        "CREATE VIEW bi.d2d_intruder AS SELECT 1",
        "DROP VIEW bi.avg_distance_overall",
        "CALL dwh.begin_day('2019-06-01')",
        "CALL dwh.merge_day('2019-06-01')",
        "SELECT etl.start_run('2019-06-01', false, false, NULL, NULL)",
        "SELECT * FROM etl.abandon_dead_runs()",
        "SELECT * FROM etl.dwh_checksums()",
    ] {
        wrong.extend(refused(&bi, sql, DENIED).await);
    }
    assert!(wrong.is_empty(), "not refused to BI:\n{}", wrong.join("\n"));
    let one_run: i64 = owner
        .query_one(
            "SELECT count(*) FROM etl.load_run WHERE status = 'succeeded'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(one_run, 1);
}

#[test]
fn with_user_replaces_only_the_credentials() {
    assert_eq!(
        with_user("postgres://d2d:d2d@127.0.0.1:5/x?sslmode=disable", "u"),
        format!("postgres://u:{PASSWORD}@127.0.0.1:5/x?sslmode=disable")
    );
    assert_eq!(
        with_user("postgres://127.0.0.1/x", "u"),
        format!("postgres://u:{PASSWORD}@127.0.0.1/x")
    );
}
