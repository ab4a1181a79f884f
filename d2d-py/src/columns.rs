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

/// Variable-length strings or binaries, nullable. Sized up front from the total length, so
/// the offsets are written at their final width: Arrow's 32-bit `string`/`binary` when the
/// data fits, `large_*` (64-bit) beyond 2 GiB.
#[derive(Debug)]
pub struct Varlen {
    binary: bool,
    large: bool,
    offsets: Vec<u8>,
    data: Vec<u8>,
    validity: Validity,
}

impl Varlen {
    fn new(binary: bool, rows: usize, total: usize) -> Self {
        Self::with_width(binary, rows, total, i32::try_from(total).is_err())
    }

    fn with_width(binary: bool, rows: usize, total: usize, large: bool) -> Self {
        let width = if large { 8 } else { 4 };
        let mut c = Self {
            binary,
            large,
            offsets: Vec::with_capacity((rows + 1) * width),
            data: Vec::with_capacity(total),
            validity: Validity::with_capacity(rows),
        };
        c.push_offset();
        c
    }

    fn push_offset(&mut self) {
        let end = self.data.len();
        if self.large {
            self.offsets.extend_from_slice(&(end as i64).to_ne_bytes());
        } else {
            // `new` chose 32 bits because the total fits.
            self.offsets.extend_from_slice(&(end as i32).to_ne_bytes());
        }
    }

    fn push(&mut self, v: Option<&[u8]>) {
        if let Some(v) = v {
            self.data.extend_from_slice(v);
        }
        self.push_offset();
        self.validity.push(v.is_some());
    }

    fn type_name(&self) -> &'static str {
        match (self.binary, self.large) {
            (false, false) => "string",
            (false, true) => "large_string",
            (true, false) => "binary",
            (true, true) => "large_binary",
        }
    }
}

/// A `Varlen` for the strings `f` picks from `items`, sized by a first pass over them.
fn varlen<'a, T: 'a>(
    binary: bool,
    items: &'a [T],
    f: impl Fn(&'a T) -> Option<&'a [u8]>,
) -> Varlen {
    let total = items.iter().filter_map(&f).map(<[u8]>::len).sum();
    let mut c = Varlen::new(binary, items.len(), total);
    for item in items {
        c.push(f(item));
    }
    c
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
                PyBytes::new(py, &c.offsets),
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

/// Events flattened to one row each: `source, line, kind, at, organization_id, vehicle_id,
/// lat, lng, location_at, period_id, start, finish`.
pub fn events(records: &[Record]) -> Table {
    let n = records.len();
    let mut source = Dictionary::with_capacity(n);
    let mut line = Fixed::new("int64", n);
    let mut kind = Dictionary::with_values(&EventKind::NAMES, n);
    let mut at = Fixed::new("timestamp", n);
    let mut organization = Dictionary::with_capacity(n);
    let (mut lat, mut lng) = (Fixed::new("float64", n), Fixed::new("float64", n));
    let mut location_at = Fixed::new("timestamp", n);
    let (mut start, mut finish) = (Fixed::new("timestamp", n), Fixed::new("timestamp", n));
    let mut last_source: Option<(&str, i32)> = None;
    for r in records {
        let e = &r.event;
        // Records of one source come together: skip the lookup while it does not change.
        match last_source {
            Some((name, i)) if name == &*r.source => {
                source.indices.extend_from_slice(&i.to_ne_bytes())
            }
            _ => {
                let i = source.index_of(&r.source);
                source.indices.extend_from_slice(&i.to_ne_bytes());
                last_source = Some((&r.source, i));
            }
        }
        line.push_i64(Some(r.line as i64));
        kind.push(e.kind.name());
        at.push_time(Some(e.at));
        organization.push(e.organization_id.as_str());
        let loc = e.kind.location();
        lat.push_f64(loc.map(|l| l.position.lat()));
        lng.push_f64(loc.map(|l| l.position.lng()));
        location_at.push_time(loc.map(|l| l.at));
        let p = e.kind.period();
        start.push_time(p.map(|p| p.start()));
        finish.push_time(p.map(|p| p.finish()));
    }
    let vehicle = varlen(false, records, |r| {
        r.event.kind.vehicle().map(|v| v.as_str().as_bytes())
    });
    let period = varlen(false, records, |r| {
        r.event.kind.period().map(|p| p.id().as_str().as_bytes())
    });
    Table {
        rows: n,
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
    let n = rejects.len();
    let mut source = Dictionary::with_capacity(n);
    let mut line = Fixed::new("int64", n);
    let mut code = Dictionary::with_capacity(n);
    for r in rejects {
        source.push(&r.source);
        line.push_i64(Some(r.line as i64));
        code.push(r.reason.code());
    }
    let field = varlen(false, rejects, |r| r.reason.field().map(str::as_bytes));
    let reasons: Vec<String> = rejects.iter().map(|r| r.reason.to_string()).collect();
    let reason = varlen(false, &reasons, |r| Some(r.as_bytes()));
    let raw = varlen(true, rejects, |r| Some(r.raw.as_slice()));
    Table {
        rows: n,
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
    let n = rows.len();
    let mut fixes = Fixed::new("int64", n);
    let (mut first, mut last) = (Fixed::new("timestamp", n), Fixed::new("timestamp", n));
    let mut metres = Fixed::new("float64", n);
    for r in rows {
        fixes.push_i64(Some(r.fixes as i64));
        first.push_time(Some(r.first_at));
        last.push_time(Some(r.last_at));
        metres.push_f64(Some(r.metres));
    }
    let period = varlen(false, rows, |r| Some(r.period.as_str().as_bytes()));
    let vehicle = varlen(false, rows, |r| Some(r.vehicle.as_str().as_bytes()));
    Table {
        rows: n,
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
        let offsets: Vec<i32> = period
            .offsets
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
    fn strings_past_2_gib_get_64_bit_offsets() {
        let mut big = Varlen::with_width(false, 1, 1, true);
        big.push(Some(b"x"));
        assert_eq!(big.type_name(), "large_string");
        assert_eq!(
            big.offsets,
            [0i64.to_ne_bytes(), 1i64.to_ne_bytes()].concat()
        );
        let small = Varlen::new(true, 1, i32::MAX as usize / 4096);
        assert_eq!(small.type_name(), "binary");
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
