//! # d2d-py
//!
//! The native module `d2d._d2d` behind the Python package `d2d` (see `python/d2d`). It is thin:
//! it reads what `d2d/_inputs.py` hands it, calls [`d2d_model`] with the GIL released (checking
//! for Ctrl-C between batches), and hands results back as
//! Arrow tables ([`columns`]: `d2d_model::columnar`'s schemas and batches, the lake's own)
//! that cross into pyarrow through the Arrow C stream interface, without a copy. Build it
//! with maturin (`pip install ./d2d-py`); the Python API is documented in `d2d-py/README.md`.
//!
//! | module | what it does |
//! |---|---|
//! | [`inputs`] | source descriptors cut into pieces; folder walks; which files are event files |
//! | [`stream`] | the batch loop: parallel parse, de-duplication, Ctrl-C checks, progress |
//! | [`columns`] | events, rejects and distances as Arrow tables, exported as Arrow C streams |
//! | [`event`] | `Event`, `Location`, `Period` for one-off use |
//! | [`errors`] | the Rust-to-Python exception mapping |

pub mod columns;
pub mod errors;
pub mod event;
pub mod inputs;
pub mod stream;

use std::path::PathBuf;

use d2d_model::check::{Profile, Range};
use d2d_model::distance::{period_distances, DistanceOptions};
use d2d_model::{parse_line as model_parse_line, Reject};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyIterator, PyString};

use crate::errors::Error;
use crate::stream::{Progress, Summary};

fn progress(callback: Option<Py<PyAny>>, total: Option<u64>) -> Option<Progress> {
    callback.map(|callback| Progress { callback, total })
}

/// Reads and parses the sources of an iterator of source descriptors (see ``d2d/_inputs.py``).
///
/// Returns ``(events, rejects, counts, summary)``: the tables as ``ArrowTable``s, the counts as a
/// dict, and the Summary that later ``distances`` and ``data_check`` calls answer from.
#[pyfunction]
#[pyo3(signature = (sources, *, strict = false, progress = None, total = None))]
fn read_events<'py>(
    py: Python<'py>,
    sources: &Bound<'py, PyAny>,
    strict: bool,
    progress: Option<Py<PyAny>>,
    total: Option<u64>,
) -> PyResult<Bound<'py, PyAny>> {
    let sources = PyIterator::from_object(sources)?.unbind();
    let read = stream::read(py, sources, strict, self::progress(progress, total))?;
    let counts = PyDict::new(py);
    counts.set_item("files", read.files)?;
    counts.set_item("lines", read.lines)?;
    counts.set_item("duplicates", read.duplicates)?;
    let summary = Bound::new(py, read.summary)?;
    Ok((
        columns::ArrowTable::from(read.events),
        columns::ArrowTable::from(read.rejects),
        counts,
        summary,
    )
        .into_pyobject(py)?
        .into_any())
}

fn ranges<'py, T>(
    py: Python<'py>,
    ranges: &std::collections::BTreeMap<String, Range<T>>,
) -> PyResult<Bound<'py, PyDict>>
where
    T: Copy + IntoPyObject<'py>,
{
    let out = PyDict::new(py);
    for (field, r) in ranges {
        let d = PyDict::new(py);
        d.set_item("min", r.min)?;
        d.set_item("max", r.max)?;
        out.set_item(field, d)?;
    }
    Ok(out)
}

fn profile_dict<'py>(py: Python<'py>, p: &Profile) -> PyResult<Bound<'py, PyDict>> {
    let c = &p.counts;
    let d = PyDict::new(py);
    d.set_item("files", c.files)?;
    d.set_item("lines", c.lines)?;
    d.set_item("events", c.events)?;
    d.set_item("rejects", c.rejects)?;
    d.set_item("duplicates", c.duplicates)?;
    d.set_item("by_kind", c.by_kind.clone())?;
    d.set_item("reject_reasons", c.reject_reasons.clone())?;
    d.set_item("vehicles", c.vehicles)?;
    d.set_item("periods", c.periods)?;
    d.set_item("missing", p.missing.clone())?;
    d.set_item("time_ranges", ranges(py, &p.time_ranges)?)?;
    d.set_item("coordinate_ranges", ranges(py, &p.coordinate_ranges)?)?;
    Ok(d)
}

/// The data-check profile of the sources, as a dict (the keys of ``data_check --json``).
#[pyfunction]
#[pyo3(signature = (sources, *, progress = None, total = None))]
fn data_check<'py>(
    py: Python<'py>,
    sources: &Bound<'py, PyAny>,
    progress: Option<Py<PyAny>>,
    total: Option<u64>,
) -> PyResult<Bound<'py, PyDict>> {
    let sources = PyIterator::from_object(sources)?.unbind();
    let p = stream::check(py, sources, self::progress(progress, total))?;
    profile_dict(py, &p)
}

fn speed_limit(max_speed_mps: Option<f64>) -> Result<DistanceOptions, Error> {
    if let Some(limit) = max_speed_mps {
        // NaN would silently keep every fix, and a limit <= 0 would drop every move.
        if !(limit > 0.0 && limit.is_finite()) {
            return Err(Error::Value(format!(
                "max_speed_mps must be a positive finite number of metres per second, got {limit}"
            )));
        }
    }
    Ok(DistanceOptions { max_speed_mps })
}

/// Distance per (operating period, vehicle) of the sources: ``(table, counts)``, an
/// ``ArrowTable`` and ``{"files", "lines"}`` read.
#[pyfunction]
#[pyo3(signature = (sources, *, max_speed_mps = None, progress = None, total = None))]
fn distances<'py>(
    py: Python<'py>,
    sources: &Bound<'py, PyAny>,
    max_speed_mps: Option<f64>,
    progress: Option<Py<PyAny>>,
    total: Option<u64>,
) -> PyResult<Bound<'py, PyAny>> {
    let options = speed_limit(max_speed_mps)?;
    let sources = PyIterator::from_object(sources)?.unbind();
    let (tracks, periods, files, lines) =
        stream::tracks(py, sources, self::progress(progress, total))?;
    let table = py
        .detach(move || columns::distances(&period_distances(&periods, &tracks, &options)))
        .map_err(Error::from)?;
    let counts = PyDict::new(py);
    counts.set_item("files", files)?;
    counts.set_item("lines", lines)?;
    Ok((columns::ArrowTable::from(table), counts)
        .into_pyobject(py)?
        .into_any())
}

#[pymethods]
impl Summary {
    /// The data-check profile of the read, as a dict.
    fn profile<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        profile_dict(py, &self.profile)
    }

    /// Distance per (operating period, vehicle) of the read, as an Arrow table.
    #[pyo3(signature = (*, max_speed_mps = None))]
    fn distances(
        &self,
        py: Python<'_>,
        max_speed_mps: Option<f64>,
    ) -> PyResult<columns::ArrowTable> {
        let options = speed_limit(max_speed_mps)?;
        let table = py
            .detach(|| columns::distances(&period_distances(&self.periods, &self.tracks, &options)))
            .map_err(Error::from)?;
        Ok(table.into())
    }
}

/// Walks a folder: its event files in landing order, and the other files (skipped).
#[pyfunction]
fn walk(folder: PathBuf) -> PyResult<(Vec<String>, Vec<String>)> {
    Ok(inputs::walk(&folder)?)
}

/// Sorts names in landing order; with ``only_event_files``, sets the others aside.
///
/// Returns ``(kept, skipped)``.
#[pyfunction]
#[pyo3(signature = (names, *, only_event_files))]
fn landing_order(names: Vec<String>, only_event_files: bool) -> (Vec<String>, Vec<String>) {
    inputs::order(names, only_event_files)
}

/// Parses one NDJSON line into an ``Event``; raises ``ParseError`` if it is not a valid event.
///
/// A trailing ``\n`` or ``\r\n`` is ignored. ``source`` and ``line`` only label the error.
#[pyfunction]
#[pyo3(signature = (raw, *, source = "<line>", line = 1))]
fn parse_line(raw: &Bound<'_, PyAny>, source: &str, line: u64) -> PyResult<event::Event> {
    // One line parses in about a microsecond: releasing the GIL would cost more than it frees.
    let bytes: Vec<u8> = if let Ok(s) = raw.cast::<PyString>() {
        s.to_cow()?.as_bytes().to_vec()
    } else if let Ok(b) = raw.cast::<PyBytes>() {
        b.as_bytes().to_vec()
    } else {
        return Err(Error::Type(format!(
            "parse_line expects bytes or str, got {}",
            raw.get_type().name()?
        ))
        .into());
    };
    let trimmed = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
    model_parse_line(trimmed)
        .map(event::Event)
        .map_err(|reason| {
            Error::Parse(Box::new(Reject {
                source: source.into(),
                line,
                raw: trimmed.to_vec(),
                reason,
            }))
            .into()
        })
}

/// Parses ``data``: a whole object (``whole=True``, decompressed first when it is gzip, as the
/// daily run decompresses it) or a piece of one cut at line ends whose first line is line
/// ``first_line + 1``. Every valid line is an event, repeats included, so that the result does
/// not depend on where an input was cut; the duplicate rule is the caller's.
///
/// Returns ``(events, rejects, lines)``: two ``ArrowTable``s and the non-blank lines read.
#[pyfunction]
#[pyo3(signature = (name, data, *, first_line = 0, whole = true))]
fn parse_range<'py>(
    py: Python<'py>,
    name: &str,
    data: &Bound<'py, PyBytes>,
    first_line: u64,
    whole: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let data = data.as_bytes();
    let parsed = py.detach(|| -> Result<_, Error> {
        let text = if whole {
            d2d_model::landing::decode(name, data).map_err(|e| Error::Io {
                path: name.into(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?
        } else {
            std::borrow::Cow::Borrowed(data)
        };
        let parsed = d2d_model::parse::parse_every_line(name, &text, first_line);
        let events = d2d_model::columnar::events(&parsed.events)?;
        let rejects = d2d_model::columnar::rejects(&parsed.rejects)?;
        Ok((events, rejects, parsed.lines))
    })?;
    let (events, rejects, lines) = parsed;
    (
        columns::ArrowTable::from(events),
        columns::ArrowTable::from(rejects),
        lines,
    )
        .into_pyobject(py)
        .map(Bound::into_any)
}

/// The native half of the ``d2d`` package; import ``d2d``, not this.
#[pymodule]
fn _d2d(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<event::Event>()?;
    m.add_class::<event::Location>()?;
    m.add_class::<event::Period>()?;
    m.add_class::<Summary>()?;
    m.add_class::<columns::ArrowTable>()?;
    m.add_function(wrap_pyfunction!(read_events, m)?)?;
    m.add_function(wrap_pyfunction!(data_check, m)?)?;
    m.add_function(wrap_pyfunction!(distances, m)?)?;
    m.add_function(wrap_pyfunction!(parse_line, m)?)?;
    m.add_function(wrap_pyfunction!(parse_range, m)?)?;
    m.add_function(wrap_pyfunction!(walk, m)?)?;
    m.add_function(wrap_pyfunction!(landing_order, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
