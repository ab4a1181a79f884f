//! The data check: a profile of a batch of raw lines, the numbers an analyst looks at first.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::event::EventKind;
use crate::parse::Parsed;

/// The headline counts. Always `lines == events + duplicates + rejects`, and `by_kind` sums
/// to `events`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Sources read.
    pub files: u64,
    /// Non-blank lines read.
    pub lines: u64,
    /// Distinct valid events.
    pub events: u64,
    /// Refused lines.
    pub rejects: u64,
    /// Valid lines repeating an earlier event.
    pub duplicates: u64,
    /// Events per kind (`vehicle.update`, ...); every kind is present, possibly with 0.
    pub by_kind: BTreeMap<String, u64>,
    /// Rejects per [`crate::reject::RejectReason::code`].
    pub reject_reasons: BTreeMap<String, u64>,
    /// Distinct vehicle ids in vehicle events.
    pub vehicles: u64,
    /// Distinct operating period ids.
    pub periods: u64,
}

/// Smallest and largest value seen of a field.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Range<T> {
    /// Smallest value.
    pub min: T,
    /// Largest value.
    pub max: T,
}

impl<T: PartialOrd + Copy> Range<T> {
    fn widen(slot: &mut Option<Range<T>>, v: T) {
        match slot {
            None => *slot = Some(Range { min: v, max: v }),
            Some(r) => {
                if v < r.min {
                    r.min = v;
                }
                if v > r.max {
                    r.max = v;
                }
            }
        }
    }
}

/// A profile of a batch: counts, missing values and ranges per field.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Profile {
    /// The headline counts.
    #[serde(flatten)]
    pub counts: Counts,
    /// Per optional field, how many valid events lack it (absent or `null`): `data.location`
    /// for register/deregister without a position.
    pub missing: BTreeMap<String, u64>,
    /// Per timestamp field (`at`, `data.location.at`, `data.start`, `data.finish`): min and max (UTC).
    pub time_ranges: BTreeMap<String, Range<DateTime<Utc>>>,
    /// Per coordinate field (`data.location.lat`, `data.location.lng`): min and max.
    pub coordinate_ranges: BTreeMap<String, Range<f64>>,
}

fn named<T>(pairs: Vec<(&str, Option<Range<T>>)>) -> BTreeMap<String, Range<T>> {
    pairs
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_owned(), v?)))
        .collect()
}

/// Profiles a parse of `files` sources.
///
/// ```
/// use d2d_model::{check::profile, parse::parse_bytes};
/// let p = parse_bytes("f", br#"{"event":"register","on":"vehicle","at":"2019-06-01T18:17:04Z","data":{"id":"v1"},"organization_id":"o"}
/// oops"#);
/// let prof = profile(&p, 1);
/// assert_eq!(prof.counts.by_kind["vehicle.register"], 1);
/// assert_eq!(prof.counts.reject_reasons["invalid_json"], 1);
/// assert_eq!(prof.missing["data.location"], 1);
/// ```
pub fn profile(parsed: &Parsed, files: u64) -> Profile {
    let mut by_kind: BTreeMap<String, u64> = EventKind::NAMES
        .iter()
        .map(|k| ((*k).to_owned(), 0))
        .collect();
    let mut kind_counts = [0u64; EventKind::NAMES.len()];
    let mut vehicles = BTreeSet::new();
    let mut periods = BTreeSet::new();
    let mut missing_location = 0u64;
    let (mut at, mut loc_at, mut start, mut finish) = (None, None, None, None);
    let (mut lat, mut lng) = (None, None);

    for record in &parsed.events {
        let e = &record.event;
        kind_counts[e.kind.index()] += 1;
        Range::widen(&mut at, e.at);
        if let Some(v) = e.kind.vehicle() {
            vehicles.insert(v);
            match e.kind.location() {
                Some(l) => {
                    Range::widen(&mut loc_at, l.at);
                    Range::widen(&mut lat, l.position.lat());
                    Range::widen(&mut lng, l.position.lng());
                }
                None => missing_location += 1,
            }
        }
        if let Some(p) = e.kind.period() {
            periods.insert(p.id());
            Range::widen(&mut start, p.start());
            Range::widen(&mut finish, p.finish());
        }
    }
    for (name, n) in EventKind::NAMES.iter().zip(kind_counts) {
        by_kind.insert((*name).to_owned(), n);
    }
    let mut reject_reasons = BTreeMap::new();
    for r in &parsed.rejects {
        *reject_reasons
            .entry(r.reason.code().to_owned())
            .or_insert(0) += 1;
    }
    Profile {
        counts: Counts {
            files,
            lines: parsed.lines,
            events: parsed.events.len() as u64,
            rejects: parsed.rejects.len() as u64,
            duplicates: parsed.duplicates,
            by_kind,
            reject_reasons,
            vehicles: vehicles.len() as u64,
            periods: periods.len() as u64,
        },
        missing: BTreeMap::from([("data.location".to_owned(), missing_location)]),
        time_ranges: named(vec![
            ("at", at),
            ("data.location.at", loc_at),
            ("data.start", start),
            ("data.finish", finish),
        ]),
        coordinate_ranges: named(vec![("data.location.lat", lat), ("data.location.lng", lng)]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_bytes;

    #[test]
    fn counts_add_up_and_ranges_are_right() {
        let input = r#"{"event":"update","on":"vehicle","at":"2019-06-01T18:00:00Z","data":{"id":"a","location":{"lat":1.5,"lng":-2,"at":"2019-06-01T17:59:59Z"}},"organization_id":"o"}
{"event":"update","on":"vehicle","at":"2019-06-01T18:00:01Z","data":{"id":"b","location":{"lat":-3,"lng":4,"at":"2019-06-01T18:00:01Z"}},"organization_id":"o"}
{"event":"update","on":"vehicle","at":"2019-06-01T18:00:01Z","data":{"id":"b","location":{"lat":-3,"lng":4,"at":"2019-06-01T18:00:01Z"}},"organization_id":"o"}
{"event":"deregister","on":"vehicle","at":"2019-06-01T18:00:02Z","data":{"id":"b","location":null},"organization_id":"o"}
{"event":"create","on":"operating_period","at":"2019-06-01T18:00:00Z","data":{"id":"p","start":"2019-06-01T18:00:00Z","finish":"2019-06-01T19:00:00Z"},"organization_id":"o"}
[]
{"on":"vehicle"}
"#;
        let p = profile(&parse_bytes("f", input.as_bytes()), 1);
        let c = &p.counts;
        assert_eq!((c.lines, c.events, c.duplicates, c.rejects), (7, 4, 1, 2));
        assert_eq!(c.by_kind.values().sum::<u64>(), c.events);
        assert_eq!(c.by_kind["vehicle.update"], 2);
        assert_eq!(c.by_kind["operating_period.delete"], 0);
        assert_eq!(c.reject_reasons["not_an_object"], 1);
        assert_eq!(c.reject_reasons["missing_field"], 1);
        assert_eq!((c.vehicles, c.periods), (2, 1));
        assert_eq!(p.missing["data.location"], 1);
        let lat = p.coordinate_ranges["data.location.lat"];
        assert_eq!((lat.min, lat.max), (-3.0, 1.5));
        assert_eq!(
            p.time_ranges["data.location.at"].min.to_rfc3339(),
            "2019-06-01T17:59:59+00:00"
        );
        assert!(!p.time_ranges.contains_key("nothing"));
    }
}
