//! The tables d2d hands to analysts and engines, as Arrow: every column declared once (name,
//! type, nullability), the schemas composed from those declarations, and builders that turn
//! d2d-model values into [`RecordBatch`]es of them. Feature `arrow`; no IO.
//!
//! The lake's curated zone (`d2d-pipeline`, written from the warehouse) and the Python
//! bindings (`d2d-py`, written from parsed events) both take their schemas from here, so a
//! column cannot have one name or type in a Parquet file and another in a notebook.
//!
//! | table | columns | who writes it |
//! |---|---|---|
//! | [`VEHICLE_EVENT`] | the warehouse's `dwh.fact_vehicle_event` | the curated zone |
//! | [`PERIOD_EVENT`] | the warehouse's `dwh.fact_period_event` | the curated zone |
//! | [`DISTANCE`] | the warehouse's `dwh.vehicle_period_distance` | the curated zone, [`distances`] |
//! | [`EVENTS`] | both event tables in one, plus [`Column::On`] | [`EventBatches`] (Python) |
//! | [`REJECTS`] | refused lines | [`RejectBatches`] (Python) |
//!
//! Names are the warehouse's (see `d2d-pipeline/SCHEMA.md`). Types, decided once:
//!
//! - labels with few distinct values (`source_key`, `on`, `event`, `organization_id`, `code`)
//!   are dictionary-encoded strings (`int32` keys): pandas' `Categorical`, polars'
//!   `Categorical`, and a Parquet column that engines read as plain strings;
//! - identifiers and free text are `utf8`, raw lines `binary`;
//! - instants are UTC microseconds since the epoch (`timestamp[us, tz=UTC]`: pandas' and
//!   Arrow's `us` resolution spans ±290,000 years, where nanoseconds overflow in 2262);
//!   `source_time`, the clock written in a landing file's name, has no time zone.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, Float64Builder, Int64Builder, StringBuilder, StringDictionaryBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};

use crate::distance::PeriodDistance;
use crate::landing::LandingName;
use crate::{Record, Reject, RejectReason};

/// What a column holds; [`Kind::data_type`] is its Arrow type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A string with few distinct values: `dictionary<values=utf8, indices=int32>`.
    Label,
    /// A string: `utf8`.
    Text,
    /// Bytes that need not be UTF-8: `binary`.
    Binary,
    /// `int64`.
    Int64,
    /// `float64`.
    Float64,
    /// A wall-clock time without zone: `timestamp[us]`.
    Timestamp,
    /// An instant: `timestamp[us, tz=UTC]`.
    TimestampUtc,
}

impl Kind {
    /// The Arrow type of a column of this kind.
    pub fn data_type(self) -> DataType {
        match self {
            Kind::Label => {
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
            }
            Kind::Text => DataType::Utf8,
            Kind::Binary => DataType::Binary,
            Kind::Int64 => DataType::Int64,
            Kind::Float64 => DataType::Float64,
            Kind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            Kind::TimestampUtc => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }
}

/// Every column of every table, declared once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Column {
    /// Where the line came from: the landing object key (lake) or the file, URL or input label
    /// (Python).
    SourceKey,
    /// 1-based line number in that source.
    Line,
    /// Date and time written in the source's file name (the API's clock, no time zone); null
    /// when the name is not a landing file name.
    SourceTime,
    /// The feed's `on`: `vehicle` or `operating_period` (the combined [`EVENTS`] table only:
    /// the lake keeps one table per `on`).
    On,
    /// The feed's `event`: `register`, `update`, `deregister`, `create` or `delete`.
    Event,
    /// The vehicle.
    VehicleId,
    /// The operating period.
    OperatingPeriodId,
    /// The sender.
    OrganizationId,
    /// The envelope's `at`: when the API received the event.
    EventAt,
    /// Latitude in degrees (WGS 84), when the event carries a position.
    Lat,
    /// Longitude in degrees (WGS 84), when the event carries a position.
    Lng,
    /// When the position was taken.
    LocationAt,
    /// Start of the window an operating-period event announces.
    StartAt,
    /// End of that window.
    FinishAt,
    /// Fixes used for a distance.
    Fixes,
    /// Time of the first fix used.
    FirstAt,
    /// Time of the last fix used.
    LastAt,
    /// Metres travelled.
    Metres,
    /// A reject's stable code (one of [`RejectReason::CODES`]).
    Code,
    /// The dotted field at fault; null when the line is not even JSON.
    Field,
    /// Why the line was refused, in words.
    Reason,
    /// The refused line, verbatim (it need not be UTF-8).
    Raw,
}

impl Column {
    /// The column's name, in the warehouse, the lake and Python alike.
    pub const fn name(self) -> &'static str {
        match self {
            Column::SourceKey => "source_key",
            Column::Line => "line",
            Column::SourceTime => "source_time",
            Column::On => "on",
            Column::Event => "event",
            Column::VehicleId => "vehicle_id",
            Column::OperatingPeriodId => "operating_period_id",
            Column::OrganizationId => "organization_id",
            Column::EventAt => "event_at",
            Column::Lat => "lat",
            Column::Lng => "lng",
            Column::LocationAt => "location_at",
            Column::StartAt => "start_at",
            Column::FinishAt => "finish_at",
            Column::Fixes => "fixes",
            Column::FirstAt => "first_at",
            Column::LastAt => "last_at",
            Column::Metres => "metres",
            Column::Code => "code",
            Column::Field => "field",
            Column::Reason => "reason",
            Column::Raw => "raw",
        }
    }

    /// What the column holds.
    pub const fn kind(self) -> Kind {
        match self {
            Column::SourceKey | Column::On | Column::Event | Column::OrganizationId => Kind::Label,
            Column::Code => Kind::Label,
            Column::VehicleId | Column::OperatingPeriodId | Column::Field | Column::Reason => {
                Kind::Text
            }
            Column::Raw => Kind::Binary,
            Column::Line | Column::Fixes => Kind::Int64,
            Column::Lat | Column::Lng | Column::Metres => Kind::Float64,
            Column::SourceTime => Kind::Timestamp,
            Column::EventAt
            | Column::LocationAt
            | Column::StartAt
            | Column::FinishAt
            | Column::FirstAt
            | Column::LastAt => Kind::TimestampUtc,
        }
    }

    /// Whether the column may be null in a table where every row has it (see [`EVENTS`] for
    /// the columns only some rows have).
    pub const fn nullable(self) -> bool {
        matches!(
            self,
            Column::SourceTime | Column::Lat | Column::Lng | Column::LocationAt | Column::Field
        )
    }

    /// The Arrow field: name, type and nullability.
    pub fn field(self) -> Field {
        Field::new(self.name(), self.kind().data_type(), self.nullable())
    }
}

use Column as C;

/// `dwh.fact_vehicle_event`: every vehicle event, in the warehouse's column order.
pub const VEHICLE_EVENT: &[Column] = &[
    C::SourceKey,
    C::Line,
    C::SourceTime,
    C::Event,
    C::VehicleId,
    C::OrganizationId,
    C::EventAt,
    C::Lat,
    C::Lng,
    C::LocationAt,
];

/// `dwh.fact_period_event`: every operating-period event, in the warehouse's column order.
pub const PERIOD_EVENT: &[Column] = &[
    C::SourceKey,
    C::Line,
    C::SourceTime,
    C::Event,
    C::OperatingPeriodId,
    C::OrganizationId,
    C::EventAt,
    C::StartAt,
    C::FinishAt,
];

/// `dwh.vehicle_period_distance`: distance per (operating period, vehicle).
pub const DISTANCE: &[Column] = &[
    C::OperatingPeriodId,
    C::VehicleId,
    C::Fixes,
    C::FirstAt,
    C::LastAt,
    C::Metres,
];

/// Every event, vehicle or operating period, one row each: the columns of [`VEHICLE_EVENT`]
/// and [`PERIOD_EVENT`] together, plus [`Column::On`]. A column only one of the two tables has
/// is null in the other's rows (see [`events_schema`]).
pub const EVENTS: &[Column] = &[
    C::SourceKey,
    C::Line,
    C::SourceTime,
    C::On,
    C::Event,
    C::EventAt,
    C::OrganizationId,
    C::VehicleId,
    C::Lat,
    C::Lng,
    C::LocationAt,
    C::OperatingPeriodId,
    C::StartAt,
    C::FinishAt,
];

/// Refused lines, one row each.
pub const REJECTS: &[Column] = &[
    C::SourceKey,
    C::Line,
    C::SourceTime,
    C::Code,
    C::Field,
    C::Reason,
    C::Raw,
];

/// The schema of a table whose every row has every column.
pub fn schema(columns: &[Column]) -> SchemaRef {
    Arc::new(Schema::new(
        columns.iter().map(|c| c.field()).collect::<Vec<_>>(),
    ))
}

/// The schema of [`EVENTS`]: each column's field, made nullable when only one of
/// [`VEHICLE_EVENT`] and [`PERIOD_EVENT`] has it (a vehicle event has no period, and the
/// reverse).
pub fn events_schema() -> SchemaRef {
    Arc::new(Schema::new(
        EVENTS
            .iter()
            .map(|c| {
                let partial = VEHICLE_EVENT.contains(c) != PERIOD_EVENT.contains(c);
                c.field().with_nullable(c.nullable() || partial)
            })
            .collect::<Vec<_>>(),
    ))
}

/// Most rows in one batch; a longer table is several batches. Also keeps every `utf8` and
/// `binary` column of a batch far below the 2 GiB that its 32-bit offsets can address.
pub const BATCH_ROWS: usize = 1 << 20;

/// Bytes of a batch's string or binary column beyond which the batch is closed early, so its
/// 32-bit offsets cannot overflow (a single value is far smaller: a line is at most a few MB).
const BATCH_BYTES: usize = 1 << 30;

/// A table as Arrow: its schema and its rows in one or more batches (at least one, possibly
/// empty).
#[derive(Debug, Clone)]
pub struct Batches {
    /// The schema of every batch.
    pub schema: SchemaRef,
    /// The rows, in order.
    pub batches: Vec<RecordBatch>,
}

impl Batches {
    /// Rows over all batches.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// A dictionary builder whose values are fixed up front, in order, so that every batch has
/// the same categories whatever the data (use `finish_preserve_values`).
fn fixed_labels(values: &[&str]) -> Result<StringDictionaryBuilder<Int32Type>, ArrowError> {
    StringDictionaryBuilder::new_with_dictionary(0, &StringArray::from(values.to_vec()))
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn utc() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::new().with_timezone("UTC")
}

/// The last source seen and its `source_time`: records of one source come together, so the
/// file name is read once per source, not per row.
#[derive(Debug, Default)]
struct SourceTimes {
    last: Option<(Arc<str>, Option<i64>)>,
}

impl SourceTimes {
    fn get(&mut self, source: &Arc<str>) -> Option<i64> {
        match &self.last {
            Some((s, t)) if Arc::ptr_eq(s, source) || **s == **source => *t,
            _ => {
                let t =
                    LandingName::parse(source).map(|n| n.datetime().and_utc().timestamp_micros());
                self.last = Some((source.clone(), t));
                t
            }
        }
    }
}

/// Builds [`EVENTS`] batches from parsed records, row by row (see [`events_schema`]).
pub struct EventBatches {
    schema: SchemaRef,
    done: Vec<RecordBatch>,
    rows: usize,
    times: SourceTimes,
    source_key: StringDictionaryBuilder<Int32Type>,
    line: Int64Builder,
    source_time: TimestampMicrosecondBuilder,
    on: StringDictionaryBuilder<Int32Type>,
    event: StringDictionaryBuilder<Int32Type>,
    event_at: TimestampMicrosecondBuilder,
    organization_id: StringDictionaryBuilder<Int32Type>,
    vehicle_id: StringBuilder,
    lat: Float64Builder,
    lng: Float64Builder,
    location_at: TimestampMicrosecondBuilder,
    operating_period_id: StringBuilder,
    start_at: TimestampMicrosecondBuilder,
    finish_at: TimestampMicrosecondBuilder,
}

/// The feed's `on` values, every one a category even when absent.
pub const ON_VALUES: [&str; 2] = ["vehicle", "operating_period"];
/// The feed's `event` values, every one a category even when absent.
pub const EVENT_VALUES: [&str; 5] = ["register", "update", "deregister", "create", "delete"];

impl std::fmt::Debug for EventBatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Arrow's string dictionary builders are not `Debug`: show the sizes.
        f.debug_struct("EventBatches")
            .field("batches", &self.done.len())
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl EventBatches {
    /// An empty table.
    pub fn new() -> Result<Self, ArrowError> {
        Ok(Self {
            schema: events_schema(),
            done: Vec::new(),
            rows: 0,
            times: SourceTimes::default(),
            source_key: StringDictionaryBuilder::new(),
            line: Int64Builder::new(),
            source_time: TimestampMicrosecondBuilder::new(),
            on: fixed_labels(&ON_VALUES)?,
            event: fixed_labels(&EVENT_VALUES)?,
            event_at: utc(),
            organization_id: StringDictionaryBuilder::new(),
            vehicle_id: StringBuilder::new(),
            lat: Float64Builder::new(),
            lng: Float64Builder::new(),
            location_at: utc(),
            operating_period_id: StringBuilder::new(),
            start_at: utc(),
            finish_at: utc(),
        })
    }

    /// Appends one row.
    pub fn push(&mut self, r: &Record) -> Result<(), ArrowError> {
        if self.rows >= BATCH_ROWS
            || self.vehicle_id.values_slice().len() >= BATCH_BYTES
            || self.operating_period_id.values_slice().len() >= BATCH_BYTES
        {
            self.flush()?;
        }
        let e = &r.event;
        self.source_key.append(&*r.source)?;
        self.line.append_value(r.line as i64);
        self.source_time.append_option(self.times.get(&r.source));
        self.on.append(e.kind.on())?;
        self.event.append(e.kind.verb())?;
        self.event_at.append_value(micros(e.at));
        self.organization_id.append(e.organization_id.as_str())?;
        self.vehicle_id
            .append_option(e.kind.vehicle().map(|v| v.as_str()));
        let loc = e.kind.location();
        self.lat.append_option(loc.map(|l| l.position.lat()));
        self.lng.append_option(loc.map(|l| l.position.lng()));
        self.location_at.append_option(loc.map(|l| micros(l.at)));
        let p = e.kind.period();
        self.operating_period_id
            .append_option(p.map(|p| p.id().as_str()));
        self.start_at.append_option(p.map(|p| micros(p.start())));
        self.finish_at.append_option(p.map(|p| micros(p.finish())));
        self.rows += 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.source_key.finish()),
            Arc::new(self.line.finish()),
            Arc::new(self.source_time.finish()),
            Arc::new(self.on.finish_preserve_values()),
            Arc::new(self.event.finish_preserve_values()),
            Arc::new(self.event_at.finish()),
            Arc::new(self.organization_id.finish()),
            Arc::new(self.vehicle_id.finish()),
            Arc::new(self.lat.finish()),
            Arc::new(self.lng.finish()),
            Arc::new(self.location_at.finish()),
            Arc::new(self.operating_period_id.finish()),
            Arc::new(self.start_at.finish()),
            Arc::new(self.finish_at.finish()),
        ];
        self.done
            .push(RecordBatch::try_new(self.schema.clone(), columns)?);
        self.rows = 0;
        Ok(())
    }

    /// The table.
    pub fn finish(mut self) -> Result<Batches, ArrowError> {
        if self.rows > 0 || self.done.is_empty() {
            self.flush()?;
        }
        Ok(Batches {
            schema: self.schema,
            batches: self.done,
        })
    }
}

/// Every event of `records`, one row each (see [`EventBatches`]).
pub fn events(records: &[Record]) -> Result<Batches, ArrowError> {
    let mut b = EventBatches::new()?;
    for r in records {
        b.push(r)?;
    }
    b.finish()
}

/// Builds [`REJECTS`] batches, row by row. `code` lists every code d2d-model can give
/// ([`RejectReason::CODES`]), seen or not.
pub struct RejectBatches {
    schema: SchemaRef,
    done: Vec<RecordBatch>,
    rows: usize,
    times: SourceTimes,
    source_key: StringDictionaryBuilder<Int32Type>,
    line: Int64Builder,
    source_time: TimestampMicrosecondBuilder,
    code: StringDictionaryBuilder<Int32Type>,
    field: StringBuilder,
    reason: StringBuilder,
    raw: BinaryBuilder,
}

impl std::fmt::Debug for RejectBatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Arrow's string dictionary builders are not `Debug`: show the sizes.
        f.debug_struct("RejectBatches")
            .field("batches", &self.done.len())
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl RejectBatches {
    /// An empty table.
    pub fn new() -> Result<Self, ArrowError> {
        Ok(Self {
            schema: schema(REJECTS),
            done: Vec::new(),
            rows: 0,
            times: SourceTimes::default(),
            source_key: StringDictionaryBuilder::new(),
            line: Int64Builder::new(),
            source_time: TimestampMicrosecondBuilder::new(),
            code: fixed_labels(&RejectReason::CODES)?,
            field: StringBuilder::new(),
            reason: StringBuilder::new(),
            raw: BinaryBuilder::new(),
        })
    }

    /// Appends one row.
    pub fn push(&mut self, r: &Reject) -> Result<(), ArrowError> {
        let reason = r.reason.to_string();
        if self.rows >= BATCH_ROWS
            || self.raw.values_slice().len() + r.raw.len() >= BATCH_BYTES
            || self.reason.values_slice().len() + reason.len() >= BATCH_BYTES
        {
            self.flush()?;
        }
        self.source_key.append(&*r.source)?;
        self.line.append_value(r.line as i64);
        self.source_time.append_option(self.times.get(&r.source));
        self.code.append(r.reason.code())?;
        self.field.append_option(r.reason.field());
        self.reason.append_value(reason);
        self.raw.append_value(&r.raw);
        self.rows += 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.source_key.finish()),
            Arc::new(self.line.finish()),
            Arc::new(self.source_time.finish()),
            Arc::new(self.code.finish_preserve_values()),
            Arc::new(self.field.finish()),
            Arc::new(self.reason.finish()),
            Arc::new(self.raw.finish()),
        ];
        self.done
            .push(RecordBatch::try_new(self.schema.clone(), columns)?);
        self.rows = 0;
        Ok(())
    }

    /// The table.
    pub fn finish(mut self) -> Result<Batches, ArrowError> {
        if self.rows > 0 || self.done.is_empty() {
            self.flush()?;
        }
        Ok(Batches {
            schema: self.schema,
            batches: self.done,
        })
    }
}

/// Every reject of `rejects`, one row each (see [`RejectBatches`]).
pub fn rejects(rejects: &[Reject]) -> Result<Batches, ArrowError> {
    let mut b = RejectBatches::new()?;
    for r in rejects {
        b.push(r)?;
    }
    b.finish()
}

/// Distance rows as [`DISTANCE`]: the rows of `dwh.vehicle_period_distance`, in their order.
pub fn distances(rows: &[PeriodDistance]) -> Result<Batches, ArrowError> {
    let schema = schema(DISTANCE);
    let mut batches = Vec::new();
    // Distance rows are few (periods × vehicles): the row bound alone keeps ids small.
    let mut chunks = rows.chunks(BATCH_ROWS).peekable();
    if chunks.peek().is_none() {
        batches.push(RecordBatch::new_empty(schema.clone()));
    }
    for chunk in chunks {
        let n = chunk.len();
        let mut period = StringBuilder::with_capacity(n, n * 16);
        let mut vehicle = StringBuilder::with_capacity(n, n * 16);
        let mut fixes = Int64Builder::with_capacity(n);
        let mut first = utc();
        let mut last = utc();
        let mut metres = Float64Builder::with_capacity(n);
        for r in chunk {
            period.append_value(r.period.as_str());
            vehicle.append_value(r.vehicle.as_str());
            fixes.append_value(r.fixes as i64);
            first.append_value(micros(r.first_at));
            last.append_value(micros(r.last_at));
            metres.append_value(r.metres);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(period.finish()),
            Arc::new(vehicle.finish()),
            Arc::new(fixes.finish()),
            Arc::new(first.finish()),
            Arc::new(last.finish()),
            Arc::new(metres.finish()),
        ];
        batches.push(RecordBatch::try_new(schema.clone(), columns)?);
    }
    Ok(Batches { schema, batches })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::event::EventKind;
    use crate::parse::parse_bytes;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, TimestampMicrosecondType};
    use arrow_array::Array;

    const LINES: &str = r#"{"event":"register","on":"vehicle","at":"2019-06-01T18:17:04.088Z","data":{"id":"v1"},"organization_id":"o"}
{"event":"update","on":"vehicle","at":"2019-06-01T18:17:10.101Z","data":{"id":"v1","location":{"lat":52.5,"lng":13.25,"at":"2019-06-01T18:17:10.1Z"}},"organization_id":"o"}
{"event":"create","on":"operating_period","at":"1969-12-31T23:59:59.999Z","data":{"id":"op_1","start":"2019-06-01T18:23:04Z","finish":"2019-06-01T18:28:04Z"},"organization_id":"p"}
oops"#;

    const SOURCE: &str = "landing/2019-06-01-15-17-3-events.txt";

    fn labels(b: &RecordBatch, name: &str) -> Vec<String> {
        let a = b.column_by_name(name).unwrap().as_dictionary::<Int32Type>();
        let values = a.values().as_string::<i32>();
        a.keys()
            .iter()
            .map(|k| values.value(k.unwrap() as usize).to_string())
            .collect()
    }

    fn dictionary(b: &RecordBatch, name: &str) -> Vec<String> {
        let a = b.column_by_name(name).unwrap().as_dictionary::<Int32Type>();
        let values = a.values().as_string::<i32>();
        values.iter().map(|v| v.unwrap().to_string()).collect()
    }

    #[test]
    fn each_name_is_declared_once() {
        let all = [VEHICLE_EVENT, PERIOD_EVENT, DISTANCE, EVENTS, REJECTS].concat();
        let mut names: Vec<&str> = all.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        let mut columns = all.clone();
        columns.sort_by_key(|c| c.name());
        columns.dedup();
        assert_eq!(names.len(), columns.len(), "two columns share a name");
    }

    #[test]
    fn the_events_table_is_both_event_tables_with_the_same_fields() {
        let events = events_schema();
        for table in [VEHICLE_EVENT, PERIOD_EVENT] {
            for c in table {
                let f = events.field_with_name(c.name()).unwrap();
                assert_eq!(f.data_type(), &c.kind().data_type(), "{}", c.name());
                assert!(f.is_nullable() || !c.nullable(), "{}", c.name());
            }
        }
        // Shared by both: as nullable as in each; one-sided: nullable.
        assert!(!events.field_with_name("event_at").unwrap().is_nullable());
        assert!(!events.field_with_name("source_key").unwrap().is_nullable());
        assert!(events.field_with_name("vehicle_id").unwrap().is_nullable());
        assert!(events.field_with_name("start_at").unwrap().is_nullable());
        assert!(!events.field_with_name("on").unwrap().is_nullable());
        assert_eq!(events.fields().len(), EVENTS.len());
    }

    #[test]
    fn kinds_are_on_and_event_together() {
        let pairs: Vec<String> = ON_VALUES
            .iter()
            .flat_map(|on| EVENT_VALUES.iter().map(move |e| format!("{on}.{e}")))
            .collect();
        for name in EventKind::NAMES {
            assert!(pairs.contains(&name.to_string()), "{name}");
        }
    }

    #[test]
    fn events_flatten_with_nulls_where_a_kind_has_no_value() {
        let parsed = parse_bytes(SOURCE, LINES.as_bytes());
        let t = events(&parsed.events).unwrap();
        assert_eq!(t.batches.len(), 1);
        let b = &t.batches[0];
        assert_eq!(b.schema(), events_schema());
        assert_eq!(b.num_rows(), 3);
        let lat = b
            .column_by_name("lat")
            .unwrap()
            .as_primitive::<Float64Type>();
        assert_eq!(lat.null_count(), 2);
        assert_eq!(lat.value(1), 52.5, "the update's latitude");
        let at = b
            .column_by_name("event_at")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        // Before the epoch, micros count down: -1 ms is -1000 µs.
        assert_eq!(at.value(2), -1000);
        assert_eq!(at.null_count(), 0);
        let period = b
            .column_by_name("operating_period_id")
            .unwrap()
            .as_string::<i32>();
        assert_eq!(period.null_count(), 2);
        assert_eq!(period.value(2), "op_1");
        assert_eq!(labels(b, "on"), ["vehicle", "vehicle", "operating_period"]);
        assert_eq!(labels(b, "event"), ["register", "update", "create"]);
        assert_eq!(
            dictionary(b, "event"),
            EVENT_VALUES,
            "every category, seen or not"
        );
        assert_eq!(dictionary(b, "organization_id"), ["o", "p"]);
        assert_eq!(labels(b, "source_key"), [SOURCE; 3]);
        let time = b
            .column_by_name("source_time")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        // 2019-06-01 15:17:03, the name's clock, without zone.
        assert_eq!(time.value(0), 1_559_402_223_000_000);
        assert_eq!(time.null_count(), 0);
    }

    #[test]
    fn a_source_without_a_landing_name_has_no_source_time() {
        let parsed = parse_bytes("<bytes[0]>", LINES.as_bytes());
        let b = &events(&parsed.events).unwrap().batches[0];
        assert_eq!(b.column_by_name("source_time").unwrap().null_count(), 3);
        let r = &rejects(&parsed.rejects).unwrap().batches[0];
        assert_eq!(r.column_by_name("source_time").unwrap().null_count(), 1);
    }

    #[test]
    fn rejects_keep_the_raw_line_and_every_code() {
        let parsed = parse_bytes(SOURCE, LINES.as_bytes());
        let t = rejects(&parsed.rejects).unwrap();
        let b = &t.batches[0];
        assert_eq!(b.schema(), schema(REJECTS));
        assert_eq!(b.num_rows(), 1);
        assert_eq!(
            b.column_by_name("raw").unwrap().as_binary::<i32>().value(0),
            b"oops"
        );
        assert_eq!(
            b.column_by_name("field").unwrap().null_count(),
            1,
            "invalid JSON has no field"
        );
        assert_eq!(labels(b, "code"), ["invalid_json"]);
        assert_eq!(
            b.column_by_name("line")
                .unwrap()
                .as_primitive::<arrow_array::types::Int64Type>()
                .value(0),
            4
        );
        let empty = rejects(&[]).unwrap();
        assert_eq!(empty.num_rows(), 0);
        assert_eq!(dictionary(&empty.batches[0], "code"), RejectReason::CODES);
    }

    #[test]
    fn empty_inputs_give_one_empty_batch_of_the_schema() {
        for t in [events(&[]).unwrap(), distances(&[]).unwrap()] {
            assert_eq!(t.batches.len(), 1);
            assert_eq!(t.num_rows(), 0);
            assert_eq!(t.batches[0].schema(), t.schema);
        }
    }

    #[test]
    fn long_tables_are_cut_into_batches_with_the_same_categories() {
        let parsed = parse_bytes(SOURCE, LINES.as_bytes());
        let mut b = EventBatches::new().unwrap();
        for _ in 0..BATCH_ROWS / 3 + 1 {
            for r in &parsed.events {
                b.push(r).unwrap();
            }
        }
        let t = b.finish().unwrap();
        assert_eq!(t.batches.len(), 2);
        assert_eq!(t.batches[0].num_rows(), BATCH_ROWS);
        assert_eq!(t.num_rows(), 3 * (BATCH_ROWS / 3 + 1));
        for batch in &t.batches {
            assert_eq!(dictionary(batch, "event"), EVENT_VALUES);
            assert_eq!(dictionary(batch, "on"), ON_VALUES);
        }
    }

    #[test]
    fn distances_have_the_warehouse_columns() {
        use crate::{distance, period, track};
        let day = br#"{"event":"create","on":"operating_period","at":"2019-06-01T18:00:00Z","data":{"id":"op_1","start":"2019-06-01T18:00:00Z","finish":"2019-06-01T19:00:00Z"},"organization_id":"o"}
{"event":"update","on":"vehicle","at":"2019-06-01T18:10:00Z","data":{"id":"v1","location":{"lat":0.0,"lng":0.0,"at":"2019-06-01T18:10:00Z"}},"organization_id":"o"}
{"event":"update","on":"vehicle","at":"2019-06-01T18:20:00Z","data":{"id":"v1","location":{"lat":0.01,"lng":0.0,"at":"2019-06-01T18:20:00Z"}},"organization_id":"o"}
"#;
        let parsed = parse_bytes("day.ndjson", day);
        let events = || parsed.events.iter().map(|r| &r.event);
        let periods = period::resolve_periods(events());
        let rows =
            distance::period_distances(&periods, &track::tracks(events()), &Default::default());
        let t = distances(&rows).unwrap();
        let b = &t.batches[0];
        let schema = b.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "operating_period_id",
                "vehicle_id",
                "fixes",
                "first_at",
                "last_at",
                "metres"
            ]
        );
        assert_eq!(
            b.column_by_name("vehicle_id")
                .unwrap()
                .as_string::<i32>()
                .value(0),
            "v1"
        );
        let m = b
            .column_by_name("metres")
            .unwrap()
            .as_primitive::<Float64Type>();
        assert!((m.value(0) - rows[0].metres).abs() < 1e-12);
    }
}
