//! The lake's curated zone: the warehouse's facts and distances as Parquet files that Spark,
//! DuckDB, Athena or Trino read without PostgreSQL.
//!
//! ```text
//! curated/vehicle_event/landing_day=YYYY-MM-DD/part-0.parquet     dwh.fact_vehicle_event of D
//! curated/period_event/landing_day=YYYY-MM-DD/part-0.parquet      dwh.fact_period_event of D
//! curated/vehicle_period_distance/start_day=YYYY-MM-DD/part-0.parquet
//!                                           dwh.vehicle_period_distance, by the period's start
//! ```
//!
//! Written after a load commits, so the zone holds exactly what the warehouse holds:
//! duplicates dropped, periods resolved. The day's vehicle events — nearly all of the day —
//! come from the rows the loader spilled while parsing ([`write_day_with_rows`]: sorted by the
//! loader, less the duplicates the merge reports it dropped), so the day is not read back from
//! PostgreSQL; its period events and the distances come from the warehouse (one read-only
//! snapshot). [`write_day`] reads the vehicle events from the warehouse too. Hive-style
//! partitions: the partition column (`landing_day`, `start_day`) is in the path, not in the
//! file; every other column has the warehouse's name, timestamps are UTC microseconds
//! (`source_time`, the file-name clock, has no time zone, as in the warehouse); labels with few
//! values (`source_key`, `event`, `organization_id`) are dictionary-encoded. The schemas are
//! `d2d_model::columnar`'s, the very ones of the Python bindings' tables, so the lake and a
//! notebook cannot disagree on a column. Rows are sorted by vehicle then time (distances by
//! period then vehicle), sorted by PostgreSQL and streamed out by a binary
//! `COPY (SELECT …) TO STDOUT` into Arrow batches, which a blocking thread encodes while the
//! next batch is read: memory does not grow with the day (a few batches and the row group
//! being encoded). `COPY` rather than a cursor because a cursor's plan may not run in parallel
//! and each `FETCH` is a round trip; the sort of a 1 M-event day is most of the phase. zstd,
//! page statistics and page indexes are on.
//!
//! Each partition is one file under a fixed name, replaced by one atomic write: a reader
//! sees the old day or the new one, never both, and nothing stale is left (a partition whose
//! rows are gone is deleted). Distance partitions are rewritten only when their content
//! changed, as told by a fingerprint per partition kept in
//! `curated/vehicle_period_distance/_fingerprints.json` (engines skip `_` files).

use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, Float64Builder, Int64Builder, StringBuilder, StringDictionaryBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::SchemaRef;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use d2d_model::columnar::{self, Column, Kind};
use futures_util::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use tokio_postgres::binary_copy::{BinaryCopyOutRow, BinaryCopyOutStream};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Transaction;

use crate::error::{Error, Result};
use crate::store::Store;
use crate::warehouse::{db_error, DayRows, SpilledRow, Warehouse};

/// Prefix of the curated zone in the lake.
pub const CURATED_PREFIX: &str = "curated/";

/// Rows per Arrow batch handed to the encoder: Arrow's usual size, small enough that the
/// sample day (35 k events) spans several batches, so the tests cross batch boundaries.
const BATCH_ROWS: usize = 8_192;

/// Batches decoded ahead of the encoder: what bounds memory while the two overlap.
const BATCHES_AHEAD: usize = 4;

/// The transaction-local setting that carries a partition's value into its `COPY`, which
/// takes no bind parameters: the value is still sent as a parameter (of `set_config`), never
/// spliced into the SQL.
const PARTITION_SETTING: &str = "d2d.curated_partition";

/// Rows per Parquet row group: large enough for engines to skip by statistics, small enough
/// that the row group being encoded stays a few tens of MB.
const ROW_GROUP_ROWS: usize = 256 * 1024;

/// The file name of every partition.
const PART: &str = "part-0.parquet";

/// A curated table: which columns, from where, in which order.
#[derive(Debug)]
struct Table {
    /// Folder under [`CURATED_PREFIX`].
    name: &'static str,
    /// Hive partition column, in the path only.
    partition: &'static str,
    /// The columns, in the SQL and in the file: `d2d_model::columnar`'s declaration.
    columns: &'static [Column],
    /// `FROM … WHERE …`, the partition value read from [`PARTITION_SETTING`] (a `date`).
    from_where: &'static str,
    /// The sort, as SQL and as the file's declared sorting columns.
    order_by: &'static [&'static str],
}

const VEHICLE_EVENT: Table = Table {
    name: "vehicle_event",
    partition: "landing_day",
    columns: columnar::VEHICLE_EVENT,
    from_where: "FROM dwh.fact_vehicle_event \
                 WHERE landing_day = current_setting('d2d.curated_partition')::date",
    order_by: &[
        "vehicle_id",
        "location_at",
        "event_at",
        "source_key",
        "line",
    ],
};

const PERIOD_EVENT: Table = Table {
    name: "period_event",
    partition: "landing_day",
    columns: columnar::PERIOD_EVENT,
    from_where: "FROM dwh.fact_period_event \
                 WHERE landing_day = current_setting('d2d.curated_partition')::date",
    order_by: &["operating_period_id", "event_at", "source_key", "line"],
};

const DISTANCE: Table = Table {
    name: "vehicle_period_distance",
    partition: "start_day",
    columns: columnar::DISTANCE,
    from_where: "FROM dwh.vehicle_period_distance AS d \
                 JOIN dwh.dim_operating_period AS p USING (operating_period_id) \
                 WHERE (p.start_at AT TIME ZONE 'UTC')::date \
                     = current_setting('d2d.curated_partition')::date",
    order_by: &["operating_period_id", "vehicle_id"],
};

/// The period's start day (UTC) of each distance row, its row count and an MD5 of its rows:
/// what tells a load which distance partitions changed.
const DISTANCE_FINGERPRINTS: &str = "\
SELECT (p.start_at AT TIME ZONE 'UTC')::date AS start_day,
       count(*)::bigint || ':' || md5(string_agg(
           concat_ws('|', d.operating_period_id, d.vehicle_id, d.fixes,
                     (extract(epoch FROM d.first_at) * 1000000)::bigint,
                     (extract(epoch FROM d.last_at) * 1000000)::bigint,
                     d.metres::text),
           E'\\n' ORDER BY d.operating_period_id, d.vehicle_id)) AS fingerprint
  FROM dwh.vehicle_period_distance AS d
  JOIN dwh.dim_operating_period AS p USING (operating_period_id)
 GROUP BY 1";

impl Table {
    fn schema(&self) -> SchemaRef {
        columnar::schema(self.columns)
    }

    fn query(&self) -> String {
        let select: Vec<&str> = self.columns.iter().map(|c| c.name()).collect();
        format!(
            "SELECT {} {} ORDER BY {}",
            select.join(", "),
            self.from_where,
            self.order_by.join(", ")
        )
    }

    /// The query as a binary `COPY` out.
    fn copy_out(&self) -> String {
        format!("COPY ({}) TO STDOUT (FORMAT binary)", self.query())
    }

    /// The PostgreSQL types of the columns, as the binary `COPY` sends them.
    fn pg_types(&self) -> Vec<Type> {
        self.columns
            .iter()
            .map(|c| match c.kind() {
                Kind::Text | Kind::Label => Type::TEXT,
                Kind::Binary => Type::BYTEA,
                Kind::Int64 => Type::INT8,
                Kind::Float64 => Type::FLOAT8,
                Kind::Timestamp => Type::TIMESTAMP,
                Kind::TimestampUtc => Type::TIMESTAMPTZ,
            })
            .collect()
    }

    fn sorting_columns(&self) -> Vec<SortingColumn> {
        self.order_by
            .iter()
            .filter_map(|name| self.columns.iter().position(|c| c.name() == *name))
            .map(|i| SortingColumn {
                column_idx: i as i32,
                descending: false,
                nulls_first: false,
            })
            .collect()
    }

    fn key(&self, value: NaiveDate) -> String {
        format!(
            "{CURATED_PREFIX}{}/{}={value}/{PART}",
            self.name, self.partition
        )
    }

    fn folder(&self) -> String {
        format!("{CURATED_PREFIX}{}/", self.name)
    }
}

/// The file key of the day's vehicle events.
pub fn vehicle_event_key(day: NaiveDate) -> String {
    VEHICLE_EVENT.key(day)
}

/// The file key of the day's operating-period events.
pub fn period_event_key(day: NaiveDate) -> String {
    PERIOD_EVENT.key(day)
}

/// The file key of the distances of the periods starting on `start_day` (UTC).
pub fn distance_key(start_day: NaiveDate) -> String {
    DISTANCE.key(start_day)
}

/// The key of the distance partitions' fingerprints.
pub fn distance_fingerprints_key() -> String {
    format!("{}_fingerprints.json", DISTANCE.folder())
}

/// What one write of the curated zone did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CuratedReport {
    /// Rows in the day's vehicle-event file.
    pub vehicle_events: u64,
    /// Rows in the day's period-event file.
    pub period_events: u64,
    /// Distance partitions written (new or changed).
    pub distance_partitions_written: u64,
    /// Distance partitions deleted (their periods are gone or deleted).
    pub distance_partitions_deleted: u64,
    /// Distance partitions left as they were.
    pub distance_partitions_unchanged: u64,
    /// Bytes of Parquet written.
    pub bytes: u64,
}

/// One column being filled.
enum Builder {
    Text(StringBuilder),
    Label(StringDictionaryBuilder<Int32Type>),
    Binary(BinaryBuilder),
    Int8(Int64Builder),
    Float8(Float64Builder),
    Timestamp(TimestampMicrosecondBuilder),
}

impl Builder {
    fn new(kind: Kind) -> Self {
        match kind {
            Kind::Text => Builder::Text(StringBuilder::new()),
            Kind::Label => Builder::Label(StringDictionaryBuilder::new()),
            Kind::Binary => Builder::Binary(BinaryBuilder::new()),
            Kind::Int64 => Builder::Int8(Int64Builder::new()),
            Kind::Float64 => Builder::Float8(Float64Builder::new()),
            Kind::Timestamp => Builder::Timestamp(TimestampMicrosecondBuilder::new()),
            Kind::TimestampUtc => {
                Builder::Timestamp(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
            }
        }
    }

    fn append(
        &mut self,
        kind: Kind,
        row: &BinaryCopyOutRow,
        i: usize,
    ) -> std::result::Result<(), String> {
        let err = |e: tokio_postgres::Error| e.to_string();
        match (self, kind) {
            (Builder::Text(b), _) => b.append_option(row.try_get::<Option<&str>>(i).map_err(err)?),
            (Builder::Label(b), _) => b.append_option(row.try_get::<Option<&str>>(i).map_err(err)?),
            (Builder::Binary(b), _) => {
                b.append_option(row.try_get::<Option<&[u8]>>(i).map_err(err)?)
            }
            (Builder::Int8(b), _) => b.append_option(row.try_get::<Option<i64>>(i).map_err(err)?),
            (Builder::Float8(b), _) => b.append_option(row.try_get::<Option<f64>>(i).map_err(err)?),
            (Builder::Timestamp(b), Kind::Timestamp) => b.append_option(
                row.try_get::<Option<NaiveDateTime>>(i)
                    .map_err(err)?
                    .map(|t| t.and_utc().timestamp_micros()),
            ),
            (Builder::Timestamp(b), _) => b.append_option(
                row.try_get::<Option<DateTime<Utc>>>(i)
                    .map_err(err)?
                    .map(|t| t.timestamp_micros()),
            ),
        }
        Ok(())
    }

    /// Appends a value the loader kept (not read from PostgreSQL).
    fn push(&mut self, value: Value<'_>) -> std::result::Result<(), String> {
        match (self, value) {
            (Builder::Text(b), Value::Text(v)) => b.append_option(v),
            (Builder::Label(b), Value::Text(v)) => b.append_option(v),
            (Builder::Int8(b), Value::Int(v)) => b.append_option(v),
            (Builder::Float8(b), Value::Float(v)) => b.append_option(v),
            (Builder::Timestamp(b), Value::Micros(v)) => b.append_option(v),
            (_, v) => return Err(format!("a {v:?} does not fit the column's type")),
        }
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::Label(b) => Arc::new(b.finish()),
            Builder::Binary(b) => Arc::new(b.finish()),
            Builder::Int8(b) => Arc::new(b.finish()),
            Builder::Float8(b) => Arc::new(b.finish()),
            Builder::Timestamp(b) => Arc::new(b.finish()),
        }
    }
}

/// A value of a row the loader kept, for [`Builder::push`].
#[derive(Debug)]
enum Value<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
    Float(Option<f64>),
    /// Microseconds since 1970 (UTC, or the file-name clock for `source_time`).
    Micros(Option<i64>),
}

/// Column `name` of a vehicle-event row of the loader's spill.
fn vehicle_value<'a>(rows: &'a DayRows, r: &SpilledRow, name: &str) -> Option<Value<'a>> {
    let spill = rows.spill();
    Some(match name {
        "source_key" => Value::Text(Some(spill.source(r.source).0)),
        "line" => Value::Int(Some(r.line)),
        "source_time" => Value::Micros(
            spill
                .source(r.source)
                .1
                .map(|t| t.and_utc().timestamp_micros()),
        ),
        "event" => Value::Text(Some(r.verb())),
        "vehicle_id" => Value::Text(Some(spill.vehicle(r.slot))),
        "organization_id" => Value::Text(Some(spill.organization(r.org))),
        "event_at" => Value::Micros(Some(r.event_at)),
        "lat" => Value::Float(r.location.map(|l| l.0)),
        "lng" => Value::Float(r.location.map(|l| l.1)),
        "location_at" => Value::Micros(r.location.map(|l| l.2)),
        _ => return None,
    })
}

fn parquet_error(key: &str) -> impl Fn(String) -> Error + '_ {
    move |detail| Error::Curated {
        key: key.to_string(),
        detail,
    }
}

fn writer_properties(table: &Table) -> Result<WriterProperties> {
    let zstd = ZstdLevel::try_new(3).map_err(|e| Error::Internal {
        context: format!("zstd level 3: {e}"),
    })?;
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(zstd))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_sorting_columns(Some(table.sorting_columns()))
        .set_created_by(format!("d2d {}", env!("CARGO_PKG_VERSION")))
        .build())
}

/// Writes one partition of `table` from the snapshot `tx` to the lake; returns its rows and
/// bytes. A partition without rows is deleted instead.
///
/// Two stages overlap: this task decodes the `COPY` stream into Arrow batches, a blocking
/// thread encodes them (zstd, statistics) into a temporary file, joined by a queue of
/// [`BATCHES_AHEAD`] batches.
async fn write_partition(
    tx: &Transaction<'_>,
    lake: &Store,
    table: &Table,
    value: NaiveDate,
) -> Result<(u64, u64)> {
    let key = table.key(value);
    let fail = parquet_error(&key);
    let reading = || db_error(format!("reading {key}"));
    let params: [&(dyn ToSql + Sync); 2] = [&PARTITION_SETTING, &value.to_string()];
    tx.execute("SELECT set_config($1, $2, true)", &params)
        .await
        .map_err(reading())?;
    let stream = tx.copy_out(&table.copy_out()).await.map_err(reading())?;
    let rows = BinaryCopyOutStream::new(stream, &table.pg_types());
    let mut rows = pin!(rows);

    let (spool, file) = parquet_spool(&key)?;
    let schema = table.schema();
    let writer = ArrowWriter::try_new(file, schema.clone(), Some(writer_properties(table)?))
        .map_err(|e| fail(e.to_string()))?;
    let (batches, mut queue) = tokio::sync::mpsc::channel::<RecordBatch>(BATCHES_AHEAD);
    let encoder = tokio::task::spawn_blocking(move || {
        let mut writer = writer;
        while let Some(batch) = queue.blocking_recv() {
            writer.write(&batch)?;
        }
        writer.close().map(drop)
    });

    let mut count = 0_u64;
    let decoded: Result<()> = async {
        let mut builders = new_builders(table);
        let mut in_batch = 0;
        while let Some(row) = rows.next().await {
            let row = row.map_err(reading())?;
            for (i, (b, c)) in builders.iter_mut().zip(table.columns).enumerate() {
                b.append(c.kind(), &row, i)
                    .map_err(|e| fail(format!("column {}: {e}", c.name())))?;
            }
            in_batch += 1;
            if in_batch == BATCH_ROWS {
                let batch = finish_batch(&schema, &mut builders).map_err(&fail)?;
                if batches.send(batch).await.is_err() {
                    // The encoder stopped: its error is reported below.
                    return Ok(());
                }
                count += in_batch as u64;
                in_batch = 0;
            }
        }
        if in_batch > 0 {
            let batch = finish_batch(&schema, &mut builders).map_err(&fail)?;
            if batches.send(batch).await.is_ok() {
                count += in_batch as u64;
            }
        }
        Ok(())
    }
    .await;
    drop(batches);
    let encoded = encoder
        .await
        .map_err(|e| fail(format!("the encoder thread: {e}")))?;
    decoded?;
    encoded.map_err(|e| fail(e.to_string()))?;
    publish(lake, &key, &spool, count).await
}

/// A temporary file for a partition's Parquet, and a second handle on it for the writer.
fn parquet_spool(key: &str) -> Result<(tempfile::NamedTempFile, std::fs::File)> {
    let fail = parquet_error(key);
    let spool = crate::scratch::file(crate::scratch::FileKind::Curated)
        .map_err(|e| fail(format!("temporary file: {e}")))?;
    let file = spool
        .reopen()
        .map_err(|e| fail(format!("temporary file: {e}")))?;
    Ok((spool, file))
}

/// Puts the partition's finished file under `key` (one atomic write), or deletes the
/// partition when it has no rows; returns its rows and bytes.
async fn publish(
    lake: &Store,
    key: &str,
    spool: &tempfile::NamedTempFile,
    rows: u64,
) -> Result<(u64, u64)> {
    if rows == 0 {
        lake.delete(key).await?;
        return Ok((0, 0));
    }
    let bytes = spool
        .as_file()
        .metadata()
        .map_err(|e| parquet_error(key)(format!("temporary file: {e}")))?
        .len();
    lake.put_file(key, spool.path()).await?;
    Ok((rows, bytes))
}

fn new_builders(table: &Table) -> Vec<Builder> {
    table
        .columns
        .iter()
        .map(|c| Builder::new(c.kind()))
        .collect()
}

/// The rows appended so far as one batch; the builders are left empty for the next.
fn finish_batch(
    schema: &SchemaRef,
    builders: &mut [Builder],
) -> std::result::Result<RecordBatch, String> {
    let arrays: Vec<ArrayRef> = builders.iter_mut().map(Builder::finish).collect();
    RecordBatch::try_new(schema.clone(), arrays).map_err(|e| e.to_string())
}

/// Partition values present under a table's folder, from the keys of its files.
async fn listed_partitions(lake: &Store, table: &Table) -> Result<Vec<NaiveDate>> {
    let folder = table.folder();
    let prefix = format!("{folder}{}=", table.partition);
    let suffix = format!("/{PART}");
    Ok(lake
        .list(&prefix)
        .await?
        .into_iter()
        .filter_map(|o| {
            let value = o.key.strip_prefix(&prefix)?.strip_suffix(&suffix)?;
            NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()
        })
        .collect())
}

async fn read_fingerprints(lake: &Store) -> Result<BTreeMap<NaiveDate, String>> {
    let key = distance_fingerprints_key();
    if lake.head(&key).await?.is_none() {
        return Ok(BTreeMap::new());
    }
    let bytes = lake.get(&key).await?;
    // Unreadable fingerprints only cost a rewrite of every partition.
    Ok(serde_json::from_slice(&bytes).unwrap_or_default())
}

/// Writes the day's vehicle-event file from the rows the loader spilled
/// ([`crate::warehouse::DayLoad::commit_with_rows`]): sorted by the loader, the merge's dropped
/// duplicates left out, the same rows, order and encoding as a read of the day's partition
/// would give. Sorting and encoding run on a blocking thread; memory holds one spill bucket,
/// a batch and the row group being encoded.
async fn write_vehicle_events_from(
    lake: &Store,
    day: NaiveDate,
    rows: DayRows,
) -> Result<(u64, u64)> {
    let key = VEHICLE_EVENT.key(day);
    let fail = parquet_error(&key);
    let (spool, file) = parquet_spool(&key)?;
    let properties = writer_properties(&VEHICLE_EVENT)?;
    let task_key = key.clone();
    let count = tokio::task::spawn_blocking(move || -> Result<u64> {
        let fail = parquet_error(&task_key);
        let table = &VEHICLE_EVENT;
        let schema = table.schema();
        let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(properties))
            .map_err(|e| fail(e.to_string()))?;
        let mut builders = new_builders(table);
        let (mut in_batch, mut count) = (0, 0_u64);
        rows.sorted(|r| {
            for (b, c) in builders.iter_mut().zip(table.columns) {
                let value = vehicle_value(&rows, r, c.name())
                    .ok_or_else(|| fail(format!("no column {} in a spilled row", c.name())))?;
                b.push(value)
                    .map_err(|e| fail(format!("column {}: {e}", c.name())))?;
            }
            in_batch += 1;
            if in_batch == BATCH_ROWS {
                let batch = finish_batch(&schema, &mut builders).map_err(&fail)?;
                writer.write(&batch).map_err(|e| fail(e.to_string()))?;
                count += in_batch as u64;
                in_batch = 0;
            }
            Ok(())
        })?;
        if in_batch > 0 {
            let batch = finish_batch(&schema, &mut builders).map_err(&fail)?;
            writer.write(&batch).map_err(|e| fail(e.to_string()))?;
            count += in_batch as u64;
        }
        writer.close().map_err(|e| fail(e.to_string()))?;
        Ok(count)
    })
    .await
    .map_err(|e| fail(format!("the encoder thread: {e}")))??;
    publish(lake, &key, &spool, count).await
}

/// Writes the curated zone for `day` from the warehouse: the day's two fact partitions and
/// every distance partition whose rows changed. Run after the day's load committed; reads one
/// consistent snapshot.
pub async fn write_day(wh: &mut Warehouse, lake: &Store, day: NaiveDate) -> Result<CuratedReport> {
    write_day_from(wh, lake, day, None).await
}

/// [`write_day`], with the day's vehicle events taken from the rows the load kept
/// ([`crate::warehouse::DayLoad::commit_with_rows`]) instead of read back from the
/// warehouse: the day is not read from PostgreSQL at all (its period events and the
/// distances, a few rows, still are).
pub async fn write_day_with_rows(
    wh: &mut Warehouse,
    lake: &Store,
    day: NaiveDate,
    rows: DayRows,
) -> Result<CuratedReport> {
    write_day_from(wh, lake, day, Some(rows)).await
}

async fn write_day_from(
    wh: &mut Warehouse,
    lake: &Store,
    day: NaiveDate,
    rows: Option<DayRows>,
) -> Result<CuratedReport> {
    let mut report = CuratedReport::default();
    let from_rows = rows.is_some();
    if let Some(rows) = rows {
        let (n, bytes) = write_vehicle_events_from(lake, day, rows).await?;
        report.vehicle_events = n;
        report.bytes += bytes;
    }
    under_zone_lock(wh, async |wh| {
        let tx = snapshot(wh).await?;
        #[cfg(debug_assertions)]
        test_gate(&tx, day).await?;
        write_day_snapshot(&tx, lake, day, from_rows, &mut report).await?;
        tx.commit()
            .await
            .map_err(db_error("closing the curated zone's snapshot"))
    })
    .await?;
    Ok(report)
}

/// The partitions of `day` and the changed distances, from the snapshot `tx`; the day's
/// vehicle events too unless `from_rows` (then the load's rows wrote them).
async fn write_day_snapshot(
    tx: &Transaction<'_>,
    lake: &Store,
    day: NaiveDate,
    from_rows: bool,
    report: &mut CuratedReport,
) -> Result<()> {
    if !from_rows {
        let (rows, bytes) = write_partition(tx, lake, &VEHICLE_EVENT, day).await?;
        report.vehicle_events = rows;
        report.bytes += bytes;
    }
    let (rows, bytes) = write_partition(tx, lake, &PERIOD_EVENT, day).await?;
    report.period_events = rows;
    report.bytes += bytes;
    write_changed_distances(tx, lake, report).await
}

/// Test-only, in debug builds (the tests that race two days' curate phases): with
/// `D2D_TEST_CURATE_GATE=<day>:<path>` in the environment, the curate phase of landing day
/// `<day>` fixes its snapshot, creates `<path>.waiting`, then waits until `<path>` exists.
#[cfg(debug_assertions)]
async fn test_gate(tx: &Transaction<'_>, day: NaiveDate) -> Result<()> {
    let Ok(gate) = std::env::var("D2D_TEST_CURATE_GATE") else {
        return Ok(());
    };
    let Some((gated, path)) = gate.split_once(':') else {
        return Ok(());
    };
    if gated != day.to_string() {
        return Ok(());
    }
    tx.execute("SELECT 1", &[])
        .await
        .map_err(db_error("fixing the curated zone's snapshot"))?;
    let waiting = format!("{path}.waiting");
    std::fs::write(&waiting, b"")
        .map_err(|e| Error::Config(format!("D2D_TEST_CURATE_GATE: {waiting}: {e}")))?;
    while !std::path::Path::new(path).exists() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Key of the session-level advisory lock under which the curated zone reads its snapshot
/// and writes from it.
const ZONE_LOCK: i64 = 2_032_060_104;

/// Runs `work` holding [`ZONE_LOCK`]. Taken before the snapshot (a repeatable-read snapshot
/// is fixed by its first statement, so a lock taken inside it would be waited for with an
/// old snapshot), it orders the writers: the one that writes last read last, after every
/// load committed before it started. Without it, a slow run of day 1 wrote its older
/// distances over those of a day 2 that committed and curated in the meantime. PostgreSQL
/// releases the lock if the process dies.
async fn under_zone_lock<T>(
    wh: &mut Warehouse,
    work: impl AsyncFnOnce(&mut Warehouse) -> Result<T>,
) -> Result<T> {
    wh.client()
        .execute("SELECT pg_advisory_lock($1)", &[&ZONE_LOCK])
        .await
        .map_err(db_error("waiting for the curated zone's lock"))?;
    let result = work(wh).await;
    let unlocked = wh
        .client()
        .execute("SELECT pg_advisory_unlock($1)", &[&ZONE_LOCK])
        .await
        .map_err(db_error("releasing the curated zone's lock"));
    let value = result?;
    unlocked?;
    Ok(value)
}

/// One read-only, repeatable-read transaction: everything the zone reads of the warehouse in
/// one write comes from the same committed state.
async fn snapshot(wh: &mut Warehouse) -> Result<Transaction<'_>> {
    wh.client_mut()
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(db_error("starting the curated zone's snapshot"))
}

/// Rewrites the distance partitions whose rows changed, from the warehouse: what a distance
/// refresh ([`Warehouse::refresh_distances`]) leaves to do in the lake.
pub async fn write_distances(wh: &mut Warehouse, lake: &Store) -> Result<CuratedReport> {
    let mut report = CuratedReport::default();
    under_zone_lock(wh, async |wh| {
        let tx = snapshot(wh).await?;
        write_changed_distances(&tx, lake, &mut report).await?;
        tx.commit()
            .await
            .map_err(db_error("closing the curated zone's snapshot"))
    })
    .await?;
    Ok(report)
}

/// The distance partitions of the snapshot `tx` that differ from the lake's, written; those
/// the lake has and the snapshot does not, deleted; then the fingerprints.
async fn write_changed_distances(
    tx: &Transaction<'_>,
    lake: &Store,
    report: &mut CuratedReport,
) -> Result<()> {
    let current: BTreeMap<NaiveDate, String> = tx
        .query(DISTANCE_FINGERPRINTS, &[])
        .await
        .map_err(db_error("fingerprinting the distance partitions"))?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<std::result::Result<_, tokio_postgres::Error>>()
        .map_err(db_error("fingerprinting the distance partitions"))?;
    let known = read_fingerprints(lake).await?;
    let listed = listed_partitions(lake, &DISTANCE).await?;
    for (start_day, fingerprint) in &current {
        if known.get(start_day) == Some(fingerprint) && listed.contains(start_day) {
            report.distance_partitions_unchanged += 1;
            continue;
        }
        let (_, bytes) = write_partition(tx, lake, &DISTANCE, *start_day).await?;
        report.distance_partitions_written += 1;
        report.bytes += bytes;
    }
    for start_day in listed.iter().filter(|d| !current.contains_key(d)) {
        lake.delete(&DISTANCE.key(*start_day)).await?;
        report.distance_partitions_deleted += 1;
    }
    // Written last: if the run dies before, the next one rewrites what it cannot vouch for.
    let json = serde_json::to_vec_pretty(&current).map_err(|e| Error::Internal {
        context: format!("serialising distance fingerprints: {e}"),
    })?;
    lake.put(&distance_fingerprints_key(), json.into()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::{DataType, TimeUnit};

    #[test]
    fn keys_are_hive_partitions_with_one_file_each() {
        let d = NaiveDate::from_ymd_opt(2019, 6, 1).unwrap();
        assert_eq!(
            vehicle_event_key(d),
            "curated/vehicle_event/landing_day=2019-06-01/part-0.parquet"
        );
        assert_eq!(
            period_event_key(d),
            "curated/period_event/landing_day=2019-06-01/part-0.parquet"
        );
        assert_eq!(
            distance_key(d),
            "curated/vehicle_period_distance/start_day=2019-06-01/part-0.parquet"
        );
    }

    #[test]
    fn queries_select_the_declared_columns_with_the_day_from_a_setting() {
        let q = VEHICLE_EVENT.query();
        assert!(q.starts_with("SELECT source_key, line, source_time, event, vehicle_id"));
        assert!(
            q.contains("landing_day = current_setting('d2d.curated_partition')::date"),
            "{q}"
        );
        assert!(q.ends_with("ORDER BY vehicle_id, location_at, event_at, source_key, line"));
        // The sort the file declares is the sort the query asks for.
        let sorted: Vec<&str> = VEHICLE_EVENT
            .sorting_columns()
            .iter()
            .map(|s| VEHICLE_EVENT.columns[s.column_idx as usize].name())
            .collect();
        assert_eq!(sorted, VEHICLE_EVENT.order_by);
    }

    #[test]
    fn schemas_keep_warehouse_names_and_utc_timestamps() {
        let s = PERIOD_EVENT.schema();
        assert!(
            s.field_with_name("landing_day").is_err(),
            "in the path only"
        );
        assert_eq!(
            s.field_with_name("start_at").unwrap().data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert_eq!(
            s.field_with_name("source_time").unwrap().data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, None)
        );
        assert!(!s
            .field_with_name("operating_period_id")
            .unwrap()
            .is_nullable());
        // Labels are dictionary-encoded, as in the Python bindings' tables.
        assert!(matches!(
            s.field_with_name("event").unwrap().data_type(),
            DataType::Dictionary(..)
        ));
    }
}
