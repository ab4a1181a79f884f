//! Lines that did not become events: kept verbatim, with where they came from and why.

use std::fmt;
use std::sync::Arc;

use crate::event::InvalidValue;
use crate::time::TimestampError;

/// Why a line was refused. [`RejectReason::code`] is a short stable code for counting;
/// `Display` names the field, e.g. `data.location.lat: 91.2 is outside [-90, 90]`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RejectReason {
    /// The line is not UTF-8.
    InvalidUtf8 {
        /// Byte offset of the first invalid sequence.
        valid_up_to: usize,
    },
    /// The line is not JSON (or has trailing garbage).
    InvalidJson {
        /// serde_json's description, with the column.
        detail: String,
    },
    /// The line is JSON, but not an object.
    NotAnObject,
    /// A field has the wrong JSON type (a string where a number belongs, ...).
    InvalidType {
        /// Dotted path of the field, e.g. `data.location.lat`.
        field: String,
        /// What was found and what was expected.
        detail: String,
    },
    /// A key appears twice in one object.
    DuplicateField {
        /// Dotted path of the object holding the key.
        field: String,
        /// serde's description.
        detail: String,
    },
    /// A required field is absent or `null`.
    MissingField {
        /// Dotted path of the field.
        field: &'static str,
    },
    /// `on`/`event` is not one of the known kinds.
    UnknownKind {
        /// The `on` value.
        on: String,
        /// The `event` value.
        event: String,
    },
    /// A value is present but invalid (an id, a coordinate).
    InvalidValue {
        /// Dotted path of the field.
        field: &'static str,
        /// What is wrong.
        error: InvalidValue,
    },
    /// A timestamp is not RFC 3339 with a zone.
    InvalidTimestamp {
        /// Dotted path of the field.
        field: &'static str,
        /// The string as found.
        value: String,
        /// What is wrong.
        error: TimestampError,
    },
    /// The line is longer than [`crate::parse::MAX_LINE_BYTES`]: refused unread, so that
    /// memory stays bounded whatever the input.
    LineTooLong {
        /// The line's length in bytes.
        length: u64,
    },
}

impl RejectReason {
    /// Every code [`RejectReason::code`] can return, in a stable order: the categories of a
    /// reject table, so that a count by code lists the codes that did not occur too.
    pub const CODES: [&'static str; 12] = [
        "invalid_utf8",
        "invalid_json",
        "not_an_object",
        "invalid_type",
        "duplicate_field",
        "missing_field",
        "unknown_kind",
        "invalid_id",
        "invalid_coordinate",
        "finish_before_start",
        "invalid_timestamp",
        "line_too_long",
    ];

    /// A short, stable code for counting rejects by kind (`missing_field`, `invalid_json`, ...).
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidUtf8 { .. } => "invalid_utf8",
            Self::InvalidJson { .. } => "invalid_json",
            Self::NotAnObject => "not_an_object",
            Self::InvalidType { .. } => "invalid_type",
            Self::DuplicateField { .. } => "duplicate_field",
            Self::MissingField { .. } => "missing_field",
            Self::UnknownKind { .. } => "unknown_kind",
            Self::InvalidValue {
                error: InvalidValue::Id(_),
                ..
            } => "invalid_id",
            Self::InvalidValue {
                error: InvalidValue::FinishBeforeStart { .. },
                ..
            } => "finish_before_start",
            Self::InvalidValue { .. } => "invalid_coordinate",
            Self::InvalidTimestamp { .. } => "invalid_timestamp",
            Self::LineTooLong { .. } => "line_too_long",
        }
    }

    /// The field the reason is about, when there is one (dotted path).
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::InvalidType { field, .. } | Self::DuplicateField { field, .. } => Some(field),
            Self::MissingField { field }
            | Self::InvalidValue { field, .. }
            | Self::InvalidTimestamp { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidUtf8 { valid_up_to } => {
                write!(
                    f,
                    "not valid UTF-8 (first bad byte at offset {valid_up_to})"
                )
            }
            Self::InvalidJson { detail } => write!(f, "not valid JSON: {detail}"),
            Self::NotAnObject => f.write_str("not a JSON object"),
            Self::InvalidType { field, detail } => write!(f, "{field}: {detail}"),
            Self::DuplicateField { field, detail } => write!(f, "{field}: {detail}"),
            Self::MissingField { field } => write!(f, "{field}: missing or null"),
            Self::UnknownKind { on, event } => {
                write!(f, "on/event: unknown event kind {on:?}/{event:?}")
            }
            Self::InvalidValue { field, error } => write!(f, "{field}: {error}"),
            Self::InvalidTimestamp {
                field,
                value,
                error,
            } => write!(f, "{field}: {value:?} {error}"),
            Self::LineTooLong { length } => write!(
                f,
                "line of {length} bytes, longer than the limit of {} bytes",
                crate::parse::MAX_LINE_BYTES
            ),
        }
    }
}

/// The `Err` of [`crate::parse_line`]: a reason is an error in its own right, so it can be
/// returned with `?` into a `Box<dyn Error>` or an `anyhow::Error`, and its cause (an invalid
/// value, a bad timestamp) is reachable through [`std::error::Error::source`].
impl std::error::Error for RejectReason {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::InvalidValue { error, .. } => Some(error),
            Self::InvalidTimestamp { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// A refused line, verbatim, with its origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    /// Name of the file or object the line came from.
    pub source: Arc<str>,
    /// 1-based line number in that source (blank lines count).
    pub line: u64,
    /// The line's bytes, without its line ending.
    pub raw: Vec<u8>,
    /// Why it was refused.
    pub reason: RejectReason,
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.source, self.line, self.reason)
    }
}

impl std::error::Error for Reject {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_source_line_and_field() {
        let r = Reject {
            source: "a.txt".into(),
            line: 7,
            raw: b"{}".to_vec(),
            reason: RejectReason::InvalidValue {
                field: "data.location.lat",
                error: InvalidValue::OutOfRange {
                    value: 91.2,
                    min: -90.0,
                    max: 90.0,
                },
            },
        };
        assert_eq!(
            r.to_string(),
            "a.txt:7: data.location.lat: 91.2 is outside [-90, 90]"
        );
        assert_eq!(r.reason.code(), "invalid_coordinate");
        assert_eq!(r.reason.field(), Some("data.location.lat"));
    }

    #[test]
    fn reasons_are_errors_with_their_cause_as_source() {
        use std::error::Error;
        let reason = RejectReason::InvalidValue {
            field: "data.location.lng",
            error: InvalidValue::NonFinite { value: f64::NAN },
        };
        let boxed: Box<dyn Error> = Box::new(reason.clone());
        assert_eq!(
            boxed.to_string(),
            "data.location.lng: NaN is not a finite number"
        );
        let cause = boxed.source().map(ToString::to_string);
        assert_eq!(cause.as_deref(), Some("NaN is not a finite number"));
        assert!(RejectReason::NotAnObject.source().is_none());

        let reject = Reject {
            source: "a.txt".into(),
            line: 1,
            raw: Vec::new(),
            reason,
        };
        let source = reject.source().map(ToString::to_string);
        assert_eq!(
            source.as_deref(),
            Some("data.location.lng: NaN is not a finite number")
        );
    }

    #[test]
    fn codes_lists_every_code_once() {
        use crate::time::TimestampError;
        use chrono::DateTime;
        let every = [
            RejectReason::InvalidUtf8 { valid_up_to: 0 },
            RejectReason::InvalidJson { detail: "x".into() },
            RejectReason::NotAnObject,
            RejectReason::InvalidType {
                field: "at".into(),
                detail: "x".into(),
            },
            RejectReason::DuplicateField {
                field: "data".into(),
                detail: "x".into(),
            },
            RejectReason::MissingField { field: "at" },
            RejectReason::UnknownKind {
                on: "a".into(),
                event: "b".into(),
            },
            RejectReason::InvalidValue {
                field: "data.id",
                error: InvalidValue::Id(String::new()),
            },
            RejectReason::InvalidValue {
                field: "data.location.lat",
                error: InvalidValue::NonFinite { value: f64::NAN },
            },
            RejectReason::InvalidValue {
                field: "data.finish",
                error: InvalidValue::FinishBeforeStart {
                    start: DateTime::UNIX_EPOCH,
                    finish: DateTime::UNIX_EPOCH,
                },
            },
            RejectReason::InvalidTimestamp {
                field: "at",
                value: "x".into(),
                error: TimestampError::Shape,
            },
            RejectReason::LineTooLong { length: 1 << 30 },
        ];
        let codes: Vec<&str> = every.iter().map(RejectReason::code).collect();
        assert_eq!(codes, RejectReason::CODES);
    }
}
