//! The data check: a profile of a batch of raw lines, the numbers an analyst looks at first.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::event::{Event, EventKind, PeriodId, VehicleId};
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
    let mut profiler = Profiler::new();
    profiler.add(parsed);
    profiler.finish(files)
}

/// A [`Profile`] built batch by batch, for inputs too large to hold as one [`Parsed`]: feed
/// it the parses in input order, each already de-duplicated against the batches before it,
/// and [`Profiler::finish`] gives what [`profile`] gives on their merge. It keeps counts,
/// ranges and the distinct vehicle and period ids, nothing per event.
///
/// ```
/// use d2d_model::check::{profile, Profiler};
/// use d2d_model::parse::{parse_bytes, Parsed};
/// let a = parse_bytes("a", br#"{"event":"register","on":"vehicle","at":"2019-06-01T18:17:04Z","data":{"id":"v1"},"organization_id":"o"}"#);
/// let b = parse_bytes("b", b"oops");
/// let mut profiler = Profiler::new();
/// profiler.add(&a);
/// profiler.add(&b);
/// assert_eq!(profiler.finish(2), profile(&Parsed::merge([a, b]), 2));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Profiler {
    lines: u64,
    events: u64,
    duplicates: u64,
    kind_counts: [u64; EventKind::NAMES.len()],
    reject_reasons: BTreeMap<String, u64>,
    vehicles: BTreeSet<VehicleId>,
    periods: BTreeSet<PeriodId>,
    missing_location: u64,
    at: Option<Range<DateTime<Utc>>>,
    loc_at: Option<Range<DateTime<Utc>>>,
    start: Option<Range<DateTime<Utc>>>,
    finish: Option<Range<DateTime<Utc>>>,
    lat: Option<Range<f64>>,
    lng: Option<Range<f64>>,
}

impl Profiler {
    /// An empty profiler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one batch: its lines, duplicates, events and rejects.
    pub fn add(&mut self, parsed: &Parsed) {
        self.lines += parsed.lines;
        self.duplicates += parsed.duplicates;
        for record in &parsed.events {
            self.add_event(&record.event);
        }
        for r in &parsed.rejects {
            *self
                .reject_reasons
                .entry(r.reason.code().to_owned())
                .or_insert(0) += 1;
        }
    }

    fn add_event(&mut self, e: &Event) {
        self.events += 1;
        self.kind_counts[e.kind.index()] += 1;
        Range::widen(&mut self.at, e.at);
        if let Some(v) = e.kind.vehicle() {
            if !self.vehicles.contains(v) {
                self.vehicles.insert(v.clone());
            }
            match e.kind.location() {
                Some(l) => {
                    Range::widen(&mut self.loc_at, l.at);
                    Range::widen(&mut self.lat, l.position.lat());
                    Range::widen(&mut self.lng, l.position.lng());
                }
                None => self.missing_location += 1,
            }
        }
        if let Some(p) = e.kind.period() {
            if !self.periods.contains(p.id()) {
                self.periods.insert(p.id().clone());
            }
            Range::widen(&mut self.start, p.start());
            Range::widen(&mut self.finish, p.finish());
        }
    }

    /// The profile of everything added, read from `files` sources.
    pub fn finish(self, files: u64) -> Profile {
        let by_kind = EventKind::NAMES
            .iter()
            .zip(self.kind_counts)
            .map(|(name, n)| ((*name).to_owned(), n))
            .collect();
        Profile {
            counts: Counts {
                files,
                lines: self.lines,
                events: self.events,
                rejects: self.reject_reasons.values().sum(),
                duplicates: self.duplicates,
                by_kind,
                reject_reasons: self.reject_reasons,
                vehicles: self.vehicles.len() as u64,
                periods: self.periods.len() as u64,
            },
            missing: BTreeMap::from([("data.location".to_owned(), self.missing_location)]),
            time_ranges: named(vec![
                ("at", self.at),
                ("data.location.at", self.loc_at),
                ("data.start", self.start),
                ("data.finish", self.finish),
            ]),
            coordinate_ranges: named(vec![
                ("data.location.lat", self.lat),
                ("data.location.lng", self.lng),
            ]),
        }
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

    #[test]
    fn a_profiler_fed_in_batches_equals_the_profile_of_the_whole() {
        let lines = [
            r#"{"event":"update","on":"vehicle","at":"2019-06-01T18:00:00Z","data":{"id":"a","location":{"lat":1.5,"lng":-2,"at":"2019-06-01T17:59:59Z"}},"organization_id":"o"}"#,
            r#"{"event":"create","on":"operating_period","at":"2019-06-01T18:00:00Z","data":{"id":"p","start":"2019-06-01T18:00:00Z","finish":"2019-06-01T19:00:00Z"},"organization_id":"o"}"#,
            "[]",
            r#"{"event":"register","on":"vehicle","at":"2019-06-01T17:00:00Z","data":{"id":"b"},"organization_id":"o"}"#,
            r#"{"event":"update","on":"vehicle","at":"2019-06-01T18:00:09Z","data":{"id":"a","location":{"lat":-7,"lng":3,"at":"2019-06-01T18:00:09Z"}},"organization_id":"o"}"#,
            "{",
        ];
        let parts: Vec<Parsed> = lines
            .chunks(2)
            .enumerate()
            .map(|(i, c)| parse_bytes(&format!("f{i}"), c.join("\n").as_bytes()))
            .collect();
        let mut profiler = Profiler::new();
        for p in &parts {
            profiler.add(p);
        }
        let whole = profile(&Parsed::merge(parts), 3);
        assert_eq!(profiler.finish(3), whole);
        assert_eq!(whole.counts.vehicles, 2);
        assert_eq!(whole.counts.rejects, 2);
        assert_eq!(
            whole.time_ranges["at"].min.to_rfc3339(),
            "2019-06-01T17:00:00+00:00"
        );
    }
}
