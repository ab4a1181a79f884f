//! The one place where Rust errors become Python exceptions.
//!
//! Hierarchy (all defined in module `d2d`):
//!
//! ```text
//! Exception
//! └── d2d.D2dError                      base of every d2d-specific error
//!     └── d2d.ParseError(ValueError)    a line that is not a valid event:
//!                                       .source, .line, .reason, .code, .field, .raw
//! OSError (FileNotFoundError, ...)      a path that cannot be read: the standard exceptions,
//!                                       with .filename, so `except FileNotFoundError` works
//! TypeError / ValueError                a bad argument (wrong type, negative speed limit)
//! KeyboardInterrupt                     Ctrl-C (or Jupyter's "interrupt kernel") during a call
//! ```

use std::io;
use std::path::PathBuf;

use d2d_model::Reject;
use pyo3::exceptions::{PyException, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyTuple, PyType};

/// Everything that can go wrong in the bindings.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// A line is not a valid event (from `parse_line`, or `read_events(strict=True)`).
    #[error("{0}")]
    Parse(Box<Reject>),
    /// An argument has the wrong type.
    #[error("{0}")]
    Type(String),
    /// An argument has a value outside its domain.
    #[error("{0}")]
    Value(String),
    /// Python raised while Rust was working: `KeyboardInterrupt` from a signal check, or an
    /// error from an input's iterator, a file object's `read()` or a progress callback. It
    /// goes back to Python unchanged.
    #[error("{0}")]
    Python(#[from] PyErr),
    /// A table could not be built as Arrow (a bug, or a column past Arrow's limits); raised
    /// as `D2dError`.
    #[error("building an Arrow table: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
}

/// Result of the bindings' Rust code.
pub type Result<T> = std::result::Result<T, Error>;

static D2D_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static PARSE_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

const D2D_ERROR_DOC: &str = "Base class of the errors raised by d2d.";
const PARSE_ERROR_DOC: &str = "A line is not a valid event.

Also a ValueError. Attributes:
    source (str): file or object the line came from (\"<line>\" for parse_line).
    line (int): 1-based line number in that source.
    reason (str): what is wrong, naming the field, e.g.
        \"data.location.lat: 91.2 is outside [-90, 90]\".
    code (str): short stable code for counting, e.g. \"invalid_coordinate\".
    field (str | None): dotted path of the field at fault, when there is one.
    raw (bytes): the line as read.";

/// `type(name, bases, {"__module__": "d2d", "__doc__": doc})`: `create_exception!` allows only
/// one base, and ParseError must be both a D2dError and a ValueError.
fn new_type<'py>(
    py: Python<'py>,
    name: &str,
    bases: Bound<'py, PyTuple>,
    doc: &str,
) -> PyResult<Py<PyType>> {
    let namespace = PyDict::new(py);
    namespace.set_item("__module__", "d2d")?;
    namespace.set_item("__doc__", doc)?;
    let ty = py
        .get_type::<PyType>()
        .call1((name, bases, namespace))?
        .cast_into::<PyType>()?;
    Ok(ty.unbind())
}

fn d2d_error(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    D2D_ERROR
        .get_or_try_init(py, || {
            let bases = PyTuple::new(py, [py.get_type::<PyException>()])?;
            new_type(py, "D2dError", bases, D2D_ERROR_DOC)
        })
        .map(|t| t.bind(py))
}

fn parse_error(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    PARSE_ERROR
        .get_or_try_init(py, || {
            let bases = PyTuple::new(py, [d2d_error(py)?.clone(), py.get_type::<PyValueError>()])?;
            new_type(py, "ParseError", bases, PARSE_ERROR_DOC)
        })
        .map(|t| t.bind(py))
}

/// Adds the exception classes to the native module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("D2dError", d2d_error(py)?)?;
    m.add("ParseError", parse_error(py)?)?;
    Ok(())
}

fn parse_error_value(py: Python<'_>, reject: &Reject) -> PyResult<PyErr> {
    let exc = parse_error(py)?.call1((reject.to_string(),))?;
    exc.setattr("source", &*reject.source)?;
    exc.setattr("line", reject.line)?;
    exc.setattr("reason", reject.reason.to_string())?;
    exc.setattr("code", reject.reason.code())?;
    exc.setattr("field", reject.reason.field())?;
    exc.setattr("raw", PyBytes::new(py, &reject.raw))?;
    Ok(PyErr::from_value(exc))
}

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        match err {
            Error::Io { path, source } => match source.raw_os_error() {
                // OSError(errno, strerror, filename) picks the subclass (FileNotFoundError, ...).
                Some(errno) => PyOSError::new_err((
                    errno,
                    source.to_string(),
                    path.to_string_lossy().into_owned(),
                )),
                None => PyOSError::new_err(format!("{}: {source}", path.display())),
            },
            Error::Parse(reject) => {
                Python::attach(|py| parse_error_value(py, &reject).unwrap_or_else(|e| e))
            }
            Error::Type(message) => PyTypeError::new_err(message),
            Error::Value(message) => PyValueError::new_err(message),
            Error::Python(err) => err,
            Error::Arrow(e) => {
                let message = format!("building an Arrow table: {e}");
                Python::attach(|py| match d2d_error(py) {
                    Ok(t) => PyErr::from_type(t.clone(), message),
                    Err(e) => e,
                })
            }
        }
    }
}
