//! The one loop every long call runs: read a batch, parse it in parallel, fold it into what
//! the call returns, check for Ctrl-C, report progress, repeat.
//!
//! The work runs with the GIL released. Between batches the loop attaches to Python for a
//! moment: `check_signals` raises `KeyboardInterrupt` there (Ctrl-C in a terminal, "interrupt
//! kernel" in Jupyter), and a progress callback, when given, is called. A batch is sized to take
//! about [`TARGET`] of work (measured on the batch before), so the loop gets back to Python
//! several times per 100 ms whatever the machine, the build or the input.
//!
//! Nothing proportional to the input is kept unless the call needs it: each batch's events are
//! folded into a [`Sink`] and dropped. What stays is what the answer needs: the table itself
//! for `read_events`, one 128-bit fingerprint per distinct event for de-duplication
//! ([`Dedup`]), and per-vehicle fixes for `distances` (see `d2d-py/README.md`, "Memory").

use std::hash::Hash;
use std::time::{Duration, Instant};

use d2d_model::check::{Profile, Profiler};
use d2d_model::parse::Parsed;
use d2d_model::period::{resolve_periods, PeriodState};
use d2d_model::track::{TrackBuilder, Tracks};
use d2d_model::Event;
use pyo3::prelude::*;
use pyo3::types::PyIterator;
use rayon::prelude::*;
use siphasher::sip128::{Hasher128, SipHasher13};

use d2d_model::columnar::Batches;

use crate::columns::{EventBatches, RejectBatches};
use crate::errors::{Error, Result};
use crate::inputs::{Feed, PIECE};

/// Work per batch the loop aims at: well under the 100 ms within which Ctrl-C must act.
pub const TARGET: Duration = Duration::from_millis(40);
/// Input bytes of the first batch, before any measurement.
const FIRST_BATCH: usize = 2 * PIECE;
/// Bounds of a batch's input bytes: at least one piece, and at most a few MiB so that a
/// batch's bytes and parsed events stay small next to what the call keeps.
const MIN_BATCH: usize = PIECE;
const MAX_BATCH: usize = 8 * PIECE;

/// The next batch's size: this batch's throughput times [`TARGET`], within bounds.
fn next_budget(bytes: u64, took: Duration) -> usize {
    let secs = took.as_secs_f64().max(1e-6);
    let fits = (bytes as f64 / secs * TARGET.as_secs_f64()) as usize;
    fits.clamp(MIN_BATCH, MAX_BATCH)
}

/// The distinct events seen so far, as 128-bit SipHash-1-3 fingerprints (16 bytes each, not
/// the event): an event whose fingerprint was seen is a duplicate. Two distinct events share
/// a fingerprint with a chance of about n²/2¹²⁹ (below 10⁻²⁰ for a billion events).
#[derive(Default)]
pub struct Dedup {
    seen: hashbrown::HashTable<u128>,
}

/// Fixed keys: the fingerprints, and so the answers, do not change from run to run.
const KEYS: (u64, u64) = (0x6432_642d_7079_2d31, 0x6465_6475_702d_6b65);

fn fingerprint(event: &Event) -> u128 {
    let mut h = SipHasher13::new_with_keys(KEYS.0, KEYS.1);
    event.hash(&mut h);
    h.finish128().as_u128()
}

impl Dedup {
    /// Drops from `parsed` the events seen in an earlier batch, counting them as duplicates.
    /// (The parse already dropped the repeats within its piece.)
    fn retain_new(&mut self, parsed: &mut Parsed) {
        let before = parsed.events.len();
        let seen = &mut self.seen;
        parsed.events.retain(|r| {
            let f = fingerprint(&r.event);
            let low = f as u64;
            if seen.find(low, |&x| x == f).is_some() {
                false
            } else {
                seen.insert_unique(low, f, |&x| x as u64);
                true
            }
        });
        parsed.duplicates += (before - parsed.events.len()) as u64;
    }
}

/// What a call keeps of the stream; each part is optional.
#[derive(Default)]
pub struct Sink {
    /// Drop events seen in earlier batches (needed for counts and tables; distances need not:
    /// a repeated event repeats a fix or a period state, which tracks and periods absorb).
    pub dedup: Option<Dedup>,
    /// Raise the first reject as `ParseError`.
    pub strict: bool,
    /// The events and rejects tables.
    pub tables: Option<(EventBatches, RejectBatches)>,
    /// The data-check profile.
    pub profile: Option<Profiler>,
    /// Fixes per vehicle, and the period events, for distances.
    pub distances: Option<(TrackBuilder, Vec<Event>)>,
    /// Lines, duplicates and rejects counted (also when no profile is kept).
    pub lines: u64,
    /// Valid lines equal to an earlier event.
    pub duplicates: u64,
}

impl Sink {
    fn add(&mut self, mut parsed: Parsed) -> Result<()> {
        if self.strict {
            if let Some(first) = parsed.rejects.first() {
                return Err(Error::Parse(Box::new(first.clone())));
            }
        }
        if let Some(dedup) = &mut self.dedup {
            dedup.retain_new(&mut parsed);
        }
        self.lines += parsed.lines;
        self.duplicates += parsed.duplicates;
        if let Some(p) = &mut self.profile {
            p.add(&parsed);
        }
        if let Some((tracks, periods)) = &mut self.distances {
            for r in &parsed.events {
                if r.event.kind.period().is_some() {
                    periods.push(r.event.clone());
                } else {
                    tracks.add(&r.event);
                }
            }
        }
        if let Some((events, rejects)) = &mut self.tables {
            for r in &parsed.events {
                events.push(r)?;
            }
            for r in &parsed.rejects {
                rejects.push(r)?;
            }
        }
        Ok(())
    }
}

/// How a call reports progress: `callback(bytes_done, total_bytes_or_None)` after each batch.
pub struct Progress {
    /// The Python callable.
    pub callback: Py<PyAny>,
    /// Total input bytes, when known up front.
    pub total: Option<u64>,
}

/// Reads every source of `sources` into `sink`, with the GIL released; returns the number of
/// sources read. Raises `KeyboardInterrupt` within one batch of a signal.
pub fn run(
    py: Python<'_>,
    sources: Py<PyIterator>,
    sink: &mut Sink,
    progress: Option<Progress>,
) -> Result<u64> {
    py.detach(|| -> Result<u64> {
        let mut feed = Feed::new(sources);
        let mut budget = FIRST_BATCH;
        let mut done = 0u64;
        loop {
            let batch = feed.next_batch(budget)?;
            if batch.pieces.is_empty() {
                break;
            }
            let started = Instant::now();
            let parts = batch
                .pieces
                .into_par_iter()
                .map(|piece| piece.parse())
                .collect::<Result<Vec<Parsed>>>()?;
            for part in parts {
                sink.add(part)?;
            }
            budget = next_budget(batch.bytes, started.elapsed());
            done += batch.bytes;
            Python::attach(|py| -> PyResult<()> {
                py.check_signals()?;
                if let Some(p) = &progress {
                    p.callback.call1(py, (done, p.total))?;
                }
                Ok(())
            })?;
        }
        Ok(feed.sources_read)
    })
}

/// What `read_events` keeps besides its tables, so that `distances` and `data_check` can
/// answer from a `ReadResult` without reading again: the profile, and the tracks and periods.
#[pyclass(module = "d2d._d2d", name = "Summary", frozen)]
pub struct Summary {
    /// The data-check profile of the read.
    pub profile: Profile,
    /// Each vehicle's fixes, ordered and de-duplicated.
    pub tracks: Tracks,
    /// The operating periods as the read left them.
    pub periods: Vec<PeriodState>,
}

impl Summary {
    /// Tracks and periods from what a sink collected.
    pub fn distances_state(collected: (TrackBuilder, Vec<Event>)) -> (Tracks, Vec<PeriodState>) {
        let (tracks, periods) = collected;
        (tracks.finish(), resolve_periods(&periods))
    }
}

/// The tables of a read, and the Summary.
pub struct Read {
    /// Events table (`d2d_model::columnar::EVENTS`).
    pub events: Batches,
    /// Rejects table (`d2d_model::columnar::REJECTS`).
    pub rejects: Batches,
    /// Sources read.
    pub files: u64,
    /// Lines read.
    pub lines: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// For later `distances` / `data_check`.
    pub summary: Summary,
}

/// `read_events`: every table, plus the summary.
pub fn read(
    py: Python<'_>,
    sources: Py<PyIterator>,
    strict: bool,
    progress: Option<Progress>,
) -> Result<Read> {
    let mut sink = Sink {
        dedup: Some(Dedup::default()),
        strict,
        tables: Some((EventBatches::new()?, RejectBatches::new()?)),
        profile: Some(Profiler::new()),
        distances: Some(Default::default()),
        ..Sink::default()
    };
    let files = run(py, sources, &mut sink, progress)?;
    let Sink {
        tables,
        profile,
        distances,
        lines,
        duplicates,
        ..
    } = sink;
    py.detach(move || {
        let (events, rejects) = match tables {
            Some((events, rejects)) => (events.finish()?, rejects.finish()?),
            None => (
                EventBatches::new()?.finish()?,
                RejectBatches::new()?.finish()?,
            ),
        };
        let (tracks, periods) = Summary::distances_state(distances.unwrap_or_default());
        Ok(Read {
            events,
            rejects,
            files,
            lines,
            duplicates,
            summary: Summary {
                profile: profile.unwrap_or_default().finish(files),
                tracks,
                periods,
            },
        })
    })
}

/// `data_check`: the profile only.
pub fn check(
    py: Python<'_>,
    sources: Py<PyIterator>,
    progress: Option<Progress>,
) -> Result<Profile> {
    let mut sink = Sink {
        dedup: Some(Dedup::default()),
        profile: Some(Profiler::new()),
        ..Sink::default()
    };
    let files = run(py, sources, &mut sink, progress)?;
    Ok(sink.profile.unwrap_or_default().finish(files))
}

/// `distances`: tracks and periods only; also the sources and lines read.
pub fn tracks(
    py: Python<'_>,
    sources: Py<PyIterator>,
    progress: Option<Progress>,
) -> Result<(Tracks, Vec<PeriodState>, u64, u64)> {
    let mut sink = Sink {
        distances: Some(Default::default()),
        ..Sink::default()
    };
    let files = run(py, sources, &mut sink, progress)?;
    let (lines, collected) = (sink.lines, sink.distances.unwrap_or_default());
    let (tracks, periods) = py.detach(move || Summary::distances_state(collected));
    Ok((tracks, periods, files, lines))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use d2d_model::parse::parse_bytes;

    const A: &str = r#"{"event":"update","on":"vehicle","at":"2019-06-01T10:00:01Z","data":{"id":"a","location":{"lat":1.0,"lng":2.0,"at":"2019-06-01T10:00:01Z"}},"organization_id":"o"}"#;
    const B: &str = r#"{"event":"update","on":"vehicle","at":"2019-06-01T10:00:02Z","data":{"id":"b","location":{"lat":1.0,"lng":2.0,"at":"2019-06-01T10:00:02Z"}},"organization_id":"o"}"#;

    #[test]
    fn batches_are_deduplicated_against_earlier_ones() {
        let mut sink = Sink {
            dedup: Some(Dedup::default()),
            tables: Some((EventBatches::new().unwrap(), RejectBatches::new().unwrap())),
            ..Sink::default()
        };
        sink.add(parse_bytes("1", format!("{A}\n{A}\n").as_bytes()))
            .unwrap();
        sink.add(parse_bytes("2", format!("{B}\n{A}\nbad\n").as_bytes()))
            .unwrap();
        assert_eq!((sink.lines, sink.duplicates), (5, 2));
        let (events, rejects) = sink.tables.unwrap();
        assert_eq!(events.finish().unwrap().num_rows(), 2);
        assert_eq!(rejects.finish().unwrap().num_rows(), 1);
    }

    #[test]
    fn strict_stops_at_the_first_reject() {
        let mut sink = Sink {
            strict: true,
            ..Sink::default()
        };
        let err = sink
            .add(parse_bytes("s", format!("{A}\nbad\nworse\n").as_bytes()))
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "s:2: not valid JSON: expected value at line 1 column 1"
        );
    }

    #[test]
    fn batches_aim_at_the_target_time() {
        // 1 MiB in 10 ms is 100 MiB/s: 40 ms of it is 4 MiB.
        assert_eq!(
            next_budget(1 << 20, Duration::from_millis(10)),
            (4 << 20).min(MAX_BATCH)
        );
        assert_eq!(next_budget(1 << 20, Duration::from_secs(10)), MIN_BATCH);
        assert_eq!(next_budget(1 << 20, Duration::ZERO), MAX_BATCH);
    }

    #[test]
    fn fingerprints_are_stable_and_tell_events_apart() {
        let p = parse_bytes("f", format!("{A}\n{B}\n").as_bytes());
        let (a, b) = (&p.events[0].event, &p.events[1].event);
        assert_eq!(fingerprint(a), fingerprint(&a.clone()));
        assert_ne!(fingerprint(a), fingerprint(b));
    }
}
