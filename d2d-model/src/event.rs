//! The events a fleet sends: typed, validated on construction, and serialisable back to the
//! feed's own JSON shape.
//!
//! A value of these types is always valid: coordinates are finite and in range, ids are
//! non-empty, an operating period never finishes before it starts, and an update always has a
//! position. Raw lines become events through [`crate::parse`].

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::time::format_timestamp;

/// Why a value could not become a domain type.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidValue {
    /// An identifier is empty, too long, or holds control characters.
    #[error("{0:?} is not a valid id (1 to 256 printable characters)")]
    Id(String),
    /// A coordinate is NaN or infinite.
    #[error("{value} is not a finite number")]
    NonFinite {
        /// The refused value.
        value: f64,
    },
    /// A coordinate lies outside its range.
    #[error("{value} is outside [{min}, {max}]")]
    OutOfRange {
        /// The refused value.
        value: f64,
        /// Smallest allowed value.
        min: f64,
        /// Largest allowed value.
        max: f64,
    },
    /// An operating period whose finish lies before its start.
    #[error("finish {finish} is before start {start}")]
    FinishBeforeStart {
        /// The period's start.
        start: DateTime<Utc>,
        /// The period's finish.
        finish: DateTime<Utc>,
    },
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Cheap to clone: the text is shared (`Arc<str>`), and the parser shares one copy
        /// between all events of a parse that carry the same id.
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Wraps an identifier, refusing empty, over-long (> 256 bytes) or control-character ids.
            pub fn new(id: impl Into<String>) -> Result<Self, InvalidValue> {
                let id = id.into();
                if is_valid_id(&id) {
                    Ok(Self(id.into()))
                } else {
                    Err(InvalidValue::Id(id))
                }
            }

            /// Wraps text already known to pass [`is_valid_id`], sharing it.
            pub(crate) fn from_valid(id: Arc<str>) -> Self {
                Self(id)
            }

            /// The identifier as written in the feed.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// The rule every id type applies: 1 to 256 bytes, no control characters.
pub(crate) fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 256 && !has_control(id)
}

/// Whether `s` holds a control character (`char::is_control`: U+0000..=U+001F,
/// U+007F..=U+009F). Ids are nearly always ASCII, where a byte test is enough.
fn has_control(s: &str) -> bool {
    // No early exit, so that the compiler vectorises it.
    let printable_ascii = s.bytes().fold(true, |ok, b| ok & (0x20..0x7f).contains(&b));
    !printable_ascii && s.chars().any(char::is_control)
}

id_type!(
    /// A vehicle's id (a UUID in the feed, but any printable string is accepted).
    VehicleId
);
id_type!(
    /// An operating period's id, such as `op_1`.
    PeriodId
);
id_type!(
    /// The organisation that sent an event.
    OrganizationId
);

/// A WGS 84 position in degrees. Always finite, latitude in [-90, 90], longitude in [-180, 180].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Position {
    lat: f64,
    lng: f64,
}

/// Why [`Position::new`] refused a latitude/longitude pair: which coordinate, and what is
/// wrong with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{coordinate}: {error}")]
#[non_exhaustive]
pub struct InvalidPosition {
    /// `"lat"` or `"lng"`.
    pub coordinate: &'static str,
    /// What is wrong with its value.
    #[source]
    pub error: InvalidValue,
}

impl Position {
    /// Validates a latitude/longitude pair. The error says which of the two is wrong.
    ///
    /// ```
    /// use d2d_model::event::Position;
    /// assert!(Position::new(52.52, 13.405).is_ok());
    /// let err = Position::new(91.2, 0.0).unwrap_err();
    /// assert_eq!(err.coordinate, "lat");
    /// assert_eq!(err.error.to_string(), "91.2 is outside [-90, 90]");
    /// assert_eq!(err.to_string(), "lat: 91.2 is outside [-90, 90]");
    /// ```
    pub fn new(lat: f64, lng: f64) -> Result<Self, InvalidPosition> {
        let invalid = |coordinate| move |error| InvalidPosition { coordinate, error };
        check_coordinate(lat, 90.0).map_err(invalid("lat"))?;
        check_coordinate(lng, 180.0).map_err(invalid("lng"))?;
        // -0.0 and 0.0 are the same place; normalising keeps Eq and Hash consistent.
        Ok(Self {
            lat: lat + 0.0,
            lng: lng + 0.0,
        })
    }

    /// Latitude in degrees.
    pub fn lat(&self) -> f64 {
        self.lat
    }

    /// Longitude in degrees.
    pub fn lng(&self) -> f64 {
        self.lng
    }
}

fn check_coordinate(value: f64, limit: f64) -> Result<(), InvalidValue> {
    if !value.is_finite() {
        Err(InvalidValue::NonFinite { value })
    } else if !(-limit..=limit).contains(&value) {
        Err(InvalidValue::OutOfRange {
            value,
            min: -limit,
            max: limit,
        })
    } else {
        Ok(())
    }
}

// Sound because `Position::new` refuses NaN, the only value for which `==` is not reflexive.
impl Eq for Position {}

impl Hash for Position {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.lat.to_bits().hash(state);
        self.lng.to_bits().hash(state);
    }
}

/// A GPS fix: where a vehicle was, and when (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Location {
    /// Where.
    pub position: Position,
    /// When the fix was taken (UTC); not necessarily the event's own `at`.
    pub at: DateTime<Utc>,
}

/// An operating period (a shift): a named time window, `start <= finish`, both UTC.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OperatingPeriod {
    id: PeriodId,
    start: DateTime<Utc>,
    finish: DateTime<Utc>,
}

impl OperatingPeriod {
    /// Builds a period, refusing one that finishes before it starts.
    pub fn new(
        id: PeriodId,
        start: DateTime<Utc>,
        finish: DateTime<Utc>,
    ) -> Result<Self, InvalidValue> {
        if finish < start {
            return Err(InvalidValue::FinishBeforeStart { start, finish });
        }
        Ok(Self { id, start, finish })
    }

    /// The period's id.
    pub fn id(&self) -> &PeriodId {
        &self.id
    }

    /// Start of the window (inclusive).
    pub fn start(&self) -> DateTime<Utc> {
        self.start
    }

    /// End of the window (inclusive).
    pub fn finish(&self) -> DateTime<Utc> {
        self.finish
    }

    /// Whether `t` lies in `[start, finish]`.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t <= self.finish
    }
}

/// The closed set of things that can happen, with what each carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A vehicle joins the fleet. The feed sends no position, but one is allowed.
    VehicleRegister {
        /// Which vehicle.
        vehicle: VehicleId,
        /// Where it was, if known.
        location: Option<Location>,
    },
    /// A vehicle reports its position.
    VehicleUpdate {
        /// Which vehicle.
        vehicle: VehicleId,
        /// The fix; an update without a usable one is a reject.
        location: Location,
    },
    /// A vehicle leaves the fleet.
    VehicleDeregister {
        /// Which vehicle.
        vehicle: VehicleId,
        /// Where it was, if known.
        location: Option<Location>,
    },
    /// An operating period is announced (or re-announced with new times).
    PeriodCreate(OperatingPeriod),
    /// An operating period is cancelled.
    PeriodDelete(OperatingPeriod),
}

impl EventKind {
    /// Every kind name, in a stable order: `on.event` as in the feed.
    pub const NAMES: [&'static str; 5] = [
        "vehicle.register",
        "vehicle.update",
        "vehicle.deregister",
        "operating_period.create",
        "operating_period.delete",
    ];

    /// `on.event`, e.g. `vehicle.update`: one of [`EventKind::NAMES`].
    pub fn name(&self) -> &'static str {
        Self::NAMES[self.index()]
    }

    /// Position of this kind in [`EventKind::NAMES`].
    pub fn index(&self) -> usize {
        match self {
            Self::VehicleRegister { .. } => 0,
            Self::VehicleUpdate { .. } => 1,
            Self::VehicleDeregister { .. } => 2,
            Self::PeriodCreate(_) => 3,
            Self::PeriodDelete(_) => 4,
        }
    }

    /// The feed's `on` field.
    pub fn on(&self) -> &'static str {
        match self {
            Self::PeriodCreate(_) | Self::PeriodDelete(_) => "operating_period",
            _ => "vehicle",
        }
    }

    /// The feed's `event` field.
    pub fn verb(&self) -> &'static str {
        match self {
            Self::VehicleRegister { .. } => "register",
            Self::VehicleUpdate { .. } => "update",
            Self::VehicleDeregister { .. } => "deregister",
            Self::PeriodCreate(_) => "create",
            Self::PeriodDelete(_) => "delete",
        }
    }

    /// The vehicle, for vehicle events.
    pub fn vehicle(&self) -> Option<&VehicleId> {
        match self {
            Self::VehicleRegister { vehicle, .. }
            | Self::VehicleUpdate { vehicle, .. }
            | Self::VehicleDeregister { vehicle, .. } => Some(vehicle),
            _ => None,
        }
    }

    /// The location, for vehicle events that carry one.
    pub fn location(&self) -> Option<&Location> {
        match self {
            Self::VehicleRegister { location, .. } | Self::VehicleDeregister { location, .. } => {
                location.as_ref()
            }
            Self::VehicleUpdate { location, .. } => Some(location),
            _ => None,
        }
    }

    /// The period, for operating-period events.
    pub fn period(&self) -> Option<&OperatingPeriod> {
        match self {
            Self::PeriodCreate(p) | Self::PeriodDelete(p) => Some(p),
            _ => None,
        }
    }
}

/// One event with its envelope.
///
/// Serialises to, and deserialises from, the feed's JSON line format:
///
/// ```
/// use d2d_model::event::Event;
/// let line = r#"{"event":"update","on":"vehicle","at":"2019-06-01T18:17:10.101Z","data":{"id":"v1","location":{"lat":52.45,"lng":13.46,"at":"2019-06-01T18:17:10.101Z"}},"organization_id":"org-id"}"#;
/// let event: Event = serde_json::from_str(line).unwrap();
/// assert_eq!(event.kind.name(), "vehicle.update");
/// assert_eq!(serde_json::to_string(&event).unwrap(), line);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Event {
    /// When the API received the event (UTC).
    pub at: DateTime<Utc>,
    /// Who sent it.
    pub organization_id: OrganizationId,
    /// What happened.
    pub kind: EventKind,
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            event: &'static str,
            on: &'static str,
            at: String,
            data: Data<'a>,
            organization_id: &'a OrganizationId,
        }
        #[derive(Serialize)]
        #[serde(untagged)]
        enum Data<'a> {
            Vehicle {
                id: &'a VehicleId,
                #[serde(skip_serializing_if = "Option::is_none")]
                location: Option<WireLocation>,
            },
            Period {
                id: &'a PeriodId,
                start: String,
                finish: String,
            },
        }
        #[derive(Serialize)]
        struct WireLocation {
            lat: f64,
            lng: f64,
            at: String,
        }
        let data = match &self.kind {
            EventKind::PeriodCreate(p) | EventKind::PeriodDelete(p) => Data::Period {
                id: &p.id,
                start: format_timestamp(&p.start),
                finish: format_timestamp(&p.finish),
            },
            kind => Data::Vehicle {
                // Every non-period kind names a vehicle.
                id: kind
                    .vehicle()
                    .ok_or_else(|| serde::ser::Error::custom("no vehicle"))?,
                location: kind.location().map(|l| WireLocation {
                    lat: l.position.lat,
                    lng: l.position.lng,
                    at: format_timestamp(&l.at),
                }),
            },
        };
        Wire {
            event: self.kind.verb(),
            on: self.kind.on(),
            at: format_timestamp(&self.at),
            data,
            organization_id: &self.organization_id,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = crate::parse::RawEvent::deserialize(d)?;
        raw.validate().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_found_in_ascii_and_beyond() {
        for c in (0u32..0x200).filter_map(char::from_u32) {
            let s = format!("ab{c}cd");
            assert_eq!(has_control(&s), c.is_control(), "{c:?}");
        }
    }

    #[test]
    fn ids_refuse_empty_and_control_characters() {
        assert!(VehicleId::new("").is_err());
        assert!(VehicleId::new("a\nb").is_err());
        assert!(VehicleId::new("x".repeat(257)).is_err());
        assert_eq!(VehicleId::new("op_1").unwrap().as_str(), "op_1");
    }

    #[test]
    fn positions_are_range_checked() {
        assert!(Position::new(90.0, 180.0).is_ok());
        assert!(Position::new(-90.0, -180.0).is_ok());
        assert_eq!(Position::new(90.0001, 0.0).unwrap_err().coordinate, "lat");
        assert_eq!(Position::new(0.0, -180.5).unwrap_err().coordinate, "lng");
        assert_eq!(Position::new(f64::NAN, 0.0).unwrap_err().coordinate, "lat");
        assert_eq!(
            Position::new(0.0, f64::INFINITY)
                .unwrap_err()
                .error
                .to_string(),
            "inf is not a finite number"
        );
        assert_eq!(
            Position::new(-0.0, 1.0).unwrap(),
            Position::new(0.0, 1.0).unwrap()
        );
    }

    #[test]
    fn periods_must_not_finish_before_they_start() {
        let t0 = crate::time::parse_timestamp("2019-06-01T18:00:00Z").unwrap();
        let t1 = crate::time::parse_timestamp("2019-06-01T19:00:00Z").unwrap();
        let id = PeriodId::new("op").unwrap();
        assert!(OperatingPeriod::new(id.clone(), t0, t0).is_ok());
        assert!(OperatingPeriod::new(id.clone(), t1, t0).is_err());
        let p = OperatingPeriod::new(id, t0, t1).unwrap();
        assert!(p.contains(t0) && p.contains(t1));
        assert!(!p.contains(t1 + chrono::TimeDelta::nanoseconds(1)));
    }
}
