//! The load phase as three overlapping stages joined by bounded queues:
//!
//! ```text
//! fetch (async: lake reads)  ──batches of bodies──▶  parse (rayon, on a blocking thread)
//!                            ──parsed batches──▶     stage (async: COPY into staging, quarantine)
//! ```
//!
//! Each queue holds at most [`QUEUE`] batches and a batch at most `batch_bytes` of input (a
//! single larger file forms its own batch: memory then follows that file's size), so the
//! memory of the phase is bounded by a few batches whatever the size of the day. The stages
//! hand batches on in landing order, and the parser keeps the order of the files in a
//! batch, so the warehouse receives the files in landing order (its duplicate resolution
//! depends on it). The first error of any stage ends the phase: the stages downstream see it
//! in the queue, the ones upstream find their queue closed and stop.

use std::time::{Duration, Instant};

use bytes::Bytes;
use d2d_model::landing::LandingName;
use d2d_model::parse::Parsed;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::{Phase, RunEvent};
use crate::error::{Error, Result};
use crate::lake::{ArchivedFile, Quarantine, RefusedFile};
use crate::store::Store;
use crate::warehouse::DayLoad;

/// Batches waiting between two stages. Two keep each stage busy while its neighbour works on
/// the batch before; more would only hold more of the day in memory.
pub(super) const QUEUE: usize = 2;

/// Files read from the lake, in landing order, not yet parsed.
struct Batch {
    files: Vec<ArchivedFile>,
    bodies: Vec<Bytes>,
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
    let parser = tokio::task::spawn_blocking(move || parse_stage(read_rx, parsed_tx));
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
    queue: mpsc::Sender<Result<Batch>>,
) -> Result<()> {
    for batch in batches(files, batching.files, batching.bytes) {
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
        if queue.send(Ok(batch)).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// The parser's thread: takes batches in order, checks each body against the manifest and
/// parses the batch's files in parallel on rayon's pool; passes on the first error and stops.
fn parse_stage(
    mut input: mpsc::Receiver<Result<Batch>>,
    output: mpsc::Sender<Result<ParsedBatch>>,
) {
    while let Some(batch) = input.blocking_recv() {
        let parsed = batch.and_then(parse_batch);
        let failed = parsed.is_err();
        if output.blocking_send(parsed).is_err() || failed {
            break;
        }
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
    mut input: mpsc::Receiver<Result<ParsedBatch>>,
    load: &mut DayLoad<'_>,
    quarantine: &mut Quarantine,
    (files_total, bytes_total): (u64, u64),
    events: &(dyn Fn(&RunEvent<'_>) + Sync),
) -> Result<Loaded> {
    let mut loaded = Loaded::default();
    let (mut files_done, mut bytes_done) = (0u64, 0u64);
    while let Some(batch) = input.recv().await {
        let batch = batch?;
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
            let batch = batch.unwrap();
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
                .send(Ok(Batch {
                    files: vec![f.clone()],
                    bodies: vec![good.clone()],
                }))
                .await
                .unwrap();
        }
        drop(in_tx);
        tokio::task::spawn_blocking(move || parse_stage(in_rx, out_tx))
            .await
            .unwrap();
        let first = out_rx.recv().await.unwrap().unwrap();
        assert_eq!(first.parsed[0].lines, 1);
        let err = out_rx.recv().await.unwrap().err().unwrap();
        assert!(
            matches!(&err, Error::Verify { landing_key, .. } if landing_key == "bad"),
            "{err}"
        );
        assert!(out_rx.recv().await.is_none());
    }
}
