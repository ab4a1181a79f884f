//! The distances of a load, computed by the loader with `d2d_model`'s kernel
//! ([`d2d_model::distance::window_distance`]): the one implementation the warehouse, the
//! curated zone and the Python bindings share (migration 11 dropped the SQL one).
//!
//! While a day is staged, each `update` fix is also appended to a [`FixSpill`]: small
//! fixed-size records in [`BUCKETS`] files on local disk, a vehicle's fixes all in one bucket.
//! After the merge has named the (period, vehicle) pairs to recompute
//! (`staging.distance_pair`), [`compute`] numbers them in bucket order, streams the other
//! days' fixes of those pairs out of the warehouse in that order (one binary `COPY`, through
//! the track index, the day being loaded skipped), reads one bucket at a time, and walks each
//! pair's window. So the day is never read back from PostgreSQL, and memory holds one bucket
//! (a 64th of the day's fixes) and one pair's fixes from other days.
//!
//! ```text
//!  parse ──► staging COPY ──► merge_day ──► staging.distance_pair
//!    │                                          │ numbered in bucket order
//!    └──► FixSpill (64 buckets) ──┐             ▼
//!                                 ├──► window_distance ──► staging.vehicle_period_distance
//!   other days' fixes (COPY out) ─┘                         └──► dwh.apply_distances
//! ```

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::pin::pin;

use chrono::{DateTime, NaiveDate, Utc};
use d2d_model::distance::{window_distance, DistanceOptions};
use d2d_model::event::{Location, Position};
use d2d_model::track::fix_order;
use futures_util::StreamExt;
use tokio_postgres::binary_copy::BinaryCopyOutStream;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Transaction;

use super::db_error;
use super::load::{copy_in, staged_row};
use crate::error::{Error, Result};

/// Spill files per load: a bucket holds about 1/64 of the day's fixes when it is read back.
pub(super) const BUCKETS: usize = 64;

/// One spilled fix: vehicle slot (u32), time in microseconds (i64), lat and lng (f64 bits).
const RECORD: usize = 4 + 8 + 8 + 8;

/// Bytes buffered per bucket file before a write: 64 buckets × 64 KiB = 4 MiB in all.
const BUCKET_BUFFER: usize = 64 * 1024;

/// Distance rows buffered before a COPY sends them.
const ROWS_PER_COPY: usize = 16_384;

/// The transaction-local setting that carries the skipped day into the `COPY` of the other
/// days' fixes (a `COPY` takes no bind parameters; the value is a parameter of `set_config`).
const SKIP_DAY_SETTING: &str = "d2d.distance_skip_day";

const OTHER_DAYS_FIXES: &str = "COPY (SELECT pair_no, location_at, lat, lng \
     FROM dwh.distance_pair_fixes(nullif(current_setting('d2d.distance_skip_day'), '')::date) \
     ORDER BY pair_no) TO STDOUT (FORMAT binary)";

staged_row! {
    /// A pair to compute, numbered in the order [`compute`] walks them.
    struct OrderRow => "staging.distance_order", "" {
        pair_no: i64,
        operating_period_id: String,
        vehicle_id: String,
        start_at: DateTime<Utc>,
        finish_at: DateTime<Utc>,
    }
    not copied {
        /// The vehicle's slot in the spill, if it has fixes on the day being loaded.
        slot: Option<u32>,
    }
}

staged_row! {
    /// A computed distance, for `dwh.apply_distances`.
    struct DistanceRow => "staging.vehicle_period_distance", "" {
        operating_period_id: String,
        vehicle_id: String,
        fixes: i64,
        first_at: DateTime<Utc>,
        last_at: DateTime<Utc>,
        metres: f64,
    }
}

/// Prefix of a spill's folder.
const SPILL_PREFIX: &str = "d2d-fixes-";

/// The file in a spill's folder that its load holds locked while it lives.
const LOCK: &str = "lock";

/// The `update` fixes of the day being staged, in bucket files on local disk (a temporary
/// folder, removed when this is dropped; one left by a killed process is removed by the next
/// spill created beside it).
pub(super) struct FixSpill {
    dir: tempfile::TempDir,
    /// Locked while the spill lives: what tells a live spill from a killed process's.
    _lock: File,
    files: Vec<(PathBuf, BufWriter<File>)>,
    /// Each vehicle's slot: the order it was first seen in. Its bucket is `slot % BUCKETS`.
    slots: HashMap<String, u32>,
}

impl std::fmt::Debug for FixSpill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FixSpill")
            .field("dir", &self.dir.path())
            .field("vehicles", &self.slots.len())
            .finish()
    }
}

fn spill_io(path: &Path, op: &'static str, source: std::io::Error) -> Error {
    Error::Io {
        url: format!("fix spill {}", path.parent().unwrap_or(path).display()),
        key: path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        op,
        source,
    }
}

/// A timestamp as PostgreSQL stores it: microseconds, truncated towards 2000-01-01 as
/// `postgres-types` converts it, so spilled fixes and fixes read back are the same instants.
fn pg_micros(at: DateTime<Utc>) -> i64 {
    const Y2K_UNIX_MICROS: i64 = 946_684_800_000_000;
    let y2k = DateTime::from_timestamp_micros(Y2K_UNIX_MICROS).unwrap_or_default();
    (at - y2k)
        .num_microseconds()
        .map_or(at.timestamp_micros(), |m| m + Y2K_UNIX_MICROS)
}

impl FixSpill {
    /// A new spill in a temporary folder under `parent`, after removing the spills there
    /// that no live process holds (left by a killed run).
    pub(super) fn create(parent: &Path, day: NaiveDate) -> Result<FixSpill> {
        remove_dead_spills(parent);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{SPILL_PREFIX}{day}-"))
            .tempdir_in(parent)
            .map_err(|e| spill_io(&parent.join("d2d-fixes-*"), "create", e))?;
        let lock_path = dir.path().join(LOCK);
        let lock = File::create(&lock_path).map_err(|e| spill_io(&lock_path, "create", e))?;
        lock.try_lock()
            .map_err(|e| spill_io(&lock_path, "lock", std::io::Error::other(e)))?;
        let mut files = Vec::with_capacity(BUCKETS);
        for b in 0..BUCKETS {
            let path = dir.path().join(format!("bucket-{b:02}"));
            let file = File::create(&path).map_err(|e| spill_io(&path, "create", e))?;
            files.push((path, BufWriter::with_capacity(BUCKET_BUFFER, file)));
        }
        Ok(FixSpill {
            dir,
            _lock: lock,
            files,
            slots: HashMap::new(),
        })
    }

    /// Appends one fix of `vehicle`. Writes reach the file a buffer at a time.
    pub(super) fn add(
        &mut self,
        vehicle: &str,
        at: DateTime<Utc>,
        position: Position,
    ) -> Result<()> {
        let next = u32::try_from(self.slots.len()).map_err(|_| Error::Internal {
            context: "more than 2^32 vehicles in one day".to_string(),
        })?;
        let slot = match self.slots.get(vehicle) {
            Some(s) => *s,
            None => {
                self.slots.insert(vehicle.to_owned(), next);
                next
            }
        };
        let mut record = [0u8; RECORD];
        record[..4].copy_from_slice(&slot.to_le_bytes());
        record[4..12].copy_from_slice(&pg_micros(at).to_le_bytes());
        record[12..20].copy_from_slice(&position.lat().to_bits().to_le_bytes());
        record[20..].copy_from_slice(&position.lng().to_bits().to_le_bytes());
        let (path, file) = &mut self.files[slot as usize % BUCKETS];
        file.write_all(&record)
            .map_err(|e| spill_io(path, "write", e))
    }

    /// Writes what is buffered: after this, the files hold every fix added.
    pub(super) fn flush(&mut self) -> Result<()> {
        for (path, file) in &mut self.files {
            file.flush().map_err(|e| spill_io(path, "write", e))?;
        }
        Ok(())
    }

    /// The folder holding the spill.
    #[cfg(test)]
    fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes of the spill on disk (after [`FixSpill::flush`]).
    pub(super) fn bytes(&self) -> u64 {
        self.files
            .iter()
            .filter_map(|(p, _)| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    /// One bucket's fixes, sorted by vehicle slot, then in track order.
    fn read_bucket(&self, bucket: usize) -> Result<Vec<SpilledFix>> {
        let path = &self.files[bucket].0;
        let bytes = std::fs::read(path).map_err(|e| spill_io(path, "read", e))?;
        let mut fixes = Vec::with_capacity(bytes.len() / RECORD);
        for r in bytes.chunks_exact(RECORD) {
            let word = |i: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&r[i..i + 8]);
                u64::from_le_bytes(b)
            };
            let mut slot = [0u8; 4];
            slot.copy_from_slice(&r[..4]);
            fixes.push(SpilledFix {
                slot: u32::from_le_bytes(slot),
                micros: word(4) as i64,
                lat: f64::from_bits(word(12)),
                lng: f64::from_bits(word(20)),
            });
        }
        fixes.sort_unstable_by(|a, b| {
            a.slot
                .cmp(&b.slot)
                .then(a.micros.cmp(&b.micros))
                .then(a.lat.total_cmp(&b.lat))
                .then(a.lng.total_cmp(&b.lng))
        });
        Ok(fixes)
    }
}

/// Removes the spill folders under `parent` whose lock nobody holds: their process is gone
/// (a lock dies with its process, `SIGKILL` included). Best effort: a folder that cannot be
/// read or removed stays, and costs only disk.
fn remove_dead_spills(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with(SPILL_PREFIX)
        {
            continue;
        }
        let dir = entry.path();
        let dead = match File::open(dir.join(LOCK)) {
            Ok(lock) => lock.try_lock().is_ok(),
            // Killed between creating the folder and its lock.
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        };
        if dead {
            tracing::info!(dir = %dir.display(), "removing the fix spill of a run that died");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct SpilledFix {
    slot: u32,
    micros: i64,
    lat: f64,
    lng: f64,
}

fn location(at: DateTime<Utc>, lat: f64, lng: f64) -> Result<Location> {
    let position = Position::new(lat, lng).map_err(|e| Error::Internal {
        context: format!("a stored fix at {at} is not a position: {e}"),
    })?;
    Ok(Location { position, at })
}

/// Computes the distances of the pairs in `staging.distance_pair` and moves them into
/// `dwh.vehicle_period_distance` (`dwh.apply_distances`); returns the rows written. The fixes
/// of `skip_day` come from `spill` (the day being loaded), every other day's from the
/// warehouse. Runs inside the load's (or refresh's) transaction.
pub(super) async fn compute(
    tx: &Transaction<'_>,
    skip_day: Option<NaiveDate>,
    spill: Option<&mut FixSpill>,
    options: &DistanceOptions,
) -> Result<u64> {
    let context = match skip_day {
        Some(day) => format!("computing the distances of landing day {day}"),
        None => "computing every distance (a refresh)".to_string(),
    };
    let context = context.as_str();
    let mut spill = spill;
    if let Some(s) = spill.as_deref_mut() {
        s.flush()?;
    }
    let pairs = numbered_pairs(tx, spill.as_deref(), context).await?;
    copy_in(tx, &pairs).await?;
    tx.execute("CALL dwh.analyze_distance_order()", &[])
        .await
        .map_err(db_error(context))?;
    let skip = skip_day.map(|d| d.to_string()).unwrap_or_default();
    let params: [&(dyn ToSql + Sync); 2] = [&SKIP_DAY_SETTING, &skip];
    tx.execute("SELECT set_config($1, $2, true)", &params)
        .await
        .map_err(db_error(context))?;
    let stream = tx
        .copy_out(OTHER_DAYS_FIXES)
        .await
        .map_err(db_error(context))?;
    let other = BinaryCopyOutStream::new(
        stream,
        &[Type::INT8, Type::TIMESTAMPTZ, Type::FLOAT8, Type::FLOAT8],
    );
    let mut other = pin!(other);
    // The next fix of another day, read ahead: it belongs to this pair or a later one.
    let mut ahead: Option<(i64, Location)> = None;
    let mut ended = false;
    let mut bucket: Option<(usize, Vec<SpilledFix>)> = None;
    let mut rows = Vec::with_capacity(ROWS_PER_COPY.min(pairs.len()));
    let mut fixes: Vec<Location> = Vec::new();
    for pair in &pairs {
        fixes.clear();
        loop {
            if ahead.is_none() && !ended {
                let Some(row) = other.next().await else {
                    ended = true;
                    break;
                };
                let row = row.map_err(db_error(context))?;
                let (no, at, lat, lng) = (
                    row.try_get::<i64>(0),
                    row.try_get::<DateTime<Utc>>(1),
                    row.try_get::<f64>(2),
                    row.try_get::<f64>(3),
                );
                let (no, at, lat, lng) = (
                    no.map_err(db_error(context))?,
                    at.map_err(db_error(context))?,
                    lat.map_err(db_error(context))?,
                    lng.map_err(db_error(context))?,
                );
                ahead = Some((no, location(at, lat, lng)?));
            }
            match ahead {
                Some((no, fix)) if no == pair.pair_no => {
                    fixes.push(fix);
                    ahead = None;
                }
                Some((no, _)) if no < pair.pair_no => {
                    return Err(Error::Internal {
                        context: format!("fixes of pair {no} arrived after pair {}", pair.pair_no),
                    });
                }
                _ => break,
            }
        }
        if let (Some(s), Some(slot)) = (spill.as_deref(), pair.slot) {
            let b = slot as usize % BUCKETS;
            if bucket.as_ref().map(|(n, _)| *n) != Some(b) {
                bucket = Some((b, s.read_bucket(b)?));
            }
            if let Some((_, spilled)) = &bucket {
                let from = spilled.partition_point(|f| f.slot < slot);
                let to = spilled.partition_point(|f| f.slot <= slot);
                let track = &spilled[from..to];
                let start = pg_micros(pair.start_at);
                let finish = pg_micros(pair.finish_at);
                let lo = track.partition_point(|f| f.micros < start);
                let hi = track.partition_point(|f| f.micros <= finish);
                for f in &track[lo..hi] {
                    let at = DateTime::from_timestamp_micros(f.micros).ok_or_else(|| {
                        Error::Internal {
                            context: format!("spilled fix time {} µs is out of range", f.micros),
                        }
                    })?;
                    fixes.push(location(at, f.lat, f.lng)?);
                }
            }
        }
        fixes.sort_unstable_by(fix_order);
        fixes.dedup();
        if let Some(d) = window_distance(&fixes, options) {
            rows.push(DistanceRow {
                operating_period_id: pair.operating_period_id.clone(),
                vehicle_id: pair.vehicle_id.clone(),
                fixes: i64::try_from(d.fixes).unwrap_or(i64::MAX),
                first_at: d.first_at,
                last_at: d.last_at,
                metres: d.metres,
            });
            if rows.len() >= ROWS_PER_COPY {
                copy_in(tx, &rows).await?;
                rows.clear();
            }
        }
    }
    if let Some((no, _)) = ahead {
        return Err(Error::Internal {
            context: format!("fixes of pair {no}, which was not asked for"),
        });
    }
    copy_in(tx, &rows).await?;
    let row = tx
        .query_one("CALL dwh.apply_distances(NULL)", &[])
        .await
        .map_err(db_error(context))?;
    let written: Option<i64> = row.try_get(0).map_err(db_error(context))?;
    Ok(written.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
}

/// The pairs the merge (or refresh) staged, numbered in bucket order: a bucket is read once.
async fn numbered_pairs(
    tx: &Transaction<'_>,
    spill: Option<&FixSpill>,
    context: &str,
) -> Result<Vec<OrderRow>> {
    let staged = tx
        .query(
            "SELECT operating_period_id, vehicle_id, start_at, finish_at FROM staging.distance_pair",
            &[],
        )
        .await
        .map_err(db_error(context))?;
    let mut pairs = Vec::with_capacity(staged.len());
    for r in &staged {
        let vehicle_id: String = r.try_get(1).map_err(db_error(context))?;
        pairs.push(OrderRow {
            pair_no: 0,
            operating_period_id: r.try_get(0).map_err(db_error(context))?,
            slot: spill.and_then(|s| s.slots.get(&vehicle_id).copied()),
            vehicle_id,
            start_at: r.try_get(2).map_err(db_error(context))?,
            finish_at: r.try_get(3).map_err(db_error(context))?,
        });
    }
    pairs.sort_unstable_by(|a, b| {
        let bucket = |p: &OrderRow| p.slot.map_or(0, |s| s as usize % BUCKETS);
        bucket(a)
            .cmp(&bucket(b))
            .then(a.slot.cmp(&b.slot))
            .then_with(|| a.vehicle_id.cmp(&b.vehicle_id))
            .then_with(|| a.operating_period_id.cmp(&b.operating_period_id))
    });
    for (no, p) in pairs.iter_mut().enumerate() {
        p.pair_no = i64::try_from(no).unwrap_or(i64::MAX);
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
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
        assert_eq!(
            pg_micros(at("1969-07-20T20:17:40.5Z")),
            at("1969-07-20T20:17:40.5Z").timestamp_micros()
        );
    }

    #[test]
    fn a_bucket_reads_back_sorted_by_vehicle_then_track_order() {
        let parent = tempfile::tempdir().unwrap();
        let day = NaiveDate::from_ymd_opt(2019, 6, 1).unwrap();
        let mut spill = FixSpill::create(parent.path(), day).unwrap();
        let p = |lat| Position::new(lat, 13.0).unwrap();
        // Slots 0 and BUCKETS share bucket 0.
        spill.add("a", at("2019-06-01T10:00:02Z"), p(1.0)).unwrap();
        for i in 1..BUCKETS {
            spill
                .add(&format!("v{i}"), at("2019-06-01T10:00:00Z"), p(0.0))
                .unwrap();
        }
        spill.add("b", at("2019-06-01T10:00:01Z"), p(2.0)).unwrap();
        spill.add("a", at("2019-06-01T10:00:01Z"), p(3.0)).unwrap();
        spill.add("a", at("2019-06-01T10:00:01Z"), p(-3.0)).unwrap();
        spill.flush().unwrap();
        assert_eq!(spill.bytes(), (BUCKETS as u64 + 3) * RECORD as u64);
        let fixes = spill.read_bucket(0).unwrap();
        let got: Vec<(u32, f64)> = fixes.iter().map(|f| (f.slot, f.lat)).collect();
        assert_eq!(got, [(0, -3.0), (0, 3.0), (0, 1.0), (BUCKETS as u32, 2.0)]);
        let dir = spill.dir().to_path_buf();
        drop(spill);
        assert!(!dir.exists(), "the spill is removed when dropped");
    }

    #[test]
    fn a_spill_left_by_a_killed_run_goes_and_a_live_one_stays() {
        let parent = tempfile::tempdir().unwrap();
        let day = NaiveDate::from_ymd_opt(2019, 6, 1).unwrap();
        let live = FixSpill::create(parent.path(), day).unwrap();
        // What a SIGKILL leaves: the folder and its lock file, nobody holding the lock.
        let dead = parent.path().join(format!("{SPILL_PREFIX}2019-05-31-x"));
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join(LOCK), b"").unwrap();
        std::fs::write(dead.join("bucket-00"), [0u8; RECORD]).unwrap();
        let half = parent.path().join(format!("{SPILL_PREFIX}2019-05-30-y"));
        std::fs::create_dir(&half).unwrap();
        let other = parent.path().join("d2d-spool-2019-05-31-z");
        std::fs::create_dir(&other).unwrap();

        let next = FixSpill::create(parent.path(), day).unwrap();
        assert!(!dead.exists() && !half.exists());
        assert!(live.dir().exists() && next.dir().exists());
        assert!(other.exists(), "only spills of fixes are swept");
    }
}
