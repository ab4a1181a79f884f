//! Column buffers in Arrow's memory layout, built from d2d-model values without Python.
//!
//! Each column is a few flat byte buffers (values, offsets, validity bitmap) in native byte
//! order, exactly as Arrow lays them out, so the Python side wraps them with
//! `pyarrow.Array.from_buffers` without touching a row. No per-row Python object is made.
//!
//! Timestamps are microseconds since the epoch, UTC: pandas' and Arrow's `us` resolution spans
//! ±290,000 years, where nanoseconds would overflow in 2262. The feed writes milliseconds.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use d2d_model::distance::PeriodDistance;
use d2d_model::event::EventKind;
use d2d_model::{Record, Reject, RejectReason};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

/// Arrow validity bitmap (bit set = value present), least significant bit first.
#[derive(Debug, Default)]
pub struct Validity {
    bits: Vec<u8>,
    len: usize,
    nulls: usize,
}

impl Validity {
    fn with_capacity(rows: usize) -> Self {
        Self {
            bits: Vec::with_capacity(rows.div_ceil(8)),
            ..Self::default()
        }
    }

    fn push(&mut self, valid: bool) {
        if self.len % 8 == 0 {
            self.bits.push(0);
        }
        if valid {
            if let Some(last) = self.bits.last_mut() {
                *last |= 1 << (self.len % 8);
            }
        } else {
            self.nulls += 1;
        }
        self.len += 1;
    }

    fn to_py<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        // Arrow allows omitting the bitmap when nothing is null, which saves a buffer.
        (self.nulls > 0).then(|| PyBytes::new(py, &self.bits))
    }
}

/// Fixed-width values (integers, floats, timestamps), nullable.
#[derive(Debug)]
pub struct Fixed {
    type_name: &'static str,
    values: Vec<u8>,
    validity: Validity,
}

impl Fixed {
    fn new(type_name: &'static str, rows: usize) -> Self {
        Self {
            type_name,
            values: Vec::with_capacity(rows * 8),
            validity: Validity::with_capacity(rows),
        }
    }

    fn empty(type_name: &'static str) -> Self {
        Self::new(type_name, 0)
    }

    fn push_i64(&mut self, v: Option<i64>) {
        self.values
            .extend_from_slice(&v.unwrap_or_default().to_ne_bytes());
        self.validity.push(v.is_some());
    }

    fn push_f64(&mut self, v: Option<f64>) {
        self.values
            .extend_from_slice(&v.unwrap_or_default().to_ne_bytes());
        self.validity.push(v.is_some());
    }

    fn push_time(&mut self, t: Option<DateTime<Utc>>) {
        self.push_i64(t.map(|t| t.timestamp_micros()));
    }
}

/// Variable-length strings or binaries, nullable, built row by row. Offsets are kept as
/// 64-bit while building and written at their final width when the column crosses into Python:
/// Arrow's 32-bit `string`/`binary` when the data fits, `large_*` (64-bit) beyond 2 GiB.
#[derive(Debug)]
pub struct Varlen {
    binary: bool,
    offsets: Vec<i64>,
    data: Vec<u8>,
    validity: Validity,
}

impl Varlen {
    fn new(binary: bool) -> Self {
        Self {
            binary,
            offsets: vec![0],
            data: Vec::new(),
            validity: Validity::default(),
        }
    }

    fn push(&mut self, v: Option<&[u8]>) {
        if let Some(v) = v {
            self.data.extend_from_slice(v);
        }
        self.offsets.push(self.data.len() as i64);
        self.validity.push(v.is_some());
    }

    fn large(&self) -> bool {
        i32::try_from(self.data.len()).is_err()
    }

    fn type_name(&self) -> &'static str {
        match (self.binary, self.large()) {
            (false, false) => "string",
            (false, true) => "large_string",
            (true, false) => "binary",
            (true, true) => "large_binary",
        }
    }

    /// The offsets in Arrow's layout: 32-bit when the data fits, else 64-bit.
    fn offset_bytes(&self) -> Vec<u8> {
        if self.large() {
            self.offsets.iter().flat_map(|o| o.to_ne_bytes()).collect()
        } else {
            // Every offset is at most the data's length, which fits.
            self.offsets
                .iter()
                .flat_map(|&o| (o as i32).to_ne_bytes())
                .collect()
        }
    }
}

/// Dictionary-encoded strings (`int32` indices), for low-cardinality labels such as the
/// source file or the event kind: pandas turns them into `Categorical`.
#[derive(Debug, Default)]
pub struct Dictionary {
    indices: Vec<u8>,
    values: Vec<String>,
    lookup: HashMap<String, i32>,
}

impl Dictionary {
    /// A dictionary whose values are fixed up front (every kind, even those absent), so the
    /// categories do not depend on the data.
    fn with_capacity(rows: usize) -> Self {
        Self {
            indices: Vec::with_capacity(rows * 4),
            ..Self::default()
        }
    }

    fn with_values(values: &[&str], rows: usize) -> Self {
        let mut d = Self::with_capacity(rows);
        for v in values {
            d.index_of(v);
        }
        d
    }

    fn index_of(&mut self, v: &str) -> i32 {
        if let Some(&i) = self.lookup.get(v) {
            return i;
        }
        let i = self.values.len() as i32;
        self.values.push(v.to_owned());
        self.lookup.insert(v.to_owned(), i);
        i
    }

    fn push(&mut self, v: &str) {
        let i = self.index_of(v);
        self.indices.extend_from_slice(&i.to_ne_bytes());
    }
}

/// One column, ready to cross into Python.
#[derive(Debug)]
pub enum Column {
    /// Fixed-width values.
    Fixed(Fixed),
    /// Strings or binaries.
    Varlen(Varlen),
    /// Dictionary-encoded strings.
    Dictionary(Dictionary),
}

impl From<Fixed> for Column {
    fn from(c: Fixed) -> Self {
        Column::Fixed(c)
    }
}

impl From<Varlen> for Column {
    fn from(c: Varlen) -> Self {
        Column::Varlen(c)
    }
}

impl From<Dictionary> for Column {
    fn from(c: Dictionary) -> Self {
        Column::Dictionary(c)
    }
}

impl Column {
    /// The column as the tuple `d2d._tables` understands:
    /// `(type, values, validity | None, null_count)` for fixed-width,
    /// `(type, offsets, data, validity | None, null_count)` for strings/binaries,
    /// `("dictionary", indices, [values])` for dictionaries.
    /// Consumes the column, so its Rust buffers are freed as soon as Python holds the copy.
    fn into_py(self, py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        Ok(match self {
            Column::Fixed(c) => (
                c.type_name,
                PyBytes::new(py, &c.values),
                c.validity.to_py(py),
                c.validity.nulls,
            )
                .into_pyobject(py)?
                .into_any(),
            Column::Varlen(c) => (
                c.type_name(),
                PyBytes::new(py, &c.offset_bytes()),
                PyBytes::new(py, &c.data),
                c.validity.to_py(py),
                c.validity.nulls,
            )
                .into_pyobject(py)?
                .into_any(),
            Column::Dictionary(c) => (
                "dictionary",
                PyBytes::new(py, &c.indices),
                PyList::new(py, &c.values)?,
            )
                .into_pyobject(py)?
                .into_any(),
        })
    }
}

/// A table: row count and named columns in order.
#[derive(Debug)]
pub struct Table {
    /// Number of rows.
    pub rows: usize,
    /// Columns in schema order.
    pub columns: Vec<(&'static str, Column)>,
}

impl Table {
    /// `(rows, [(name, column tuple), ...])` for `d2d._tables.table`, freeing each Rust
    /// column once copied.
    pub fn into_py(self, py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        let columns = self
            .columns
            .into_iter()
            .map(|(name, c)| Ok((name, c.into_py(py)?)))
            .collect::<PyResult<Vec<_>>>()?;
        Ok((self.rows, columns).into_pyobject(py)?.into_any())
    }
}

/// Events flattened to one row each, built batch by batch: `source, line, kind, event_at,
/// organization_id, vehicle_id, lat, lng, location_at, operating_period_id, start_at,
/// finish_at` (the warehouse's column names, see `d2d-pipeline/SCHEMA.md`).
#[derive(Debug)]
pub struct EventColumns {
    rows: usize,
    source: Dictionary,
    last_source: Option<(Arc<str>, i32)>,
    line: Fixed,
    kind: Dictionary,
    at: Fixed,
    organization: Dictionary,
    vehicle: Varlen,
    lat: Fixed,
    lng: Fixed,
    location_at: Fixed,
    period: Varlen,
    start: Fixed,
    finish: Fixed,
}

impl Default for EventColumns {
    fn default() -> Self {
        Self {
            rows: 0,
            source: Dictionary::default(),
            last_source: None,
            line: Fixed::empty("int64"),
            kind: Dictionary::with_values(&EventKind::NAMES, 0),
            at: Fixed::empty("timestamp"),
            organization: Dictionary::default(),
            vehicle: Varlen::new(false),
            lat: Fixed::empty("float64"),
            lng: Fixed::empty("float64"),
            location_at: Fixed::empty("timestamp"),
            period: Varlen::new(false),
            start: Fixed::empty("timestamp"),
            finish: Fixed::empty("timestamp"),
        }
    }
}

impl EventColumns {
    /// Appends one row.
    pub fn push(&mut self, r: &Record) {
        let e = &r.event;
        // Records of one source come together: skip the lookup while it does not change.
        let i = match &self.last_source {
            Some((name, i)) if **name == *r.source => *i,
            _ => {
                let i = self.source.index_of(&r.source);
                self.last_source = Some((r.source.clone(), i));
                i
            }
        };
        self.source.indices.extend_from_slice(&i.to_ne_bytes());
        self.line.push_i64(Some(r.line as i64));
        self.kind.push(e.kind.name());
        self.at.push_time(Some(e.at));
        self.organization.push(e.organization_id.as_str());
        self.vehicle
            .push(e.kind.vehicle().map(|v| v.as_str().as_bytes()));
        let loc = e.kind.location();
        self.lat.push_f64(loc.map(|l| l.position.lat()));
        self.lng.push_f64(loc.map(|l| l.position.lng()));
        self.location_at.push_time(loc.map(|l| l.at));
        let p = e.kind.period();
        self.period.push(p.map(|p| p.id().as_str().as_bytes()));
        self.start.push_time(p.map(|p| p.start()));
        self.finish.push_time(p.map(|p| p.finish()));
        self.rows += 1;
    }

    /// The table.
    pub fn finish(self) -> Table {
        Table {
            rows: self.rows,
            columns: vec![
                ("source", self.source.into()),
                ("line", self.line.into()),
                ("kind", self.kind.into()),
                ("event_at", self.at.into()),
                ("organization_id", self.organization.into()),
                ("vehicle_id", self.vehicle.into()),
                ("lat", self.lat.into()),
                ("lng", self.lng.into()),
                ("location_at", self.location_at.into()),
                ("operating_period_id", self.period.into()),
                ("start_at", self.start.into()),
                ("finish_at", self.finish.into()),
            ],
        }
    }
}

/// Events flattened to one row each (see [`EventColumns`]).
pub fn events(records: &[Record]) -> Table {
    let mut c = EventColumns::default();
    for r in records {
        c.push(r);
    }
    c.finish()
}

/// Rejects, one row each, built batch by batch: `source, line, code, field, reason, raw`
/// (`raw` is the line's bytes, verbatim: it need not be UTF-8). `code` is a dictionary of every
/// code d2d-model can give (`RejectReason::CODES`), seen or not.
#[derive(Debug)]
pub struct RejectColumns {
    rows: usize,
    source: Dictionary,
    line: Fixed,
    code: Dictionary,
    field: Varlen,
    reason: Varlen,
    raw: Varlen,
}

impl Default for RejectColumns {
    fn default() -> Self {
        Self {
            rows: 0,
            source: Dictionary::default(),
            line: Fixed::empty("int64"),
            code: Dictionary::with_values(&RejectReason::CODES, 0),
            field: Varlen::new(false),
            reason: Varlen::new(false),
            raw: Varlen::new(true),
        }
    }
}

impl RejectColumns {
    /// Appends one row.
    pub fn push(&mut self, r: &Reject) {
        self.source.push(&r.source);
        self.line.push_i64(Some(r.line as i64));
        self.code.push(r.reason.code());
        self.field.push(r.reason.field().map(str::as_bytes));
        self.reason.push(Some(r.reason.to_string().as_bytes()));
        self.raw.push(Some(&r.raw));
        self.rows += 1;
    }

    /// The table.
    pub fn finish(self) -> Table {
        Table {
            rows: self.rows,
            columns: vec![
                ("source", self.source.into()),
                ("line", self.line.into()),
                ("code", self.code.into()),
                ("field", self.field.into()),
                ("reason", self.reason.into()),
                ("raw", self.raw.into()),
            ],
        }
    }
}

/// Rejects, one row each (see [`RejectColumns`]).
pub fn rejects(rejects: &[Reject]) -> Table {
    let mut c = RejectColumns::default();
    for r in rejects {
        c.push(r);
    }
    c.finish()
}

/// Distance rows: `operating_period_id, vehicle_id, fixes, first_at, last_at, metres`, the
/// columns of the warehouse's `dwh.vehicle_period_distance`.
pub fn distances(rows: &[PeriodDistance]) -> Table {
    let n = rows.len();
    let mut fixes = Fixed::new("int64", n);
    let (mut first, mut last) = (Fixed::new("timestamp", n), Fixed::new("timestamp", n));
    let mut metres = Fixed::new("float64", n);
    let (mut period, mut vehicle) = (Varlen::new(false), Varlen::new(false));
    for r in rows {
        period.push(Some(r.period.as_str().as_bytes()));
        vehicle.push(Some(r.vehicle.as_str().as_bytes()));
        fixes.push_i64(Some(r.fixes as i64));
        first.push_time(Some(r.first_at));
        last.push_time(Some(r.last_at));
        metres.push_f64(Some(r.metres));
    }
    Table {
        rows: n,
        columns: vec![
            ("operating_period_id", period.into()),
            ("vehicle_id", vehicle.into()),
            ("fixes", fixes.into()),
            ("first_at", first.into()),
            ("last_at", last.into()),
            ("metres", metres.into()),
        ],
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use d2d_model::parse::parse_bytes;

    fn i64s(b: &[u8]) -> Vec<i64> {
        b.chunks_exact(8)
            .map(|c| i64::from_ne_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn column<'a>(t: &'a Table, name: &str) -> &'a Column {
        &t.columns.iter().find(|(n, _)| *n == name).unwrap().1
    }

    const LINES: &str = r#"{"event":"register","on":"vehicle","at":"2019-06-01T18:17:04.088Z","data":{"id":"v1"},"organization_id":"o"}
{"event":"update","on":"vehicle","at":"2019-06-01T18:17:10.101Z","data":{"id":"v1","location":{"lat":52.5,"lng":13.25,"at":"2019-06-01T18:17:10.1Z"}},"organization_id":"o"}
{"event":"create","on":"operating_period","at":"1969-12-31T23:59:59.999Z","data":{"id":"op_1","start":"2019-06-01T18:23:04Z","finish":"2019-06-01T18:28:04Z"},"organization_id":"p"}
oops"#;

    #[test]
    fn events_flatten_with_nulls_where_a_kind_has_no_value() {
        let parsed = parse_bytes("f.txt", LINES.as_bytes());
        let t = events(&parsed.events);
        assert_eq!(t.rows, 3);
        let Column::Fixed(lat) = column(&t, "lat") else {
            panic!()
        };
        assert_eq!(lat.validity.bits, [0b010]);
        assert_eq!(lat.validity.nulls, 2);
        assert_eq!(
            lat.values[8..16],
            52.5f64.to_ne_bytes(),
            "the update's latitude"
        );
        let Column::Fixed(at) = column(&t, "event_at") else {
            panic!()
        };
        // Before the epoch, micros count down: -1 ms is -1000 µs.
        assert_eq!(i64s(&at.values)[2], -1000);
        assert_eq!(at.validity.nulls, 0);
        let Column::Varlen(period) = column(&t, "operating_period_id") else {
            panic!()
        };
        let offsets: Vec<i32> = period
            .offset_bytes()
            .chunks_exact(4)
            .map(|c| i32::from_ne_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(offsets, [0, 0, 0, 4]);
        assert_eq!(period.type_name(), "string");
        assert_eq!(period.data, b"op_1");
        let Column::Dictionary(kind) = column(&t, "kind") else {
            panic!()
        };
        assert_eq!(kind.values, EventKind::NAMES);
        let idx: Vec<i32> = kind
            .indices
            .chunks_exact(4)
            .map(|c| i32::from_ne_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(idx, [0, 1, 3]);
        let Column::Dictionary(org) = column(&t, "organization_id") else {
            panic!()
        };
        assert_eq!(org.values, ["o", "p"]);
    }

    #[test]
    fn rejects_keep_the_raw_line_and_the_field() {
        let parsed = parse_bytes("f.txt", LINES.as_bytes());
        let t = rejects(&parsed.rejects);
        assert_eq!(t.rows, 1);
        let Column::Varlen(raw) = column(&t, "raw") else {
            panic!()
        };
        assert!(raw.binary);
        assert_eq!(raw.data, b"oops");
        let Column::Varlen(field) = column(&t, "field") else {
            panic!()
        };
        assert_eq!(field.validity.nulls, 1, "invalid JSON has no field");
    }

    #[test]
    fn offsets_are_32_bit_until_the_data_passes_2_gib() {
        let mut small = Varlen::new(true);
        small.push(Some(b"ab"));
        small.push(None);
        assert_eq!(small.type_name(), "binary");
        assert_eq!(
            small.offset_bytes(),
            [0i32.to_ne_bytes(), 2i32.to_ne_bytes(), 2i32.to_ne_bytes()].concat()
        );
        assert_eq!(small.validity.nulls, 1);
    }

    #[test]
    fn rejects_list_every_code_as_a_category() {
        let t = rejects(&[]);
        let Column::Dictionary(code) = column(&t, "code") else {
            panic!()
        };
        assert_eq!(code.values, RejectReason::CODES);
    }

    #[test]
    fn validity_spans_bytes() {
        let mut v = Validity::default();
        for i in 0..10 {
            v.push(i != 3 && i != 9);
        }
        assert_eq!(v.bits, [0b1111_0111, 0b0000_0001]);
        assert_eq!(v.nulls, 2);
    }
}
