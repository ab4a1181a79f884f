//! # d2d-py
//!
//! The native module `d2d._d2d` behind the Python package `d2d` (see `python/d2d`). It is thin:
//! it converts arguments, calls [`d2d_model`] with the GIL released, and hands results back as
//! Arrow column buffers ([`columns`]) that the Python side wraps into pyarrow tables. Build it
//! with maturin (`pip install ./d2d-py`); the Python API is documented in `d2d-py/README.md`.
//!
//! | module | what it does |
//! |---|---|
//! | [`inputs`] | paths, folders and bytes to named buffers, and their parse |
//! | [`columns`] | events, rejects and distances as Arrow buffers |
//! | [`event`] | `Event`, `Location`, `Period` for one-off use |
//! | [`errors`] | the Rust-to-Python exception mapping |

pub mod columns;
pub mod errors;
pub mod event;
pub mod inputs;

use d2d_model::check::{profile, Profile, Range};
use d2d_model::distance::{period_distances, DistanceOptions};
use d2d_model::period::resolve_periods;
use d2d_model::track::tracks;
use d2d_model::{parse_line as model_parse_line, Reject};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use crate::errors::Error;

/// Reads and parses, returning `(events, rejects, counts)` with the tables as column tuples.
#[pyfunction]
#[pyo3(signature = (paths_or_bytes, *, strict = false))]
fn read_events<'py>(
    py: Python<'py>,
    paths_or_bytes: &Bound<'py, PyAny>,
    strict: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let inputs = inputs::extract(paths_or_bytes)?;
    let (events, rejects, counts) = py.detach(move || -> Result<_, Error> {
        let (parsed, files) = inputs::read(inputs)?;
        if strict {
            if let Some(first) = parsed.rejects.first() {
                return Err(Error::Parse(Box::new(first.clone())));
            }
        }
        let events = columns::events(&parsed.events);
        let rejects = columns::rejects(&parsed.rejects);
        let counts = (files, parsed.lines, parsed.duplicates);
        // The events go before the columns cross into Python, not after.
        drop(parsed);
        Ok((events, rejects, counts))
    })?;
    let counts_dict = PyDict::new(py);
    counts_dict.set_item("files", counts.0)?;
    counts_dict.set_item("lines", counts.1)?;
    counts_dict.set_item("duplicates", counts.2)?;
    Ok((events.into_py(py)?, rejects.into_py(py)?, counts_dict)
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

/// The data-check profile (`d2d_model::check::profile`) as a plain dict.
#[pyfunction]
fn data_check<'py>(
    py: Python<'py>,
    paths_or_bytes: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let inputs = inputs::extract(paths_or_bytes)?;
    let p = py.detach(move || -> Result<_, Error> {
        let (parsed, files) = inputs::read(inputs)?;
        Ok(profile(&parsed, files))
    })?;
    profile_dict(py, &p)
}

/// Distance per (operating period, vehicle), as column tuples.
#[pyfunction]
#[pyo3(signature = (paths_or_bytes, *, max_speed_mps = None))]
fn distances<'py>(
    py: Python<'py>,
    paths_or_bytes: &Bound<'py, PyAny>,
    max_speed_mps: Option<f64>,
) -> PyResult<Bound<'py, PyAny>> {
    if let Some(limit) = max_speed_mps {
        // NaN would silently keep every fix, and a limit <= 0 would drop every move.
        if !(limit > 0.0 && limit.is_finite()) {
            return Err(Error::Value(format!(
                "max_speed_mps must be a positive finite number of metres per second, got {limit}"
            ))
            .into());
        }
    }
    let inputs = inputs::extract(paths_or_bytes)?;
    let table = py.detach(move || -> Result<_, Error> {
        let (parsed, _) = inputs::read(inputs)?;
        let events = || parsed.events.iter().map(|r| &r.event);
        let periods = resolve_periods(events());
        let rows = period_distances(
            &periods,
            &tracks(events()),
            &DistanceOptions { max_speed_mps },
        );
        Ok(columns::distances(&rows))
    })?;
    table.into_py(py)
}

/// Parses one line (without its line end) into an [`event::Event`], or raises `ParseError`.
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

/// The native half of the `d2d` package; import `d2d`, not this.
#[pymodule]
fn _d2d(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<event::Event>()?;
    m.add_class::<event::Location>()?;
    m.add_class::<event::Period>()?;
    m.add_function(wrap_pyfunction!(read_events, m)?)?;
    m.add_function(wrap_pyfunction!(data_check, m)?)?;
    m.add_function(wrap_pyfunction!(distances, m)?)?;
    m.add_function(wrap_pyfunction!(parse_line, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
