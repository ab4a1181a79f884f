//! The PostgreSQL warehouse: schema migrations, the day's load, the audit trail, BI answers.
//!
//! Schemas: `staging` (one day's parsed rows, only inside a load), `dwh` (dimensions, facts,
//! distances; no run ids or load times, lineage is landing day + source key + line), `bi`
//! (views for analysts), `etl` (runs, file manifests, rejects, migrations). Every table and
//! view is described in `d2d-pipeline/SCHEMA.md`.
//!
//! A day is loaded in one transaction: binary COPY of each file's rows into staging, then
//! `CALL dwh.merge_day(day, max_speed)`, which replaces the day's facts, refreshes the
//! dimensions they touch, names the (period, vehicle) pairs whose distance the day changes,
//! replaces the day's rejects and empties staging; then the loader computes those distances
//! with `d2d_model::distance` (the day's fixes from what it spilled while parsing, the other
//! days' through the track index) and applies them. A failure anywhere leaves the warehouse as
//! it was; loading a day again gives the same tables. [`Warehouse::refresh_distances`]
//! recomputes every distance without loading a day.
//!
//! ```no_run
//! # async fn run() -> d2d_pipeline::Result<()> {
//! use d2d_pipeline::warehouse::{LoadOptions, Warehouse};
//! let mut wh = Warehouse::connect("postgres://d2d:d2d@127.0.0.1:54329/d2d").await?;
//! wh.migrate().await?;
//! let day = chrono::NaiveDate::from_ymd_opt(2019, 6, 1).unwrap();
//! let key = "data/2019-06-01-15-17-3-events.json";
//! let parsed = d2d_model::parse_bytes(key, b"...");
//! let mut load = wh.begin_day(day, LoadOptions::default()).await?;
//! load.add_file(key, &parsed).await?;
//! let report = load.commit().await?;
//! println!("{} events, {} rejects", report.events, report.rejects);
//! for row in wh.period_averages().await? {
//!     println!("{}: {:?} m", row.operating_period_id, row.avg_metres);
//! }
//! # Ok(()) }
//! ```

mod audit;
mod connect;
mod distance;
mod load;
mod migrate;
mod seen;
mod spill;
mod vehicle_day;

use chrono::NaiveDate;
use tokio_postgres::{Client, NoTls};

pub use audit::{
    AbandonedRun, ManifestEntry, PhaseTimes, RunCounts, RunId, RunKey, RunStart, RunStatus,
};
pub use connect::{DatabaseUrl, SslMode};
pub use load::{DayLoad, DayLoadReport, LoadOptions, RowsLoaded, SpooledDay, BATCH_ROWS};
pub use migrate::{Migration, MigrationReport, MIGRATIONS};
pub use spill::DayRows;
pub(crate) use spill::SpilledRow;

use crate::error::{Error, Result};

/// How long connecting to the warehouse may take when the URL sets no `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A connection to the warehouse.
pub struct Warehouse {
    client: Client,
}

/// One row of `bi.avg_distance_per_operating_period`.
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodAverage {
    /// The operating period.
    pub operating_period_id: String,
    /// Vehicles with at least one fix in the period.
    pub vehicles: i64,
    /// Mean metres per vehicle; `None` without vehicles.
    pub avg_metres: Option<f64>,
    /// Metres of all its vehicles.
    pub total_metres: f64,
}

/// The row of `bi.avg_distance_overall`.
#[derive(Debug, Clone, PartialEq)]
pub struct OverallAverage {
    /// Non-deleted operating periods.
    pub periods: i64,
    /// (period, vehicle) pairs with a fix.
    pub pairs: i64,
    /// Mean metres over the pairs; `None` without pairs.
    pub avg_metres: Option<f64>,
}

/// Fingerprint of one dwh table, from `etl.dwh_checksums()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableChecksum {
    /// Table name in schema `dwh`.
    pub table: String,
    /// Its rows.
    pub rows: i64,
    /// md5 of all rows' text, sorted.
    pub md5: String,
}

impl Warehouse {
    /// Connects with a libpq URL; TLS as its `sslmode` says (see [`DatabaseUrl`]).
    ///
    /// Connecting — TCP, TLS, authentication — takes at most the URL's `connect_timeout`
    /// (libpq's parameter, in seconds), or [`DEFAULT_CONNECT_TIMEOUT`] when it sets none; a
    /// server that accepts the connection and never answers fails with [`Error::Timeout`]
    /// naming it. Statements have no client-side limit (a day's merge may rightly take long);
    /// the server's `statement_timeout` can be set in the URL
    /// (`options=-c%20statement_timeout%3D30min`).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(&DatabaseUrl::parse(url)?).await
    }

    /// Connects with an already parsed URL.
    pub async fn connect_with(url: &DatabaseUrl) -> Result<Self> {
        let target = describe_target(&url.config);
        let limit = url
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        // tokio-postgres applies `connect_timeout` to the TCP connect alone: a server that
        // accepts and then stays silent (during TLS, startup or authentication) would keep
        // the job waiting for ever. The whole handshake gets the limit instead.
        let mut config = url.config.clone();
        config.connect_timeout(limit);
        let connecting = async {
            match url.tls()? {
                None => {
                    let (client, connection) = config.connect(NoTls).await.map_err(|e| {
                        db_error(connect_context(url, &e, "connect to", &target))(e)
                    })?;
                    spawn_connection(connection);
                    Ok(client)
                }
                Some(tls) => {
                    let (client, connection) = config.connect(tls).await.map_err(|e| {
                        db_error(connect_context(url, &e, "connect with TLS to", &target))(e)
                    })?;
                    spawn_connection(connection);
                    Ok(client)
                }
            }
        };
        let client = tokio::time::timeout(limit, connecting)
            .await
            .map_err(|_| Error::Timeout {
                service: format!("warehouse {target}"),
                operation: "connect",
                after: limit,
                hint: "connect_timeout in the database URL, or --db-connect-timeout",
            })??;
        // A job that dies or is stopped mid-statement (a long merge) closes its socket; the
        // server notices within a second instead of at the statement's end, so the run's
        // session, its lock and its transaction end at once.
        client
            .batch_execute("SET client_connection_check_interval = '1s'")
            .await
            .map_err(db_error(format!("set up the session on {target}")))?;
        Ok(Self { client })
    }

    /// The underlying client, for queries of your own.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The client, to open transactions of the crate's own.
    pub(crate) fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }

    /// Applies the pending [`MIGRATIONS`] in one transaction, under an advisory lock (a
    /// concurrent runner waits, then finds nothing to do). Refuses a database where an applied
    /// migration's text changed, or that knows a version this build does not.
    pub async fn migrate(&mut self) -> Result<MigrationReport> {
        migrate::migrate(&mut self.client).await
    }

    /// Applies the pending migrations up to and including `version` only: to stage an
    /// upgrade (or test one) on a copy of a warehouse. The daily run always migrates fully.
    pub async fn migrate_to(&mut self, version: i32) -> Result<MigrationReport> {
        migrate::migrate_to(&mut self.client, version).await
    }

    /// The migrations this database still lacks; reading needs no schema rights.
    pub async fn pending_migrations(&self) -> Result<Vec<&'static Migration>> {
        migrate::pending(&self.client).await
    }

    /// Starts loading landing day `day`: opens the transaction and takes the load lock (another
    /// load waits until this one commits or rolls back).
    pub async fn begin_day(&mut self, day: NaiveDate, options: LoadOptions) -> Result<DayLoad<'_>> {
        let tx = self
            .client
            .transaction()
            .await
            .map_err(db_error("begin the load transaction"))?;
        DayLoad::begin(tx, day, options).await
    }

    /// Recomputes every distance of the warehouse under `options`' rule, which becomes the
    /// warehouse's: for a new rule without loading a day, or after a repair. One transaction
    /// under the load lock, with the loader's kernel (`d2d_model::distance`), every day's
    /// fixes read through the track index; returns the rows written.
    pub async fn refresh_distances(&mut self, options: LoadOptions) -> Result<u64> {
        load::check_options(&options)?;
        let tx = self
            .client
            .transaction()
            .await
            .map_err(db_error("starting the distance refresh"))?;
        tx.execute(
            "CALL dwh.begin_distance_refresh($1)",
            &[&options.max_speed_mps],
        )
        .await
        .map_err(db_error("staging every distance pair"))?;
        let rule = d2d_model::distance::DistanceOptions {
            max_speed_mps: options.max_speed_mps,
        };
        let rows = distance::compute(&tx, None, None, &rule).await?;
        tx.commit()
            .await
            .map_err(db_error("committing the distance refresh"))?;
        Ok(rows)
    }

    /// `bi.avg_distance_per_operating_period`, sorted by period id.
    pub async fn period_averages(&self) -> Result<Vec<PeriodAverage>> {
        let rows = self
            .client
            .query(
                "SELECT operating_period_id, vehicles, avg_metres, total_metres
                   FROM bi.avg_distance_per_operating_period ORDER BY operating_period_id",
                &[],
            )
            .await
            .map_err(db_error("read bi.avg_distance_per_operating_period"))?;
        Ok(rows
            .iter()
            .map(|r| PeriodAverage {
                operating_period_id: r.get(0),
                vehicles: r.get(1),
                avg_metres: r.get(2),
                total_metres: r.get(3),
            })
            .collect())
    }

    /// `bi.avg_distance_overall`.
    pub async fn overall_average(&self) -> Result<OverallAverage> {
        let r = self
            .client
            .query_one(
                "SELECT periods, pairs, avg_metres FROM bi.avg_distance_overall",
                &[],
            )
            .await
            .map_err(db_error("read bi.avg_distance_overall"))?;
        Ok(OverallAverage {
            periods: r.get(0),
            pairs: r.get(1),
            avg_metres: r.get(2),
        })
    }

    /// Fingerprints of every dwh table: equal lists mean equal tables, row for row.
    pub async fn dwh_checksums(&self) -> Result<Vec<TableChecksum>> {
        let rows = self
            .client
            .query(
                "SELECT table_name, row_count, md5 FROM etl.dwh_checksums()",
                &[],
            )
            .await
            .map_err(db_error("compute dwh checksums"))?;
        Ok(rows
            .iter()
            .map(|r| TableChecksum {
                table: r.get(0),
                rows: r.get(1),
                md5: r.get(2),
            })
            .collect())
    }
}

fn spawn_connection<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %describe(&e), "PostgreSQL connection closed with an error");
        }
    });
}

/// "connect to host:port/db", and why it failed when the TLS settings explain it.
fn connect_context(
    url: &DatabaseUrl,
    error: &tokio_postgres::Error,
    doing: &str,
    target: &str,
) -> String {
    match url.explain_failure(error) {
        Some(why) => format!("{doing} {target}: {why}"),
        None => format!("{doing} {target}"),
    }
}

/// `host:port/db` for messages; never the password.
fn describe_target(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("(default)");
    format!("{host}:{port}/{db}")
}

/// The server's whole message (severity, text, detail, hint, where) or the driver's error.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!(
                "{}: {} (SQLSTATE {})",
                db.severity(),
                db.message(),
                db.code().code()
            );
            if let Some(d) = db.detail() {
                s.push_str(&format!("; detail: {d}"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!("; hint: {h}"));
            }
            if let Some(w) = db.where_() {
                s.push_str(&format!("; where: {}", w.replace('\n', " / ")));
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                s.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            s
        }
    }
}

pub(crate) fn db_error(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> Error {
    let context = context.into();
    move |source| Error::Database {
        context,
        detail: describe(&source),
        source,
    }
}
