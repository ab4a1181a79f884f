//! Operating periods as they stand after a batch of create/delete events.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::event::{Event, EventKind, OperatingPeriod, PeriodId};

/// The resolved state of one operating period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodState {
    /// The period's id and window, from its latest event.
    pub period: OperatingPeriod,
    /// `at` of the latest event about this period.
    pub updated_at: DateTime<Utc>,
    /// Set when the latest event is a delete: deleted periods are marked, not dropped.
    pub deleted: bool,
}

/// Resolves create/delete events into one state per period, sorted by id.
///
/// Rule: the latest event about a period (by its envelope `at`; on a tie, the later one in
/// input order) decides its window and whether it is deleted. A create after a delete brings
/// the period back; a delete without a create is kept as a deleted period. The warehouse's SQL
/// applies the same rule.
///
/// ```
/// use d2d_model::{parse::parse_bytes, period::resolve_periods};
/// let day = br#"{"event":"create","on":"operating_period","at":"2019-06-01T18:00:00Z","data":{"id":"op_1","start":"2019-06-01T19:00:00Z","finish":"2019-06-01T20:00:00Z"},"organization_id":"o"}
/// {"event":"delete","on":"operating_period","at":"2019-06-01T18:30:00Z","data":{"id":"op_1","start":"2019-06-01T19:00:00Z","finish":"2019-06-01T20:00:00Z"},"organization_id":"o"}"#;
/// let periods = resolve_periods(parse_bytes("d", day).events.iter().map(|r| &r.event));
/// assert!(periods[0].deleted);
/// ```
pub fn resolve_periods<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<PeriodState> {
    let mut latest: BTreeMap<&PeriodId, PeriodState> = BTreeMap::new();
    for event in events {
        let (period, deleted) = match &event.kind {
            EventKind::PeriodCreate(p) => (p, false),
            EventKind::PeriodDelete(p) => (p, true),
            _ => continue,
        };
        let newer = latest
            .get(period.id())
            .is_none_or(|s| event.at >= s.updated_at);
        if newer {
            latest.insert(
                period.id(),
                PeriodState {
                    period: period.clone(),
                    updated_at: event.at,
                    deleted,
                },
            );
        }
    }
    latest.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_bytes;

    fn line(verb: &str, id: &str, at: &str, start: &str) -> String {
        format!(
            r#"{{"event":"{verb}","on":"operating_period","at":"2019-06-01T{at}Z","data":{{"id":"{id}","start":"2019-06-01T{start}Z","finish":"2019-06-01T23:00:00Z"}},"organization_id":"o"}}"#
        )
    }

    fn resolve(lines: &[String]) -> Vec<PeriodState> {
        let p = parse_bytes("t", lines.join("\n").as_bytes());
        resolve_periods(p.events.iter().map(|r| &r.event))
    }

    #[test]
    fn latest_event_wins_regardless_of_input_order() {
        let s = resolve(&[
            line("create", "b", "10:00:00", "12:00:00"),
            line("create", "a", "10:00:00", "12:00:00"),
            line("delete", "a", "11:00:00", "12:00:00"),
            // Arrives later in the file, but was sent earlier: must not win.
            line("create", "b", "09:00:00", "13:00:00"),
        ]);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].period.id().as_str(), "a");
        assert!(s[0].deleted);
        assert!(!s[1].deleted);
        assert_eq!(
            s[1].period.start().to_rfc3339(),
            "2019-06-01T12:00:00+00:00"
        );
    }

    #[test]
    fn create_after_delete_restores_and_delete_alone_is_kept() {
        let s = resolve(&[
            line("delete", "a", "10:00:00", "12:00:00"),
            line("create", "a", "11:00:00", "14:00:00"),
            line("delete", "z", "10:00:00", "12:00:00"),
        ]);
        assert!(!s[0].deleted);
        assert_eq!(
            s[0].period.start().to_rfc3339(),
            "2019-06-01T14:00:00+00:00"
        );
        assert!(s[1].deleted);
    }
}
