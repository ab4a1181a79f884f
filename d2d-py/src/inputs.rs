//! What the Python functions accept as input, and how it becomes named byte buffers.
//!
//! An input is a path (`str` or `os.PathLike`) to a file or a folder, raw NDJSON `bytes` /
//! `bytearray`, or a list or tuple of these. Folders are walked recursively; their files are
//! read in landing order ([`d2d_model::landing::landing_order`] on the path, then by path).
//! Arguments keep the order they were given in. Gzip content (a `.gz` name or gzip's magic
//! bytes) is decompressed first, by the same `d2d_model::landing::decode` as the daily run.

use std::cmp::Ordering;
use std::fs;
use std::path::{Path, PathBuf};

use d2d_model::landing::{decode, landing_order};
use d2d_model::parse::{parse_bytes, parse_bytes_par, Parsed};
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

/// Replaces each folder by its files, in landing order.
fn expand(inputs: Vec<Input>) -> Result<Vec<Input>> {
    let mut out = Vec::with_capacity(inputs.len());
    for input in inputs {
        match input {
            Input::Path(p) => out.extend(files(p)?.into_iter().map(Input::Path)),
            bytes @ Input::Bytes(..) => out.push(bytes),
        }
    }
    Ok(out)
}

/// Source name and parse of one input. A lone input may be one big buffer: it is split across
/// threads by `parse_bytes_par`.
fn parse_one(input: Input, alone: bool) -> Result<Parsed> {
    let parse = if alone { parse_bytes_par } else { parse_bytes };
    match input {
        Input::Path(p) => {
            let data = fs::read(&p).map_err(io_error(&p))?;
            let name = p.to_string_lossy();
            let text = decode(&name, &data).map_err(|e| Error::Io {
                path: p.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?;
            Ok(parse(&name, &text))
        }
        Input::Bytes(name, data) => {
            let text = decode(&name, &data).map_err(|e| Error::Value(format!("{name}: {e}")))?;
            Ok(parse(&name, &text))
        }
    }
}

/// Reads and parses everything the argument names, returning the parse and the number of
/// sources. Runs without the GIL.
///
/// Each file is parsed as soon as it is read, in parallel, and its bytes dropped at once, so
/// the input is never held whole next to its events. The result is what
/// `d2d_model::parse::parse_sources` gives on the same sources: `Parsed::merge` de-duplicates
/// across files, and a per-file de-duplication before it keeps the same first occurrences and
/// counts the same duplicates.
pub fn read(inputs: Vec<Input>) -> Result<(Parsed, u64)> {
    let inputs = expand(inputs)?;
    let sources = inputs.len() as u64;
    let alone = inputs.len() == 1;
    let parts = inputs
        .into_par_iter()
        .map(|input| parse_one(input, alone))
        .collect::<Result<Vec<Parsed>>>()?;
    Ok((Parsed::merge(parts), sources))
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
        let (parsed, sources) = read(vec![Input::Path(root.join("a"))]).unwrap();
        assert_eq!(sources, 2);
        assert_eq!(parsed.rejects[1].raw, b"z");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn reading_files_equals_parse_sources() {
        let root = std::env::temp_dir().join(format!("d2d-py-same-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        let update = |v: &str, s: u32| {
            format!(
                r#"{{"event":"update","on":"vehicle","at":"2019-06-01T10:00:0{s}Z","data":{{"id":"{v}","location":{{"lat":1.0,"lng":2.0,"at":"2019-06-01T10:00:0{s}Z"}}}},"organization_id":"o"}}"#
            )
        };
        let bodies = [
            format!(
                "{}\n{}\n{}\nbad\n",
                update("a", 1),
                update("a", 1),
                update("b", 2)
            ),
            format!("{}\n\n{}\n", update("b", 2), update("c", 3)),
            format!("{}\r\n{}", update("a", 1), update("c", 4)),
        ];
        let mut pairs = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            let path = root.join(format!("2019-06-01-15-17-{i}-events.txt"));
            fs::write(&path, body).unwrap();
            pairs.push((path.to_string_lossy().into_owned(), body.as_bytes()));
        }
        let (got, sources) = read(vec![Input::Path(root.clone())]).unwrap();
        let want = d2d_model::parse::parse_sources(&pairs);
        assert_eq!(sources, 3);
        assert_eq!(got, want);
        assert_eq!((got.lines, got.events.len(), got.duplicates), (8, 4, 3));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_missing_path_names_itself() {
        let err = read(vec![Input::Path("/nonexistent/d2d".into())])
            .err()
            .unwrap();
        assert!(err.to_string().starts_with("/nonexistent/d2d: "), "{err}");
    }
}
