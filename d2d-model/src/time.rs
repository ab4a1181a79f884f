//! RFC 3339 timestamps, normalised to UTC.
//!
//! The feed writes `2019-06-01T18:17:10.101Z`, but the spec only promises RFC 3339, so offsets
//! (`+02:00`) and missing fractions are accepted too. A timestamp without a zone is rejected:
//! guessing a zone would silently move every fix of a day.
//!
//! The parser is hand-written because it runs twice per event on the hot path; it is several
//! times faster than `DateTime::parse_from_rfc3339` and still validates every field through
//! chrono's calendar.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};

/// Why a timestamp string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimestampError {
    /// The string does not have the RFC 3339 shape `YYYY-MM-DDTHH:MM:SS[.f][Z|±HH:MM]`.
    #[error("not an RFC 3339 timestamp")]
    Shape,
    /// The string has the shape but no zone designator.
    #[error("has no time zone (expected `Z` or an offset such as `+02:00`)")]
    NoZone,
    /// A field is out of its calendar range (month 13, 30 February, hour 25, offset ±24:00...).
    #[error("is not a valid calendar date and time")]
    OutOfRange,
    /// A valid instant, but not in years 0001–9999 once in UTC (`0001-01-01T00:00:00+14:00`
    /// is in year 0): the warehouse, the lake and the feed's own format keep four-digit years
    /// of the common era only.
    #[error("is outside years 0001 to 9999 in UTC")]
    BeyondYears,
}

/// Parses an RFC 3339 timestamp and converts it to UTC.
///
/// Accepts `T`, `t` or a space between date and time, any number of fractional digits, and
/// `Z`, `z` or `±HH:MM`. Instants are kept to the microsecond, as the warehouse and the lake
/// store them: further digits are truncated (towards the past, before 1970 and 2000 alike), so
/// the model, PostgreSQL and Parquet hold the same instant and tell the same events apart.
///
/// ```
/// use d2d_model::time::parse_timestamp;
/// let a = parse_timestamp("2019-06-01T18:17:10.101Z").unwrap();
/// let b = parse_timestamp("2019-06-01T20:17:10.101+02:00").unwrap();
/// assert_eq!(a, b);
/// assert!(parse_timestamp("2019-06-01T18:17:10").is_err()); // no zone
/// ```
pub fn parse_timestamp(s: &str) -> Result<DateTime<Utc>, TimestampError> {
    let b = s.as_bytes();
    if b.len() < 19
        || !looks_like_date(b)
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(TimestampError::Shape);
    }
    let year = digits(&b[0..4])? as i32;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;

    let mut i = 19;
    let mut nanos: u32 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        let mut scale = 100_000_000u32;
        while let Some(&c) = b.get(i) {
            if !c.is_ascii_digit() {
                break;
            }
            nanos += u32::from(c - b'0') * scale;
            scale /= 10;
            i += 1;
        }
        if i == start {
            return Err(TimestampError::Shape);
        }
    }

    let offset_seconds: i64 = match b.get(i) {
        None => return Err(TimestampError::NoZone),
        Some(b'Z' | b'z') => {
            i += 1;
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            if b.len() < i + 6 || b[i + 3] != b':' {
                return Err(TimestampError::Shape);
            }
            let oh = digits(&b[i + 1..i + 3])?;
            let om = digits(&b[i + 4..i + 6])?;
            if oh > 23 || om > 59 {
                return Err(TimestampError::OutOfRange);
            }
            i += 6;
            let magnitude = i64::from(oh * 3600 + om * 60);
            if sign == b'+' {
                magnitude
            } else {
                -magnitude
            }
        }
        Some(_) => return Err(TimestampError::Shape),
    };
    if i != b.len() {
        return Err(TimestampError::Shape);
    }

    let nanos = nanos - nanos % 1_000;
    // RFC 3339 allows a leap second (:60); chrono represents it as 59 s + 1e9 ns.
    let (second, nanos) = if second == 60 {
        (59, nanos + 1_000_000_000)
    } else {
        (second, nanos)
    };
    let local = NaiveDate::from_ymd_opt(year, month, day)
        .and_then(|d| d.and_hms_nano_opt(hour, minute, second, nanos))
        .ok_or(TimestampError::OutOfRange)?;
    // `Z`, the feed's zone, needs no shift.
    let utc = if offset_seconds == 0 {
        local
    } else {
        local
            .checked_sub_signed(TimeDelta::seconds(offset_seconds))
            .ok_or(TimestampError::OutOfRange)?
    };
    let utc = utc.and_utc();
    // In microseconds, as stored: a leap second at the very end of 9999 is in year 10000.
    if !(FIRST_MICROS..END_MICROS).contains(&utc.timestamp_micros()) {
        return Err(TimestampError::BeyondYears);
    }
    Ok(utc)
}

/// `0001-01-01T00:00:00Z` and `10000-01-01T00:00:00Z` in microseconds since the Unix epoch:
/// the instants of [`crate::landing::FIRST_DAY`] to [`crate::landing::LAST_DAY`].
const FIRST_MICROS: i64 = -62_135_596_800_000_000;
const END_MICROS: i64 = 253_402_300_800_000_000;

fn looks_like_date(b: &[u8]) -> bool {
    b.len() >= 10 && b[4] == b'-' && b[7] == b'-'
}

fn digits(b: &[u8]) -> Result<u32, TimestampError> {
    b.iter().try_fold(0u32, |acc, &c| {
        if c.is_ascii_digit() {
            Ok(acc * 10 + u32::from(c - b'0'))
        } else {
            Err(TimestampError::Shape)
        }
    })
}

/// Formats a UTC timestamp the way the feed writes it: RFC 3339 with `Z`, and with the
/// shortest fraction (milliseconds, microseconds or nanoseconds) that loses nothing.
pub fn format_timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn keeps_years_0001_to_9999_in_utc_only() {
        // The same bounds as the landing days' (one fact: the days d2d loads).
        use crate::landing::{FIRST_DAY, LAST_DAY};
        let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_micros();
        assert_eq!(midnight(FIRST_DAY), FIRST_MICROS);
        assert_eq!(midnight(LAST_DAY.succ_opt().unwrap()), END_MICROS);
        for (text, ok) in [
            ("0001-01-01T00:00:00Z", true),
            ("0000-12-31T23:00:00-01:00", true),
            ("9999-12-31T23:59:59.999999999Z", true),
            ("9999-12-31T23:59:59+00:01", true),
            ("0001-01-01T00:00:00+14:00", false),
            ("0000-12-31T23:59:59Z", false),
            ("9999-12-31T23:59:59-14:00", false),
            ("9999-12-31T23:59:60Z", false),
        ] {
            let parsed = parse_timestamp(text);
            if ok {
                assert!(parsed.is_ok(), "{text}: {parsed:?}");
            } else {
                assert!(
                    matches!(parsed, Err(TimestampError::BeyondYears)),
                    "{text}: {parsed:?}"
                );
            }
        }
    }

    #[test]
    fn accepts_the_feed_format() {
        let t = parse_timestamp("2019-06-01T18:17:10.101Z").unwrap();
        assert_eq!(
            t,
            Utc.with_ymd_and_hms(2019, 6, 1, 18, 17, 10).unwrap() + TimeDelta::milliseconds(101)
        );
    }

    #[test]
    fn accepts_offsets_and_missing_fraction() {
        let z = parse_timestamp("2019-06-01T18:17:10Z").unwrap();
        assert_eq!(parse_timestamp("2019-06-01T20:17:10+02:00").unwrap(), z);
        assert_eq!(parse_timestamp("2019-06-01T15:17:10-03:00").unwrap(), z);
        assert_eq!(parse_timestamp("2019-06-01 18:17:10z").unwrap(), z);
        // Across midnight: the offset moves the UTC date.
        assert_eq!(
            parse_timestamp("2019-06-02T01:00:00+02:00").unwrap(),
            Utc.with_ymd_and_hms(2019, 6, 1, 23, 0, 0).unwrap()
        );
    }

    #[test]
    fn keeps_microseconds_and_truncates_beyond_alike_before_and_after_1970() {
        let t = parse_timestamp("2019-06-01T18:17:10.123456789123Z").unwrap();
        assert_eq!(t.timestamp_subsec_nanos(), 123_456_000);
        // Before 1970 (and 2000) too: towards the past, as Parquet's microseconds count.
        for (text, micros) in [
            ("1969-12-31T23:59:59.9999999Z", -1),
            ("1999-12-31T23:59:59.0000019Z", 946_684_799_000_001),
            ("1960-01-01T00:00:00.0000001+01:00", -315_622_800_000_000),
        ] {
            assert_eq!(
                parse_timestamp(text).unwrap().timestamp_micros(),
                micros,
                "{text}"
            );
            assert_eq!(
                parse_timestamp(text).unwrap().timestamp_subsec_nanos() % 1_000,
                0
            );
        }
    }

    #[test]
    fn agrees_with_chrono_on_valid_input() {
        for s in [
            "2019-06-01T18:17:10.101Z",
            "2000-02-29T00:00:00+13:00",
            "1999-12-31T23:59:59.999999-07:30",
        ] {
            assert_eq!(
                parse_timestamp(s).unwrap(),
                DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc),
                "{s}"
            );
        }
    }

    #[test]
    fn refuses_bad_input_with_a_reason() {
        assert_eq!(
            parse_timestamp("2019-06-01T18:17:10.101"),
            Err(TimestampError::NoZone)
        );
        assert_eq!(
            parse_timestamp("2019-02-30T18:17:10Z"),
            Err(TimestampError::OutOfRange)
        );
        assert_eq!(
            parse_timestamp("2019-06-01T24:00:00Z"),
            Err(TimestampError::OutOfRange)
        );
        for bad in [
            "",
            "yesterday",
            "2019-06-01",
            "2019-06-01T18:17Z",
            "2019-06-01T18:17:10.Z",
            "2019-06-01T18:17:10Zjunk",
            "2019-06-01T18:17:10+0200",
            "2019-6-01T18:17:10Z",
            "１９-06-01T18:17:10Z",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn format_round_trips() {
        for s in ["2019-06-01T18:17:10.101Z", "2019-06-01T18:17:10Z"] {
            let t = parse_timestamp(s).unwrap();
            assert_eq!(format_timestamp(&t), s);
            assert_eq!(parse_timestamp(&format_timestamp(&t)).unwrap(), t);
        }
    }
}
