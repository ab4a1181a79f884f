//! Landing object names: which day a file belongs to, and their natural order.
//!
//! The API names each file after the second it was written:
//! `YYYY-MM-DD-H-M-S-events.<ext>`, hours, minutes and seconds *not* zero-padded, under any
//! prefix (`data/resources/2019/06/01/15/17/2019-06-01-15-17-3-events.txt` or the flat
//! `data/2019-06-01-15-17-3-events.json`). The **day of a file is the date in its name**. That
//! clock is not UTC (file `15-17-10` holds events at `18:17:10Z`), so events may fall on another
//! UTC day than their file: a day's load is keyed by landing day and object, never by event time.

use std::cmp::Ordering;

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
    /// Reads the name part of `key` (after the last `/`); `None` if it does not follow the
    /// `YYYY-MM-DD-H-M-S-events.<ext>` pattern (one alphanumeric extension such as `txt` or
    /// `json`: a `….txt.bak` copy is not a landing file) or names an impossible date or time.
    ///
    /// ```
    /// use d2d_model::landing::LandingName;
    /// let n = LandingName::parse("data/resources/2019/06/01/15/17/2019-06-01-15-17-3-events.txt").unwrap();
    /// assert_eq!(n.date.to_string(), "2019-06-01");
    /// assert_eq!(n.time.to_string(), "15:17:03");
    /// assert!(LandingName::parse("data/README.md").is_none());
    /// ```
    pub fn parse(key: &str) -> Option<Self> {
        let name = key.rsplit('/').next()?;
        let (stamp, ext) = name.split_once("-events.")?;
        // One plain extension (`txt`, `json`): `….txt.bak` or `….txt~` is a stray copy, not a
        // landing file, and must not be loaded as part of the day.
        if ext.is_empty() || !ext.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        let mut parts = stamp.split('-');
        let mut next = |max_len: usize| -> Option<u32> {
            let p = parts.next()?;
            if p.is_empty() || p.len() > max_len || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p.parse().ok()
        };
        let (y, mo, d) = (next(4)?, next(2)?, next(2)?);
        let (h, mi, s) = (next(2)?, next(2)?, next(2)?);
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            date: NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, mo, d)?,
            time: NaiveTime::from_hms_opt(h, mi, s)?,
        })
    }

    /// The name's date and time together.
    pub fn datetime(&self) -> NaiveDateTime {
        self.date.and_time(self.time)
    }
}

/// The key segment `YYYY/MM/DD/` under which the nested layout keeps the files of `date`, so
/// a store can list one day instead of the whole bucket.
pub fn nested_day_prefix(date: NaiveDate) -> String {
    date.format("%Y/%m/%d/").to_string()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_layouts_and_refuses_others() {
        let flat = LandingName::parse("data/2019-06-01-9-5-0-events.json").unwrap();
        assert_eq!(flat.datetime().to_string(), "2019-06-01 09:05:00");
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
            "",
        ] {
            assert!(LandingName::parse(bad).is_none(), "{bad}");
        }
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
}
