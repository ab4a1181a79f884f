//! Landing object names: which day a file belongs to, their natural order, and how to read
//! their bytes.
//!
//! # The day rule
//!
//! The API names each file after the second it was written:
//! `YYYY-MM-DD-H-M-S-events.<ext>`, hours, minutes and seconds *not* zero-padded, under any
//! prefix (`data/resources/2019/06/01/15/17/2019-06-01-15-17-3-events.txt` or the flat
//! `data/2019-06-01-15-17-3-events.json`). The **day of a file is the date in its name**. That
//! clock is not UTC (file `15-17-10` holds events at `18:17:10Z`), so events may fall on another
//! UTC day than their file: a day's load is keyed by landing day and object, never by event time.
//!
//! Which names count ([`check_name`]):
//!
//! | name (the part after the last `/` or `\`) | outcome |
//! |---|---|
//! | `YYYY-MM-DD-H-M-S-events.<ext>`, `<ext>` one alphanumeric extension (`txt`, `json`, `gz`) | a landing file of that date |
//! | the same followed by `.gz` (`….txt.gz`) | a landing file, gzip-compressed ([`decode`]) |
//! | containing `-events` otherwise: an impossible date (`2019-02-30-…`) or time (`…-25-0-0-…`), another suffix (`….txt.bak`, `….txt~`, no extension), a malformed stamp (`2019-06-01-events.txt`) | [`NameCheck::Skipped`]: never loaded, reported with the reason; it belongs to the date its name starts with, when that is a real date |
//! | anything else (`README.md`, `notes.txt`) | [`NameCheck::Other`]: not an event file, ignored |
//!
//! Whether an object is gzip is decided by its name (`.gz`) or by gzip's magic bytes
//! (`1f 8b`), so a compressed file under a plain `.txt` name is read too.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::io::Read;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};

/// The timestamp written in a landing file's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LandingName {
    /// Date in the name: the landing day the file belongs to.
    pub date: NaiveDate,
    /// Time of day in the name (the API's local clock, not UTC).
    pub time: NaiveTime,
}

impl LandingName {
    /// Reads the name part of `key` (after the last `/` or `\`); `None` unless it is a landing
    /// file name (see the module docs: `YYYY-MM-DD-H-M-S-events.<ext>`, optionally `.gz`, with
    /// a possible date and time). [`check_name`] says why a name is refused.
    ///
    /// ```
    /// use d2d_model::landing::LandingName;
    /// let n = LandingName::parse("data/resources/2019/06/01/15/17/2019-06-01-15-17-3-events.txt").unwrap();
    /// assert_eq!(n.date.to_string(), "2019-06-01");
    /// assert_eq!(n.time.to_string(), "15:17:03");
    /// assert!(LandingName::parse("data/2019-06-01-15-17-3-events.txt.gz").is_some());
    /// assert!(LandingName::parse("data/README.md").is_none());
    /// ```
    pub fn parse(key: &str) -> Option<Self> {
        match check_name(key) {
            NameCheck::Landing(name) => Some(name),
            NameCheck::Skipped { .. } | NameCheck::Other => None,
        }
    }

    /// The name's date and time together.
    pub fn datetime(&self) -> NaiveDateTime {
        self.date.and_time(self.time)
    }
}

/// What the day rule makes of an object's name (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameCheck {
    /// A landing file of `.date`.
    Landing(LandingName),
    /// Named like an event file (it contains `-events`) but not a landing file name: never
    /// loaded, and worth reporting.
    Skipped {
        /// The real date the name starts with (`YYYY-MM-DD-`), if any: the day whose run
        /// reports it. `None` for an impossible date such as `2019-02-30`, which is no day.
        day: Option<NaiveDate>,
        /// Why it is not a landing file, e.g. `impossible date 2019-02-30 in the name`.
        reason: String,
    },
    /// Not an event file at all (`README.md`): ignored without a word.
    Other,
}

/// The name part of a key: after the last `/` or `\` (a `\` is no key separator, but a key
/// written on Windows still names its file last).
fn file_name(key: &str) -> &str {
    key.rsplit(['/', '\\']).next().unwrap_or(key)
}

/// Applies the day rule to the name part of `key`.
///
/// ```
/// use d2d_model::landing::{check_name, NameCheck};
/// assert!(matches!(check_name("d/2019-06-01-9-5-0-events.json"), NameCheck::Landing(_)));
/// let NameCheck::Skipped { day, reason } = check_name("d/2019-02-30-9-5-0-events.json") else { panic!() };
/// assert_eq!((day, reason.as_str()), (None, "impossible date 2019-02-30 in the name"));
/// assert_eq!(check_name("d/README.md"), NameCheck::Other);
/// ```
pub fn check_name(key: &str) -> NameCheck {
    let name = file_name(key);
    let looks_like_events = name
        .as_bytes()
        .windows(7)
        .any(|w| w.eq_ignore_ascii_case(b"-events"));
    if !looks_like_events {
        return NameCheck::Other;
    }
    let skipped = |day: Option<NaiveDate>, reason: String| NameCheck::Skipped { day, reason };
    let shape = "the name does not follow YYYY-MM-DD-H-M-S-events.<ext> (hours, minutes and seconds unpadded)";
    let Some((stamp, suffix)) = name.split_once("-events") else {
        return skipped(leading_date(name), shape.into());
    };
    let Some([y, mo, d, h, mi, s]) = stamp_fields(stamp) else {
        return skipped(leading_date(name), shape.into());
    };
    let Some(date) = i32::try_from(y)
        .ok()
        .and_then(|y| NaiveDate::from_ymd_opt(y, mo, d))
    else {
        return skipped(
            None,
            format!("impossible date {y:04}-{mo:02}-{d:02} in the name"),
        );
    };
    let Some(time) = NaiveTime::from_hms_opt(h, mi, s) else {
        return skipped(
            Some(date),
            format!("impossible time {h:02}:{mi:02}:{s:02} in the name"),
        );
    };
    // One plain extension, optionally compressed: `….txt.bak` or `….txt~` is a stray copy,
    // not a landing file, and must not be loaded as part of the day.
    let ext = suffix
        .strip_prefix('.')
        .map(|e| e.strip_suffix(".gz").unwrap_or(e));
    if !ext.is_some_and(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_alphanumeric())) {
        return skipped(
            Some(date),
            format!(
                "unsupported suffix {:?}: expected -events.<ext> with one extension such as .txt or .json, optionally followed by .gz",
                format!("-events{suffix}")
            ),
        );
    }
    NameCheck::Landing(LandingName { date, time })
}

/// The six numbers of `YYYY-MM-DD-H-M-S` (1–4 digits of year, 1–2 of the others).
fn stamp_fields(stamp: &str) -> Option<[u32; 6]> {
    let mut parts = stamp.split('-');
    let mut out = [0u32; 6];
    for (i, slot) in out.iter_mut().enumerate() {
        let max_len = if i == 0 { 4 } else { 2 };
        let p = parts.next()?;
        if p.is_empty() || p.len() > max_len || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = p.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// The real date a name starts with (`YYYY-MM-DD-`), if any.
fn leading_date(name: &str) -> Option<NaiveDate> {
    let head = name.get(..11)?;
    if !head.ends_with('-') {
        return None;
    }
    NaiveDate::parse_from_str(&head[..10], "%Y-%m-%d").ok()
}

/// The key segment `YYYY/MM/DD/` under which the nested layout keeps the files of `date`, so
/// a store can list one day instead of the whole bucket.
pub fn nested_day_prefix(date: NaiveDate) -> String {
    date.format("%Y/%m/%d/").to_string()
}

/// Why a landing day was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DayError {
    /// The text is not a date written `YYYY-MM-DD` (four-digit year, no sign).
    #[error("{text:?} is not a date written YYYY-MM-DD")]
    Shape {
        /// The text given.
        text: String,
    },
    /// A real date, but outside the days d2d loads.
    #[error("{day} is outside the days d2d loads ({first} to {last})", first = FIRST_DAY, last = LAST_DAY)]
    OutOfRange {
        /// The date given.
        day: NaiveDate,
    },
}

/// The first landing day d2d loads. Days are those of four-digit years of the common era, as
/// landing names, the lake's `dt=` folders and the warehouse's day partitions write them: a
/// BC date written the same way would name the AD day with the same digits.
pub const FIRST_DAY: NaiveDate = match NaiveDate::from_ymd_opt(1, 1, 1) {
    Some(d) => d,
    None => NaiveDate::MIN,
};

/// The last landing day d2d loads (see [`FIRST_DAY`]).
pub const LAST_DAY: NaiveDate = match NaiveDate::from_ymd_opt(9999, 12, 31) {
    Some(d) => d,
    None => NaiveDate::MAX,
};

/// `day`, if it is between [`FIRST_DAY`] and [`LAST_DAY`].
///
/// ```
/// use d2d_model::landing::check_day;
/// assert!(check_day("2019-06-01".parse().unwrap()).is_ok());
/// assert!(check_day("-2018-06-01".parse().unwrap()).is_err()); // 2019 BC
/// ```
pub fn check_day(day: NaiveDate) -> Result<NaiveDate, DayError> {
    if (FIRST_DAY..=LAST_DAY).contains(&day) {
        Ok(day)
    } else {
        Err(DayError::OutOfRange { day })
    }
}

/// Parses a landing day as the command line and events give it: exactly `YYYY-MM-DD`, a real
/// date within [`check_day`]'s range. Stricter than `NaiveDate`'s `FromStr`, which also takes
/// signed and five-digit years.
///
/// ```
/// use d2d_model::landing::parse_day;
/// assert_eq!(parse_day("2019-06-01").unwrap().to_string(), "2019-06-01");
/// for bad in ["-2018-06-01", "+2019-06-01", "12019-06-01", "2019-6-1", "2019-02-30", "0000-06-01"] {
///     assert!(parse_day(bad).is_err(), "{bad}");
/// }
/// ```
pub fn parse_day(text: &str) -> Result<NaiveDate, DayError> {
    let shape = || DayError::Shape {
        text: text.to_owned(),
    };
    let b = text.as_bytes();
    let well_formed = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
    if !well_formed {
        return Err(shape());
    }
    let day = NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| shape())?;
    check_day(day)
}

/// Orders keys by the time in their names (numerically, so `15-17-9` before `15-17-10`), then
/// by key; keys without a landing name sort last, by key.
pub fn landing_order(a: &str, b: &str) -> Ordering {
    match (LandingName::parse(a), LandingName::parse(b)) {
        (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.cmp(b)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// gzip's magic bytes, at the start of every gzip member.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Most bytes [`decode`] lets one compressed file expand to (1 GiB): a few kilobytes of
/// gzip can expand to gigabytes, and a landing file is parsed in memory.
pub const MAX_DECODED_BYTES: u64 = 1 << 30;

/// Why a compressed landing file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not gzip data, or a corrupt or truncated gzip stream.
    #[error("not valid gzip: {detail}")]
    Gzip {
        /// What the decoder said.
        detail: String,
    },
    /// The file expands to more than the limit.
    #[error("gzip expands to more than {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
}

impl DecodeError {
    /// A short, stable code for counting: `invalid_gzip` or `gzip_too_large`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Gzip { .. } => "invalid_gzip",
            Self::TooLarge { .. } => "gzip_too_large",
        }
    }
}

/// Is the object named `key` with these first bytes gzip: a `.gz` name, or gzip's magic bytes?
pub fn is_gzip(key: &str, bytes: &[u8]) -> bool {
    key.ends_with(".gz") || bytes.starts_with(&GZIP_MAGIC)
}

/// The NDJSON of a landing object: its bytes as they are, or, when it is gzip ([`is_gzip`]),
/// decompressed (every member of a multi-member file), at most [`MAX_DECODED_BYTES`]. The one
/// place where landing bytes are decoded: the daily run, the data check and the Python
/// bindings all call it. An empty object is empty whatever its name.
///
/// ```
/// use d2d_model::landing::decode;
/// assert_eq!(&*decode("a-events.txt", b"{}\n").unwrap(), b"{}\n");
/// assert!(decode("a-events.txt.gz", b"{}\n").is_err());
/// ```
pub fn decode<'a>(key: &str, bytes: &'a [u8]) -> Result<Cow<'a, [u8]>, DecodeError> {
    decode_limited(key, bytes, MAX_DECODED_BYTES)
}

/// The decompressed bytes of a gzip stream read from `reader`, every member, as [`decode`]
/// gives them for a whole object: for readers of objects too large to hold whole.
///
/// ```
/// use std::io::Read;
/// // `{}\n`, gzipped.
/// let gz = [31, 139, 8, 0, 0, 0, 0, 0, 2, 3, 171, 174, 229, 2, 0, 6, 176, 161, 221, 3, 0, 0, 0];
/// let mut text = String::new();
/// d2d_model::landing::gzip_reader(&gz[..]).read_to_string(&mut text)?;
/// assert_eq!(text, "{}\n");
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn gzip_reader<R: Read>(reader: R) -> impl Read {
    flate2::read::MultiGzDecoder::new(reader)
}

/// [`decode`] with another limit on the decompressed size.
pub fn decode_limited<'a>(
    key: &str,
    bytes: &'a [u8],
    limit: u64,
) -> Result<Cow<'a, [u8]>, DecodeError> {
    if bytes.is_empty() || !is_gzip(key, bytes) {
        return Ok(Cow::Borrowed(bytes));
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Gzip {
            detail: e.to_string(),
        })?;
    if out.len() as u64 > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_layouts_and_refuses_others() {
        let flat = LandingName::parse("data/2019-06-01-9-5-0-events.json").unwrap();
        assert_eq!(flat.datetime().to_string(), "2019-06-01 09:05:00");
        for good in [
            "data/2019-06-01-9-5-0-events.txt.gz",
            "data/2019-06-01-9-5-0-events.gz",
            "data\\2019-06-01-9-5-0-events.txt",
        ] {
            assert!(LandingName::parse(good).is_some(), "{good}");
        }
        for bad in [
            "2019-06-01-15-17-events.txt",
            "2019-06-01-15-17-3-4-events.txt",
            "2019-13-01-15-17-3-events.txt",
            "2019-06-01-25-17-3-events.txt",
            "2019-06-01-15-17-3-events.",
            "2019-06-01-15-17-x-events.txt",
            "2019-06-01-15-17-3.txt",
            "2019-06-01-15-17-3-events.txt.bak",
            "2019-06-01-15-17-3-events.txt~",
            "2019-06-01-15-17-3-events.txt.gz.gz",
            "2019-06-01-15-17-3-events",
            "",
        ] {
            assert!(LandingName::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn skipped_names_say_why_and_which_day() {
        let june_1 = NaiveDate::from_ymd_opt(2019, 6, 1);
        let cases = [
            (
                "d/2019-02-30-1-2-3-events.txt",
                None,
                "impossible date 2019-02-30",
            ),
            (
                "d/2019-06-01-25-0-0-events.txt",
                june_1,
                "impossible time 25:00:00",
            ),
            (
                "d/2019-06-01-1-2-3-events.txt.bak",
                june_1,
                "unsupported suffix \"-events.txt.bak\"",
            ),
            (
                "d/2019-06-01-1-2-3-events.txt~",
                june_1,
                "unsupported suffix",
            ),
            (
                "d/2019-06-01-1-2-3-events",
                june_1,
                "unsupported suffix \"-events\"",
            ),
            ("d/2019-06-01-events.txt", june_1, "does not follow"),
            ("d/2019-06-01-1-2-3-EVENTS.TXT", june_1, "does not follow"),
            ("d/x-events.txt", None, "does not follow"),
        ];
        for (key, want_day, want) in cases {
            match check_name(key) {
                NameCheck::Skipped { day, reason } => {
                    assert_eq!(day, want_day, "{key}");
                    assert!(reason.contains(want), "{key}: {reason}");
                }
                other => panic!("{key}: {other:?}"),
            }
        }
        assert_eq!(check_name("d/notes.txt"), NameCheck::Other);
    }

    #[test]
    fn orders_numerically() {
        let mut keys = vec![
            "d/2019-06-01-15-17-10-events.txt",
            "README",
            "d/2019-06-01-15-17-9-events.txt",
            "d/2019-05-31-23-59-59-events.txt",
        ];
        keys.sort_by(|a, b| landing_order(a, b));
        assert_eq!(
            keys,
            [
                "d/2019-05-31-23-59-59-events.txt",
                "d/2019-06-01-15-17-9-events.txt",
                "d/2019-06-01-15-17-10-events.txt",
                "README"
            ]
        );
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_is_decoded_by_name_or_magic_and_members_concatenate() {
        let body = b"{\"a\":1}\n{\"b\":2}\n";
        let gz = gzip(body);
        assert_eq!(&*decode("x-events.txt.gz", &gz).unwrap(), body);
        // Magic bytes under a plain name.
        assert_eq!(&*decode("x-events.txt", &gz).unwrap(), body);
        // Two members, as `cat a.gz b.gz` makes.
        let two = [gzip(b"one\n"), gzip(b"two\n")].concat();
        assert_eq!(&*decode("x.gz", &two).unwrap(), b"one\ntwo\n");
        // Plain bytes are borrowed, not copied.
        assert!(matches!(decode("x.txt", body).unwrap(), Cow::Borrowed(_)));
        assert!(decode("x.gz", b"").unwrap().is_empty());
    }

    #[test]
    fn broken_or_oversized_gzip_is_an_error() {
        let gz = gzip(&[b'x'; 10_000]);
        let truncated = &gz[..gz.len() / 2];
        let err = decode("x.gz", truncated).unwrap_err();
        assert_eq!(err.code(), "invalid_gzip");
        let err = decode("x.gz", b"plain text").unwrap_err();
        assert_eq!(err.code(), "invalid_gzip");
        let err = decode_limited("x.gz", &gz, 9_999).unwrap_err();
        assert_eq!(err, DecodeError::TooLarge { limit: 9_999 });
        assert_eq!(decode_limited("x.gz", &gz, 10_000).unwrap().len(), 10_000);
    }
}
