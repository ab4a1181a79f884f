//! One vehicle's activity on the landing day being loaded: the row of `dwh.vehicle_day`,
//! summed while the events stream past, so the merge never aggregates the day's facts.
//!
//! Mirrors the aggregate migration 4 ran over the facts: counts, first and last times, and
//! the latest event's organisation and lifecycle state, where "latest" is the greatest
//! envelope time and, on a tie, the later in landing order ([`Position`]), whatever order the
//! files arrive in. The counts include update events the merge may still drop as cross-file
//! duplicates; `dwh.merge_day` subtracts those. A duplicate has the same times and
//! organisation as the event it repeats, so nothing else changes.

use std::sync::Arc;

use super::load::staged_row;
use super::seen::micros;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// Where a row sits in landing order: file-name time (files without one last), key, line —
/// SQL's `ORDER BY source_time NULLS LAST, source_key, line` with keys in byte order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Position {
    untimed: bool,
    time: Option<NaiveDateTime>,
    key: Arc<str>,
    line: u64,
}

impl Position {
    pub fn new(time: Option<NaiveDateTime>, key: Arc<str>, line: u64) -> Self {
        Position {
            untimed: time.is_none(),
            time,
            key,
            line,
        }
    }
}

staged_row! {
    /// The summary of one vehicle; see the module docs. Its columns are declared once, in
    /// `staging.vehicle_day`'s COPY order (migration 4): the statement, the types and the
    /// values all follow from this declaration.
    pub(super) struct VehicleDay => "staging.vehicle_day", "" {
        pub vehicle_id: String,
        pub landing_day: NaiveDate,
        pub organization_id: String,
        pub events: i64,
        pub fixes: i64,
        pub first_event_at: DateTime<Utc>,
        pub last_event_at: DateTime<Utc>,
        pub first_fix_at: Option<DateTime<Utc>>,
        pub last_fix_at: Option<DateTime<Utc>>,
        pub last_registered_at: Option<DateTime<Utc>>,
        pub last_deregistered_at: Option<DateTime<Utc>>,
        pub lifecycle_event: Option<&'static str>,
        pub lifecycle_at: Option<DateTime<Utc>>,
    }
    not copied {
        /// Envelope time and landing position of the event that set `organization_id`.
        organization_at: (i64, Position),
        /// The same, of the event that set `lifecycle_event`.
        lifecycle_order: Option<(i64, Position)>,
    }
}

/// What the summary needs of one event.
pub(super) struct Seen<'a> {
    pub position: Position,
    pub verb: &'static str,
    pub organization_id: &'a str,
    pub event_at: DateTime<Utc>,
    /// `location.at` of an update (other events' positions do not count as fixes).
    pub fix_at: Option<DateTime<Utc>>,
}

fn max(current: Option<DateTime<Utc>>, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    Some(match current {
        Some(c) if micros(c) >= micros(t) => c,
        _ => t,
    })
}

fn min(current: Option<DateTime<Utc>>, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    Some(match current {
        Some(c) if micros(c) <= micros(t) => c,
        _ => t,
    })
}

impl VehicleDay {
    pub fn new(vehicle_id: &str, landing_day: NaiveDate, e: &Seen<'_>) -> Self {
        let mut day = VehicleDay {
            vehicle_id: vehicle_id.to_owned(),
            landing_day,
            organization_id: e.organization_id.to_owned(),
            organization_at: (micros(e.event_at), e.position.clone()),
            events: 0,
            fixes: 0,
            first_event_at: e.event_at,
            last_event_at: e.event_at,
            first_fix_at: None,
            last_fix_at: None,
            last_registered_at: None,
            last_deregistered_at: None,
            lifecycle_event: None,
            lifecycle_at: None,
            lifecycle_order: None,
        };
        day.add(e);
        day
    }

    pub fn add(&mut self, e: &Seen<'_>) {
        let at = micros(e.event_at);
        self.events += 1;
        let order = (at, e.position.clone());
        if order >= self.organization_at {
            self.organization_at = order.clone();
            if self.organization_id != e.organization_id {
                e.organization_id.clone_into(&mut self.organization_id);
            }
        }
        self.first_event_at = min(Some(self.first_event_at), e.event_at).unwrap_or(e.event_at);
        self.last_event_at = max(Some(self.last_event_at), e.event_at).unwrap_or(e.event_at);
        match e.verb {
            "update" => {
                self.fixes += 1;
                if let Some(fix) = e.fix_at {
                    self.first_fix_at = min(self.first_fix_at, fix);
                    self.last_fix_at = max(self.last_fix_at, fix);
                }
            }
            verb => {
                if verb == "register" {
                    self.last_registered_at = max(self.last_registered_at, e.event_at);
                } else {
                    self.last_deregistered_at = max(self.last_deregistered_at, e.event_at);
                }
                if self.lifecycle_order.as_ref().is_none_or(|o| order >= *o) {
                    self.lifecycle_order = Some(order);
                    self.lifecycle_event = Some(verb);
                    self.lifecycle_at = Some(e.event_at);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn seen<'a>(verb: &'static str, org: &'a str, at: &str, fix: Option<&str>) -> Seen<'a> {
        seen_at(1, verb, org, at, fix)
    }

    fn seen_at<'a>(
        line: u64,
        verb: &'static str,
        org: &'a str,
        at: &str,
        fix: Option<&str>,
    ) -> Seen<'a> {
        Seen {
            position: Position::new(None, Arc::from("k"), line),
            verb,
            organization_id: org,
            event_at: t(at),
            fix_at: fix.map(t),
        }
    }

    #[test]
    fn latest_event_decides_organisation_and_lifecycle() {
        let day = NaiveDate::from_ymd_opt(2019, 6, 1).unwrap();
        let mut v = VehicleDay::new(
            "v1",
            day,
            &seen("register", "a", "2019-06-01T10:00:00Z", None),
        );
        v.add(&seen(
            "update",
            "b",
            "2019-06-01T10:00:05Z",
            Some("2019-06-01T10:00:04Z"),
        ));
        v.add(&seen(
            "update",
            "c",
            "2019-06-01T10:00:02Z",
            Some("2019-06-01T10:00:01Z"),
        ));
        v.add(&seen("deregister", "d", "2019-06-01T09:00:00Z", None));
        assert_eq!((v.events, v.fixes), (4, 2));
        assert_eq!(v.organization_id, "b", "the greatest envelope time wins");
        assert_eq!(v.first_event_at, t("2019-06-01T09:00:00Z"));
        assert_eq!(v.last_event_at, t("2019-06-01T10:00:05Z"));
        assert_eq!(v.first_fix_at, Some(t("2019-06-01T10:00:01Z")));
        assert_eq!(v.last_fix_at, Some(t("2019-06-01T10:00:04Z")));
        assert_eq!(v.lifecycle_event, Some("register"), "the register is later");
        assert_eq!(v.lifecycle_at, Some(t("2019-06-01T10:00:00Z")));
        assert_eq!(v.last_deregistered_at, Some(t("2019-06-01T09:00:00Z")));
        // A tie goes to the later event in landing order, whatever the order of arrival.
        v.add(&seen_at(3, "deregister", "e", "2019-06-01T10:00:05Z", None));
        v.add(&seen_at(2, "register", "f", "2019-06-01T10:00:05Z", None));
        assert_eq!(v.organization_id, "e");
        assert_eq!(v.lifecycle_event, Some("deregister"));
        let timed = Position::new(
            Some("2019-06-01T23:59:59".parse().unwrap()),
            Arc::from("z"),
            9,
        );
        assert!(
            timed < Position::new(None, Arc::from("a"), 1),
            "untimed files come last"
        );
    }

    /// The statement and types generated from the declaration are the ones written by hand
    /// before (migration 4's `staging.vehicle_day`, in its column order), and each value is
    /// written under its own column.
    #[test]
    fn copy_columns_types_and_values_follow_the_declaration() {
        use super::super::load::StagedRow;
        use postgres_types::Type;
        assert_eq!(
            VehicleDay::COPY,
            "COPY staging.vehicle_day (vehicle_id, landing_day, organization_id, events, \
             fixes, first_event_at, last_event_at, first_fix_at, last_fix_at, \
             last_registered_at, last_deregistered_at, lifecycle_event, lifecycle_at) \
             FROM STDIN (FORMAT binary)"
        );
        assert_eq!(
            VehicleDay::TYPES,
            [
                Type::TEXT,
                Type::DATE,
                Type::TEXT,
                Type::INT8,
                Type::INT8,
                Type::TIMESTAMPTZ,
                Type::TIMESTAMPTZ,
                Type::TIMESTAMPTZ,
                Type::TIMESTAMPTZ,
                Type::TIMESTAMPTZ,
                Type::TIMESTAMPTZ,
                Type::TEXT,
                Type::TIMESTAMPTZ,
            ]
        );
        let day = NaiveDate::from_ymd_opt(2019, 6, 1).unwrap();
        let v = VehicleDay::new(
            "v",
            day,
            &seen("register", "o", "2019-06-01T10:00:00Z", None),
        );
        let shown: Vec<String> = v.values().iter().map(|x| format!("{x:?}")).collect();
        assert_eq!(shown.len(), VehicleDay::TYPES.len());
        assert_eq!(
            &shown[..5],
            ["\"v\"", "2019-06-01", "\"o\"", "1", "0"],
            "vehicle_id, landing_day, organization_id, events, fixes"
        );
        assert_eq!(shown[11], "Some(\"register\")");
    }
}
