//! Loading one landing day: binary COPY into staging, then `CALL dwh.merge_day`, then the
//! distances of the pairs the merge named ([`super::distance`]), in one transaction.
//!
//! Each vehicle row is also spilled to local disk while the day is staged ([`super::spill`]:
//! 54 bytes a row, in a temporary folder under the system's temporary directory, or beside
//! the spool of a day staged ahead), so that neither the distances nor the curated zone read
//! the day back from PostgreSQL.
//!
//! Rows are buffered per staging table and copied in batches of [`BATCH_ROWS`], so memory
//! stays bounded however large the day is: the caller hands over one file's parse at a time.
//! What else the loader keeps grows with the fleet, not with the day: one summary per vehicle
//! ([`super::vehicle_day`]), the lifecycle events seen (to drop repeats exactly), and a
//! fixed-size filter of the update events seen ([`super::seen`]).
//!
//! A day parsed ahead of its turn (a back-fill's `--days-parallel`) is staged the same way into
//! a [`SpooledDay`] instead: the same binary COPY rows, encoded into files on local disk (one
//! per staging table, in a temporary folder removed when the spool is dropped), which the
//! day's load later streams into staging unchanged ([`DayLoad::copy_spooled`]) — no parsing
//! and no staging lock before the turn, and memory still bounded by a batch.
//!
//! The vehicle events go straight into `staging.vehicle_event`, the day's next partition of
//! `dwh.fact_vehicle_event` (see migration 8); `COPY … FREEZE` writes them once, already
//! visible to every later transaction, so nothing rewrites them to set hint bits.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use d2d_model::distance::DistanceOptions;
use d2d_model::event::EventKind;
use d2d_model::landing::LandingName;
use d2d_model::parse::Parsed;
use d2d_model::reject::RejectReason;
use futures_util::SinkExt;
use postgres_types::{IsNull, ToSql, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::Transaction;

use super::db_error;
use super::distance;
use super::seen::{micros, SeenFilter, UpdateKey};
use super::spill::{DayRows, DaySpill, RowRef};
use super::vehicle_day::{Position, Seen, VehicleDay};
use crate::error::{Error, Result};
use crate::lake::{raw_line, RefusedFile, REJECT_RAW_BYTES};
use crate::lines::LongLine;
use crate::scratch::{DirKind, ScratchDir};
use crate::store::hex;

/// Rows buffered per staging table before a COPY sends them.
pub const BATCH_ROWS: usize = 16_384;

/// Settings of a day's load.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadOptions {
    /// The distance rule: drop fixes implying more than this speed (m/s); `None` keeps all.
    /// The rule is warehouse-wide: loading with another rule recomputes every distance.
    pub max_speed_mps: Option<f64>,
}

/// Rows written per warehouse table by one merge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowsLoaded {
    /// `dwh.fact_vehicle_event` rows of the day.
    pub fact_vehicle_event: u64,
    /// `dwh.fact_period_event` rows of the day.
    pub fact_period_event: u64,
    /// `dwh.dim_vehicle` rows refreshed.
    pub dim_vehicle: u64,
    /// `dwh.dim_operating_period` rows refreshed.
    pub dim_operating_period: u64,
    /// `dwh.vehicle_period_distance` rows recomputed.
    pub vehicle_period_distance: u64,
    /// `etl.reject` rows of the day.
    pub reject: u64,
}

/// What one day's load did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DayLoadReport {
    /// Source objects added.
    pub files: u64,
    /// Non-blank lines parsed.
    pub lines: u64,
    /// Distinct valid events loaded: staged events (distinct within their file) less those
    /// the merge dropped as equal to an event of an earlier file of the day. So
    /// `lines == events + duplicates + rejects`.
    pub events: u64,
    /// Events equal to an earlier one, within a file (dropped by the parser) or across the
    /// day's files (dropped by the merge).
    pub duplicates: u64,
    /// Refused lines.
    pub rejects: u64,
    /// Rows written per table.
    pub rows: RowsLoaded,
    /// Time spent in COPY.
    pub copy: Duration,
    /// Time spent in `CALL dwh.merge_day`, the distances and the commit.
    pub merge: Duration,
    /// Of [`DayLoadReport::merge`], the time spent computing and applying the distances.
    pub distances: Duration,
}

/// A row of a staging table, written by binary COPY. Implemented by [`staged_row!`] only.
pub(super) trait StagedRow {
    /// The `COPY … FROM STDIN (FORMAT binary)` statement.
    const COPY: &'static str;
    /// Column types, in the statement's order.
    const TYPES: &'static [Type];
    /// The table, for messages.
    const TABLE: &'static str;
    /// Column values, in the statement's order.
    fn values(&self) -> Vec<&(dyn ToSql + Sync)>;
}

/// The PostgreSQL type a Rust value is staged as; `Option<T>` stages as `T` (NULL for `None`).
pub(super) trait PgColumn {
    const TYPE: Type;
}

macro_rules! pg_column {
    ($($rust:ty => $pg:ident),* $(,)?) => {
        $(impl PgColumn for $rust {
            const TYPE: Type = Type::$pg;
        })*
    };
}

pg_column! {
    String => TEXT,
    &'static str => TEXT,
    i64 => INT8,
    f64 => FLOAT8,
    NaiveDate => DATE,
    NaiveDateTime => TIMESTAMP,
    DateTime<Utc> => TIMESTAMPTZ,
}

impl<T: PgColumn> PgColumn for Option<T> {
    const TYPE: Type = T::TYPE;
}

/// Declares a staging row once: the struct, whose fields are the table's columns in COPY
/// order, and its [`StagedRow`] (COPY statement, types from [`PgColumn`], values).
/// `$options` is appended inside `(FORMAT binary…)`, e.g. `", FREEZE"`. Fields that are not
/// columns (state kept while the row is built) follow in a `not copied { … }` block; they
/// are never written. Usable by the other modules of `warehouse` (`use super::load::staged_row`).
macro_rules! staged_row {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident => $table:literal, $options:literal {
            $( $(#[$field_meta:meta])* $field_vis:vis $column:ident : $ty:ty ),+ $(,)?
        }
        $( not copied {
            $( $(#[$kept_meta:meta])* $kept_vis:vis $kept:ident : $kept_ty:ty ),+ $(,)?
        } )?
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $( $(#[$field_meta])* $field_vis $column: $ty, )+
            $($( $(#[$kept_meta])* $kept_vis $kept: $kept_ty, )+)?
        }

        impl $crate::warehouse::load::StagedRow for $name {
            const COPY: &'static str = concat!(
                "COPY ", $table, " (",
                staged_row!(@columns $($column)+),
                ") FROM STDIN (FORMAT binary", $options, ")"
            );
            const TYPES: &'static [::postgres_types::Type] =
                &[$(<$ty as $crate::warehouse::load::PgColumn>::TYPE),+];
            const TABLE: &'static str = $table;
            fn values(&self) -> Vec<&(dyn ::postgres_types::ToSql + Sync)> {
                vec![$(&self.$column),+]
            }
        }
    };
    (@columns $first:ident $($rest:ident)*) => {
        concat!(stringify!($first) $(, ", ", stringify!($rest))*)
    };
}
pub(super) use staged_row;

// Each staging row is declared once: its fields are the table's columns, in COPY order, and
// each column's PostgreSQL type follows from its Rust type (`PgColumn`). The COPY statement,
// the type list and `values()` are generated from that declaration, so a column cannot be
// named in one order and written in another.
staged_row! {
    /// A vehicle event of the day.
    // FREEZE: dwh.begin_day truncated the table in this transaction.
    struct VehicleRow => "staging.vehicle_event", ", FREEZE" {
        landing_day: NaiveDate,
        source_key: String,
        source_time: Option<NaiveDateTime>,
        line: i64,
        event: &'static str,
        vehicle_id: String,
        organization_id: String,
        event_at: DateTime<Utc>,
        lat: Option<f64>,
        lng: Option<f64>,
        location_at: Option<DateTime<Utc>>,
    }
}

staged_row! {
    /// An operating period event of the day.
    struct PeriodRow => "staging.period_event", "" {
        source_key: String,
        source_time: Option<NaiveDateTime>,
        line: i64,
        event: &'static str,
        operating_period_id: String,
        organization_id: String,
        event_at: DateTime<Utc>,
        start_at: DateTime<Utc>,
        finish_at: DateTime<Utc>,
    }
}

staged_row! {
    /// An update event staged that may repeat another of the day: `dwh.merge_day` keeps the
    /// first in landing order of the events equal to it.
    struct CandidateRow => "staging.duplicate_candidate", "" {
        vehicle_id: String,
        organization_id: String,
        event_at: DateTime<Utc>,
        lat: f64,
        lng: f64,
        location_at: DateTime<Utc>,
    }
}

staged_row! {
    /// A refused line (or a file refused as a whole).
    struct RejectRow => "staging.reject", "" {
        source_key: String,
        source_time: Option<NaiveDateTime>,
        line: i64,
        code: &'static str,
        field: Option<String>,
        reason: String,
        /// At most [`crate::lake::REJECT_RAW_BYTES`] bytes of the line, as text.
        raw: String,
        /// The whole line's length and SHA-256 (hex); `None` for a file refused as a whole.
        raw_length: Option<i64>,
        raw_sha256: Option<String>,
    }
}

/// One landing day being loaded: an open transaction holding the load lock.
///
/// Add each source object's parse with [`DayLoad::add_file`], in landing order
/// ([`d2d_model::landing::landing_order`]), then [`DayLoad::commit`]. Dropping it without
/// committing (or any error) rolls everything back: the warehouse stays as it was.
///
/// A day staged ahead of its load ([`DayLoad::spooled`]) has no transaction: its rows go to a
/// [`SpooledDay`] ([`DayLoad::finish_spool`]), which a load takes later in one go.
pub struct DayLoad<'a> {
    sink: Sink<'a>,
    day: NaiveDate,
    options: LoadOptions,
    sources: HashSet<String>,
    vehicles: Vec<VehicleRow>,
    candidates: Vec<CandidateRow>,
    periods: Vec<PeriodRow>,
    rejects: Vec<RejectRow>,
    seen_updates: SeenFilter,
    /// Register/deregister events: few per vehicle, so kept until the commit, each at its
    /// first position in landing order, and de-duplicated exactly.
    lifecycle: HashMap<LifecycleKey, (Position, VehicleRow)>,
    vehicle_days: HashMap<String, VehicleDay>,
    /// The day's vehicle rows, for the distances and the curated zone.
    spill: DaySpill,
    report: DayLoadReport,
}

/// The identity of a register or deregister event, as `dwh.merge_day` compared it.
#[derive(PartialEq, Eq, Hash)]
struct LifecycleKey {
    verb: &'static str,
    vehicle_id: String,
    organization_id: String,
    event_at: i64,
    location: Option<(u64, u64, i64)>,
}

impl<'a> DayLoad<'a> {
    pub(super) async fn begin(
        tx: Transaction<'a>,
        day: NaiveDate,
        options: LoadOptions,
    ) -> Result<DayLoad<'a>> {
        check_options(&options)?;
        // Takes the load lock (staging is shared by all loads: one fills it at a time),
        // empties staging and marks it as the partition of `day`.
        tx.execute("CALL dwh.begin_day($1)", &[&day])
            .await
            .map_err(db_error(format!("prepare staging for landing day {day}")))?;
        let spill = DaySpill::create(&std::env::temp_dir(), day)?;
        Ok(DayLoad::new(Sink::Copy(tx), day, options, spill))
    }

    fn new(sink: Sink<'a>, day: NaiveDate, options: LoadOptions, spill: DaySpill) -> DayLoad<'a> {
        DayLoad {
            sink,
            day,
            options,
            sources: HashSet::new(),
            vehicles: Vec::new(),
            candidates: Vec::new(),
            periods: Vec::new(),
            rejects: Vec::new(),
            seen_updates: SeenFilter::default(),
            lifecycle: HashMap::new(),
            vehicle_days: HashMap::new(),
            spill,
            report: DayLoadReport::default(),
        }
    }

    /// A load of `day` that stages into a spool under `dir` (a new temporary folder in it)
    /// instead of a transaction: for a day parsed before its turn. Add the files as to any
    /// load, then [`DayLoad::finish_spool`]; nothing touches the warehouse.
    pub fn spooled(day: NaiveDate, options: LoadOptions, dir: &Path) -> Result<DayLoad<'static>> {
        check_options(&options)?;
        Ok(DayLoad::new(
            Sink::Spool(Spool::create(dir, day)?),
            day,
            options,
            DaySpill::create(dir, day)?,
        ))
    }

    /// Ends a spooled load: writes what is still buffered (and the per-vehicle summaries) to
    /// the spool and returns it with the day's counts.
    pub async fn finish_spool(mut self) -> Result<SpooledDay> {
        self.flush_all().await?;
        self.spill.flush()?;
        let Sink::Spool(mut spool) = self.sink else {
            return Err(Error::Internal {
                context: format!(
                    "spooling landing day {}: its load has a transaction, not a spool",
                    self.day
                ),
            });
        };
        Ok(SpooledDay {
            day: self.day,
            options: self.options,
            tables: spool.finish().await?,
            dir: spool.dir,
            spill: self.spill,
            report: self.report,
        })
    }

    /// Streams a day staged ahead into staging, table by table (the spool's bytes are the
    /// COPY's, sent as they are), and takes its counts; the spool is removed when done. The
    /// load must be of the same day and settings, and have staged nothing else.
    pub async fn copy_spooled(&mut self, spooled: SpooledDay) -> Result<()> {
        if spooled.day != self.day || spooled.options != self.options {
            return Err(Error::Internal {
                context: format!(
                    "loading the spool of landing day {} into the load of {}",
                    spooled.day, self.day
                ),
            });
        }
        if self.report != DayLoadReport::default() || !self.sources.is_empty() {
            return Err(Error::Internal {
                context: format!(
                    "loading the spool of landing day {}: the load has staged rows already",
                    self.day
                ),
            });
        }
        let Sink::Copy(tx) = &mut self.sink else {
            return Err(Error::Internal {
                context: format!("loading the spool of landing day {} into a spool", self.day),
            });
        };
        let started = Instant::now();
        for table in &spooled.tables {
            let context = || format!("COPY {} spooled rows into {}", table.rows, table.table);
            let io = |op, source| spool_io(&table.path, op, source);
            let mut file = tokio::fs::File::open(&table.path)
                .await
                .map_err(|e| io("open", e))?;
            let sink = tx
                .copy_in::<_, Bytes>(table.copy)
                .await
                .map_err(db_error(context()))?;
            let mut sink = pin!(sink);
            loop {
                let mut chunk = BytesMut::with_capacity(SPOOL_CHUNK);
                if file.read_buf(&mut chunk).await.map_err(|e| io("read", e))? == 0 {
                    break;
                }
                sink.send(chunk.freeze())
                    .await
                    .map_err(db_error(context()))?;
            }
            sink.finish().await.map_err(db_error(context()))?;
        }
        self.report = DayLoadReport {
            copy: started.elapsed(),
            ..spooled.report.clone()
        };
        self.spill = spooled.spill;
        Ok(())
    }

    /// The landing day being loaded.
    pub fn day(&self) -> NaiveDate {
        self.day
    }

    /// Stages the parse of one source object; `key` is its landing key (the lineage written
    /// to every row), and `parsed` must come from that object alone. Objects may come in any
    /// order; of equal events the first in landing order
    /// ([`d2d_model::landing::landing_order`]) is kept, and reading them in that order (as the
    /// daily run does) is what keeps the memory flat.
    pub async fn add_file(&mut self, key: &str, parsed: &Parsed) -> Result<()> {
        self.open_file(key)?;
        self.add_piece(key, parsed).await
    }

    /// Starts a file read in pieces: [`DayLoad::add_piece`] and [`DayLoad::add_long_line`]
    /// then add its lines, in order. Together they stage what [`DayLoad::add_file`] stages
    /// of the whole file; the events a later piece repeats from an earlier one are dropped
    /// by the merge, as those a later file repeats are.
    pub(crate) fn open_file(&mut self, key: &str) -> Result<()> {
        if !self.sources.insert(key.to_owned()) {
            return Err(Error::DuplicateSource {
                key: key.to_owned(),
                day: self.day,
            });
        }
        self.report.files += 1;
        Ok(())
    }

    /// Stages the lines of a piece of the file `key`, opened with [`DayLoad::open_file`].
    pub(crate) async fn add_piece(&mut self, key: &str, parsed: &Parsed) -> Result<()> {
        let source_time = LandingName::parse(key).map(|n| n.datetime());
        let position_key: Arc<str> = Arc::from(key);
        let source_key = pg_text(key);
        self.report.lines += parsed.lines;
        self.report.duplicates += parsed.duplicates;
        self.report.events += parsed.events.len() as u64;
        self.report.rejects += parsed.rejects.len() as u64;
        for record in &parsed.events {
            let e = &record.event;
            let line = line_number(key, record.line)?;
            let organization_id = e.organization_id.as_str().to_owned();
            match &e.kind {
                EventKind::PeriodCreate(p) | EventKind::PeriodDelete(p) => {
                    self.periods.push(PeriodRow {
                        source_key: source_key.clone(),
                        source_time,
                        line,
                        event: e.kind.verb(),
                        operating_period_id: p.id().as_str().to_owned(),
                        organization_id,
                        event_at: e.at,
                        start_at: p.start(),
                        finish_at: p.finish(),
                    });
                    if self.periods.len() >= BATCH_ROWS {
                        self.flush_periods().await?;
                    }
                }
                kind => {
                    let Some(vehicle) = kind.vehicle() else {
                        continue;
                    };
                    let location = kind.location();
                    let verb = kind.verb();
                    let vehicle_id = vehicle.as_str();
                    let row = VehicleRow {
                        landing_day: self.day,
                        source_key: source_key.clone(),
                        source_time,
                        line,
                        event: verb,
                        vehicle_id: vehicle_id.to_owned(),
                        organization_id,
                        event_at: e.at,
                        lat: location.map(|l| l.position.lat()),
                        lng: location.map(|l| l.position.lng()),
                        location_at: location.map(|l| l.at),
                    };
                    let position = Position::new(source_time, position_key.clone(), record.line);
                    let (Some(l), "update") = (location, verb) else {
                        self.stage_lifecycle(position, row);
                        continue;
                    };
                    let candidate = self.seen_updates.insert(&UpdateKey {
                        vehicle_id,
                        organization_id: &row.organization_id,
                        event_at: e.at,
                        lat: l.position.lat(),
                        lng: l.position.lng(),
                        location_at: l.at,
                    });
                    if candidate {
                        self.candidates.push(CandidateRow {
                            vehicle_id: row.vehicle_id.clone(),
                            organization_id: row.organization_id.clone(),
                            event_at: e.at,
                            lat: l.position.lat(),
                            lng: l.position.lng(),
                            location_at: l.at,
                        });
                        if self.candidates.len() >= BATCH_ROWS {
                            self.flush_candidates().await?;
                        }
                    }
                    self.summarise(position, &row);
                    self.stage_vehicle(row).await?;
                }
            }
        }
        for reject in &parsed.rejects {
            let raw = raw_line(&reject.raw);
            self.stage_reject(key, reject.line, &reject.reason, raw)
                .await?;
        }
        Ok(())
    }

    /// Stages a line of the file `key` too long to be read whole, refused as
    /// `line_too_long`.
    pub(crate) async fn add_long_line(&mut self, key: &str, long: &LongLine) -> Result<()> {
        self.report.lines += 1;
        self.report.rejects += 1;
        self.stage_reject(key, long.line, &long.reason(), long.kept())
            .await
    }

    /// Stages a refused line: what is kept of it (prefix, length, SHA-256) and why.
    async fn stage_reject(
        &mut self,
        key: &str,
        line: u64,
        reason: &RejectReason,
        (prefix, length, sha): (&[u8], u64, [u8; 32]),
    ) -> Result<()> {
        self.rejects.push(RejectRow {
            source_key: pg_text(key),
            source_time: LandingName::parse(key).map(|n| n.datetime()),
            line: line_number(key, line)?,
            code: reason.code(),
            field: reason.field().map(pg_text),
            reason: pg_text(&reason.to_string()),
            raw: bounded_text(prefix),
            raw_length: Some(i64::try_from(length).unwrap_or(i64::MAX)),
            raw_sha256: Some(hex(&sha)),
        });
        if self.rejects.len() >= BATCH_ROWS {
            self.flush_rejects().await?;
        }
        Ok(())
    }

    /// Records a landing object refused as a whole ([`RefusedFile`]): one `etl.reject` row with
    /// line 0, the code and the reason, and an empty `raw`. Its events (none) are not loaded;
    /// it does not count as a line, so `lines == events + duplicates + rejects` still holds.
    pub async fn add_refused(&mut self, file: &RefusedFile) -> Result<()> {
        self.rejects.push(RejectRow {
            source_key: pg_text(&file.key),
            source_time: LandingName::parse(&file.key).map(|n| n.datetime()),
            line: 0,
            code: file.code,
            field: None,
            reason: pg_text(&file.reason),
            raw: String::new(),
            raw_length: None,
            raw_sha256: None,
        });
        if self.rejects.len() >= BATCH_ROWS {
            self.flush_rejects().await?;
        }
        Ok(())
    }

    /// Non-blank lines staged so far.
    pub fn lines(&self) -> u64 {
        self.report.lines
    }

    /// Refused lines staged so far (files refused as a whole not counted).
    pub fn rejects(&self) -> u64 {
        self.report.rejects
    }

    /// Keeps a register/deregister event until the commit, unless an equal one is kept
    /// already: then the one first in landing order stays and the other counts as a
    /// duplicate.
    fn stage_lifecycle(&mut self, position: Position, row: VehicleRow) {
        let key = LifecycleKey {
            verb: row.event,
            vehicle_id: row.vehicle_id.clone(),
            organization_id: row.organization_id.clone(),
            event_at: micros(row.event_at),
            location: match (row.lat, row.lng, row.location_at) {
                (Some(lat), Some(lng), Some(at)) => {
                    Some(((lat + 0.0).to_bits(), (lng + 0.0).to_bits(), micros(at)))
                }
                _ => None,
            },
        };
        match self.lifecycle.entry(key) {
            Entry::Vacant(v) => {
                v.insert((position, row));
            }
            Entry::Occupied(mut o) => {
                self.report.duplicates += 1;
                self.report.events -= 1;
                if position < o.get().0 {
                    o.insert((position, row));
                }
            }
        }
    }

    /// Adds a staged vehicle event to its vehicle's `dwh.vehicle_day` summary.
    fn summarise(&mut self, position: Position, row: &VehicleRow) {
        let seen = Seen {
            position,
            verb: row.event,
            organization_id: &row.organization_id,
            event_at: row.event_at,
            fix_at: row.location_at.filter(|_| row.event == "update"),
        };
        match self.vehicle_days.get_mut(&row.vehicle_id) {
            Some(day) => day.add(&seen),
            None => {
                let day = VehicleDay::new(&row.vehicle_id, self.day, &seen);
                self.vehicle_days.insert(row.vehicle_id.clone(), day);
            }
        }
    }

    /// Writes what is still buffered, the register/deregister events kept until now and the
    /// per-vehicle summaries: after this, staging (or the spool) holds the whole day.
    async fn flush_all(&mut self) -> Result<()> {
        for (position, row) in std::mem::take(&mut self.lifecycle).into_values() {
            self.summarise(position, &row);
            self.stage_vehicle(row).await?;
        }
        self.flush_vehicles().await?;
        self.flush_candidates().await?;
        self.flush_periods().await?;
        self.flush_rejects().await?;
        self.copy_vehicle_days().await
    }

    /// Copies what is buffered, merges the day into dwh, empties staging and commits.
    pub async fn commit(self) -> Result<DayLoadReport> {
        Ok(self.commit_with_rows().await?.0)
    }

    /// [`DayLoad::commit`], and the day's vehicle rows as the warehouse now holds them, from
    /// the loader's spill: what [`crate::curated::write_day_with_rows`] writes the curated
    /// zone from without reading the day back.
    pub async fn commit_with_rows(mut self) -> Result<(DayLoadReport, DayRows)> {
        self.flush_all().await?;
        let Sink::Copy(tx) = self.sink else {
            return Err(Error::Internal {
                context: format!(
                    "committing landing day {}: it was staged into a spool, not a transaction",
                    self.day
                ),
            });
        };
        let started = Instant::now();
        let row = tx
            .query_one(
                "CALL dwh.merge_day($1, $2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
                &[&self.day, &self.options.max_speed_mps],
            )
            .await
            .map_err(db_error(format!("merge landing day {}", self.day)))?;
        let count = |name: &str| -> u64 {
            let v: Option<i64> = row.get(name);
            v.map_or(0, |v| u64::try_from(v).unwrap_or(0))
        };
        let across_files = count("duplicate_events");
        self.report.duplicates += across_files;
        self.report.events = self.report.events.saturating_sub(across_files);
        self.report.rows = RowsLoaded {
            fact_vehicle_event: count("fact_vehicle_events"),
            fact_period_event: count("fact_period_events"),
            dim_vehicle: count("dim_vehicles"),
            dim_operating_period: count("dim_operating_periods"),
            vehicle_period_distance: count("distance_rows"),
            reject: count("reject_rows"),
        };
        // From migration 11 on the merge stages the pairs and leaves their distances to the
        // loader (NULL); a warehouse before it computed them in SQL (a count), which only the
        // tests of older migrations still load.
        let staged_pairs = row
            .try_get::<_, Option<i64>>("distance_rows")
            .map_err(db_error(format!("merge landing day {}", self.day)))?
            .is_none();
        let mut dropped = Vec::new();
        if staged_pairs {
            let context = format!("reading the duplicates the merge of {} dropped", self.day);
            for r in tx
                .query("SELECT source_key, line FROM staging.dropped_event", &[])
                .await
                .map_err(db_error(context.as_str()))?
            {
                dropped.push((
                    r.try_get(0).map_err(db_error(context.as_str()))?,
                    r.try_get(1).map_err(db_error(context.as_str()))?,
                ));
            }
            let computing = Instant::now();
            let rule = DistanceOptions {
                max_speed_mps: self.options.max_speed_mps,
            };
            self.report.rows.vehicle_period_distance =
                distance::compute(&tx, Some(self.day), Some(&mut self.spill), &rule).await?;
            self.report.distances = computing.elapsed();
        }
        tx.commit()
            .await
            .map_err(db_error(format!("commit landing day {}", self.day)))?;
        self.report.merge = started.elapsed();
        Ok((self.report, DayRows::new(self.spill, &dropped)))
    }

    /// Buffers a vehicle row for its COPY, and spills it.
    async fn stage_vehicle(&mut self, row: VehicleRow) -> Result<()> {
        self.spill.add(&RowRef {
            source_key: &row.source_key,
            source_time: row.source_time,
            line: row.line,
            event: row.event,
            vehicle_id: &row.vehicle_id,
            organization_id: &row.organization_id,
            event_at: row.event_at,
            location: match (row.lat, row.lng, row.location_at) {
                (Some(lat), Some(lng), Some(at)) => Some((lat, lng, at)),
                _ => None,
            },
        })?;
        self.vehicles.push(row);
        if self.vehicles.len() >= BATCH_ROWS {
            self.flush_vehicles().await?;
        }
        Ok(())
    }

    async fn flush_vehicles(&mut self) -> Result<()> {
        self.flush(|l| &mut l.vehicles).await
    }

    async fn flush_candidates(&mut self) -> Result<()> {
        self.flush(|l| &mut l.candidates).await
    }

    /// COPYs the day's per-vehicle summaries (one row per vehicle).
    async fn copy_vehicle_days(&mut self) -> Result<()> {
        let days: Vec<VehicleDay> = std::mem::take(&mut self.vehicle_days)
            .into_values()
            .collect();
        self.copy_rows(&days).await
    }

    async fn flush_periods(&mut self) -> Result<()> {
        self.flush(|l| &mut l.periods).await
    }

    async fn flush_rejects(&mut self) -> Result<()> {
        self.flush(|l| &mut l.rejects).await
    }

    /// COPYs the buffered rows of one staging table, keeping the buffer's allocation for the
    /// next batch.
    async fn flush<R: StagedRow>(&mut self, buffer: fn(&mut Self) -> &mut Vec<R>) -> Result<()> {
        let rows = std::mem::take(buffer(self));
        self.copy_rows(&rows).await?;
        let kept = buffer(self);
        *kept = rows;
        kept.clear();
        Ok(())
    }

    /// COPYs `rows` into their staging table (nothing when there are none), or appends them
    /// to the table's spool file.
    async fn copy_rows<R: StagedRow>(&mut self, rows: &[R]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let tx = match &mut self.sink {
            Sink::Copy(tx) => tx,
            Sink::Spool(spool) => return spool.write(rows).await,
        };
        let started = Instant::now();
        copy_in(tx, rows).await?;
        self.report.copy += started.elapsed();
        Ok(())
    }
}

/// COPYs `rows` into their staging table in `tx` (nothing when there are none).
pub(super) async fn copy_in<R: StagedRow>(tx: &Transaction<'_>, rows: &[R]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let context = || format!("COPY {} rows into {}", rows.len(), R::TABLE);
    let sink = tx.copy_in(R::COPY).await.map_err(db_error(context()))?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, R::TYPES));
    for row in rows {
        writer
            .as_mut()
            .write(&row.values())
            .await
            .map_err(db_error(context()))?;
    }
    writer.finish().await.map_err(db_error(context()))?;
    Ok(())
}

pub(super) fn check_options(options: &LoadOptions) -> Result<()> {
    if let Some(v) = options.max_speed_mps {
        if !(v.is_finite() && v > 0.0) {
            return Err(Error::Config(format!(
                "max speed must be a positive number of m/s, not {v}"
            )));
        }
    }
    Ok(())
}

/// Where a load's rows go.
enum Sink<'a> {
    /// Into staging, by COPY, inside the load's transaction.
    Copy(Transaction<'a>),
    /// Into spool files, for a load later ([`DayLoad::spooled`]).
    Spool(Spool),
}

/// Bytes read from a spool file per message of its COPY.
const SPOOL_CHUNK: usize = 256 * 1024;

/// The start of a binary COPY stream: signature, flags, header extension length.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// The end of a binary COPY stream: a tuple field count of -1.
const COPY_TRAILER: [u8; 2] = (-1i16).to_be_bytes();

/// A day's staging rows being written to local files: one binary COPY stream per staging
/// table, in the order its rows were staged.
struct Spool {
    /// Removed (with the files) when dropped.
    dir: ScratchDir,
    files: Vec<SpoolFile>,
}

struct SpoolFile {
    table: &'static str,
    copy: &'static str,
    path: PathBuf,
    file: tokio::io::BufWriter<tokio::fs::File>,
    rows: u64,
}

/// One staging table's rows in a spool: a complete binary COPY stream.
#[derive(Debug, Clone)]
struct SpooledTable {
    table: &'static str,
    copy: &'static str,
    path: PathBuf,
    rows: u64,
}

/// A day staged ahead of its load ([`DayLoad::spooled`]): its staging rows as binary COPY
/// streams in a temporary folder on local disk (about the size of the day's rows), and its
/// counts. The folder is removed when this is dropped, loaded or not.
#[derive(Debug)]
pub struct SpooledDay {
    day: NaiveDate,
    options: LoadOptions,
    tables: Vec<SpooledTable>,
    dir: ScratchDir,
    /// The day's vehicle rows: a folder of their own beside `dir`.
    spill: DaySpill,
    report: DayLoadReport,
}

impl SpooledDay {
    /// The landing day.
    pub fn day(&self) -> NaiveDate {
        self.day
    }

    /// The folder holding the spool (removed when this is dropped).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes of the spool on disk, its fixes for the distances included.
    pub fn bytes(&self) -> u64 {
        self.tables
            .iter()
            .filter_map(|t| std::fs::metadata(&t.path).ok())
            .map(|m| m.len())
            .sum::<u64>()
            + self.spill.bytes()
    }

    /// Non-blank lines staged.
    pub fn lines(&self) -> u64 {
        self.report.lines
    }

    /// Refused lines staged (files refused as a whole not counted).
    pub fn rejects(&self) -> u64 {
        self.report.rejects
    }
}

fn spool_io(path: &Path, op: &'static str, source: std::io::Error) -> Error {
    local_io("spool", path, op, source)
}

/// An IO error on a file of a load's own on local disk (`what`: "spool", "row spill"), named
/// by its folder and file name.
pub(super) fn local_io(what: &str, path: &Path, op: &'static str, source: std::io::Error) -> Error {
    Error::Io {
        url: format!("{what} {}", path.parent().unwrap_or(path).display()),
        key: path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        op,
        source,
    }
}

impl Spool {
    fn create(dir: &Path, day: NaiveDate) -> Result<Spool> {
        let dir = ScratchDir::create(dir, DirKind::Spool, day)
            .map_err(|(path, e)| spool_io(&path, "create", e))?;
        Ok(Spool {
            dir,
            files: Vec::new(),
        })
    }

    /// Encodes `rows` as binary COPY tuples (what `BinaryCopyInWriter` sends) and appends
    /// them to their table's file, started with the COPY header on first use.
    async fn write<R: StagedRow>(&mut self, rows: &[R]) -> Result<()> {
        let mut buf = BytesMut::new();
        for row in rows {
            encode_row(row, &mut buf).map_err(|e| Error::Internal {
                context: format!("encoding a row of {} for the spool: {e}", R::TABLE),
            })?;
        }
        let i = match self.files.iter().position(|f| f.copy == R::COPY) {
            Some(i) => i,
            None => {
                let path = self
                    .dir
                    .path()
                    .join(format!("{}.{}.copy", self.files.len(), R::TABLE));
                let file = tokio::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .await
                    .map_err(|e| spool_io(&path, "create", e))?;
                let mut file = tokio::io::BufWriter::new(file);
                file.write_all(COPY_HEADER)
                    .await
                    .map_err(|e| spool_io(&path, "write", e))?;
                self.files.push(SpoolFile {
                    table: R::TABLE,
                    copy: R::COPY,
                    path,
                    file,
                    rows: 0,
                });
                self.files.len() - 1
            }
        };
        let f = &mut self.files[i];
        f.file
            .write_all(&buf)
            .await
            .map_err(|e| spool_io(&f.path, "write", e))?;
        f.rows += rows.len() as u64;
        Ok(())
    }

    /// Ends every file's COPY stream and closes it.
    async fn finish(&mut self) -> Result<Vec<SpooledTable>> {
        let mut tables = Vec::with_capacity(self.files.len());
        for f in &mut self.files {
            let io = |e| spool_io(&f.path, "write", e);
            f.file.write_all(&COPY_TRAILER).await.map_err(io)?;
            // No fsync: the spool is read back by this process, never after a crash.
            f.file.flush().await.map_err(io)?;
            tables.push(SpooledTable {
                table: f.table,
                copy: f.copy,
                path: f.path.clone(),
                rows: f.rows,
            });
        }
        Ok(tables)
    }
}

/// One tuple of a binary COPY stream: the field count, then each field's length (-1 for
/// NULL) and value in PostgreSQL's binary format, as `tokio_postgres`'s `BinaryCopyInWriter`
/// writes it.
fn encode_row<R: StagedRow>(
    row: &R,
    buf: &mut BytesMut,
) -> std::result::Result<(), Box<dyn std::error::Error + Sync + Send>> {
    let values = row.values();
    let fields = i16::try_from(values.len())?;
    buf.put_i16(fields);
    for (value, ty) in values.iter().zip(R::TYPES) {
        let at = buf.len();
        buf.put_i32(0);
        let len = match value.to_sql_checked(ty, buf)? {
            IsNull::Yes => -1,
            IsNull::No => i32::try_from(buf.len() - at - 4)?,
        };
        buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }
    Ok(())
}

fn line_number(key: &str, line: u64) -> Result<i64> {
    i64::try_from(line).map_err(|_| Error::Internal {
        context: format!("staging {key:?}: line number {line} does not fit a bigint"),
    })
}

/// The kept prefix of a refused line as PostgreSQL text: invalid UTF-8 and NUL become U+FFFD,
/// then the text is cut (at a character boundary) to at most
/// [`crate::lake::REJECT_RAW_BYTES`] bytes, since the replacements may lengthen it.
fn bounded_text(prefix: &[u8]) -> String {
    let mut text = pg_text(&String::from_utf8_lossy(prefix));
    let mut end = text.len().min(REJECT_RAW_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

/// PostgreSQL text cannot hold NUL; a raw line or reason quoting one keeps U+FFFD instead
/// (the line itself is kept byte for byte in the lake's quarantine).
fn pg_text(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pg_text_replaces_nul_only() {
        assert_eq!(pg_text("a\0b"), "a\u{FFFD}b");
        assert_eq!(pg_text("plain é"), "plain é");
    }

    #[test]
    fn reject_text_is_bounded_even_when_replacements_lengthen_it() {
        let ascii = vec![b'a'; 10_000];
        assert_eq!(
            bounded_text(&ascii[..REJECT_RAW_BYTES]).len(),
            REJECT_RAW_BYTES
        );
        // Each invalid byte or NUL becomes a 3-byte U+FFFD.
        let bad = vec![0xffu8; REJECT_RAW_BYTES];
        let text = bounded_text(&bad);
        assert!(text.len() <= REJECT_RAW_BYTES && text.len() > REJECT_RAW_BYTES - 3);
        assert!(text.chars().all(|c| c == '\u{FFFD}'));
        let nul = bounded_text(b"a\0b");
        assert_eq!(nul, "a\u{FFFD}b");
    }

    /// The statements and types generated from the row declarations are exactly the ones
    /// written by hand before (migration 2's staging tables, in their column order).
    #[test]
    fn staged_rows_generate_their_copy_statements_and_types() {
        assert_eq!(
            VehicleRow::COPY,
            "COPY staging.vehicle_event (landing_day, source_key, source_time, line, event, \
             vehicle_id, organization_id, event_at, lat, lng, location_at) \
             FROM STDIN (FORMAT binary, FREEZE)"
        );
        assert_eq!(
            VehicleRow::TYPES,
            [
                Type::DATE,
                Type::TEXT,
                Type::TIMESTAMP,
                Type::INT8,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TIMESTAMPTZ,
                Type::FLOAT8,
                Type::FLOAT8,
                Type::TIMESTAMPTZ,
            ]
        );
        assert_eq!(
            PeriodRow::COPY,
            "COPY staging.period_event (source_key, source_time, line, event, \
             operating_period_id, organization_id, event_at, start_at, finish_at) \
             FROM STDIN (FORMAT binary)"
        );
        assert_eq!(
            CandidateRow::COPY,
            "COPY staging.duplicate_candidate (vehicle_id, organization_id, event_at, lat, lng, \
             location_at) FROM STDIN (FORMAT binary)"
        );
        assert_eq!(
            CandidateRow::TYPES,
            [
                Type::TEXT,
                Type::TEXT,
                Type::TIMESTAMPTZ,
                Type::FLOAT8,
                Type::FLOAT8,
                Type::TIMESTAMPTZ,
            ]
        );
        assert_eq!(
            RejectRow::COPY,
            "COPY staging.reject (source_key, source_time, line, code, field, reason, raw, \
             raw_length, raw_sha256) FROM STDIN (FORMAT binary)"
        );
        assert_eq!(
            RejectRow::TYPES,
            [
                Type::TEXT,
                Type::TIMESTAMP,
                Type::INT8,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::INT8,
                Type::TEXT,
            ]
        );
    }

    /// A spooled row is a binary COPY tuple (field count, then length and bytes per field,
    /// -1 for NULL) between the COPY header and trailer, in its table's file; the folder goes
    /// with the spool.
    #[tokio::test]
    async fn a_spool_holds_binary_copy_streams_and_is_removed_when_dropped() {
        let root = std::env::temp_dir().join(format!("d2d-spool-unit-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        let day = NaiveDate::from_ymd_opt(2019, 6, 1).unwrap();
        let mut load = DayLoad::spooled(day, LoadOptions::default(), &root).unwrap();
        load.add_refused(&RefusedFile {
            key: "odd/key".into(),
            size: 3,
            day: Some(day),
            code: "invalid_gzip",
            reason: "why".into(),
        })
        .await
        .unwrap();
        let spooled = load.finish_spool().await.unwrap();
        assert_eq!(spooled.tables.len(), 1, "only staging.reject has rows");
        let table = &spooled.tables[0];
        assert_eq!(
            (table.table, table.copy, table.rows),
            ("staging.reject", RejectRow::COPY, 1)
        );
        let bytes = std::fs::read(&table.path).unwrap();
        let mut tuple = vec![0u8, 9];
        let mut field = |v: Option<&[u8]>| match v {
            None => tuple.extend((-1i32).to_be_bytes()),
            Some(v) => {
                tuple.extend((v.len() as i32).to_be_bytes());
                tuple.extend(v);
            }
        };
        field(Some(b"odd/key")); // source_key
        field(None); // source_time: not a landing name
        field(Some(&0i64.to_be_bytes())); // line 0: refused whole
        field(Some(b"invalid_gzip"));
        field(None); // field
        field(Some(b"why"));
        field(Some(b"")); // raw: empty, not NULL
        field(None); // raw_length
        field(None); // raw_sha256
        let expected = [COPY_HEADER, &tuple, &COPY_TRAILER].concat();
        assert_eq!(bytes, expected);
        assert_eq!(spooled.bytes(), expected.len() as u64);
        let dir = spooled.dir().to_owned();
        assert!(dir.starts_with(&root) && dir.is_dir());
        drop(spooled);
        assert!(!dir.exists(), "the spool's folder is removed with it");
        std::fs::remove_dir(&root).unwrap();
    }

    /// Each value is written under its own column: a row whose text columns all differ comes
    /// out of `values()` in the statement's column order.
    #[test]
    fn values_follow_the_declared_columns() {
        let row = PeriodRow {
            source_key: "key".into(),
            source_time: None,
            line: 7,
            event: "create",
            operating_period_id: "op_1".into(),
            organization_id: "org".into(),
            event_at: DateTime::UNIX_EPOCH,
            start_at: DateTime::UNIX_EPOCH,
            finish_at: DateTime::UNIX_EPOCH,
        };
        let values = row.values();
        assert_eq!(values.len(), PeriodRow::TYPES.len());
        let shown: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
        assert_eq!(
            &shown[..6],
            ["\"key\"", "None", "7", "\"create\"", "\"op_1\"", "\"org\""]
        );
    }
}
