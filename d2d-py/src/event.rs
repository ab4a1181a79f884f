//! Single events as small immutable Python objects, for one-off use (`d2d.parse_line`).

use chrono::{DateTime, Utc};
use d2d_model::event::{Location as ModelLocation, OperatingPeriod};
use d2d_model::time::format_timestamp;
use d2d_model::Event as ModelEvent;
use pyo3::prelude::*;
use pyo3::types::PyString;

fn py_repr(py: Python<'_>, s: &str) -> PyResult<String> {
    Ok(PyString::new(py, s).repr()?.to_string())
}

/// A GPS fix: where a vehicle was (WGS 84 degrees) and when (UTC).
#[pyclass(module = "d2d", name = "Location", frozen, eq, hash)]
#[derive(PartialEq, Eq, Hash)]
pub struct Location(ModelLocation);

#[pymethods]
impl Location {
    /// Latitude in degrees, in [-90, 90].
    #[getter]
    fn lat(&self) -> f64 {
        self.0.position.lat()
    }

    /// Longitude in degrees, in [-180, 180].
    #[getter]
    fn lng(&self) -> f64 {
        self.0.position.lng()
    }

    /// When the fix was taken (timezone-aware, UTC); not necessarily the event's ``at``.
    #[getter]
    fn at(&self) -> DateTime<Utc> {
        self.0.at
    }

    fn __repr__(&self) -> String {
        format!(
            "Location(lat={:?}, lng={:?}, at='{}')",
            self.0.position.lat(),
            self.0.position.lng(),
            format_timestamp(&self.0.at)
        )
    }
}

/// An operating period (a shift): its id and its UTC window, ``start <= finish``.
#[pyclass(module = "d2d", name = "Period", frozen, eq, hash)]
#[derive(PartialEq, Eq, Hash)]
pub struct Period(OperatingPeriod);

#[pymethods]
impl Period {
    /// The period's id, such as ``"op_1"``.
    #[getter]
    fn id(&self) -> &str {
        self.0.id().as_str()
    }

    /// Start of the window (inclusive; timezone-aware, UTC).
    #[getter]
    fn start(&self) -> DateTime<Utc> {
        self.0.start()
    }

    /// End of the window (inclusive; timezone-aware, UTC).
    #[getter]
    fn finish(&self) -> DateTime<Utc> {
        self.0.finish()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Period(id={}, start='{}', finish='{}')",
            py_repr(py, self.0.id().as_str())?,
            format_timestamp(&self.0.start()),
            format_timestamp(&self.0.finish())
        ))
    }
}

/// One valid event of the feed. Immutable, comparable and hashable.
#[pyclass(module = "d2d", name = "Event", frozen, eq, hash)]
#[derive(PartialEq, Eq, Hash)]
pub struct Event(pub ModelEvent);

#[pymethods]
impl Event {
    /// ``on.event``: one of ``vehicle.register``, ``vehicle.update``, ``vehicle.deregister``,
    /// ``operating_period.create``, ``operating_period.delete``.
    #[getter]
    fn kind(&self) -> &'static str {
        self.0.kind.name()
    }

    /// When the event was sent (timezone-aware, UTC).
    #[getter]
    fn at(&self) -> DateTime<Utc> {
        self.0.at
    }

    /// The organisation that sent it.
    #[getter]
    fn organization_id(&self) -> &str {
        self.0.organization_id.as_str()
    }

    /// The vehicle, for vehicle events; ``None`` otherwise.
    #[getter]
    fn vehicle_id(&self) -> Option<&str> {
        self.0.kind.vehicle().map(|v| v.as_str())
    }

    /// The fix, for vehicle events that carry one (always for updates); ``None`` otherwise.
    #[getter]
    fn location(&self) -> Option<Location> {
        self.0.kind.location().copied().map(Location)
    }

    /// The period, for operating-period events; ``None`` otherwise.
    #[getter]
    fn period(&self) -> Option<Period> {
        self.0.kind.period().cloned().map(Period)
    }

    /// The event as one line of the feed's JSON.
    fn to_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.0)
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let mut s = format!(
            "Event(kind='{}', at='{}', organization_id={}",
            self.0.kind.name(),
            format_timestamp(&self.0.at),
            py_repr(py, self.0.organization_id.as_str())?
        );
        if let Some(v) = self.0.kind.vehicle() {
            s.push_str(&format!(", vehicle_id={}", py_repr(py, v.as_str())?));
            match self.0.kind.location() {
                Some(l) => s.push_str(&format!(", location={}", Location(*l).__repr__())),
                None => s.push_str(", location=None"),
            }
        }
        if let Some(p) = self.0.kind.period() {
            s.push_str(&format!(", period={}", Period(p.clone()).__repr__(py)?));
        }
        s.push(')');
        Ok(s)
    }
}
