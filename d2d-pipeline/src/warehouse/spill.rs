//! The day's vehicle rows, spilled to local disk while they are staged, so that nothing after
//! the COPY reads the day back from PostgreSQL: the distances ([`super::distance`]) take the
//! day's fixes from here, and the curated zone's vehicle-event file
//! ([`crate::curated`]) is written from here, sorted by the loader.
//!
//! Rows are fixed-size records (`RECORD` bytes: ids as indexes into the spill's own tables of
//! vehicles, sources and organisations) in [`BUCKETS`] files, a vehicle's rows all in one
//! bucket, so a bucket read back holds whole tracks and about 1/64 of the day. The folder is a
//! temporary one, removed when the spill is dropped; one left by a killed process is removed
//! by the next spill created beside it (a spill holds a lock on a file in its folder while it
//! lives).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use crate::error::{Error, Result};
use crate::scratch::{DirKind, ScratchDir};

/// Spill files per load: a bucket holds about 1/64 of the day when it is read back.
pub(super) const BUCKETS: usize = 64;

/// One spilled row: slot u32, source u32, line i64, event u8, located u8, organisation u32,
/// event_at i64, lat f64, lng f64, location_at i64 (little-endian; 54 bytes).
const RECORD: usize = 4 + 4 + 8 + 1 + 1 + 4 + 8 + 8 + 8 + 8;

/// Bytes buffered per bucket file before a write: 64 buckets × 64 KiB = 4 MiB in all.
const BUCKET_BUFFER: usize = 64 * 1024;

/// The vehicle verbs, by their code in a record.
const VERBS: [&str; 3] = ["register", "update", "deregister"];

/// One vehicle row as spilled (times in microseconds as PostgreSQL stores them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SpilledRow {
    /// The vehicle's slot in [`DaySpill::vehicle`].
    pub slot: u32,
    /// The source object's index in [`DaySpill::source`].
    pub source: u32,
    pub line: i64,
    /// Index into `VERBS`.
    pub event: u8,
    /// The organisation's index in [`DaySpill::organization`].
    pub org: u32,
    pub event_at: i64,
    /// `(lat, lng, location_at)`, when the event carries a location.
    pub location: Option<(f64, f64, i64)>,
}

impl SpilledRow {
    /// The verb (`register`, `update` or `deregister`).
    pub fn verb(&self) -> &'static str {
        VERBS[usize::from(self.event).min(VERBS.len() - 1)]
    }

    fn encode(&self) -> [u8; RECORD] {
        let mut r = [0u8; RECORD];
        let (lat, lng, at) = self.location.unwrap_or((0.0, 0.0, 0));
        r[0..4].copy_from_slice(&self.slot.to_le_bytes());
        r[4..8].copy_from_slice(&self.source.to_le_bytes());
        r[8..16].copy_from_slice(&self.line.to_le_bytes());
        r[16] = self.event;
        r[17] = u8::from(self.location.is_some());
        r[18..22].copy_from_slice(&self.org.to_le_bytes());
        r[22..30].copy_from_slice(&self.event_at.to_le_bytes());
        r[30..38].copy_from_slice(&lat.to_bits().to_le_bytes());
        r[38..46].copy_from_slice(&lng.to_bits().to_le_bytes());
        r[46..54].copy_from_slice(&at.to_le_bytes());
        r
    }

    fn decode(r: &[u8]) -> SpilledRow {
        let u32_at = |i: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&r[i..i + 4]);
            u32::from_le_bytes(b)
        };
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&r[i..i + 8]);
            u64::from_le_bytes(b)
        };
        SpilledRow {
            slot: u32_at(0),
            source: u32_at(4),
            line: u64_at(8) as i64,
            event: r[16],
            org: u32_at(18),
            event_at: u64_at(22) as i64,
            location: (r[17] != 0).then(|| {
                (
                    f64::from_bits(u64_at(30)),
                    f64::from_bits(u64_at(38)),
                    u64_at(46) as i64,
                )
            }),
        }
    }
}

/// A table of names given out as dense indexes, in order of first use.
#[derive(Debug, Default)]
struct Names {
    index: HashMap<String, u32>,
    names: Vec<String>,
}

impl Names {
    fn get_or_add(&mut self, name: &str, what: &str) -> Result<u32> {
        if let Some(i) = self.index.get(name) {
            return Ok(*i);
        }
        let i = u32::try_from(self.names.len()).map_err(|_| Error::Internal {
            context: format!("more than 2^32 {what} in one day"),
        })?;
        self.index.insert(name.to_owned(), i);
        self.names.push(name.to_owned());
        Ok(i)
    }

    /// Each index's rank in the byte order of the names (PostgreSQL's `COLLATE "C"`).
    fn ranks(&self) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.names.len() as u32).collect();
        order.sort_unstable_by(|a, b| self.names[*a as usize].cmp(&self.names[*b as usize]));
        let mut ranks = vec![0u32; order.len()];
        for (rank, i) in order.into_iter().enumerate() {
            ranks[i as usize] = rank as u32;
        }
        ranks
    }
}

/// The vehicle rows of the day being staged, in bucket files on local disk.
pub(crate) struct DaySpill {
    /// Held while the spill lives: what tells a live spill from a killed process's.
    dir: ScratchDir,
    files: Vec<(PathBuf, BufWriter<File>)>,
    /// Vehicles by slot, in the order first seen; a vehicle's bucket is `slot % BUCKETS`.
    vehicles: Names,
    sources: Names,
    source_times: Vec<Option<NaiveDateTime>>,
    organizations: Names,
    rows: u64,
}

impl std::fmt::Debug for DaySpill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaySpill")
            .field("dir", &self.dir.path())
            .field("rows", &self.rows)
            .field("vehicles", &self.vehicles.names.len())
            .finish()
    }
}

fn spill_io(path: &Path, op: &'static str, source: std::io::Error) -> Error {
    super::load::local_io("row spill", path, op, source)
}

/// A timestamp as PostgreSQL stores it: microseconds, truncated towards 2000-01-01 as
/// `postgres-types` converts it, so spilled rows and rows read back are the same instants.
pub(crate) fn pg_micros(at: DateTime<Utc>) -> i64 {
    const Y2K_UNIX_MICROS: i64 = 946_684_800_000_000;
    let y2k = DateTime::from_timestamp_micros(Y2K_UNIX_MICROS).unwrap_or_default();
    (at - y2k)
        .num_microseconds()
        .map_or(at.timestamp_micros(), |m| m + Y2K_UNIX_MICROS)
}

/// The fields of a staged vehicle row that the spill keeps.
pub(super) struct RowRef<'r> {
    pub source_key: &'r str,
    pub source_time: Option<NaiveDateTime>,
    pub line: i64,
    pub event: &'r str,
    pub vehicle_id: &'r str,
    pub organization_id: &'r str,
    pub event_at: DateTime<Utc>,
    pub location: Option<(f64, f64, DateTime<Utc>)>,
}

impl DaySpill {
    /// A new spill in a temporary folder under `parent`, after removing the spills there
    /// that no live process holds (left by a killed run).
    pub(super) fn create(parent: &Path, day: NaiveDate) -> Result<DaySpill> {
        crate::scratch::remove_dead(parent);
        let dir = ScratchDir::create(parent, DirKind::Rows, day)
            .map_err(|(path, e)| spill_io(&path, "create", e))?;
        let mut files = Vec::with_capacity(BUCKETS);
        for b in 0..BUCKETS {
            let path = dir.path().join(format!("bucket-{b:02}"));
            let file = File::create(&path).map_err(|e| spill_io(&path, "create", e))?;
            files.push((path, BufWriter::with_capacity(BUCKET_BUFFER, file)));
        }
        Ok(DaySpill {
            dir,
            files,
            vehicles: Names::default(),
            sources: Names::default(),
            source_times: Vec::new(),
            organizations: Names::default(),
            rows: 0,
        })
    }

    /// Appends one staged vehicle row. Writes reach the file a buffer at a time.
    pub(super) fn add(&mut self, row: &RowRef<'_>) -> Result<()> {
        let slot = self.vehicles.get_or_add(row.vehicle_id, "vehicles")?;
        let source = self.sources.get_or_add(row.source_key, "sources")?;
        if source as usize == self.source_times.len() {
            self.source_times.push(row.source_time);
        }
        let org = self
            .organizations
            .get_or_add(row.organization_id, "organisations")?;
        let event = VERBS
            .iter()
            .position(|v| *v == row.event)
            .ok_or_else(|| Error::Internal {
                context: format!("spilling a vehicle event of kind {:?}", row.event),
            })? as u8;
        let record = SpilledRow {
            slot,
            source,
            line: row.line,
            event,
            org,
            event_at: pg_micros(row.event_at),
            location: row.location.map(|(lat, lng, at)| (lat, lng, pg_micros(at))),
        }
        .encode();
        let (path, file) = &mut self.files[slot as usize % BUCKETS];
        file.write_all(&record)
            .map_err(|e| spill_io(path, "write", e))?;
        self.rows += 1;
        Ok(())
    }

    /// Writes what is buffered: after this, the files hold every row added.
    pub(super) fn flush(&mut self) -> Result<()> {
        for (path, file) in &mut self.files {
            file.flush().map_err(|e| spill_io(path, "write", e))?;
        }
        Ok(())
    }

    /// Bytes of the spill on disk (after [`DaySpill::flush`]).
    pub(super) fn bytes(&self) -> u64 {
        self.files
            .iter()
            .filter_map(|(p, _)| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    /// The slot of a vehicle with rows in the spill.
    pub(super) fn slot(&self, vehicle: &str) -> Option<u32> {
        self.vehicles.index.get(vehicle).copied()
    }

    /// A vehicle's id by slot.
    pub(crate) fn vehicle(&self, slot: u32) -> &str {
        &self.vehicles.names[slot as usize]
    }

    /// A source object's key and file-name time by index.
    pub(crate) fn source(&self, source: u32) -> (&str, Option<NaiveDateTime>) {
        let i = source as usize;
        (&self.sources.names[i], self.source_times[i])
    }

    /// An organisation's id by index.
    pub(crate) fn organization(&self, org: u32) -> &str {
        &self.organizations.names[org as usize]
    }

    /// The rows of one bucket, in the order they were added.
    pub(super) fn read_bucket(&self, bucket: usize) -> Result<Vec<SpilledRow>> {
        let path = &self.files[bucket].0;
        let bytes = std::fs::read(path).map_err(|e| spill_io(path, "read", e))?;
        Ok(bytes.chunks_exact(RECORD).map(SpilledRow::decode).collect())
    }

    /// The folder holding the spill.
    #[cfg(test)]
    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The vehicle rows of a committed day as the warehouse holds them: the loader's spill, less
/// the duplicates the merge dropped. [`crate::curated::write_day_with_rows`] writes the
/// day's curated vehicle-event file from them. The spill's folder is removed when this is
/// dropped.
pub struct DayRows {
    spill: DaySpill,
    /// (source index, line) of the rows the merge dropped.
    dropped: HashSet<(u32, i64)>,
}

impl std::fmt::Debug for DayRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DayRows")
            .field("spill", &self.spill)
            .field("dropped", &self.dropped.len())
            .finish()
    }
}

/// The sort key of the curated vehicle-event file, in integers: vehicle (rank of its id),
/// location time (none last), event time, source (rank of its key), line.
type SortKey = (u32, i64, i64, u32, i64);

impl DayRows {
    pub(super) fn new(spill: DaySpill, dropped: &[(String, i64)]) -> DayRows {
        let dropped = dropped
            .iter()
            .filter_map(|(key, line)| Some((*spill.sources.index.get(key)?, *line)))
            .collect();
        DayRows { spill, dropped }
    }

    /// The spill, for names by index.
    pub(crate) fn spill(&self) -> &DaySpill {
        &self.spill
    }

    /// Rows kept (the staged ones less the dropped duplicates).
    pub fn rows(&self) -> u64 {
        self.spill.rows - self.dropped.len() as u64
    }

    /// Calls `each` with every row the warehouse holds for the day, sorted by vehicle id,
    /// location time (rows without one last), event time, source key, line: the order of
    /// `dwh.fact_vehicle_event`'s curated file. Each bucket is sorted in memory into a run on
    /// disk, then the runs are merged; memory holds one bucket and a buffer per run.
    pub(crate) fn sorted(&self, mut each: impl FnMut(&SpilledRow) -> Result<()>) -> Result<()> {
        let vehicle_rank = self.spill.vehicles.ranks();
        let source_rank = self.spill.sources.ranks();
        let key = |r: &SpilledRow| -> SortKey {
            let (located_at, _) = r.location.map_or((i64::MAX, 1), |l| (l.2, 0));
            (
                vehicle_rank[r.slot as usize],
                located_at,
                r.event_at,
                source_rank[r.source as usize],
                r.line,
            )
        };
        let mut runs = Vec::with_capacity(BUCKETS);
        for b in 0..BUCKETS {
            let mut rows = self.spill.read_bucket(b)?;
            rows.retain(|r| !self.dropped.contains(&(r.source, r.line)));
            rows.sort_unstable_by_key(key);
            // Beside its bucket: disk holds the day's rows twice at most (about 100 bytes a
            // row, under half the landing bytes), until the spill is dropped.
            let path = self.spill.files[b].0.with_extension("sorted");
            let file = File::create(&path).map_err(|e| spill_io(&path, "create", e))?;
            let mut out = BufWriter::with_capacity(BUCKET_BUFFER, file);
            for r in &rows {
                out.write_all(&r.encode())
                    .map_err(|e| spill_io(&path, "write", e))?;
            }
            out.flush().map_err(|e| spill_io(&path, "write", e))?;
            runs.push(path);
        }
        let mut readers = Vec::with_capacity(runs.len());
        let mut heap = std::collections::BinaryHeap::new();
        for (i, path) in runs.iter().enumerate() {
            let file = File::open(path).map_err(|e| spill_io(path, "open", e))?;
            let mut reader = BufReader::with_capacity(BUCKET_BUFFER / 4, file);
            if let Some(r) = next_record(&mut reader, path)? {
                heap.push(std::cmp::Reverse((key(&r), i, RowBits(r))));
            }
            readers.push(reader);
        }
        while let Some(std::cmp::Reverse((_, i, RowBits(row)))) = heap.pop() {
            each(&row)?;
            if let Some(r) = next_record(&mut readers[i], &runs[i])? {
                heap.push(std::cmp::Reverse((key(&r), i, RowBits(r))));
            }
        }
        for path in &runs {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }
}

/// A row carried through the merge's heap; ordered by the key beside it, never by itself.
struct RowBits(SpilledRow);

impl PartialEq for RowBits {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for RowBits {}
impl PartialOrd for RowBits {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for RowBits {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

fn next_record(reader: &mut BufReader<File>, path: &Path) -> Result<Option<SpilledRow>> {
    let mut record = [0u8; RECORD];
    match reader.read_exact(&mut record) {
        Ok(()) => Ok(Some(SpilledRow::decode(&record))),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(spill_io(path, "read", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2019, 6, 1).unwrap()
    }

    fn row<'r>(vehicle: &'r str, key: &'r str, line: i64, loc_at: Option<&str>) -> RowRef<'r> {
        RowRef {
            source_key: key,
            source_time: None,
            line,
            event: if loc_at.is_some() {
                "update"
            } else {
                "register"
            },
            vehicle_id: vehicle,
            organization_id: "org",
            event_at: at("2019-06-01T10:00:00Z"),
            location: loc_at.map(|t| (52.5, 13.4, at(t))),
        }
    }

    #[test]
    fn micros_truncate_as_postgres_stores_them() {
        // After 2000 towards the past, before 2000 towards the future: towards 2000-01-01.
        assert_eq!(
            pg_micros(at("2019-06-01T00:00:00.0000019Z")),
            at("2019-06-01T00:00:00.000001Z").timestamp_micros()
        );
        assert_eq!(
            pg_micros(at("1999-12-31T23:59:59.0000019Z")),
            at("1999-12-31T23:59:59.000002Z").timestamp_micros()
        );
    }

    #[test]
    fn records_round_trip() {
        let r = SpilledRow {
            slot: 7,
            source: 3,
            line: 123_456_789_012,
            event: 2,
            org: 9,
            event_at: -5,
            location: Some((-0.5, 179.25, i64::MIN + 1)),
        };
        assert_eq!(SpilledRow::decode(&r.encode()), r);
        let none = SpilledRow {
            location: None,
            ..r
        };
        assert_eq!(SpilledRow::decode(&none.encode()), none);
        assert_eq!(none.verb(), "deregister");
    }

    #[test]
    fn rows_come_back_in_the_curated_order_less_the_dropped() {
        let parent = tempfile::tempdir().unwrap();
        let mut spill = DaySpill::create(parent.path(), day()).unwrap();
        // Many vehicles, so the rows spread over every bucket; (key, line) is unique, as in a
        // load.
        let (mut dropped, mut want) = (Vec::new(), Vec::new());
        for v in (0..200).rev() {
            let id = format!("v{v:03}");
            let (a, b) = (format!("a{v:03}"), format!("b{v:03}"));
            spill
                .add(&row(&id, &b, 2, Some("2019-06-01T10:00:02Z")))
                .unwrap();
            spill
                .add(&row(&id, &a, 1, Some("2019-06-01T10:00:02Z")))
                .unwrap();
            spill.add(&row(&id, &a, 3, None)).unwrap();
            spill
                .add(&row(&id, &b, 1, Some("2019-06-01T10:00:01Z")))
                .unwrap();
            dropped.push((b.clone(), 2));
            // Located rows by time, then source key; the row without a location last.
            want.push((id.clone(), b, 1));
            want.push((id.clone(), a.clone(), 1));
            want.push((id, a, 3));
        }
        want.sort_by(|x, y| x.0.cmp(&y.0));
        dropped.push(("not a source of the day".to_owned(), 1));
        spill.flush().unwrap();
        let rows = DayRows::new(spill, &dropped);
        assert_eq!(rows.rows(), 600);
        let mut seen = Vec::new();
        rows.sorted(|r| {
            let s = rows.spill();
            seen.push((
                s.vehicle(r.slot).to_owned(),
                s.source(r.source).0.to_owned(),
                r.line,
            ));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, want);
    }

    #[test]
    fn a_new_spill_sweeps_a_dead_one_and_is_removed_when_dropped() {
        let parent = tempfile::tempdir().unwrap();
        let live = DaySpill::create(parent.path(), day()).unwrap();
        // What a SIGKILL leaves: the folder and its lock file, nobody holding the lock.
        let dead = parent.path().join("d2d-rows-2019-05-31-x");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join(crate::scratch::LOCK), b"").unwrap();
        std::fs::write(dead.join("bucket-00"), [0u8; RECORD]).unwrap();

        let next = DaySpill::create(parent.path(), day()).unwrap();
        assert!(!dead.exists());
        assert!(live.dir().exists() && next.dir().exists());
        let dir = next.dir().to_path_buf();
        drop(next);
        assert!(!dir.exists(), "the spill is removed when dropped");
    }
}
