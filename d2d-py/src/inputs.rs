//! What the Python functions read, and how it is cut into pieces of bounded size.
//!
//! The Python side (`d2d/_inputs.py`) turns the user's argument (paths, folders, globs,
//! `s3://` URLs, file objects, bytes, iterables of these) into a lazy iterator of *source
//! descriptors*, one per source, in input order:
//!
//! | descriptor | source |
//! |---|---|
//! | `str` | a local file, read here without the GIL |
//! | `(name, bytes)` | NDJSON content named `name` |
//! | `(name, reader)` | an object with `.read(n)` (a binary file, an fsspec file), read with the GIL |
//!
//! [`Feed`] pulls descriptors as it goes and cuts each source into [`Piece`]s of about
//! [`PIECE`] bytes ending at a line end, so that no single piece of work is large: a batch of
//! pieces is parsed in parallel, then the caller checks for Ctrl-C (see `crate::stream`). A
//! small file is one piece, read on a worker thread; a large one is read piece by piece, so
//! it is never held whole.
//!
//! Folders are expanded by [`walk`]: its files in landing order, those that are not event files
//! ([`is_event_file`]) set aside to be reported.
//!
//! Gzip content (a `.gz` name or gzip's magic bytes, in a file or a `bytes` source) is
//! decompressed first, whole, by the same `d2d_model::landing::decode` as the daily run, then
//! cut into pieces like any other source.

use std::cmp::Ordering;
use std::fs;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use d2d_model::landing::{decode, is_gzip, landing_order, LandingName};
use d2d_model::parse::{parse_bytes, Parsed};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyByteArray, PyBytes, PyIterator, PyString, PyTuple};

use crate::errors::{Error, Result};

/// Target size of a piece of a large source. A piece is parsed by one thread; a batch holds
/// several.
pub const PIECE: usize = 256 * 1024;

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// Whether a local file holds gzip: by its name or its first bytes.
fn file_is_gzip(path: &Path) -> Result<bool> {
    let name = path.to_string_lossy();
    if name.ends_with(".gz") {
        return Ok(true);
    }
    let mut head = Vec::with_capacity(2);
    fs::File::open(path)
        .map_err(io_error(path))?
        .take(2)
        .read_to_end(&mut head)
        .map_err(io_error(path))?;
    Ok(is_gzip(&name, &head))
}

/// A gzip file, decompressed whole by the daily run's decoder.
fn read_gzip_file(path: &Path) -> Result<Vec<u8>> {
    let data = fs::read(path).map_err(io_error(path))?;
    let text = decode(&path.to_string_lossy(), &data).map_err(|e| Error::Io {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    Ok(text.into_owned())
}

/// A decompressed source, read piece by piece like a file.
fn decoded_stream(name: Arc<str>, path: PathBuf, text: Vec<u8>) -> Open {
    Open::Stream {
        name,
        reader: Reader::File(path, Box::new(std::io::Cursor::new(text))),
        carry: Vec::new(),
        lines: 0,
    }
}

/// Opens a plain (not gzip) local file for reading.
fn open_file(path: &Path) -> Result<Box<dyn Read + Send>> {
    Ok(Box::new(fs::File::open(path).map_err(io_error(path))?))
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    open_file(path)?
        .read_to_end(&mut data)
        .map_err(io_error(path))?;
    Ok(data)
}

/// Whether a file found in a folder holds events, by its name: a landing file
/// (`YYYY-MM-DD-H-M-S-events.<ext>`, see [`LandingName`]) or NDJSON by its extension
/// (`.ndjson`, `.jsonl`). Anything else in a folder (a README, a picture, `….txt.bak`) is
/// skipped and reported, not parsed into rejects. Files named explicitly are always read.
pub fn is_event_file(name: &str) -> bool {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let plain = base.strip_suffix(".gz").unwrap_or(base);
    LandingName::parse(base).is_some() || plain.ends_with(".ndjson") || plain.ends_with(".jsonl")
}

fn path_order(a: &str, b: &str) -> Ordering {
    landing_order(a, b).then_with(|| a.cmp(b))
}

/// Sorts names in landing order (by the time in their file names, numerically, then by name),
/// and with `only_event_files` sets the names that are not event files aside, sorted by name.
/// Returns `(kept, skipped)`.
pub fn order(mut names: Vec<String>, only_event_files: bool) -> (Vec<String>, Vec<String>) {
    let mut skipped = Vec::new();
    if only_event_files {
        let (kept, other): (Vec<String>, Vec<String>) =
            names.into_iter().partition(|n| is_event_file(n));
        names = kept;
        skipped = other;
        skipped.sort();
    }
    names.sort_by(|a, b| path_order(a, b));
    (names, skipped)
}

/// Files under `dir`, recursively. Symlinks to files are read; symlinked folders are not
/// entered, so a link cycle cannot make the walk endless.
fn walk_into(dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(io_error(&path))?;
        if kind.is_dir() {
            walk_into(&path, out)?;
        } else if kind.is_file()
            || (kind.is_symlink() && fs::metadata(&path).map_err(io_error(&path))?.is_file())
        {
            out.push(path.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// The event files of a folder in landing order, and the other files (skipped).
pub fn walk(dir: &Path) -> Result<(Vec<String>, Vec<String>)> {
    let mut found = Vec::new();
    walk_into(dir, &mut found)?;
    Ok(order(found, true))
}

/// Bytes a piece holds or names.
pub enum Data {
    /// Read from a file or a reader.
    Owned(Vec<u8>),
    /// A range of a `bytes` object.
    Shared(Arc<PyBackedBytes>, Range<usize>),
    /// A whole small file, read by the thread that parses it.
    File(PathBuf),
}

/// A piece of one source: whole lines, and how many lines of the source came before them.
pub struct Piece {
    /// The source's name, as in the tables' `source` column.
    pub source: Arc<str>,
    /// The lines.
    pub data: Data,
    /// Lines of the source before this piece, so line numbers stay those of the source.
    pub lines_before: u64,
}

impl Piece {
    /// Parses the piece (its events de-duplicated within it), numbering lines as in its source.
    pub fn parse(&self) -> Result<Parsed> {
        let mut parsed = match &self.data {
            Data::Owned(bytes) => parse_bytes(&self.source, bytes),
            Data::Shared(bytes, range) => parse_bytes(&self.source, &bytes[range.clone()]),
            Data::File(path) => parse_bytes(&self.source, &read_file(path)?),
        };
        if self.lines_before > 0 {
            for r in &mut parsed.events {
                r.line += self.lines_before;
            }
            for r in &mut parsed.rejects {
                r.line += self.lines_before;
            }
        }
        Ok(parsed)
    }
}

/// Where a source being cut into pieces gets its bytes.
enum Reader {
    File(PathBuf, Box<dyn Read + Send>),
    Python(Py<PyAny>),
}

impl Reader {
    /// Appends up to `n` bytes to `buf`; returns how many (0 at the end).
    fn read_into(&mut self, buf: &mut Vec<u8>, n: usize) -> Result<usize> {
        match self {
            Reader::File(path, file) => {
                let before = buf.len();
                file.by_ref()
                    .take(n as u64)
                    .read_to_end(buf)
                    .map_err(io_error(path))?;
                Ok(buf.len() - before)
            }
            Reader::Python(obj) => Python::attach(|py| -> Result<usize> {
                let chunk = obj.bind(py).call_method1("read", (n,))?;
                if let Ok(s) = chunk.cast::<PyString>() {
                    // A text-mode file: its str is UTF-8 once encoded.
                    let s = s.to_cow()?;
                    buf.extend_from_slice(s.as_bytes());
                    Ok(s.len())
                } else if chunk.is_none() {
                    // A non-blocking stream with nothing yet: treat as the end.
                    Ok(0)
                } else {
                    let bytes: PyBackedBytes = chunk.extract().map_err(|_| {
                        Error::Type(format!(
                            "read() of a file object must return bytes or str, got {}",
                            chunk
                                .get_type()
                                .name()
                                .map(|n| n.to_string())
                                .unwrap_or_default()
                        ))
                    })?;
                    buf.extend_from_slice(&bytes);
                    Ok(bytes.len())
                }
            }),
        }
    }
}

/// The source being cut into pieces.
enum Open {
    Stream {
        name: Arc<str>,
        reader: Reader,
        carry: Vec<u8>,
        lines: u64,
    },
    Bytes {
        name: Arc<str>,
        data: Arc<PyBackedBytes>,
        pos: usize,
        lines: u64,
    },
}

/// One source descriptor, extracted while attached.
enum Source {
    File(PathBuf),
    Bytes(Arc<str>, PyBackedBytes),
    Reader(Arc<str>, Py<PyAny>),
}

const DESCRIPTOR: &str =
    "internal: a source descriptor is a path str, (name, bytes) or (name, reader)";

fn source(item: &Bound<'_, PyAny>) -> PyResult<Source> {
    if let Ok(s) = item.cast::<PyString>() {
        return Ok(Source::File(PathBuf::from(s.to_cow()?.as_ref())));
    }
    let pair = item
        .cast::<PyTuple>()
        .map_err(|_| Error::Type(DESCRIPTOR.into()))?;
    let (name, value): (String, Bound<'_, PyAny>) = pair.extract()?;
    if value.is_instance_of::<PyBytes>() || value.is_instance_of::<PyByteArray>() {
        Ok(Source::Bytes(name.into(), value.extract()?))
    } else {
        Ok(Source::Reader(name.into(), value.unbind()))
    }
}

/// A batch of pieces, in input order.
#[derive(Default)]
pub struct Batch {
    /// The pieces.
    pub pieces: Vec<Piece>,
    /// Input bytes they hold (file sizes for whole files).
    pub bytes: u64,
}

/// Pulls source descriptors from a Python iterator and cuts them into pieces.
pub struct Feed {
    sources: Py<PyIterator>,
    open: Option<Open>,
    exhausted: bool,
    /// Sources started so far.
    pub sources_read: u64,
}

impl Feed {
    /// A feed over an iterator of source descriptors.
    pub fn new(sources: Py<PyIterator>) -> Self {
        Feed {
            sources,
            open: None,
            exhausted: false,
            sources_read: 0,
        }
    }

    /// The next descriptor, attached to Python for as long as it takes to get it.
    fn next_source(&mut self) -> Result<Option<Source>> {
        if self.exhausted {
            return Ok(None);
        }
        let next = Python::attach(|py| -> PyResult<Option<Source>> {
            match self.sources.bind(py).clone().next() {
                Some(item) => Ok(Some(source(&item?)?)),
                None => Ok(None),
            }
        })?;
        if next.is_none() {
            self.exhausted = true;
        } else {
            self.sources_read += 1;
        }
        Ok(next)
    }

    /// Pieces holding about `budget` bytes (at least one piece unless the input is done).
    /// Runs without the GIL, attaching only to take the next descriptor or read a Python
    /// reader.
    pub fn next_batch(&mut self, budget: usize) -> Result<Batch> {
        let mut batch = Batch::default();
        while (batch.bytes as usize) < budget {
            if self.open.is_none() && !self.start_next(&mut batch)? {
                break;
            }
            if let Some(piece) = self.cut()? {
                batch.bytes += piece_len(&piece);
                batch.pieces.push(piece);
            }
        }
        Ok(batch)
    }

    /// Takes the next source: a small one becomes one piece of `batch`, a large one becomes
    /// the open source. False when there is none left.
    fn start_next(&mut self, batch: &mut Batch) -> Result<bool> {
        let Some(source) = self.next_source()? else {
            return Ok(false);
        };
        match source {
            Source::File(path) => {
                let size = fs::metadata(&path).map_err(io_error(&path))?.len();
                let name: Arc<str> = path.to_string_lossy().into();
                if file_is_gzip(&path)? {
                    let text = read_gzip_file(&path)?;
                    self.open = Some(decoded_stream(name, path, text));
                } else if size as usize <= PIECE {
                    batch.bytes += size;
                    batch.pieces.push(Piece {
                        source: name,
                        data: Data::File(path),
                        lines_before: 0,
                    });
                } else {
                    let file = open_file(&path)?;
                    self.open = Some(Open::Stream {
                        name,
                        reader: Reader::File(path, file),
                        carry: Vec::new(),
                        lines: 0,
                    });
                }
            }
            Source::Bytes(name, data) if is_gzip(&name, &data) => {
                let text = decode(&name, &data)
                    .map_err(|e| Error::Value(format!("{name}: {e}")))?
                    .into_owned();
                let path = PathBuf::from(&*name);
                self.open = Some(decoded_stream(name, path, text));
            }
            Source::Bytes(name, data) => {
                self.open = Some(Open::Bytes {
                    name,
                    data: Arc::new(data),
                    pos: 0,
                    lines: 0,
                });
            }
            Source::Reader(name, obj) => {
                self.open = Some(Open::Stream {
                    name,
                    reader: Reader::Python(obj),
                    carry: Vec::new(),
                    lines: 0,
                });
            }
        }
        Ok(true)
    }

    /// The next piece of the open source, closing it at its end. `None` when the source ended
    /// without another byte (or there is no open source).
    fn cut(&mut self) -> Result<Option<Piece>> {
        let Some(open) = self.open.as_mut() else {
            return Ok(None);
        };
        let (piece, done) = match open {
            Open::Bytes {
                name,
                data,
                pos,
                lines,
            } => {
                let rest = &data[*pos..];
                let end = if rest.len() <= PIECE {
                    rest.len()
                } else {
                    memchr::memchr(b'\n', &rest[PIECE..]).map_or(rest.len(), |i| PIECE + i + 1)
                };
                let range = *pos..*pos + end;
                let piece = Piece {
                    source: name.clone(),
                    data: Data::Shared(data.clone(), range),
                    lines_before: *lines,
                };
                *lines += memchr::memchr_iter(b'\n', &rest[..end]).count() as u64;
                *pos += end;
                (Some(piece), *pos >= data.len())
            }
            Open::Stream {
                name,
                reader,
                carry,
                lines,
            } => {
                let mut buf = std::mem::take(carry);
                let mut end_of_source = false;
                // Read until the buffer holds a line end past its first PIECE bytes, or the end.
                loop {
                    let scanned = buf.len();
                    let n = reader.read_into(&mut buf, PIECE)?;
                    if n == 0 {
                        end_of_source = true;
                        break;
                    }
                    if buf.len() >= PIECE && memchr::memchr(b'\n', &buf[scanned..]).is_some() {
                        break;
                    }
                }
                if !end_of_source {
                    // Whole lines go; the partial last line waits for the next piece.
                    let cut = memchr::memrchr(b'\n', &buf).map_or(buf.len(), |i| i + 1);
                    *carry = buf.split_off(cut);
                }
                if buf.is_empty() {
                    (None, end_of_source)
                } else {
                    let piece_lines = memchr::memchr_iter(b'\n', &buf).count() as u64;
                    let piece = Piece {
                        source: name.clone(),
                        data: Data::Owned(buf),
                        lines_before: *lines,
                    };
                    *lines += piece_lines;
                    (Some(piece), end_of_source)
                }
            }
        };
        if done {
            self.open = None;
        }
        Ok(piece)
    }
}

fn piece_len(p: &Piece) -> u64 {
    match &p.data {
        Data::Owned(v) => v.len() as u64,
        Data::Shared(_, r) => r.len() as u64,
        // Counted by its size when the batch took it.
        Data::File(_) => 0,
    }
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
            ("a/README.md", "z\n"),
            ("a/day.ndjson", "z\n"),
            ("a/deeper/2019-06-01-15-18-0-events.txt", "w\n"),
        ] {
            let p = root.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, body).unwrap();
        }
        root
    }

    #[test]
    fn folders_are_walked_in_landing_order_and_other_files_set_aside() {
        let root = tree();
        let rel = |names: Vec<String>| -> Vec<String> {
            names
                .iter()
                .map(|p| {
                    Path::new(p)
                        .strip_prefix(&root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect()
        };
        let (kept, skipped) = walk(&root).unwrap();
        assert_eq!(
            rel(kept),
            [
                "b/2019-06-01-15-17-9-events.txt",
                "b/2019-06-01-15-17-10-events.txt",
                "a/deeper/2019-06-01-15-18-0-events.txt",
                "a/day.ndjson",
            ]
        );
        assert_eq!(rel(skipped), ["a/README.md", "a/notes.txt"]);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn event_files_by_name() {
        for yes in [
            "2019-06-01-15-17-3-events.txt",
            "s3://b/data/2019-06-01-15-17-3-events.json",
            "x/day.ndjson",
            "day.jsonl",
        ] {
            assert!(is_event_file(yes), "{yes}");
        }
        for no in [
            "README.md",
            "logo.png",
            "notes.txt",
            "2019-06-01-15-17-3-events.txt.bak",
        ] {
            assert!(!is_event_file(no), "{no}");
        }
    }

    #[test]
    fn pieces_of_a_parse_number_lines_as_in_their_source() {
        let body = b"a\n\nb\nc\n";
        let piece = Piece {
            source: "s".into(),
            data: Data::Owned(body.to_vec()),
            lines_before: 10,
        };
        let p = piece.parse().unwrap();
        let lines: Vec<u64> = p.rejects.iter().map(|r| r.line).collect();
        assert_eq!(lines, [11, 13, 14]);
    }

    #[test]
    fn a_missing_file_names_itself() {
        let err = read_file(Path::new("/nonexistent/d2d")).err().unwrap();
        assert!(err.to_string().starts_with("/nonexistent/d2d: "), "{err}");
    }
}
