//! The load phase as three overlapping stages joined by bounded queues:
//!
//! ```text
//! fetch (async: lake reads)  ──batches of bodies──▶  parse (rayon, on a blocking thread)
//!                            ──parsed batches──▶     stage (async: COPY into staging, quarantine)
//! ```
//!
//! Each queue holds at most [`QUEUE`] batches and a batch at most `batch_bytes` of input. A
//! file larger than that is not read whole: the parser reads it from the lake itself, in
//! pieces of about `batch_bytes` cut at line ends ([`crate::lines`]), each staged before the
//! next is read, and a gzip file is decoded as it streams (checked by a first pass before any
//! of it is staged, so that one which does not decode is refused whole, as a small one is).
//! So the memory of the phase is bounded by a few batches whatever the size of the day, of
//! its files and of their lines. The stages
//! hand batches on in landing order, and the parser keeps the order of the files in a
//! batch, so the warehouse receives the files in landing order (its duplicate resolution
//! depends on it). The first error of any stage ends the phase: the stages downstream see it
//! in the queue, the ones upstream find their queue closed and stop.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use d2d_model::landing::{gzip_reader, is_gzip, DecodeError, LandingName, MAX_DECODED_BYTES};
use d2d_model::parse::Parsed;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::{Phase, RunEvent};
use crate::error::{Error, Result};
use crate::lake::{ArchivedFile, Quarantine, RefusedFile};
use crate::lines::{LongLine, Piece, Pieces};
use crate::store::{ObjectReader, Store};
use crate::warehouse::DayLoad;

/// Batches waiting between two stages. Two keep each stage busy while its neighbour works on
/// the batch before; more would only hold more of the day in memory.
pub(super) const QUEUE: usize = 2;

/// Files read from the lake, in landing order, not yet parsed.
struct Batch {
    files: Vec<ArchivedFile>,
    bodies: Vec<Bytes>,
}

/// Work for the parser.
enum Input {
    /// Files read whole.
    Files(Batch),
    /// A file larger than a batch, for the parser to read in pieces.
    Large(ArchivedFile),
}

/// What the parser hands on.
enum Output {
    Files(ParsedBatch),
    Piece(FilePiece),
}

/// A piece of a file read in pieces.
struct FilePiece {
    file: ArchivedFile,
    /// The file's first piece (the load opens the file with it) and its last (the file is
    /// done, its SHA-256 checked).
    first: bool,
    last: bool,
    parsed: Parsed,
    /// A line too long to read whole, instead of lines.
    long: Option<LongLine>,
    /// Bytes of the lake object read so far.
    read: u64,
    took: Duration,
}

/// A batch parsed, its bodies already dropped.
struct ParsedBatch {
    files: Vec<ArchivedFile>,
    parsed: Vec<Parsed>,
    /// Per file, why it could not be read at all (a gzip file that does not decode): then its
    /// parse is empty.
    refused: Vec<Option<RefusedFile>>,
    /// Time the parser spent on it (checking the SHA-256, then parsing).
    took: Duration,
}

/// What the load phase measured.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Loaded {
    /// Time spent parsing (on rayon's threads, overlapping with COPY).
    pub parse: Duration,
    /// Files archived but unreadable (gzip that does not decode), staged as refused files.
    pub refused: Vec<RefusedFile>,
}

/// How to cut the day into batches and read them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Batching {
    pub files: usize,
    pub bytes: u64,
    /// Lake reads in flight at once.
    pub concurrency: usize,
}

/// Reads, parses and stages every file of `files` into `load` (in landing order), writing
/// the refused lines to `quarantine` and reporting progress after each batch.
pub(super) async fn load_files(
    lake: &Store,
    files: &[ArchivedFile],
    batching: Batching,
    load: &mut DayLoad<'_>,
    quarantine: &mut Quarantine,
    events: &(dyn Fn(&RunEvent<'_>) + Sync),
) -> Result<Loaded> {
    let (read_tx, read_rx) = mpsc::channel(QUEUE);
    let (parsed_tx, parsed_rx) = mpsc::channel(QUEUE);
    let reader = LargeReader {
        lake: lake.clone(),
        piece_bytes: usize::try_from(batching.bytes).unwrap_or(usize::MAX),
        runtime: tokio::runtime::Handle::current(),
    };
    let parser = tokio::task::spawn_blocking(move || parse_stage(read_rx, parsed_tx, &reader));
    let totals = (files.len() as u64, files.iter().map(|f| f.size).sum());
    let (_, loaded) = tokio::try_join!(
        fetch_stage(lake, files, batching, read_tx),
        stage(parsed_rx, load, quarantine, totals, events),
    )?;
    parser.await.map_err(|e| Error::Internal {
        context: format!("parsing the day's files: the parser thread failed: {e}"),
    })?;
    Ok(loaded)
}

/// Consecutive slices of at most `max_files` files and `max_bytes` bytes (a larger file alone).
pub(super) fn batches(
    files: &[ArchivedFile],
    max_files: usize,
    max_bytes: u64,
) -> Vec<&[ArchivedFile]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    for (i, f) in files.iter().enumerate() {
        let full = i - start >= max_files || (i > start && bytes + f.size > max_bytes);
        if full {
            out.push(&files[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += f.size;
    }
    if start < files.len() {
        out.push(&files[start..]);
    }
    out
}

/// Reads the lake copies batch by batch, `concurrency` files at a time, and queues each
/// batch (waiting while the queue is full). Returns quietly when the parser has gone: it
/// stopped on an error that the stage reports.
async fn fetch_stage(
    lake: &Store,
    files: &[ArchivedFile],
    batching: Batching,
    queue: mpsc::Sender<Result<Input>>,
) -> Result<()> {
    for batch in batches(files, batching.files, batching.bytes) {
        if let [file] = batch {
            if file.size > batching.bytes {
                if queue.send(Ok(Input::Large(file.clone()))).await.is_err() {
                    break;
                }
                continue;
            }
        }
        // The reads are made up front (they do nothing until polled): a closure inside the
        // stream would make this future lose `Send` (rustc's higher-ranked lifetime
        // limitation), and callers spawn the run.
        let reads: Vec<_> = batch.iter().map(|f| lake.get(&f.lake_key)).collect();
        let bodies: Vec<Bytes> = stream::iter(reads)
            .buffered(batching.concurrency.max(1))
            .try_collect()
            .await?;
        let batch = Batch {
            files: batch.to_vec(),
            bodies,
        };
        if queue.send(Ok(Input::Files(batch))).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// The parser's thread: takes batches in order, checks each body against the manifest and
/// parses the batch's files in parallel on rayon's pool, and reads large files in pieces;
/// passes on the first error and stops.
fn parse_stage(
    mut input: mpsc::Receiver<Result<Input>>,
    output: mpsc::Sender<Result<Output>>,
    reader: &LargeReader,
) {
    while let Some(work) = input.blocking_recv() {
        let done = match work {
            Ok(Input::Files(batch)) => {
                let parsed = parse_batch(batch).map(Output::Files);
                let failed = parsed.is_err();
                output.blocking_send(parsed).is_err() || failed
            }
            Ok(Input::Large(file)) => match reader.parse(&file, &output) {
                Ok(sent) => !sent,
                Err(e) => {
                    let _ = output.blocking_send(Err(e));
                    true
                }
            },
            Err(e) => {
                let _ = output.blocking_send(Err(e));
                true
            }
        };
        if done {
            break;
        }
    }
}

/// Reads a large file from the lake in pieces, on the parser's thread.
struct LargeReader {
    lake: Store,
    piece_bytes: usize,
    runtime: tokio::runtime::Handle,
}

impl LargeReader {
    /// Parses `file` piece by piece into `output`; false when the stage downstream has gone.
    fn parse(&self, file: &ArchivedFile, output: &mpsc::Sender<Result<Output>>) -> Result<bool> {
        let started = Instant::now();
        let mut source = self.open(file)?;
        let mut head = Vec::with_capacity(2);
        (&mut source)
            .take(2)
            .read_to_end(&mut head)
            .map_err(|e| source.error(e))?;
        let gzip = is_gzip(&file.landing_key, &head);
        if gzip {
            if let Some(refused) = self.refusal(file, source, std::mem::take(&mut head))? {
                let batch = ParsedBatch {
                    files: vec![file.clone()],
                    parsed: vec![Parsed::default()],
                    refused: vec![Some(refused)],
                    took: started.elapsed(),
                };
                return Ok(output.blocking_send(Ok(Output::Files(batch))).is_ok());
            }
            // The check pass read the object through: the stream starts over.
            source = self.open(file)?;
        }
        let read = source.read.clone();
        let whole = io::Cursor::new(head).chain(&mut source);
        let text: Box<dyn Read + '_> = if gzip {
            Box::new(gzip_reader(whole))
        } else {
            Box::new(whole)
        };
        let mut pieces = Pieces::new(text, self.piece_bytes);
        let mut held: Option<FilePiece> = None;
        let mut first = true;
        let mut clock = started;
        loop {
            let piece = match pieces.next_piece() {
                Ok(Some(piece)) => piece,
                Ok(None) => break,
                Err(e) => {
                    drop(pieces);
                    return Err(match source.failed.take() {
                        Some(failed) => source.error(failed),
                        None => changed(file, e),
                    });
                }
            };
            let (parsed, long) = match piece {
                Piece::Lines { bytes, first_line } => (
                    d2d_model::parse::parse_piece(&file.landing_key, &bytes, first_line),
                    None,
                ),
                Piece::Long(long) => (Parsed::default(), Some(long)),
            };
            let piece = FilePiece {
                file: file.clone(),
                first,
                last: false,
                parsed,
                long,
                read: read.load(Ordering::Relaxed),
                took: clock.elapsed(),
            };
            clock = Instant::now();
            first = false;
            if let Some(before) = held.replace(piece) {
                if output.blocking_send(Ok(Output::Piece(before))).is_err() {
                    return Ok(false);
                }
            }
        }
        drop(pieces);
        source.finish(file)?;
        let mut last = held.unwrap_or_else(|| FilePiece {
            file: file.clone(),
            first: true,
            last: true,
            parsed: Parsed::default(),
            long: None,
            read: 0,
            took: Duration::ZERO,
        });
        last.last = true;
        last.read = file.size;
        last.took += clock.elapsed();
        Ok(output.blocking_send(Ok(Output::Piece(last))).is_ok())
    }

    fn open(&self, file: &ArchivedFile) -> Result<LakeRead> {
        let reader = self
            .runtime
            .block_on(self.lake.get_reader(&file.lake_key))?;
        Ok(LakeRead {
            reader,
            runtime: self.runtime.clone(),
            hasher: Sha256::new(),
            read: Arc::new(AtomicU64::new(0)),
            failed: None,
            url: self.lake.url().to_owned(),
            key: file.lake_key.clone(),
        })
    }

    /// Decodes the gzip file `file` once without keeping anything, from `source` whose first
    /// bytes, `head`, were read already: why it must be refused whole, if it must, as
    /// [`d2d_model::landing::decode`] would refuse it.
    fn refusal(
        &self,
        file: &ArchivedFile,
        mut source: LakeRead,
        head: Vec<u8>,
    ) -> Result<Option<RefusedFile>> {
        let whole = io::Cursor::new(head).chain(&mut source);
        let decoded = io::copy(
            &mut gzip_reader(whole).take(MAX_DECODED_BYTES + 1),
            &mut io::sink(),
        );
        if let Some(e) = source.failed.take() {
            return Err(source.error(e));
        }
        let refusal = match decoded {
            Err(e) => Some(DecodeError::Gzip {
                detail: e.to_string(),
            }),
            Ok(n) if n > MAX_DECODED_BYTES => Some(DecodeError::TooLarge {
                limit: MAX_DECODED_BYTES,
            }),
            Ok(_) => None,
        };
        source.finish(file)?;
        Ok(refusal.map(|e| RefusedFile {
            key: file.landing_key.clone(),
            size: file.size,
            day: LandingName::parse(&file.landing_key).map(|n| n.date),
            code: e.code(),
            reason: e.to_string(),
        }))
    }
}

/// An error of the gzip stream of `file` while reading it in pieces: the first pass found the
/// stream sound, so the object changed under the run.
fn changed(file: &ArchivedFile, e: io::Error) -> Error {
    Error::Verify {
        landing_key: file.landing_key.clone(),
        lake_key: file.lake_key.clone(),
        detail: format!("the lake object changed while it was read: {e}"),
    }
}

/// A lake object read on a blocking thread, hashed as it goes. Errors of the store are kept
/// apart from those of a decoder reading from it, which sees them too.
struct LakeRead {
    reader: ObjectReader,
    runtime: tokio::runtime::Handle,
    hasher: Sha256,
    /// Bytes read so far (shared, for progress).
    read: Arc<AtomicU64>,
    failed: Option<io::Error>,
    url: String,
    key: String,
}

impl Read for LakeRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use tokio::io::AsyncReadExt;
        match self.runtime.block_on(self.reader.read(buf)) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                self.read.fetch_add(n as u64, Ordering::Relaxed);
                Ok(n)
            }
            Err(e) => {
                let kept = io::Error::new(e.kind(), e.to_string());
                self.failed = Some(kept);
                Err(e)
            }
        }
    }
}

impl LakeRead {
    fn error(&self, source: io::Error) -> Error {
        Error::Io {
            url: self.url.clone(),
            key: self.key.clone(),
            op: "read",
            source,
        }
    }

    /// Reads what is left and checks the whole against the manifest.
    fn finish(mut self, file: &ArchivedFile) -> Result<()> {
        io::copy(&mut self, &mut io::sink()).map_err(|e| self.error(e))?;
        let size = self.read.load(Ordering::Relaxed);
        let sha: [u8; 32] = self.hasher.finalize().into();
        if size != file.size || sha != file.sha256 {
            return Err(Error::Verify {
                landing_key: file.landing_key.clone(),
                lake_key: file.lake_key.clone(),
                detail: format!(
                    "read {size} bytes that do not match the manifest ({} bytes, SHA-256 {})",
                    file.size,
                    file.sha256_hex()
                ),
            });
        }
        Ok(())
    }
}

fn parse_batch(batch: Batch) -> Result<ParsedBatch> {
    let started = Instant::now();
    let parsed = batch
        .files
        .par_iter()
        .zip(batch.bodies.par_iter())
        .map(|(file, body)| {
            let sha: [u8; 32] = Sha256::digest(body).into();
            if body.len() as u64 != file.size || sha != file.sha256 {
                return Err(Error::Verify {
                    landing_key: file.landing_key.clone(),
                    lake_key: file.lake_key.clone(),
                    detail: format!(
                        "read {} bytes that do not match the manifest ({} bytes, SHA-256 {})",
                        body.len(),
                        file.size,
                        file.sha256_hex()
                    ),
                });
            }
            // Compressed files are decoded here, the one place the run turns lake bytes into
            // lines; the lake keeps them compressed, as they landed.
            Ok(match d2d_model::landing::decode(&file.landing_key, body) {
                Ok(text) => (
                    d2d_model::parse::parse_bytes_par(&file.landing_key, &text),
                    None,
                ),
                Err(e) => (
                    Parsed::default(),
                    Some(RefusedFile {
                        key: file.landing_key.clone(),
                        size: file.size,
                        day: LandingName::parse(&file.landing_key).map(|n| n.date),
                        code: e.code(),
                        reason: e.to_string(),
                    }),
                ),
            })
        })
        .collect::<Result<Vec<(Parsed, Option<RefusedFile>)>>>()?;
    let (parsed, refused) = parsed.into_iter().unzip();
    Ok(ParsedBatch {
        files: batch.files,
        parsed,
        refused,
        took: started.elapsed(),
    })
}

/// Stages parsed batches into the warehouse in the order they come, and their rejects into
/// the quarantine. Fails if the parser stops before the last file.
async fn stage(
    mut input: mpsc::Receiver<Result<Output>>,
    load: &mut DayLoad<'_>,
    quarantine: &mut Quarantine,
    (files_total, bytes_total): (u64, u64),
    events: &(dyn Fn(&RunEvent<'_>) + Sync),
) -> Result<Loaded> {
    let mut loaded = Loaded::default();
    let (mut files_done, mut bytes_done) = (0u64, 0u64);
    while let Some(output) = input.recv().await {
        let batch = match output? {
            Output::Files(batch) => batch,
            Output::Piece(piece) => {
                loaded.parse += piece.took;
                let key = &piece.file.landing_key;
                if piece.first {
                    load.open_file(key)?;
                }
                load.add_piece(key, &piece.parsed).await?;
                quarantine.extend(&piece.parsed.rejects)?;
                if let Some(long) = &piece.long {
                    load.add_long_line(key, long).await?;
                    quarantine.push_long(key, long)?;
                }
                if piece.last {
                    files_done += 1;
                    bytes_done += piece.file.size;
                }
                events(&RunEvent::Progress {
                    phase: Phase::Load,
                    files_done,
                    files_total,
                    bytes_done: if piece.last {
                        bytes_done
                    } else {
                        bytes_done + piece.read
                    },
                    bytes_total,
                    key,
                });
                continue;
            }
        };
        loaded.parse += batch.took;
        for ((file, parsed), refused) in batch.files.iter().zip(&batch.parsed).zip(batch.refused) {
            load.add_file(&file.landing_key, parsed).await?;
            quarantine.extend(&parsed.rejects)?;
            if let Some(refused) = refused {
                tracing::warn!(key = refused.key, code = refused.code, "{}", refused.reason);
                load.add_refused(&refused).await?;
                quarantine.push_file(&refused)?;
                loaded.refused.push(refused);
            }
            files_done += 1;
            bytes_done += file.size;
        }
        if let Some(last) = batch.files.last() {
            events(&RunEvent::Progress {
                phase: Phase::Load,
                files_done,
                files_total,
                bytes_done,
                bytes_total,
                key: &last.landing_key,
            });
        }
    }
    if files_done != files_total {
        // The parser's thread ended without an error of its own: it panicked (reported by
        // `load_files` when it joins the thread), or a stage upstream stopped early.
        return Err(Error::Internal {
            context: format!(
                "parsing the day's files: the parser stopped after {files_done} of {files_total} files"
            ),
        });
    }
    Ok(loaded)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::lake::ArchiveAction;

    fn file(size: u64) -> ArchivedFile {
        ArchivedFile {
            landing_key: format!("k{size}"),
            lake_key: String::new(),
            size,
            sha256: [0; 32],
            landing_etag: None,
            action: ArchiveAction::FromLake,
        }
    }

    #[test]
    fn batches_respect_file_and_byte_limits() {
        let files: Vec<ArchivedFile> = [10, 10, 10, 50, 200, 1, 1].map(file).to_vec();
        let sizes = |b: Vec<&[ArchivedFile]>| -> Vec<Vec<u64>> {
            b.iter()
                .map(|s| s.iter().map(|f| f.size).collect())
                .collect()
        };
        assert_eq!(
            sizes(batches(&files, 2, 1000)),
            [vec![10, 10], vec![10, 50], vec![200, 1], vec![1]]
        );
        assert_eq!(
            sizes(batches(&files, 100, 60)),
            [vec![10, 10, 10], vec![50], vec![200], vec![1, 1]]
        );
        assert!(batches(&[], 3, 3).is_empty());
    }

    /// A reader that nobody drains stops after filling its queue: the day is not read ahead
    /// into memory. Drained, it delivers every batch in landing order.
    #[tokio::test]
    async fn the_reader_waits_for_a_full_queue_and_keeps_order() {
        let root = std::env::temp_dir().join(format!("d2d-queue-unit-{}", std::process::id()));
        let lake = Store::local(&root);
        let mut files = Vec::new();
        for i in 0..12u64 {
            let body = format!("line {i}\n");
            let lake_key = format!("raw/f{i:02}");
            lake.put(&lake_key, Bytes::from(body.clone()))
                .await
                .unwrap();
            files.push(ArchivedFile {
                landing_key: format!("f{i:02}"),
                lake_key,
                size: body.len() as u64,
                sha256: Sha256::digest(body.as_bytes()).into(),
                landing_etag: None,
                action: ArchiveAction::FromLake,
            });
        }
        let batching = Batching {
            files: 1,
            bytes: 1 << 20,
            concurrency: 4,
        };
        let (tx, mut rx) = mpsc::channel(QUEUE);
        let reader = {
            let (lake, files) = (lake.clone(), files.clone());
            tokio::spawn(async move { fetch_stage(&lake, &files, batching, tx).await })
        };
        // Let the reader run until the queue is full, then give it many more turns.
        let mut turns = 0;
        while rx.len() < QUEUE {
            tokio::task::yield_now().await;
            turns += 1;
            assert!(turns < 1_000_000, "the reader never filled its queue");
        }
        for _ in 0..1_000 {
            tokio::task::yield_now().await;
        }
        assert_eq!(rx.len(), QUEUE, "a full queue holds QUEUE batches, no more");
        assert!(
            !reader.is_finished(),
            "the reader must wait, not read ahead"
        );

        let mut got = Vec::new();
        while let Some(batch) = rx.recv().await {
            let Input::Files(batch) = batch.unwrap() else {
                panic!("small files are read whole")
            };
            assert_eq!(batch.files.len(), 1);
            got.push((batch.files[0].landing_key.clone(), batch.bodies[0].clone()));
        }
        reader.await.unwrap().unwrap();
        let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        let expected: Vec<String> = (0..12).map(|i| format!("f{i:02}")).collect();
        assert_eq!(keys, expected);
        assert_eq!(got[7].1, Bytes::from("line 7\n"));
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// The parser stops at the first bad body and says which file it was; batches after it
    /// are not parsed.
    #[tokio::test]
    async fn the_parser_passes_on_the_first_error_and_stops() {
        let good = Bytes::from_static(b"{}\n");
        let mut ok = file(3);
        ok.sha256 = Sha256::digest(&good).into();
        let mut bad = file(3);
        bad.landing_key = "bad".into();
        let (in_tx, in_rx) = mpsc::channel(8);
        let (out_tx, mut out_rx) = mpsc::channel(8);
        for f in [&ok, &bad, &ok] {
            in_tx
                .send(Ok(Input::Files(Batch {
                    files: vec![f.clone()],
                    bodies: vec![good.clone()],
                })))
                .await
                .unwrap();
        }
        drop(in_tx);
        let reader = large_reader(Store::local(std::env::temp_dir()), 1 << 20);
        tokio::task::spawn_blocking(move || parse_stage(in_rx, out_tx, &reader))
            .await
            .unwrap();
        let Output::Files(first) = out_rx.recv().await.unwrap().unwrap() else {
            panic!("a batch of small files")
        };
        assert_eq!(first.parsed[0].lines, 1);
        let err = out_rx.recv().await.unwrap().err().unwrap();
        assert!(
            matches!(&err, Error::Verify { landing_key, .. } if landing_key == "bad"),
            "{err}"
        );
        assert!(out_rx.recv().await.is_none());
    }

    fn large_reader(lake: Store, piece_bytes: usize) -> LargeReader {
        LargeReader {
            lake,
            piece_bytes,
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// Puts `body` in `lake` as the file `key`, and its manifest entry.
    async fn lake_file(lake: &Store, key: &str, body: &[u8]) -> ArchivedFile {
        let lake_key = format!("raw/{key}");
        lake.put(&lake_key, Bytes::copy_from_slice(body))
            .await
            .unwrap();
        ArchivedFile {
            landing_key: key.to_owned(),
            lake_key,
            size: body.len() as u64,
            sha256: Sha256::digest(body).into(),
            landing_etag: None,
            action: ArchiveAction::FromLake,
        }
    }

    /// What the parser hands on for one large file.
    async fn pieces_of(reader: LargeReader, file: ArchivedFile) -> Vec<Result<Output>> {
        let (in_tx, in_rx) = mpsc::channel(1);
        let (out_tx, mut out_rx) = mpsc::channel(1);
        in_tx.send(Ok(Input::Large(file))).await.unwrap();
        drop(in_tx);
        let parser = tokio::task::spawn_blocking(move || parse_stage(in_rx, out_tx, &reader));
        let mut got = Vec::new();
        while let Some(output) = out_rx.recv().await {
            got.push(output);
        }
        parser.await.unwrap();
        got
    }

    const EVENT: &str = r#"{"event":"update","on":"vehicle","at":"2019-06-01T18:17:10.101Z","data":{"id":"v1","location":{"lat":52.45,"lng":13.4,"at":"2019-06-01T18:17:10.101Z"}},"organization_id":"o"}"#;

    /// A large file, plain and gzipped, is read in pieces that add up to the whole file's
    /// parse: same lines, events (the repeats across pieces left to the merge), rejects and
    /// line numbers; its long line arrives as a piece of its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_file_comes_in_pieces_that_add_up_to_the_whole() {
        let root = tempfile::tempdir().unwrap();
        let lake = Store::local(root.path());
        let mut body = Vec::new();
        for i in 0..3000 {
            body.extend_from_slice(
                EVENT
                    .replace("10.101Z", &format!("10.{:03}Z", i % 900))
                    .as_bytes(),
            );
            body.push(b'\n');
            if i == 1500 {
                body.extend_from_slice(&vec![b'a'; d2d_model::parse::MAX_LINE_BYTES + 1]);
                body.extend_from_slice(b"\nnot json\n");
            }
        }
        let whole = d2d_model::parse::parse_bytes("f", &body);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &body).unwrap();
        let gz = gz.finish().unwrap();
        for (key, bytes) in [("f", &body), ("f.gz", &gz)] {
            let file = lake_file(&lake, key, bytes).await;
            let got = pieces_of(large_reader(lake.clone(), 64 * 1024), file).await;
            let pieces: Vec<FilePiece> = got
                .into_iter()
                .map(|o| match o.unwrap() {
                    Output::Piece(p) => p,
                    Output::Files(_) => panic!("a large file comes in pieces"),
                })
                .collect();
            assert!(pieces.len() > 5, "{}", pieces.len());
            let flags: Vec<(bool, bool)> = pieces.iter().map(|p| (p.first, p.last)).collect();
            assert_eq!(flags[0], (true, false));
            assert_eq!(flags[flags.len() - 1], (false, true));
            assert!(flags[1..flags.len() - 1]
                .iter()
                .all(|f| *f == (false, false)));
            // The long line comes as a piece of its own, or inside a piece, where the parser
            // refuses it alike.
            let mut refused: Vec<(u64, &str)> = pieces
                .iter()
                .filter_map(|p| p.long.as_ref())
                .map(|l| (l.line, "line_too_long"))
                .collect();
            let long = refused.len() as u64;
            let merged = Parsed::merge(pieces.iter().map(|p| p.parsed.clone()));
            refused.extend(merged.rejects.iter().map(|r| (r.line, r.reason.code())));
            refused.sort();
            let expected: Vec<(u64, &str)> = whole
                .rejects
                .iter()
                .map(|r| (r.line, r.reason.code()))
                .collect();
            assert_eq!(refused, expected, "{key}");
            assert!(expected.contains(&(1502, "line_too_long")));
            assert_eq!(merged.lines + long, whole.lines, "{key}");
            assert_eq!(merged.duplicates, whole.duplicates, "{key}");
            let events = |p: &Parsed| -> Vec<(u64, d2d_model::event::Event)> {
                p.events.iter().map(|r| (r.line, r.event.clone())).collect()
            };
            assert_eq!(events(&merged), events(&whole), "{key}");
        }
    }

    /// A large gzip file that does not decode is refused whole before any of it is staged; a
    /// large file that is not what the manifest says fails the load.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_file_is_refused_or_failed_whole() {
        let root = tempfile::tempdir().unwrap();
        let lake = Store::local(root.path());
        let body: Vec<u8> = (0..2000)
            .flat_map(|_| format!("{EVENT}\n").into_bytes())
            .collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &body).unwrap();
        let mut gz = gz.finish().unwrap();
        gz.truncate(gz.len() - 9);
        let file = lake_file(&lake, "cut.gz", &gz).await;
        let got = pieces_of(large_reader(lake.clone(), 1024), file).await;
        assert_eq!(got.len(), 1);
        let Ok(Output::Files(batch)) = &got[0] else {
            panic!("one refused file")
        };
        let refused = batch.refused[0].as_ref().unwrap();
        assert_eq!(
            (refused.key.as_str(), refused.code),
            ("cut.gz", "invalid_gzip")
        );
        assert_eq!(batch.parsed[0], Parsed::default());

        let mut file = lake_file(&lake, "f", &body).await;
        file.sha256[0] ^= 1;
        let got = pieces_of(large_reader(lake.clone(), 1024), file).await;
        let err = got.last().unwrap().as_ref().err().unwrap();
        assert!(
            matches!(err, Error::Verify { landing_key, .. } if landing_key == "f"),
            "{err}"
        );
        assert!(got
            .iter()
            .rev()
            .skip(1)
            .all(|o| matches!(o, Ok(Output::Piece(p)) if !p.last)));
    }
}
