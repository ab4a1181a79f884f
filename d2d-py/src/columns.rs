//! Column buffers in Arrow's memory layout, built from d2d-model values without Python.
//!
//! Each column is a few flat byte buffers (values, offsets, validity bitmap) in native byte
//! order, exactly as Arrow lays them out, so the Python side wraps them with
//! `pyarrow.Array.from_buffers` without touching a row. No per-row Python object is made.
//!
//! Timestamps are microseconds since the epoch, UTC: pandas' and Arrow's `us` resolution spans
//! ±290,000 years, where nanoseconds would overflow in 2262. The feed writes milliseconds.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use d2d_model::distance::PeriodDistance;
use d2d_model::event::EventKind;
use d2d_model::{Record, Reject};
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
    fn new(type_name: &'static str) -> Self {
        Self {
            type_name,
            values: Vec::new(),
            validity: Validity::default(),
        }
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

/// Variable-length strings or binaries, nullable. Offsets are `i64` while building and shrink
/// to Arrow's 32-bit `string`/`binary` when the data fits, else stay `large_*`.
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

    fn push_str(&mut self, v: Option<&str>) {
        self.push(v.map(str::as_bytes));
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
    fn with_values(values: &[&str]) -> Self {
        let mut d = Self::default();
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
    fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(match self {
            Column::Fixed(c) => (
                c.type_name,
                PyBytes::new(py, &c.values),
                c.validity.to_py(py),
                c.validity.nulls,
            )
                .into_pyobject(py)?
                .into_any(),
            Column::Varlen(c) => {
                let last = c.offsets.last().copied().unwrap_or(0);
                let (type_name, offsets) = match i32::try_from(last) {
                    Ok(_) => {
                        let mut out = Vec::with_capacity(c.offsets.len() * 4);
                        for &o in &c.offsets {
                            out.extend_from_slice(&(o as i32).to_ne_bytes());
                        }
                        (if c.binary { "binary" } else { "string" }, out)
                    }
                    Err(_) => {
                        let mut out = Vec::with_capacity(c.offsets.len() * 8);
                        for &o in &c.offsets {
                            out.extend_from_slice(&o.to_ne_bytes());
                        }
                        let name = if c.binary {
                            "large_binary"
                        } else {
                            "large_string"
                        };
                        (name, out)
                    }
                };
                (
                    type_name,
                    PyBytes::new(py, &offsets),
                    PyBytes::new(py, &c.data),
                    c.validity.to_py(py),
                    c.validity.nulls,
                )
                    .into_pyobject(py)?
                    .into_any()
            }
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
    /// `(rows, [(name, column tuple), ...])` for `d2d._tables.table`.
    pub fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let columns = self
            .columns
            .iter()
            .map(|(name, c)| Ok((*name, c.to_py(py)?)))
            .collect::<PyResult<Vec<_>>>()?;
        Ok((self.rows, columns).into_pyobject(py)?.into_any())
    }
}

/// Events flattened to one row each: `source, line, kind, at, organization_id, vehicle_id,
/// lat, lng, location_at, period_id, start, finish`.
pub fn events(records: &[Record]) -> Table {
    let mut source = Dictionary::default();
    let mut line = Fixed::new("int64");
    let mut kind = Dictionary::with_values(&EventKind::NAMES);
    let mut at = Fixed::new("timestamp");
    let mut organization = Dictionary::default();
    let mut vehicle = Varlen::new(false);
    let (mut lat, mut lng) = (Fixed::new("float64"), Fixed::new("float64"));
    let mut location_at = Fixed::new("timestamp");
    let mut period = Varlen::new(false);
    let (mut start, mut finish) = (Fixed::new("timestamp"), Fixed::new("timestamp"));
    for r in records {
        let e = &r.event;
        source.push(&r.source);
        line.push_i64(Some(r.line as i64));
        kind.push(e.kind.name());
        at.push_time(Some(e.at));
        organization.push(e.organization_id.as_str());
        vehicle.push_str(e.kind.vehicle().map(|v| v.as_str()));
        let loc = e.kind.location();
        lat.push_f64(loc.map(|l| l.position.lat()));
        lng.push_f64(loc.map(|l| l.position.lng()));
        location_at.push_time(loc.map(|l| l.at));
        let p = e.kind.period();
        period.push_str(p.map(|p| p.id().as_str()));
        start.push_time(p.map(|p| p.start()));
        finish.push_time(p.map(|p| p.finish()));
    }
    Table {
        rows: records.len(),
        columns: vec![
            ("source", source.into()),
            ("line", line.into()),
            ("kind", kind.into()),
            ("at", at.into()),
            ("organization_id", organization.into()),
            ("vehicle_id", vehicle.into()),
            ("lat", lat.into()),
            ("lng", lng.into()),
            ("location_at", location_at.into()),
            ("period_id", period.into()),
            ("start", start.into()),
            ("finish", finish.into()),
        ],
    }
}

/// Rejects, one row each: `source, line, code, field, reason, raw` (`raw` is the line's bytes,
/// verbatim: it need not be UTF-8).
pub fn rejects(rejects: &[Reject]) -> Table {
    let mut source = Dictionary::default();
    let mut line = Fixed::new("int64");
    let mut code = Dictionary::default();
    let mut field = Varlen::new(false);
    let mut reason = Varlen::new(false);
    let mut raw = Varlen::new(true);
    for r in rejects {
        source.push(&r.source);
        line.push_i64(Some(r.line as i64));
        code.push(r.reason.code());
        field.push_str(r.reason.field());
        reason.push_str(Some(&r.reason.to_string()));
        raw.push(Some(&r.raw));
    }
    Table {
        rows: rejects.len(),
        columns: vec![
            ("source", source.into()),
            ("line", line.into()),
            ("code", code.into()),
            ("field", field.into()),
            ("reason", reason.into()),
            ("raw", raw.into()),
        ],
    }
}

/// Distance rows: `period_id, vehicle_id, fixes, first_at, last_at, metres`.
pub fn distances(rows: &[PeriodDistance]) -> Table {
    let mut period = Varlen::new(false);
    let mut vehicle = Varlen::new(false);
    let mut fixes = Fixed::new("int64");
    let (mut first, mut last) = (Fixed::new("timestamp"), Fixed::new("timestamp"));
    let mut metres = Fixed::new("float64");
    for r in rows {
        period.push_str(Some(r.period.as_str()));
        vehicle.push_str(Some(r.vehicle.as_str()));
        fixes.push_i64(Some(r.fixes as i64));
        first.push_time(Some(r.first_at));
        last.push_time(Some(r.last_at));
        metres.push_f64(Some(r.metres));
    }
    Table {
        rows: rows.len(),
        columns: vec![
            ("period_id", period.into()),
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
        let Column::Fixed(at) = column(&t, "at") else {
            panic!()
        };
        // Before the epoch, micros count down: -1 ms is -1000 µs.
        assert_eq!(i64s(&at.values)[2], -1000);
        assert_eq!(at.validity.nulls, 0);
        let Column::Varlen(period) = column(&t, "period_id") else {
            panic!()
        };
        assert_eq!(period.offsets, [0, 0, 0, 4]);
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
    fn validity_spans_bytes() {
        let mut v = Validity::default();
        for i in 0..10 {
            v.push(i != 3 && i != 9);
        }
        assert_eq!(v.bits, [0b1111_0111, 0b0000_0001]);
        assert_eq!(v.nulls, 2);
    }
}
