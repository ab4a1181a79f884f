//! The distances of a load, computed by the loader with `d2d_model`'s kernel
//! ([`d2d_model::distance::window_distance`]): the one implementation the warehouse, the
//! curated zone and the Python bindings share (migration 11 dropped the SQL one).
//!
//! While a day is staged, its vehicle rows are spilled to local disk ([`super::spill`]), a
//! vehicle's rows all in one of [`BUCKETS`] files. After the merge has named the (period,
//! vehicle) pairs to recompute (`staging.distance_pair`), [`compute`] numbers them in bucket
//! order, streams the other days' fixes of those pairs out of the warehouse in that order (one
//! binary `COPY`, through the track index, the day being loaded skipped), reads one bucket at a
//! time, and walks each pair's window. So the day is never read back from PostgreSQL, and
//! memory holds one bucket (a 64th of the day) and one pair's fixes from other days.
//!
//! ```text
//!  parse ──► staging COPY ──► merge_day ──► staging.distance_pair
//!    │                                          │ numbered in bucket order
//!    └──► DaySpill (64 buckets) ──┐             ▼
//!                                 ├──► window_distance ──► staging.vehicle_period_distance
//!   other days' fixes (COPY out) ─┘                         └──► dwh.apply_distances
//! ```

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
use super::spill::{pg_micros, DaySpill, BUCKETS};
use crate::error::{Error, Result};

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

/// The day's fixes of one bucket, sorted by vehicle slot, then in track order.
fn bucket_fixes(spill: &DaySpill, bucket: usize) -> Result<Vec<SpilledFix>> {
    let mut fixes: Vec<SpilledFix> = spill
        .read_bucket(bucket)?
        .into_iter()
        .filter(|r| r.verb() == "update")
        .filter_map(|r| {
            let (lat, lng, micros) = r.location?;
            Some(SpilledFix {
                slot: r.slot,
                micros,
                lat,
                lng,
            })
        })
        .collect();
    fixes.sort_unstable_by(|a, b| {
        a.slot
            .cmp(&b.slot)
            .then(a.micros.cmp(&b.micros))
            .then(a.lat.total_cmp(&b.lat))
            .then(a.lng.total_cmp(&b.lng))
    });
    Ok(fixes)
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
    mut spill: Option<&mut DaySpill>,
    options: &DistanceOptions,
) -> Result<u64> {
    let context = match skip_day {
        Some(day) => format!("computing the distances of landing day {day}"),
        None => "computing every distance (a refresh)".to_string(),
    };
    let context = context.as_str();
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
                bucket = Some((b, bucket_fixes(s, b)?));
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
    spill: Option<&DaySpill>,
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
            slot: spill.and_then(|s| s.slot(&vehicle_id)),
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
