//! Distance travelled during operating periods.
//!
//! **Definition.** For each non-deleted operating period P and each vehicle V with at least
//! one fix inside it: take V's `update` fixes whose `location.at` lies in
//! `[P.start, P.finish]` (both ends inclusive), de-duplicated and ordered as in
//! [`crate::track`], and sum the great-circle distance between consecutive fixes with the
//! haversine formula on a sphere of radius [`EARTH_RADIUS_M`] (6,371,008.8 m, the GRS80 mean
//! radius). Fewer than two fixes give 0 m.
//!
//! **Impossible jumps.** The sample feed is a sped-up replay whose consecutive fixes often
//! imply 50–700 m/s, so by default nothing is filtered. With
//! [`DistanceOptions::max_speed_mps`] set, a fix is dropped when reaching it from the last
//! kept fix would need a higher speed than the limit; a fix at the same instant as the last
//! kept one but elsewhere counts as infinitely fast. Dropped fixes are not counted in
//! [`PeriodDistance::fixes`].

use chrono::{DateTime, Utc};
use geo::{Distance, HaversineMeasure, Point};

use crate::event::{Location, PeriodId, Position, VehicleId};
use crate::period::PeriodState;
use crate::track::Tracks;

/// Earth's mean radius in metres (GRS80 R₁), used by every distance in d2d.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

const SPHERE: HaversineMeasure = HaversineMeasure::new(EARTH_RADIUS_M);

/// Great-circle distance in metres between two positions (haversine, [`EARTH_RADIUS_M`]).
///
/// ```
/// use d2d_model::{distance::haversine_m, event::Position};
/// let a = Position::new(0.0, 0.0).unwrap();
/// let b = Position::new(1.0, 0.0).unwrap();
/// // One degree along a meridian is R·π/180.
/// assert!((haversine_m(a, b) - 111_195.08).abs() < 0.01);
/// ```
pub fn haversine_m(a: Position, b: Position) -> f64 {
    SPHERE.distance(Point::new(a.lng(), a.lat()), Point::new(b.lng(), b.lat()))
}

/// Knobs of the distance computation. The default is the plain definition, with no filter.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DistanceOptions {
    /// Drop fixes that imply a speed above this many metres per second. `None`: keep all.
    pub max_speed_mps: Option<f64>,
}

/// Distance of one vehicle during one operating period.
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodDistance {
    /// The operating period.
    pub period: PeriodId,
    /// The vehicle.
    pub vehicle: VehicleId,
    /// Fixes used (inside the window, de-duplicated, not dropped by the speed filter).
    pub fixes: u64,
    /// Time of the first fix used (UTC).
    pub first_at: DateTime<Utc>,
    /// Time of the last fix used (UTC).
    pub last_at: DateTime<Utc>,
    /// Metres travelled.
    pub metres: f64,
}

/// The length of a track: what [`track_length`] returns.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct TrackLength {
    /// Fixes kept (the first one, and every later one not dropped by the speed filter).
    pub fixes: u64,
    /// Metres travelled along the kept fixes.
    pub metres: f64,
}

/// Sums the distance along fixes already in track order.
///
/// ```
/// use d2d_model::distance::{track_length, DistanceOptions};
/// assert_eq!(track_length(&[], &DistanceOptions::default()).fixes, 0);
/// ```
pub fn track_length(fixes: &[Location], options: &DistanceOptions) -> TrackLength {
    let walk = walk(fixes, options);
    TrackLength {
        fixes: walk.kept,
        metres: walk.metres,
    }
}

struct Walk<'a> {
    kept: u64,
    metres: f64,
    last: Option<&'a Location>,
}

fn walk<'a>(fixes: &'a [Location], options: &DistanceOptions) -> Walk<'a> {
    let Some(mut last) = fixes.first() else {
        return Walk {
            kept: 0,
            metres: 0.0,
            last: None,
        };
    };
    let (mut kept, mut metres) = (1u64, 0.0);
    for fix in &fixes[1..] {
        let step = haversine_m(last.position, fix.position);
        if let Some(limit) = options.max_speed_mps {
            let seconds = (fix.at - last.at).num_nanoseconds().unwrap_or(i64::MAX) as f64 / 1e9;
            let too_fast = if seconds > 0.0 {
                step / seconds > limit
            } else {
                step > 0.0
            };
            if too_fast {
                continue;
            }
        }
        metres += step;
        kept += 1;
        last = fix;
    }
    Walk {
        kept,
        metres,
        last: Some(last),
    }
}

/// The distance along one window of a track: what [`window_distance`] returns.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct WindowDistance {
    /// Fixes kept (the first one, and every later one not dropped by the speed filter).
    pub fixes: u64,
    /// Time of the first fix (UTC).
    pub first_at: DateTime<Utc>,
    /// Time of the last fix kept (UTC).
    pub last_at: DateTime<Utc>,
    /// Metres travelled along the kept fixes.
    pub metres: f64,
}

/// The distance of one (period, vehicle) pair from the vehicle's fixes inside the period's
/// window, already in track order ([`crate::track::fix_order`], de-duplicated); `None` for an
/// empty window. The one kernel behind [`period_distances`], the warehouse's
/// `dwh.vehicle_period_distance` (computed by the loader) and the Python bindings, so they
/// agree to the bit.
///
/// ```
/// use d2d_model::distance::{window_distance, DistanceOptions};
/// use d2d_model::event::{Location, Position};
/// let at = |s: i64| chrono::DateTime::from_timestamp(s, 0).unwrap();
/// let fixes = [
///     Location { position: Position::new(0.0, 0.0).unwrap(), at: at(0) },
///     Location { position: Position::new(1.0, 0.0).unwrap(), at: at(60) },
/// ];
/// let d = window_distance(&fixes, &DistanceOptions::default()).unwrap();
/// assert_eq!((d.fixes, d.last_at), (2, at(60)));
/// assert!((d.metres - 111_195.08).abs() < 0.01);
/// assert!(window_distance(&[], &DistanceOptions::default()).is_none());
/// ```
pub fn window_distance(window: &[Location], options: &DistanceOptions) -> Option<WindowDistance> {
    let first = window.first()?;
    let walk = walk(window, options);
    Some(WindowDistance {
        fixes: walk.kept,
        first_at: first.at,
        last_at: walk.last.map_or(first.at, |l| l.at),
        metres: walk.metres,
    })
}

/// Distances for every non-deleted period and every vehicle with a fix inside it, sorted by
/// period id, then vehicle id.
pub fn period_distances(
    periods: &[PeriodState],
    tracks: &Tracks,
    options: &DistanceOptions,
) -> Vec<PeriodDistance> {
    let mut rows = Vec::new();
    let mut live: Vec<&PeriodState> = periods.iter().filter(|p| !p.deleted).collect();
    live.sort_by(|a, b| a.period.id().cmp(b.period.id()));
    for state in live {
        let p = &state.period;
        for (vehicle, fixes) in tracks {
            // Tracks are time-ordered, so the window is one contiguous slice.
            let from = fixes.partition_point(|f| f.at < p.start());
            let to = fixes.partition_point(|f| f.at <= p.finish());
            let Some(d) = window_distance(&fixes[from..to], options) else {
                continue;
            };
            rows.push(PeriodDistance {
                period: p.id().clone(),
                vehicle: vehicle.clone(),
                fixes: d.fixes,
                first_at: d.first_at,
                last_at: d.last_at,
                metres: d.metres,
            });
        }
    }
    rows
}

/// Average distance of the vehicles in one operating period.
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodAverage {
    /// The operating period.
    pub period: PeriodId,
    /// Vehicles with at least one fix in the period.
    pub vehicles: u64,
    /// Mean metres per vehicle; `None` when no vehicle moved in the period.
    pub avg_metres: Option<f64>,
    /// Sum over the vehicles.
    pub total_metres: f64,
}

/// What [`averages`] returns: one row per period and the average over all of them.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Averages {
    /// One row per non-deleted period (also those without vehicles), sorted by period id.
    pub periods: Vec<PeriodAverage>,
    /// Mean metres over all (period, vehicle) pairs; `None` when there are none.
    pub overall: Option<f64>,
}

/// One row per non-deleted period (also those without vehicles), sorted by period id, plus the
/// average over all (period, vehicle) pairs.
pub fn averages(periods: &[PeriodState], rows: &[PeriodDistance]) -> Averages {
    let mut out: Vec<PeriodAverage> = periods
        .iter()
        .filter(|p| !p.deleted)
        .map(|p| {
            let mine = rows.iter().filter(|r| &r.period == p.period.id());
            let (vehicles, total) = mine.fold((0u64, 0.0), |(n, m), r| (n + 1, m + r.metres));
            PeriodAverage {
                period: p.period.id().clone(),
                vehicles,
                avg_metres: (vehicles > 0).then(|| total / vehicles as f64),
                total_metres: total,
            }
        })
        .collect();
    out.sort_by(|a, b| a.period.cmp(&b.period));
    let overall =
        (!rows.is_empty()).then(|| rows.iter().map(|r| r.metres).sum::<f64>() / rows.len() as f64);
    Averages {
        periods: out,
        overall,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_timestamp;

    fn pos(lat: f64, lng: f64) -> Position {
        Position::new(lat, lng).unwrap()
    }

    fn fix(lat: f64, lng: f64, at: &str) -> Location {
        Location {
            position: pos(lat, lng),
            at: parse_timestamp(&format!("2019-06-01T{at}Z")).unwrap(),
        }
    }

    #[test]
    fn hand_computed_distances() {
        // On a sphere: a quarter meridian is R·π/2 and antipodes are R·π apart.
        let quarter = EARTH_RADIUS_M * std::f64::consts::FRAC_PI_2;
        assert!((haversine_m(pos(0.0, 0.0), pos(90.0, 0.0)) - quarter).abs() < 1e-6);
        assert!((haversine_m(pos(0.0, 0.0), pos(0.0, 90.0)) - quarter).abs() < 1e-6);
        let half = EARTH_RADIUS_M * std::f64::consts::PI;
        assert!((haversine_m(pos(0.0, 0.0), pos(0.0, 180.0)) - half).abs() < 1e-6);
        assert_eq!(haversine_m(pos(52.5, 13.4), pos(52.5, 13.4)), 0.0);
        // Known city pairs, computed by hand with the spherical law of cosines
        // (acos(sin φ1 sin φ2 + cos φ1 cos φ2 cos Δλ) · R), a different formula for the
        // same great circle: Berlin Brandenburg Gate – Paris Notre-Dame, Berlin – Potsdam.
        let berlin = pos(52.516_3, 13.377_7);
        let paris = pos(48.853_0, 2.349_9);
        let potsdam = pos(52.400_9, 13.059_1);
        assert!((haversine_m(berlin, paris) - 875_959.3).abs() < 1.0);
        assert!((haversine_m(berlin, potsdam) - 25_112.6).abs() < 1.0);
        // Symmetric.
        assert_eq!(haversine_m(berlin, paris), haversine_m(paris, berlin));
    }

    #[test]
    fn track_length_sums_consecutive_legs() {
        let fixes = [
            fix(0.0, 0.0, "10:00:00"),
            fix(1.0, 0.0, "10:00:10"),
            fix(1.0, 0.0, "10:00:20"),
            fix(2.0, 0.0, "10:00:30"),
        ];
        let TrackLength {
            fixes: n,
            metres: m,
        } = track_length(&fixes, &DistanceOptions::default());
        assert_eq!(n, 4);
        assert!((m - 2.0 * 111_195.08).abs() < 0.1);
        assert_eq!(
            track_length(&fixes[..1], &DistanceOptions::default()),
            TrackLength {
                fixes: 1,
                metres: 0.0
            }
        );
        assert_eq!(
            track_length(&[], &DistanceOptions::default()),
            TrackLength {
                fixes: 0,
                metres: 0.0
            }
        );
    }

    #[test]
    fn speed_filter_drops_impossible_jumps_only() {
        // 0.001° of latitude ≈ 111 m in 10 s = 11 m/s; the spike is 111 km in 10 s.
        let fixes = [
            fix(52.000, 13.0, "10:00:00"),
            fix(52.001, 13.0, "10:00:10"),
            fix(53.001, 13.0, "10:00:20"),
            fix(52.002, 13.0, "10:00:30"),
            fix(52.003, 13.0, "10:00:30"),
        ];
        let slow = DistanceOptions {
            max_speed_mps: Some(50.0),
        };
        let TrackLength {
            fixes: n,
            metres: m,
        } = track_length(&fixes, &slow);
        assert_eq!(n, 3);
        assert!((m - 2.0 * 111.195).abs() < 0.01, "{m}");
        let TrackLength {
            fixes: n_all,
            metres: m_all,
        } = track_length(&fixes, &DistanceOptions::default());
        assert_eq!(n_all, 5);
        assert!(m_all > 200_000.0);
    }

    #[test]
    fn windows_are_inclusive_and_deleted_periods_skipped() {
        use crate::event::{OperatingPeriod, PeriodId};
        let v = VehicleId::new("v").unwrap();
        let mut tracks = Tracks::new();
        tracks.insert(
            v.clone(),
            vec![
                fix(0.0, 0.0, "09:59:59"),
                fix(0.0, 0.0, "10:00:00"),
                fix(1.0, 0.0, "10:30:00"),
                fix(2.0, 0.0, "11:00:00"),
                fix(9.0, 0.0, "11:00:01"),
            ],
        );
        let state = |id: &str, deleted| PeriodState {
            period: OperatingPeriod::new(
                PeriodId::new(id).unwrap(),
                parse_timestamp("2019-06-01T10:00:00Z").unwrap(),
                parse_timestamp("2019-06-01T11:00:00Z").unwrap(),
            )
            .unwrap(),
            updated_at: parse_timestamp("2019-06-01T09:00:00Z").unwrap(),
            deleted,
        };
        let periods = [state("p", false), state("gone", true), {
            let mut s = state("empty", false);
            s.period = OperatingPeriod::new(
                PeriodId::new("empty").unwrap(),
                parse_timestamp("2019-06-02T10:00:00Z").unwrap(),
                parse_timestamp("2019-06-02T11:00:00Z").unwrap(),
            )
            .unwrap();
            s
        }];
        let rows = period_distances(&periods, &tracks, &DistanceOptions::default());
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].fixes, 3);
        assert!((rows[0].metres - 2.0 * 111_195.08).abs() < 0.1);
        assert_eq!(rows[0].first_at, fix(0.0, 0.0, "10:00:00").at);
        assert_eq!(rows[0].last_at, fix(0.0, 0.0, "11:00:00").at);

        let Averages {
            periods: avg,
            overall,
        } = averages(&periods, &rows);
        assert_eq!(avg.len(), 2);
        assert_eq!(avg[0].period.as_str(), "empty");
        assert_eq!((avg[0].vehicles, avg[0].avg_metres), (0, None));
        assert_eq!(avg[1].vehicles, 1);
        assert_eq!(overall, Some(rows[0].metres));
    }
}
