//! Cross-file duplicate detection for one landing day, in fixed memory.
//!
//! The parser drops an event repeated within a file; one repeated in another file of the day
//! must be dropped too, keeping the first in landing order. Holding every event of a day to
//! compare would grow with the day, so the loader keeps a Bloom filter of the update events it
//! has staged: an event the filter has not seen is certainly new; one it has seen is only a
//! *candidate*, staged apart and checked exactly by `dwh.merge_day` against the day's index.
//! The filter is [`FILTER_BYTES`] whatever the day's size: 10 M updates give about one false
//! candidate in 7,000, 40 M about one in 20 (false candidates cost a lookup, never a row).

use std::hash::{BuildHasher, Hash, Hasher};

use chrono::{DateTime, Utc};
use foldhash::fast::FixedState;

/// Size of the filter: 2^28 bits.
pub const FILTER_BYTES: usize = 1 << 25;
const WORDS: usize = FILTER_BYTES / 8;
const PROBES: u64 = 5;

/// The identity of an update event, as `dwh.merge_day` compares it: every field the feed sent,
/// at PostgreSQL's microsecond precision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct UpdateKey<'a> {
    pub vehicle_id: &'a str,
    pub organization_id: &'a str,
    pub event_at: DateTime<Utc>,
    pub lat: f64,
    pub lng: f64,
    pub location_at: DateTime<Utc>,
}

impl Hash for UpdateKey<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.vehicle_id.hash(state);
        self.organization_id.hash(state);
        micros(self.event_at).hash(state);
        // SQL compares floats by value: -0.0 equals 0.0, so both must hash alike.
        (self.lat + 0.0).to_bits().hash(state);
        (self.lng + 0.0).to_bits().hash(state);
        micros(self.location_at).hash(state);
    }
}

/// Timestamps as PostgreSQL stores them (the binary COPY truncates to microseconds).
pub(super) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// A Bloom filter of the update events staged so far. Allocated on first use; the operating
/// system maps its pages as they are touched.
#[derive(Default)]
pub(super) struct SeenFilter {
    words: Vec<u64>,
}

impl SeenFilter {
    /// Records `key`; true when it may have been recorded before (a duplicate candidate),
    /// false when it certainly was not.
    pub fn insert(&mut self, key: &UpdateKey<'_>) -> bool {
        if self.words.is_empty() {
            self.words = vec![0; WORDS];
        }
        let h1 = FixedState::with_seed(0x6432_645f_7365_656e).hash_one(key);
        let h2 = FixedState::with_seed(0x6475_705f_6669_6c74).hash_one(key) | 1;
        let bits = (WORDS * 64) as u64;
        let mut seen = true;
        for i in 0..PROBES {
            let bit = h1.wrapping_add(i.wrapping_mul(h2)) % bits;
            let (word, mask) = ((bit / 64) as usize, 1u64 << (bit % 64));
            if let Some(w) = self.words.get_mut(word) {
                seen &= *w & mask != 0;
                *w |= mask;
            }
        }
        seen
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key(vehicle: &str, second: i64, lat: f64) -> UpdateKey<'_> {
        let at = DateTime::from_timestamp(1_559_400_000 + second, 0).unwrap();
        UpdateKey {
            vehicle_id: vehicle,
            organization_id: "org",
            event_at: at,
            lat,
            lng: 13.4,
            location_at: at,
        }
    }

    #[test]
    fn a_repeat_is_always_a_candidate_and_new_events_rarely_are() {
        let mut f = SeenFilter::default();
        let vehicles: Vec<String> = (0..100).map(|v| format!("v{v}")).collect();
        let mut false_candidates = 0;
        for second in 0..1000 {
            for v in &vehicles {
                false_candidates += usize::from(f.insert(&key(v, second, 52.5)));
            }
        }
        // 100,000 distinct events in 2^28 bits: a false candidate is a ~1e-15 event.
        assert_eq!(false_candidates, 0);
        for second in (0..1000).step_by(7) {
            assert!(f.insert(&key("v3", second, 52.5)), "repeat at {second}");
        }
        assert!(
            !f.insert(&key("v3", 5, 52.6)),
            "another position is another event"
        );
    }

    #[test]
    fn keys_compare_as_postgresql_does() {
        let mut f = SeenFilter::default();
        assert!(!f.insert(&key("v", 1, 0.0)));
        assert!(f.insert(&key("v", 1, -0.0)), "-0.0 = 0.0 in SQL");
        let mut a = key("v", 2, 1.0);
        assert!(!f.insert(&a));
        // Nanoseconds below PostgreSQL's precision do not make another event.
        a.event_at += chrono::Duration::nanoseconds(300);
        assert!(f.insert(&a));
    }
}
