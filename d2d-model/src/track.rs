//! Per-vehicle tracks: the update fixes of each vehicle, in time order, without repeats.

use std::collections::BTreeMap;

use crate::event::{Event, EventKind, Location, VehicleId};

/// Fixes per vehicle, each list sorted by time and de-duplicated.
pub type Tracks = BTreeMap<VehicleId, Vec<Location>>;

/// Collects the `update` fixes of every vehicle.
///
/// Fixes are ordered by `location.at`, then latitude, then longitude, so the order is total and
/// the same in SQL; identical fixes (same time and place) are kept once. Register/deregister
/// positions are not part of a track: the distance definition uses updates only.
pub fn tracks<'a>(events: impl IntoIterator<Item = &'a Event>) -> Tracks {
    let mut builder = TrackBuilder::new();
    for event in events {
        builder.add(event);
    }
    builder.finish()
}

/// [`tracks`] built event by event, for inputs too large to hold as events: it keeps only
/// each vehicle's fixes (a [`Location`] each) and orders them in [`TrackBuilder::finish`].
///
/// ```
/// use d2d_model::{parse::parse_bytes, track::{tracks, TrackBuilder}};
/// let p = parse_bytes("f", br#"{"event":"update","on":"vehicle","at":"2019-06-01T18:00:00Z","data":{"id":"v","location":{"lat":1,"lng":2,"at":"2019-06-01T18:00:00Z"}},"organization_id":"o"}"#);
/// let mut builder = TrackBuilder::new();
/// for r in &p.events {
///     builder.add(&r.event);
/// }
/// assert_eq!(builder.finish(), tracks(p.events.iter().map(|r| &r.event)));
/// ```
#[derive(Debug, Clone, Default)]
pub struct TrackBuilder {
    fixes: Tracks,
}

impl TrackBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the fix of `event` if it is an `update`; other events are ignored.
    pub fn add(&mut self, event: &Event) {
        if let EventKind::VehicleUpdate { vehicle, location } = &event.kind {
            match self.fixes.get_mut(vehicle) {
                Some(fixes) => fixes.push(*location),
                None => {
                    self.fixes.insert(vehicle.clone(), vec![*location]);
                }
            }
        }
    }

    /// The tracks: each vehicle's fixes sorted and de-duplicated.
    pub fn finish(mut self) -> Tracks {
        for fixes in self.fixes.values_mut() {
            fixes.sort_by(fix_order);
            fixes.dedup();
            fixes.shrink_to_fit();
        }
        self.fixes
    }
}

/// The total order of fixes in a track: time, then latitude, then longitude.
pub fn fix_order(a: &Location, b: &Location) -> std::cmp::Ordering {
    a.at.cmp(&b.at)
        .then(a.position.lat().total_cmp(&b.position.lat()))
        .then(a.position.lng().total_cmp(&b.position.lng()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_bytes;

    fn update(v: &str, lat: f64, at: &str) -> String {
        format!(
            r#"{{"event":"update","on":"vehicle","at":"2019-06-01T{at}Z","data":{{"id":"{v}","location":{{"lat":{lat},"lng":13.0,"at":"2019-06-01T{at}Z"}}}},"organization_id":"o"}}"#
        )
    }

    #[test]
    fn sorts_by_time_and_drops_repeated_fixes() {
        let lines = [
            update("v", 52.2, "10:00:02"),
            update("v", 52.0, "10:00:00"),
            update("w", 1.0, "10:00:00"),
            update("v", 52.1, "10:00:01"),
            // Same fix, different envelope time: a duplicate fix, not a duplicate event.
            update("v", 52.1, "10:00:01").replacen("10:00:01Z", "10:00:09Z", 1),
        ];
        let p = parse_bytes("t", lines.join("\n").as_bytes());
        assert_eq!(p.events.len(), 5);
        let t = tracks(p.events.iter().map(|r| &r.event));
        let v: Vec<f64> = t[&VehicleId::new("v").unwrap()]
            .iter()
            .map(|l| l.position.lat())
            .collect();
        assert_eq!(v, [52.0, 52.1, 52.2]);
        assert_eq!(t.len(), 2);
    }
}
