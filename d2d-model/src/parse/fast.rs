//! Fast paths for the lines the feed actually sends.
//!
//! The feed writes compact JSON objects with the known keys only, plain strings and short
//! decimal numbers. For such a line these scanners build the same [`RawEvent`] that serde
//! would, several times faster: [`exact`] for the feed's own key order and layout, [`raw_event`]
//! for any plain object of the known keys. They are deliberately narrow: on anything else (an
//! escape in a string, an unknown or repeated key, a number with an exponent or more than 15
//! digits, a nested array, `true`/`false`, trailing bytes, ...) they give up with `None`, and
//! the caller parses the line with serde, which is the reference. So they never decide what is
//! valid; they only skip work for lines that are plainly so, and every reject comes from the
//! reference path.

use std::borrow::Cow;

use super::{Object, RawData, RawEvent, RawLocation, Text};

/// Reads a line laid out exactly as the feed writes it (keys in its order, no whitespace, no
/// `null`), one of:
///
/// ```text
/// {"event":"…","on":"…","at":"…","data":{"id":"…"},"organization_id":"…"}
/// {"event":"…","on":"…","at":"…","data":{"id":"…","location":{"lat":N,"lng":N,"at":"…"}},"organization_id":"…"}
/// {"event":"…","on":"…","at":"…","data":{"id":"…","start":"…","finish":"…"},"organization_id":"…"}
/// ```
///
pub(super) fn exact(text: &str) -> Option<RawEvent<'_>> {
    // With no backslash and no control byte anywhere, every string ends at its next quote.
    // One pass over the line (no early exit, so the compiler vectorises it) is cheaper than
    // checking each string.
    let special = text
        .bytes()
        .fold(false, |found, c| found | (c < 0x20) | (c == b'\\'));
    if special {
        return None;
    }
    let mut c = Exact {
        text,
        b: text.as_bytes(),
        i: 0,
    };
    c.lit(br#"{"event":""#)?;
    let event = c.value()?;
    c.lit(br#","on":""#)?;
    let on = c.value()?;
    c.lit(br#","at":""#)?;
    let at = c.value()?;
    c.lit(br#","data":{"id":""#)?;
    let mut data = RawData {
        id: Some(c.value()?),
        location: None,
        start: None,
        finish: None,
    };
    if c.lit(b"}").is_none() {
        if c.lit(br#","location":{"lat":"#).is_some() {
            let lat = c.number()?;
            c.lit(br#","lng":"#)?;
            let lng = c.number()?;
            c.lit(br#","at":""#)?;
            let at = c.value()?;
            c.lit(b"}}")?;
            data.location = Some(Object(RawLocation {
                lat: Some(lat),
                lng: Some(lng),
                at: Some(at),
            }));
        } else {
            c.lit(br#","start":""#)?;
            data.start = Some(c.value()?);
            c.lit(br#","finish":""#)?;
            data.finish = Some(c.value()?);
            c.lit(b"}")?;
        }
    }
    c.lit(br#","organization_id":""#)?;
    let organization_id = c.value()?;
    c.lit(b"}")?;
    (c.i == text.len()).then_some(RawEvent {
        event: Some(event),
        on: Some(on),
        at: Some(at),
        data: Some(Object(data)),
        organization_id: Some(organization_id),
    })
}

struct Exact<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Exact<'a> {
    /// A fixed-size literal, so that the comparison compiles to a few word compares.
    fn lit<const N: usize>(&mut self, expected: &[u8; N]) -> Option<()> {
        if self.b.get(self.i..self.i + N)? == expected {
            self.i += N;
            Some(())
        } else {
            None
        }
    }

    /// The rest of a string whose opening quote was part of the literal before it, up to and
    /// including its closing quote. [`exact`] has checked that the line has no escapes or
    /// control characters.
    fn value(&mut self) -> Option<Text<'a>> {
        let start = self.i;
        let end = start + quote_at(&self.b[start..])?;
        self.i = end + 1;
        // A quote is ASCII, so both ends are char boundaries.
        Some(Text(Cow::Borrowed(self.text.get(start..end)?)))
    }

    fn number(&mut self) -> Option<f64> {
        let (value, end) = decimal(self.b, self.i)?;
        self.i = end;
        Some(value)
    }
}

/// Scans `text` as any plain object of the known keys, or gives up. See the module
/// documentation.
pub(super) fn raw_event(text: &str) -> Option<RawEvent<'_>> {
    let mut s = Scan { text, i: 0 };
    let raw = s.event()?;
    s.ws();
    (s.i == text.len()).then_some(raw)
}

struct Scan<'a> {
    text: &'a str,
    i: usize,
}

/// Keys of one object already read, to give up on a repeated one as serde would refuse it.
#[derive(Default)]
struct Seen(u8);

impl Seen {
    fn first(&mut self, bit: u8) -> Option<()> {
        if self.0 & bit != 0 {
            return None;
        }
        self.0 |= bit;
        Some(())
    }
}

impl<'a> Scan<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// JSON whitespace, exactly the set serde_json skips.
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes().get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.bytes().get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        if self.peek()? != c {
            return None;
        }
        self.i += 1;
        Some(())
    }

    /// A string without escapes or control characters, borrowed from the line.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        let len = plain_len(&self.bytes()[start..]);
        if self.bytes().get(start + len) != Some(&b'"') {
            return None;
        }
        self.i = start + len + 1;
        // A quote is ASCII, so both ends are char boundaries.
        self.text.get(start..start + len)
    }

    /// An object key: like [`Scan::string`], but keys are short, so a plain byte loop beats
    /// the word-at-a-time one.
    fn key(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        let b = self.bytes();
        let mut end = start;
        loop {
            match *b.get(end)? {
                b'"' => break,
                b'\\' | 0..=0x1f => return None,
                _ => end += 1,
            }
        }
        self.i = end + 1;
        self.text.get(start..end)
    }

    /// `null`, for an absent value.
    fn null(&mut self) -> Option<()> {
        if self.bytes()[self.i..].starts_with(b"null") {
            self.i += 4;
            Some(())
        } else {
            None
        }
    }

    /// A string or `null`, as serde reads an `Option<Text>`. The outer `None` is "gave up".
    fn text(&mut self) -> Option<Option<Text<'a>>> {
        match self.peek()? {
            b'"' => Some(Some(Text(Cow::Borrowed(self.string()?)))),
            b'n' => self.null().map(|()| None),
            _ => None,
        }
    }

    /// A number or `null`, as serde reads an `Option<f64>`, for the numbers [`decimal`] takes.
    fn number(&mut self) -> Option<Option<f64>> {
        match self.peek()? {
            b'n' => return self.null().map(|()| None),
            b'-' | b'0'..=b'9' => {}
            _ => return None,
        }
        let (value, end) = decimal(self.bytes(), self.i)?;
        self.i = end;
        Some(Some(value))
    }

    /// Walks `{ "key": value, ... }`, handing each key to `field`, which reads the value.
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            let key = self.key()?;
            self.eat(b':')?;
            field(self, key)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// An object or `null`, as serde reads an `Option<Object<T>>`.
    fn nested<T>(&mut self, read: fn(&mut Self) -> Option<T>) -> Option<Option<Object<T>>> {
        match self.peek()? {
            b'{' => Some(Some(Object(read(self)?))),
            b'n' => self.null().map(|()| None),
            _ => None,
        }
    }

    fn event(&mut self) -> Option<RawEvent<'a>> {
        let mut raw = RawEvent {
            event: None,
            on: None,
            at: None,
            data: None,
            organization_id: None,
        };
        let mut seen = Seen::default();
        self.object(|s, key| {
            match key {
                "event" => {
                    seen.first(1)?;
                    raw.event = s.text()?;
                }
                "on" => {
                    seen.first(2)?;
                    raw.on = s.text()?;
                }
                "at" => {
                    seen.first(4)?;
                    raw.at = s.text()?;
                }
                "data" => {
                    seen.first(8)?;
                    raw.data = s.nested(Self::data)?;
                }
                "organization_id" => {
                    seen.first(16)?;
                    raw.organization_id = s.text()?;
                }
                _ => return None,
            }
            Some(())
        })?;
        Some(raw)
    }

    fn data(&mut self) -> Option<RawData<'a>> {
        let mut raw = RawData {
            id: None,
            location: None,
            start: None,
            finish: None,
        };
        let mut seen = Seen::default();
        self.object(|s, key| {
            match key {
                "id" => {
                    seen.first(1)?;
                    raw.id = s.text()?;
                }
                "location" => {
                    seen.first(2)?;
                    raw.location = s.nested(Self::location)?;
                }
                "start" => {
                    seen.first(4)?;
                    raw.start = s.text()?;
                }
                "finish" => {
                    seen.first(8)?;
                    raw.finish = s.text()?;
                }
                _ => return None,
            }
            Some(())
        })?;
        Some(raw)
    }

    fn location(&mut self) -> Option<RawLocation<'a>> {
        let mut raw = RawLocation {
            lat: None,
            lng: None,
            at: None,
        };
        let mut seen = Seen::default();
        self.object(|s, key| {
            match key {
                "lat" => {
                    seen.first(1)?;
                    raw.lat = s.number()?;
                }
                "lng" => {
                    seen.first(2)?;
                    raw.lng = s.number()?;
                }
                "at" => {
                    seen.first(4)?;
                    raw.at = s.text()?;
                }
                _ => return None,
            }
            Some(())
        })?;
        Some(raw)
    }
}

/// A number at `b[i..]` of the form `-?(0|[1-9][0-9]*)(\.[0-9]+)?` with at most 15 digits, and
/// where it ends.
///
/// Such a number is m / 10^k with m < 10^15 < 2^53 and k <= 15, both exact in an `f64`, so one
/// IEEE division gives the correctly rounded value: the same `f64` as any correct parser
/// (Rust's, serde_json's with or without `float_roundtrip`).
fn decimal(b: &[u8], mut i: usize) -> Option<(f64, usize)> {
    let negative = b.get(i) == Some(&b'-');
    if negative {
        i += 1;
    }
    let mut mantissa = 0u64;
    let int_start = i;
    while let Some(d) = b.get(i).filter(|c| c.is_ascii_digit()) {
        mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
        i += 1;
    }
    let int_digits = i - int_start;
    if int_digits == 0 || (int_digits > 1 && b[int_start] == b'0') {
        return None;
    }
    let mut frac_digits = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let frac_start = i;
        while let Some(d) = b.get(i).filter(|c| c.is_ascii_digit()) {
            mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
            i += 1;
        }
        frac_digits = i - frac_start;
        if frac_digits == 0 {
            return None;
        }
    }
    // Also keeps the wrapping arithmetic above from ever wrapping.
    if int_digits + frac_digits > 15 {
        return None;
    }
    let magnitude = mantissa as f64 / POW10[frac_digits];
    Some((if negative { -magnitude } else { magnitude }, i))
}

/// 10^0 ..= 10^15, all exact in an `f64`.
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// Where the first `"` of `b` is, eight bytes at a time.
fn quote_at(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut words = b.chunks_exact(8);
    let mut done = 0;
    for word in &mut words {
        let mut x = [0u8; 8];
        x.copy_from_slice(word);
        let x = u64::from_le_bytes(x) ^ (ONES * u64::from(b'"'));
        // The lowest flagged byte is a true zero: false positives only arise above one.
        let hits = x.wrapping_sub(ONES) & !x & HIGH;
        if hits != 0 {
            return Some(done + (hits.trailing_zeros() / 8) as usize);
        }
        done += 8;
    }
    let tail = words.remainder();
    tail.iter().position(|&c| c == b'"').map(|i| done + i)
}

/// Length of the leading run of `b` that a JSON string can hold as is: no quote, backslash or
/// control character. Eight bytes at a time with the usual SWAR tests; the lowest flagged byte
/// of a word is always a true hit, because false positives only arise above a true one.
fn plain_len(b: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let mut words = b.chunks_exact(8);
    let mut done = 0;
    for word in &mut words {
        let mut x = [0u8; 8];
        x.copy_from_slice(word);
        let x = u64::from_le_bytes(x);
        let hits = has_zero(x ^ (ONES * u64::from(b'"')))
            | has_zero(x ^ (ONES * u64::from(b'\\')))
            | (x.wrapping_sub(ONES * 0x20) & !x & HIGH);
        if hits != 0 {
            return done + (hits.trailing_zeros() / 8) as usize;
        }
        done += 8;
    }
    done + words
        .remainder()
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .unwrap_or(words.remainder().len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use crate::reject::RejectReason;

    const UPDATE: &str = r#"{"event":"update","on":"vehicle","at":"2019-06-01T18:23:57.196Z","data":{"id":"f0b87796-b25c-40b0-9145-8822509c17e1","location":{"lat":52.55762,"lng":13.46649,"at":"2019-06-01T18:23:57.196Z"}},"organization_id":"org-id"}"#;
    const REGISTER: &str = r#"{"event":"register","on":"vehicle","at":"2019-06-01T18:17:04.088Z","data":{"id":"v1"},"organization_id":"org-id"}"#;
    const CREATE: &str = r#"{"event":"create","on":"operating_period","at":"2019-06-01T18:17:04.086Z","data":{"id":"op_1","start":"2019-06-01T18:23:04.079Z","finish":"2019-06-01T18:28:04.079Z"},"organization_id":"org-id"}"#;

    fn reference(text: &str) -> Result<Event, RejectReason> {
        match serde_json::from_str::<Object<RawEvent<'_>>>(text) {
            Ok(Object(raw)) => raw.validate(),
            Err(e) => Err(RejectReason::InvalidJson {
                detail: e.to_string(),
            }),
        }
    }

    #[test]
    fn takes_the_feed_lines_and_agrees_with_serde() {
        for line in [
            UPDATE.to_owned(),
            REGISTER.to_owned(),
            CREATE.to_owned(),
            CREATE.replace("create", "delete"),
            REGISTER.replace("register", "deregister"),
            REGISTER.replace(r#""id":"v1""#, r#""id":"v1","location":null"#),
            REGISTER.replace(
                r#""id":"v1""#,
                r#""id":"v1","location":{"lat":null,"lng":null,"at":null}"#,
            ),
            UPDATE.replace("\":", "\" :\t").replace(",\"", "\r\n, \""),
            format!("  {UPDATE}\t "),
            UPDATE.replace("52.55762", "-0").replace("13.46649", "180"),
            UPDATE.replace("org-id", "\u{e9}t\u{e9} \u{1f600}"),
            UPDATE.replacen("18:23:57.196Z", "20:23:57.196+02:00", 1),
        ] {
            let raw = raw_event(&line);
            assert!(raw.is_some(), "gave up on {line}");
            let fast = raw.map(RawEvent::validate);
            assert_eq!(fast, Some(reference(&line)), "{line}");
            assert!(matches!(fast, Some(Ok(_))), "{line}");
        }
    }

    #[test]
    fn exact_takes_the_feed_layout_only() {
        let feed = [
            UPDATE.to_owned(),
            REGISTER.to_owned(),
            CREATE.to_owned(),
            CREATE.replace("create", "delete"),
            REGISTER.replace("register", "deregister"),
            UPDATE.replace("org-id", "\u{e9}t\u{e9} \u{1f600}"),
            UPDATE.replace("52.55762", "-0").replace("13.46649", "180"),
            // Layout right, content wrong: still read, for validate to refuse.
            UPDATE.replace("update", "teleport"),
            UPDATE.replace("52.55762", "91"),
        ];
        for line in &feed {
            let raw = exact(line);
            assert!(raw.is_some(), "gave up on {line}");
            assert_eq!(raw.map(RawEvent::validate), Some(reference(line)), "{line}");
        }
        for line in [
            REGISTER.replace(r#""id":"v1""#, r#""id":"v1","location":null"#),
            UPDATE
                .replace(r#""on":"vehicle","#, "")
                .replace("{", r#"{"on":"vehicle","#),
            format!(" {UPDATE}"),
            format!("{UPDATE} "),
            UPDATE.replace(r#""lat":"#, r#""lat": "#),
            UPDATE.replace(
                r#""lat":52.55762,"lng":13.46649"#,
                r#""lng":13.46649,"lat":52.55762"#,
            ),
            UPDATE.replace("52.55762", "null"),
            UPDATE.replace("52.55762", "5e1"),
            UPDATE.replace("org-id", r#"org\"id"#),
            UPDATE.replace("org-id", "org\tid"),
            UPDATE[..UPDATE.len() - 1].to_owned(),
            UPDATE.replace(r#""lat":52.55762"#, r#""lat":"#),
        ] {
            assert!(exact(&line).is_none(), "took {line}");
        }
        // Cut right after a number's key: no panic.
        assert!(exact(&UPDATE[..UPDATE.find("52.55762").unwrap()]).is_none());
    }

    #[test]
    fn gives_up_on_anything_unusual() {
        for line in [
            UPDATE.replace("org-id", r"org\u002did"),
            UPDATE.replace(r#""on""#, r#""extra":1,"on""#),
            UPDATE.replace(r#""on""#, r#""at":"2019-06-01T18:23:57.196Z","on""#),
            UPDATE.replace(r#""lat""#, r#""lng":1,"lat""#),
            UPDATE.replace("52.55762", "5.255762e1"),
            UPDATE.replace("52.55762", "52.557620000000001"),
            UPDATE.replace("52.55762", "052.5"),
            UPDATE.replace("52.55762", r#""52.55762""#),
            UPDATE.replace("52.55762", "true"),
            format!("{UPDATE}x"),
            format!("{UPDATE}{{}}"),
            UPDATE
                .replace(r#""data":{"#, r#""data":["#)
                .replace("}},", "}],"),
            UPDATE.replace("org-id", "org\u{1}id"),
            UPDATE[..UPDATE.len() - 1].to_owned(),
            "[1]".to_owned(),
            String::new(),
        ] {
            assert!(raw_event(&line).is_none(), "took {line}");
        }
    }

    #[test]
    fn plain_len_stops_at_the_first_special_byte() {
        for (s, n) in [
            (&b""[..], 0),
            (b"abc", 3),
            (b"abcdefgh", 8),
            (b"abcdefghij\"", 10),
            (b"abc\"defghijklmn", 3),
            (b"abcdefgh\\", 8),
            (b"ab\x1fcdefgh", 2),
            (b"\x00", 0),
            (b"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\x7f\"", 9),
            // A control byte above a quote: the quote still comes first.
            (b"a\"\x01bcdefg", 1),
            (b"abcdefg\x20\x1f", 8),
        ] {
            assert_eq!(plain_len(s), n, "{s:?}");
            let bytewise = s
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .unwrap_or(s.len());
            assert_eq!(plain_len(s), bytewise, "{s:?}");
        }
    }

    #[test]
    fn quote_at_finds_the_first_quote() {
        for s in [
            &b""[..],
            b"\"",
            b"abc\"",
            b"abcdefgh\"",
            b"abcdefghijklmnop",
            b"a\"b\"",
            b"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\"x",
            b"!#!#!#!#\"",
        ] {
            assert_eq!(quote_at(s), s.iter().position(|&c| c == b'"'), "{s:?}");
        }
    }

    #[test]
    fn numbers_match_rust_parsing() {
        for n in [
            "0",
            "-0",
            "52.55762",
            "-90",
            "180.0",
            "13.46649",
            "0.1",
            "0.00000000000001",
            "999999999999999",
            "-99999999999999.9",
            "1.5",
        ] {
            let mut s = Scan { text: n, i: 0 };
            let got = s.number().flatten().map(f64::to_bits);
            assert_eq!(
                got,
                Some(n.parse::<f64>().map(f64::to_bits).unwrap()),
                "{n}"
            );
            assert_eq!(s.i, n.len());
        }
        for n in [
            "01",
            "-",
            "1.",
            ".5",
            "1e5",
            "1234567890123456",
            "+1",
            "NaN",
        ] {
            let mut s = Scan { text: n, i: 0 };
            let whole = s.number().flatten().is_some() && s.i == n.len();
            assert!(!whole, "{n} was taken as a whole number");
        }
    }
}
