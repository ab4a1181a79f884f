//! What the Python functions accept as input, and how it becomes named byte buffers.
//!
//! An input is a path (`str` or `os.PathLike`) to a file or a folder, raw NDJSON `bytes` /
//! `bytearray`, or a list or tuple of these. Folders are walked recursively; their files are
//! read in landing order ([`d2d_model::landing::landing_order`] on the path, then by path).
//! Arguments keep the order they were given in.

use std::cmp::Ordering;
use std::fs;
use std::path::{Path, PathBuf};

use d2d_model::landing::landing_order;
use d2d_model::parse::{parse_bytes_par, parse_sources, Parsed};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyByteArray, PyBytes, PyList, PyString, PyTuple};
use rayon::prelude::*;

use crate::errors::{Error, Result};

/// Source name of a single `bytes` argument.
pub const BYTES_SOURCE: &str = "<bytes>";

/// One argument item, extracted while attached to Python.
pub enum Input {
    /// A file or folder.
    Path(PathBuf),
    /// NDJSON content, with its source name.
    Bytes(String, PyBackedBytes),
}

/// The bytes of one source: read from a file, or borrowed from a Python `bytes`.
pub enum Data {
    /// Read from disk.
    Owned(Vec<u8>),
    /// Kept alive by Python; immutable, so safe to read without the GIL.
    Python(PyBackedBytes),
}

impl AsRef<[u8]> for Data {
    fn as_ref(&self) -> &[u8] {
        match self {
            Data::Owned(v) => v,
            Data::Python(b) => b,
        }
    }
}

/// A named buffer to parse.
pub struct Source {
    /// The path as given (joined with the walked sub-path), or `<bytes>`.
    pub name: String,
    /// Its content.
    pub data: Data,
}

const EXPECTED: &str =
    "expected a path (str or os.PathLike) to a file or folder, bytes, or a list of them";

fn bytes_of(obj: &Bound<'_, PyAny>) -> PyResult<Option<PyBackedBytes>> {
    if obj.is_instance_of::<PyBytes>() || obj.is_instance_of::<PyByteArray>() {
        Ok(Some(obj.extract()?))
    } else {
        Ok(None)
    }
}

fn one(obj: &Bound<'_, PyAny>, bytes_name: String) -> PyResult<Input> {
    if let Some(b) = bytes_of(obj)? {
        return Ok(Input::Bytes(bytes_name, b));
    }
    if obj.is_instance_of::<PyString>() || obj.hasattr("__fspath__")? {
        return Ok(Input::Path(obj.extract()?));
    }
    Err(Error::Type(format!("{EXPECTED}, got {}", obj.get_type().name()?)).into())
}

/// Reads the `paths_or_bytes` argument.
pub fn extract(obj: &Bound<'_, PyAny>) -> PyResult<Vec<Input>> {
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        obj.try_iter()?
            .enumerate()
            .map(|(i, item)| one(&item?, format!("<bytes[{i}]>")))
            .collect()
    } else {
        Ok(vec![one(obj, BYTES_SOURCE.to_owned())?])
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// Files under `dir`, recursively. Symlinks to files are read; symlinked folders are not
/// entered, so a link cycle cannot make the walk endless.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(io_error(&path))?;
        if kind.is_dir() {
            walk(&path, out)?;
        } else if kind.is_file()
            || (kind.is_symlink() && fs::metadata(&path).map_err(io_error(&path))?.is_file())
        {
            out.push(path);
        }
    }
    Ok(())
}

fn path_order(a: &Path, b: &Path) -> Ordering {
    landing_order(&a.to_string_lossy(), &b.to_string_lossy()).then_with(|| a.cmp(b))
}

/// The files an argument names: itself, or the sorted files of a folder.
fn files(path: PathBuf) -> Result<Vec<PathBuf>> {
    let meta = fs::metadata(&path).map_err(io_error(&path))?;
    if !meta.is_dir() {
        return Ok(vec![path]);
    }
    let mut found = Vec::new();
    walk(&path, &mut found)?;
    found.sort_by(|a, b| path_order(a, b));
    Ok(found)
}

/// Resolves paths and reads every file (in parallel). Runs without the GIL.
pub fn load(inputs: Vec<Input>) -> Result<Vec<Source>> {
    let mut pending = Vec::new();
    for input in inputs {
        match input {
            Input::Path(p) => pending.extend(files(p)?.into_iter().map(Input::Path)),
            bytes @ Input::Bytes(..) => pending.push(bytes),
        }
    }
    pending
        .into_par_iter()
        .map(|input| match input {
            Input::Path(p) => Ok(Source {
                name: p.to_string_lossy().into_owned(),
                data: Data::Owned(fs::read(&p).map_err(io_error(&p))?),
            }),
            Input::Bytes(name, b) => Ok(Source {
                name,
                data: Data::Python(b),
            }),
        })
        .collect()
}

/// Parses the sources in order, de-duplicating across them. One big source is split across
/// threads; many sources are parsed one per task. Both give what `parse_bytes` would.
pub fn parse(sources: &[Source]) -> Parsed {
    match sources {
        [one] => parse_bytes_par(&one.name, one.data.as_ref()),
        many => {
            let pairs: Vec<(&str, &[u8])> = many
                .iter()
                .map(|s| (s.name.as_str(), s.data.as_ref()))
                .collect();
            parse_sources(&pairs)
        }
    }
}

/// Reads and parses everything the argument names. Runs without the GIL.
pub fn read(inputs: Vec<Input>) -> Result<(Parsed, u64)> {
    let sources = load(inputs)?;
    let parsed = parse(&sources);
    Ok((parsed, sources.len() as u64))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn tree() -> PathBuf {
        let root = std::env::temp_dir().join(format!("d2d-py-walk-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for (rel, body) in [
            ("b/2019-06-01-15-17-10-events.txt", "x\n"),
            ("b/2019-06-01-15-17-9-events.txt", "y\n"),
            ("a/notes.txt", "z\n"),
            ("a/deeper/2019-06-01-15-18-0-events.txt", "w\n"),
        ] {
            let p = root.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, body).unwrap();
        }
        root
    }

    #[test]
    fn folders_are_walked_in_landing_order() {
        let root = tree();
        let names: Vec<String> = files(root.clone())
            .unwrap()
            .iter()
            .map(|p| {
                p.strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(
            names,
            [
                "b/2019-06-01-15-17-9-events.txt",
                "b/2019-06-01-15-17-10-events.txt",
                "a/deeper/2019-06-01-15-18-0-events.txt",
                "a/notes.txt",
            ]
        );
        let sources = load(vec![Input::Path(root.join("a"))]).unwrap();
        assert_eq!(sources.len(), 2);
        assert_eq!(sources[1].data.as_ref(), b"z\n");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_missing_path_names_itself() {
        let err = load(vec![Input::Path("/nonexistent/d2d".into())])
            .err()
            .unwrap();
        assert!(err.to_string().starts_with("/nonexistent/d2d: "), "{err}");
    }
}
