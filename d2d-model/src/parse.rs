//! NDJSON lines to typed events, or to rejects that say why.
//!
//! The parser never panics and never stops at a bad line: every non-blank line becomes exactly
//! one of an event, a duplicate (an event equal to an earlier one, kept once and counted) or a
//! [`Reject`]. So for any input, `lines == events + duplicates + rejects`.
//!
//! Accepted: `\n` or `\r\n` line ends, blank lines (skipped), unknown extra fields, RFC 3339
//! timestamps with any zone (normalised to UTC), register/deregister without a `location` (key
//! absent, `null`, or with `null` fields).
//!
//! ```
//! use d2d_model::parse::parse_bytes;
//! let input = br#"{"event":"register","on":"vehicle","at":"2019-06-01T18:17:04.088Z","data":{"id":"v1"},"organization_id":"org"}
//! {"event":"update","on":"vehicle","at":"2019-06-01T18:17:10Z","data":{"id":"v1","location":{"lat":91.2,"lng":13.4,"at":"2019-06-01T18:17:10Z"}},"organization_id":"org"}
//! "#;
//! let parsed = parse_bytes("day.txt", input);
//! assert_eq!(parsed.events.len(), 1);
//! assert_eq!(parsed.rejects[0].to_string(), "day.txt:2: data.location.lat: 91.2 is outside [-90, 90]");
//! ```

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::hash::BuildHasher;
use std::marker::PhantomData;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::de::{self, value::MapAccessDeserializer, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::event::{
    is_valid_id, Event, EventKind, InvalidValue, Location, OperatingPeriod, OrganizationId,
    PeriodId, Position, VehicleId,
};
use crate::reject::{Reject, RejectReason};
use crate::time::parse_timestamp;

mod fast;

/// A valid event and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Name of the file or object.
    pub source: Arc<str>,
    /// 1-based line number in the source.
    pub line: u64,
    /// The event.
    pub event: Event,
}

/// Everything one parse produced, in input order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    /// Non-blank lines read.
    pub lines: u64,
    /// Distinct valid events (first occurrence kept), in input order.
    pub events: Vec<Record>,
    /// Refused lines, in input order.
    pub rejects: Vec<Reject>,
    /// Valid lines equal to an earlier event, dropped from `events`.
    pub duplicates: u64,
}

impl Parsed {
    /// Concatenates parses in order (file by file), then drops events equal to an earlier one,
    /// so duplicates across sources are counted just like duplicates within one.
    pub fn merge(parts: impl IntoIterator<Item = Parsed>) -> Parsed {
        let mut merger = Merger::new(EventHasher::default());
        for p in parts {
            let hashes = p
                .events
                .iter()
                .map(|r| merger.hasher.hash_one(&r.event))
                .collect();
            merger.add(Part { parsed: p, hashes });
        }
        merger.out
    }
}

/// Hashes events for de-duplication: foldhash rather than SipHash because every event is
/// hashed on the hot path.
type EventHasher = foldhash::fast::RandomState;

/// The distinct events so far, as indices into the kept records, to drop duplicates while
/// parsing: memory then grows with distinct events, not with lines.
#[derive(Default)]
struct Seen {
    /// (hash, index into the kept records).
    table: hashbrown::HashTable<(u64, usize)>,
}

impl Seen {
    /// Whether `event` (whose hash is `hash`) differs from every event in `kept`; if so,
    /// remembers that it will be pushed at `kept.len()`.
    fn is_new(&mut self, hash: u64, event: &Event, kept: &[Record]) -> bool {
        let same =
            |&(h, i): &(u64, usize)| h == hash && kept.get(i).is_some_and(|r| &r.event == event);
        if self.table.find(hash, same).is_some() {
            return false;
        }
        self.table
            .insert_unique(hash, (hash, kept.len()), |&(h, _)| h);
        true
    }
}

/// A parsed piece of input, with the hash of each kept event so that merging need not hash
/// it again.
struct Part {
    parsed: Parsed,
    hashes: Vec<u64>,
}

/// Appends parts in order, dropping events equal to one already kept.
struct Merger {
    out: Parsed,
    seen: Seen,
    hasher: EventHasher,
}

impl Merger {
    fn new(hasher: EventHasher) -> Self {
        Self {
            out: Parsed::default(),
            seen: Seen::default(),
            hasher,
        }
    }

    fn add(&mut self, part: Part) {
        let Part { parsed, hashes } = part;
        self.out.lines += parsed.lines;
        self.out.duplicates += parsed.duplicates;
        self.out.rejects.extend(parsed.rejects);
        self.out.events.reserve(parsed.events.len());
        for (record, hash) in parsed.events.into_iter().zip(hashes) {
            if self.seen.is_new(hash, &record.event, &self.out.events) {
                self.out.events.push(record);
            } else {
                self.out.duplicates += 1;
            }
        }
    }
}

/// Parses `items` across rayon's threads (on the calling thread without the `parallel`
/// feature) and merges them in order. Items are taken a batch at a time (a few MiB of input
/// per thread) and folded in before the next batch, so memory holds the distinct events plus
/// one batch, not every line of the input.
fn parse_batched<T: Sync>(
    items: &[T],
    batch_bytes: usize,
    size: impl Fn(&T) -> usize,
    parse: impl Fn(&T, &EventHasher) -> Part + Sync,
) -> Parsed {
    let mut merger = Merger::new(EventHasher::default());
    let mut rest = items;
    while !rest.is_empty() {
        let mut n = 0;
        let mut bytes = 0;
        while n < rest.len() && (n == 0 || bytes < batch_bytes) {
            bytes += size(&rest[n]);
            n += 1;
        }
        let (batch, tail) = rest.split_at(n);
        let hasher = &merger.hasher;
        #[cfg(feature = "parallel")]
        let parts: Vec<Part> = {
            use rayon::prelude::*;
            batch.par_iter().map(|item| parse(item, hasher)).collect()
        };
        #[cfg(not(feature = "parallel"))]
        let parts: Vec<Part> = batch.iter().map(|item| parse(item, hasher)).collect();
        for part in parts {
            merger.add(part);
        }
        rest = tail;
    }
    merger.out
}

/// The longest line the parser reads, in bytes (1 MiB; the feed's lines are a few hundred
/// bytes). A longer line is refused unread as `line_too_long`, so that a reader of landing
/// files can keep memory bounded whatever the input: it need never hold more than this of
/// one line.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Parses one line (without its line end) into an event.
///
/// ```
/// use d2d_model::parse::parse_line;
/// let err = parse_line(br#"{"event":"update","on":"vehicle","at":"2019-06-01T18:17:10Z","data":{"id":"v1"},"organization_id":"o"}"#).unwrap_err();
/// assert_eq!(err.to_string(), "data.location: missing or null");
/// assert_eq!(err.code(), "missing_field");
/// ```
pub fn parse_line(line: &[u8]) -> Result<Event, RejectReason> {
    parse_line_with(line, &mut Memo::default())
}

fn parse_line_with(line: &[u8], memo: &mut Memo) -> Result<Event, RejectReason> {
    if line.len() > MAX_LINE_BYTES {
        return Err(RejectReason::LineTooLong {
            length: line.len() as u64,
        });
    }
    let text = std::str::from_utf8(line).map_err(|e| RejectReason::InvalidUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    // The feed's own layout, then any plain object, skip serde; anything else, and every
    // reject, goes through serde, the reference.
    let fast = fast::exact(text).or_else(|| fast::raw_event(text));
    if let Some(Ok(event)) = fast.map(|raw| raw.validate_with(memo)) {
        return Ok(event);
    }
    match serde_json::from_str::<Object<RawEvent<'_>>>(text) {
        Ok(Object(raw)) => raw.validate_with(memo),
        Err(_) => Err(diagnose(text)),
    }
}

/// Parses a whole NDJSON buffer on the calling thread.
pub fn parse_bytes(source: &str, bytes: &[u8]) -> Parsed {
    parse_chunk(&source.into(), bytes, 0, &EventHasher::default()).parsed
}

/// Size of the pieces `parse_bytes_par` splits its input into; below it, splitting costs more
/// than it saves.
const CHUNK: usize = 256 * 1024;

/// Input parsed in parallel before its events are merged: 8 chunks per thread.
fn batch_bytes() -> usize {
    #[cfg(feature = "parallel")]
    let threads = rayon::current_num_threads().max(1);
    #[cfg(not(feature = "parallel"))]
    let threads = 1;
    threads * 8 * CHUNK
}

/// Parses a whole NDJSON buffer across rayon's threads. The result is identical to
/// [`parse_bytes`]: same events, rejects, counts, in the same order. Without the `parallel`
/// feature it is [`parse_bytes`].
pub fn parse_bytes_par(source: &str, bytes: &[u8]) -> Parsed {
    if !cfg!(feature = "parallel") || bytes.len() <= CHUNK {
        return parse_bytes(source, bytes);
    }
    parse_split(source, bytes, CHUNK, batch_bytes())
}

/// Parses a piece of a larger input, cut at a line end, whose first line is line
/// `first_line + 1` of the whole: [`parse_bytes_par`] with line numbers that continue the
/// pieces before. Duplicates are dropped within the piece only; a reader that parses an input
/// piece by piece drops those across pieces itself (the daily load does, as it does across
/// files).
///
/// ```
/// use d2d_model::parse::parse_piece;
/// let p = parse_piece("big.txt", b"{}\n", 41);
/// assert_eq!(p.rejects[0].to_string(), "big.txt:42: on: missing or null");
/// ```
pub fn parse_piece(source: &str, bytes: &[u8], first_line: u64) -> Parsed {
    if !cfg!(feature = "parallel") || bytes.len() <= CHUNK {
        return parse_chunk(&source.into(), bytes, first_line, &EventHasher::default()).parsed;
    }
    parse_split_from(source, bytes, first_line, CHUNK, batch_bytes())
}

/// Parses a piece of a larger input as [`parse_piece`] does, on the calling thread, but keeps
/// every valid line as an event, repeats included (`duplicates` is 0): for engines that cut an
/// input anywhere and then apply the duplicate rule (the first of equal events in landing
/// order stays) over the whole, so that what a piece gives does not depend on the cuts.
///
/// ```
/// use d2d_model::parse::parse_every_line;
/// let line = r#"{"event":"register","on":"vehicle","at":"2019-06-01T18:17:04Z","data":{"id":"v1"},"organization_id":"o"}"#;
/// let p = parse_every_line("big.txt", format!("{line}\n{line}\n").as_bytes(), 10);
/// assert_eq!((p.events.len(), p.duplicates, p.events[1].line), (2, 0, 12));
/// ```
pub fn parse_every_line(source: &str, bytes: &[u8], first_line: u64) -> Parsed {
    parse_lines(&source.into(), bytes, first_line, None).parsed
}

/// [`parse_bytes_par`] with its sizes as parameters, so tests can use many small batches.
fn parse_split(source: &str, bytes: &[u8], chunk: usize, batch_bytes: usize) -> Parsed {
    parse_split_from(source, bytes, 0, chunk, batch_bytes)
}

/// [`parse_split`] of a piece whose first line is `first_line + 1`.
fn parse_split_from(
    source: &str,
    bytes: &[u8],
    first_line: u64,
    chunk: usize,
    batch_bytes: usize,
) -> Parsed {
    let source: Arc<str> = source.into();
    let chunks = split_at_newlines(bytes, chunk);
    // Line numbers depend on the newlines before each chunk, which are cheap to count.
    let chunks: Vec<(&[u8], u64)> = chunks
        .into_iter()
        .scan(first_line, |seen, c| {
            let first = *seen;
            *seen += memchr::memchr_iter(b'\n', c).count() as u64;
            Some((c, first))
        })
        .collect();
    parse_batched(
        &chunks,
        batch_bytes,
        |(chunk, _)| chunk.len(),
        |&(chunk, first), hasher| parse_chunk(&source, chunk, first, hasher),
    )
}

/// Parses many sources (files, objects) in parallel, one task per source (one after the other
/// without the `parallel` feature), and merges them in the given order, de-duplicating across
/// sources.
pub fn parse_sources<S, B>(sources: &[(S, B)]) -> Parsed
where
    S: AsRef<str> + Sync,
    B: AsRef<[u8]> + Sync,
{
    parse_batched(
        sources,
        batch_bytes(),
        |(_, bytes)| bytes.as_ref().len(),
        |(name, bytes), hasher| parse_chunk(&Arc::from(name.as_ref()), bytes.as_ref(), 0, hasher),
    )
}

fn split_at_newlines(bytes: &[u8], target: usize) -> Vec<&[u8]> {
    let mut chunks = Vec::with_capacity(bytes.len() / target + 1);
    let mut rest = bytes;
    while rest.len() > target {
        match memchr::memchr(b'\n', &rest[target..]) {
            Some(i) => {
                let (head, tail) = rest.split_at(target + i + 1);
                chunks.push(head);
                rest = tail;
            }
            None => break,
        }
    }
    if !rest.is_empty() {
        chunks.push(rest);
    }
    chunks
}

/// The lines of `bytes`, split at `\n` exactly like `bytes.split(|&b| b == b'\n')`, but with
/// memchr's vectorised search.
fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(bytes);
    std::iter::from_fn(move || {
        let r = rest?;
        Some(match memchr::memchr(b'\n', r) {
            Some(i) => {
                rest = Some(&r[i + 1..]);
                &r[..i]
            }
            None => {
                rest = None;
                r
            }
        })
    })
}

/// Parses and de-duplicates lines; `first_line` is the number of lines before `bytes`.
fn parse_chunk(source: &Arc<str>, bytes: &[u8], first_line: u64, hasher: &EventHasher) -> Part {
    parse_lines(source, bytes, first_line, Some(hasher))
}

/// Parses lines, de-duplicating them with `hasher` when there is one, keeping every valid
/// line otherwise; `first_line` is the number of lines before `bytes`.
fn parse_lines(
    source: &Arc<str>,
    bytes: &[u8],
    first_line: u64,
    hasher: Option<&EventHasher>,
) -> Part {
    let mut out = Parsed::default();
    let mut hashes = Vec::new();
    let mut seen = Seen::default();
    let mut memo = Memo::sharing_ids();
    for (number, line) in (first_line + 1..).zip(lines(bytes)) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        out.lines += 1;
        match parse_line_with(line, &mut memo) {
            Ok(event) => {
                let Some(hasher) = hasher else {
                    out.events.push(Record {
                        source: source.clone(),
                        line: number,
                        event,
                    });
                    continue;
                };
                let hash = hasher.hash_one(&event);
                if seen.is_new(hash, &event, &out.events) {
                    hashes.push(hash);
                    out.events.push(Record {
                        source: source.clone(),
                        line: number,
                        event,
                    });
                } else {
                    out.duplicates += 1;
                }
            }
            Err(reason) => out.rejects.push(Reject {
                source: source.clone(),
                line: number,
                raw: line.to_vec(),
                reason,
            }),
        }
    }
    Part {
        parsed: out,
        hashes,
    }
}

/// Re-reads a line that failed the fast path, tracking the field path, to say exactly what is
/// wrong. Only rejects pay for this.
fn diagnose(text: &str) -> RejectReason {
    let mut de = serde_json::Deserializer::from_str(text);
    let err = match serde_path_to_error::deserialize::<_, Object<RawEvent<'_>>>(&mut de) {
        Ok(_) => match de.end() {
            Ok(()) => {
                return RejectReason::InvalidJson {
                    detail: "unparsable line".into(),
                }
            }
            Err(e) => {
                return RejectReason::InvalidJson {
                    detail: e.to_string(),
                }
            }
        },
        Err(e) => e,
    };
    let field = err.path().to_string();
    let inner = err.into_inner();
    let detail = inner.to_string();
    match inner.classify() {
        serde_json::error::Category::Data if field == "." && detail.contains(OBJECT) => {
            RejectReason::NotAnObject
        }
        serde_json::error::Category::Data if detail.starts_with("duplicate field") => {
            RejectReason::DuplicateField {
                field: field.trim_start_matches('.').to_owned(),
                detail: strip_position(&detail),
            }
        }
        serde_json::error::Category::Data => RejectReason::InvalidType {
            field,
            detail: strip_position(&detail),
        },
        _ => RejectReason::InvalidJson { detail },
    }
}

fn strip_position(detail: &str) -> String {
    match detail.rfind(" at line ") {
        Some(i) => detail[..i].to_owned(),
        None => detail.to_owned(),
    }
}

const OBJECT: &str = "a JSON object";

/// Accepts only a JSON object for `T`: serde's derive would also take an array positionally.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Object<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(OBJECT)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Object)
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// A string borrowed from the input when it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// The wire shape, every field optional so that absence is reported by name, not by serde.
#[derive(Deserialize)]
pub(crate) struct RawEvent<'a> {
    #[serde(borrow)]
    event: Option<Text<'a>>,
    #[serde(borrow)]
    on: Option<Text<'a>>,
    #[serde(borrow)]
    at: Option<Text<'a>>,
    #[serde(borrow)]
    data: Option<Object<RawData<'a>>>,
    #[serde(borrow)]
    organization_id: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct RawData<'a> {
    #[serde(borrow)]
    id: Option<Text<'a>>,
    #[serde(borrow)]
    location: Option<Object<RawLocation<'a>>>,
    #[serde(borrow)]
    start: Option<Text<'a>>,
    #[serde(borrow)]
    finish: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct RawLocation<'a> {
    lat: Option<f64>,
    lng: Option<f64>,
    #[serde(borrow)]
    at: Option<Text<'a>>,
}

fn required<'a>(v: Option<Text<'a>>, field: &'static str) -> Result<Cow<'a, str>, RejectReason> {
    // Not `ok_or`: building the unused error on every call shows up in profiles.
    match v {
        Some(Text(s)) => Ok(s),
        None => Err(RejectReason::MissingField { field }),
    }
}

fn timestamp(v: Option<Text<'_>>, field: &'static str) -> Result<DateTime<Utc>, RejectReason> {
    timestamp_of(&required(v, field)?, field)
}

fn timestamp_of(s: &str, field: &'static str) -> Result<DateTime<Utc>, RejectReason> {
    parse_timestamp(s).map_err(|error| RejectReason::InvalidTimestamp {
        field,
        value: s.to_owned(),
        error,
    })
}

/// Builds an id, sharing the text of an equal id seen earlier in the same parse.
fn id<T>(
    v: Option<Text<'_>>,
    field: &'static str,
    memo: &mut Memo,
    new: fn(String) -> Result<T, InvalidValue>,
    from_valid: fn(Arc<str>) -> T,
) -> Result<T, RejectReason> {
    let text = required(v, field)?;
    match &mut memo.ids {
        Some(ids) => {
            if let Some(shared) = ids.get(&*text) {
                return Ok(from_valid(shared.clone()));
            }
            if !is_valid_id(&text) {
                // The same refusal, with the same message, as without sharing.
                return new(text.into_owned())
                    .map_err(|error| RejectReason::InvalidValue { field, error });
            }
            let shared: Arc<str> = text.into();
            ids.insert(shared.clone());
            Ok(from_valid(shared))
        }
        None => new(text.into_owned()).map_err(|error| RejectReason::InvalidValue { field, error }),
    }
}

impl RawLocation<'_> {
    /// `None` when any field is null or absent: the fix is unknown, not wrong. `envelope` is
    /// the event's own `at`, as written and parsed: the feed usually repeats it here, and
    /// parsing the same string twice would give the same result.
    fn validate(self, envelope: (&str, DateTime<Utc>)) -> Result<Option<Location>, RejectReason> {
        let (Some(lat), Some(lng), Some(_)) = (self.lat, self.lng, self.at.as_ref()) else {
            return Ok(None);
        };
        let position = Position::new(lat, lng).map_err(|e| RejectReason::InvalidValue {
            field: if e.coordinate == "lat" {
                "data.location.lat"
            } else {
                "data.location.lng"
            },
            error: e.error,
        })?;
        let at = match self.at {
            Some(Text(s)) if *s == *envelope.0 => envelope.1,
            other => timestamp(other, "data.location.at")?,
        };
        Ok(Some(Location { position, at }))
    }

    fn first_missing(&self) -> &'static str {
        if self.lat.is_none() {
            "data.location.lat"
        } else if self.lng.is_none() {
            "data.location.lng"
        } else {
            "data.location.at"
        }
    }
}

/// What one parse remembers from line to line.
///
/// - The last envelope timestamp, as written and as a value: the lines of one file mostly
///   share their `at` (the time the batch was received), so most lines skip parsing it.
/// - When sharing ids (a whole-buffer parse), every valid id seen: a day names a few hundred
///   vehicles and one organisation across tens of thousands of events, so each event then
///   points at one shared copy instead of allocating its own.
#[derive(Default)]
struct Memo {
    text: String,
    value: Option<DateTime<Utc>>,
    ids: Option<HashSet<Arc<str>, foldhash::fast::RandomState>>,
}

impl Memo {
    fn sharing_ids() -> Self {
        Self {
            ids: Some(HashSet::default()),
            ..Self::default()
        }
    }

    fn timestamp(&mut self, s: &str, field: &'static str) -> Result<DateTime<Utc>, RejectReason> {
        match self.value {
            Some(value) if self.text == s => Ok(value),
            _ => {
                let value = timestamp_of(s, field)?;
                self.text.clear();
                self.text.push_str(s);
                self.value = Some(value);
                Ok(value)
            }
        }
    }
}

impl RawEvent<'_> {
    /// Checks every field and builds the typed event, or says which field is wrong.
    pub(crate) fn validate(self) -> Result<Event, RejectReason> {
        self.validate_with(&mut Memo::default())
    }

    fn validate_with(self, memo: &mut Memo) -> Result<Event, RejectReason> {
        let on = required(self.on, "on")?;
        let verb = required(self.event, "event")?;
        let at_text = required(self.at, "at")?;
        let at = memo.timestamp(&at_text, "at")?;
        let envelope = (&*at_text, at);
        let organization_id = id(
            self.organization_id,
            "organization_id",
            memo,
            OrganizationId::new,
            OrganizationId::from_valid,
        )?;
        let Some(Object(data)) = self.data else {
            return Err(RejectReason::MissingField { field: "data" });
        };
        let kind = match (&*on, &*verb) {
            ("vehicle", "register" | "update" | "deregister") => {
                let vehicle = id(
                    data.id,
                    "data.id",
                    memo,
                    VehicleId::new,
                    VehicleId::from_valid,
                )?;
                match &*verb {
                    "update" => {
                        let Some(Object(raw)) = data.location else {
                            return Err(RejectReason::MissingField {
                                field: "data.location",
                            });
                        };
                        let missing = raw.first_missing();
                        let Some(location) = raw.validate(envelope)? else {
                            return Err(RejectReason::MissingField { field: missing });
                        };
                        EventKind::VehicleUpdate { vehicle, location }
                    }
                    v => {
                        let location = match data.location {
                            Some(Object(raw)) => raw.validate(envelope)?,
                            None => None,
                        };
                        if v == "register" {
                            EventKind::VehicleRegister { vehicle, location }
                        } else {
                            EventKind::VehicleDeregister { vehicle, location }
                        }
                    }
                }
            }
            ("operating_period", "create" | "delete") => {
                let id = id(
                    data.id,
                    "data.id",
                    memo,
                    PeriodId::new,
                    PeriodId::from_valid,
                )?;
                let start = timestamp(data.start, "data.start")?;
                let finish = timestamp(data.finish, "data.finish")?;
                let period = OperatingPeriod::new(id, start, finish).map_err(|error| {
                    RejectReason::InvalidValue {
                        field: "data.finish",
                        error,
                    }
                })?;
                if &*verb == "create" {
                    EventKind::PeriodCreate(period)
                } else {
                    EventKind::PeriodDelete(period)
                }
            }
            _ => {
                return Err(RejectReason::UnknownKind {
                    on: on.into_owned(),
                    event: verb.into_owned(),
                })
            }
        };
        Ok(Event {
            at,
            organization_id,
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPDATE: &str = r#"{"event":"update","on":"vehicle","at":"2019-06-01T18:17:10.101Z","data":{"id":"v1","location":{"lat":52.45,"lng":13.46,"at":"2019-06-01T18:17:10.101Z"}},"organization_id":"org-id"}"#;
    const REGISTER: &str = r#"{"event":"register","on":"vehicle","at":"2019-06-01T18:17:04.088Z","data":{"id":"v1"},"organization_id":"org-id"}"#;
    const CREATE: &str = r#"{"event":"create","on":"operating_period","at":"2019-06-01T18:17:04.086Z","data":{"id":"op_1","start":"2019-06-01T18:23:04.079Z","finish":"2019-06-01T18:28:04.079Z"},"organization_id":"org-id"}"#;

    fn reason(line: &str) -> String {
        parse_line(line.as_bytes()).unwrap_err().to_string()
    }

    fn code(line: &str) -> &'static str {
        parse_line(line.as_bytes()).unwrap_err().code()
    }

    #[test]
    fn parses_each_kind_of_the_feed() {
        let u = parse_line(UPDATE.as_bytes()).unwrap();
        assert_eq!(u.kind.name(), "vehicle.update");
        assert_eq!(u.kind.location().unwrap().position.lat(), 52.45);
        assert_eq!(u.organization_id.as_str(), "org-id");
        let r = parse_line(REGISTER.as_bytes()).unwrap();
        assert_eq!(r.kind.name(), "vehicle.register");
        assert!(r.kind.location().is_none());
        let c = parse_line(CREATE.as_bytes()).unwrap();
        let p = c.kind.period().unwrap();
        assert_eq!(p.id().as_str(), "op_1");
        assert!(p.start() < p.finish());
        let d = parse_line(CREATE.replace("create", "delete").as_bytes()).unwrap();
        assert_eq!(d.kind.name(), "operating_period.delete");
    }

    #[test]
    fn accepts_what_the_spec_allows() {
        for line in [
            REGISTER.replace(r#""id":"v1""#, r#""id":"v1","location":null"#),
            REGISTER.replace(
                r#""id":"v1""#,
                r#""id":"v1","location":{"lat":null,"lng":null,"at":null}"#,
            ),
            REGISTER.replace("register", "deregister"),
            UPDATE.replace(
                r#""organization_id""#,
                r#""extra":[1,{"x":2}],"organization_id""#,
            ),
            UPDATE.replace("18:17:10.101Z", "20:17:10+02:00"),
            UPDATE.replace(r#""id":"v1""#, r#""id":"v\u0031""#),
        ] {
            assert!(parse_line(line.as_bytes()).is_ok(), "{line}");
        }
        let escaped = parse_line(UPDATE.replace(r#""v1""#, r#""v\u0031""#).as_bytes()).unwrap();
        assert_eq!(escaped.kind.vehicle().unwrap().as_str(), "v1");
    }

    #[test]
    fn rejects_name_the_field() {
        assert_eq!(
            reason(&UPDATE.replace("52.45", "91.2")),
            "data.location.lat: 91.2 is outside [-90, 90]"
        );
        assert_eq!(
            reason(&UPDATE.replace("13.46", "-180.5")),
            "data.location.lng: -180.5 is outside [-180, 180]"
        );
        assert_eq!(
            reason(&UPDATE.replace("52.45", "null")),
            "data.location.lat: missing or null"
        );
        assert_eq!(
            reason(&UPDATE.replace("52.45", r#""52.45""#)),
            r#"data.location.lat: invalid type: string "52.45", expected f64"#
        );
        assert_eq!(
            reason(&UPDATE.replace(r#""at":"2019-06-01T18:17:10.101Z","data""#, r#""data""#)),
            "at: missing or null"
        );
        assert_eq!(
            reason(&UPDATE.replace("18:17:10.101Z\"}", "18:17:10.101\"}")),
            r#"data.location.at: "2019-06-01T18:17:10.101" has no time zone (expected `Z` or an offset such as `+02:00`)"#
        );
        assert_eq!(
            reason(&CREATE.replace("18:28:04", "18:20:04")),
            "data.finish: finish 2019-06-01 18:20:04.079 UTC is before start 2019-06-01 18:23:04.079 UTC"
        );
        assert_eq!(
            reason(&UPDATE.replace(r#""on":"vehicle""#, r#""on":"bus""#)),
            r#"on/event: unknown event kind "bus"/"update""#
        );
        assert_eq!(
            reason(&REGISTER.replace(r#""id":"v1""#, r#""id":"""#)),
            r#"data.id: "" is not a valid id (1 to 256 printable characters)"#
        );
    }

    #[test]
    fn reject_codes_cover_each_failure() {
        assert_eq!(parse_line(b"\xff{}").unwrap_err().code(), "invalid_utf8");
        assert_eq!(code("{"), "invalid_json");
        assert_eq!(code(&format!("{UPDATE} x")), "invalid_json");
        assert_eq!(code("[1, 2]"), "not_an_object");
        assert_eq!(code(r#"["update","vehicle"]"#), "not_an_object");
        assert_eq!(code("42"), "not_an_object");
        assert_eq!(
            code(
                &UPDATE
                    .replace(r#""data":{"#, r#""data":["#)
                    .replace("}},", "}],")
            ),
            "invalid_type"
        );
        assert_eq!(
            code(&UPDATE.replace(r#""on""#, r#""at":"x","on""#)),
            "duplicate_field"
        );
        assert_eq!(code(&UPDATE.replace("update", "teleport")), "unknown_kind");
        assert_eq!(
            code(&UPDATE.replace("2019-06-01T18:17:10.101Z\",\"data", "now\",\"data")),
            "invalid_timestamp"
        );
        assert_eq!(code(r#"{}"#), "missing_field");
        assert_eq!(code(&UPDATE.replace("52.45", "1e999")), "invalid_json");
    }

    #[test]
    fn update_needs_a_location() {
        let none = UPDATE.replace(
            r#","location":{"lat":52.45,"lng":13.46,"at":"2019-06-01T18:17:10.101Z"}"#,
            "",
        );
        assert_eq!(reason(&none), "data.location: missing or null");
        let null = none.replace(r#""id":"v1""#, r#""id":"v1","location":null"#);
        assert_eq!(reason(&null), "data.location: missing or null");
    }

    #[test]
    fn counts_lines_blank_lines_crlf_and_duplicates() {
        let input = format!("{REGISTER}\r\n\n   \n{UPDATE}\n{UPDATE}\nnot json\n{CREATE}");
        let p = parse_bytes("f", input.as_bytes());
        assert_eq!(p.lines, 5);
        assert_eq!(p.events.len(), 3);
        assert_eq!(p.duplicates, 1);
        assert_eq!(p.rejects.len(), 1);
        assert_eq!(p.rejects[0].line, 6);
        assert_eq!(p.rejects[0].raw, b"not json");
        let lines: Vec<u64> = p.events.iter().map(|r| r.line).collect();
        assert_eq!(lines, [1, 4, 7]);
    }

    #[test]
    fn parallel_equals_sequential_on_a_large_buffer() {
        let mut input = String::new();
        for i in 0..8000 {
            input.push_str(&UPDATE.replace("10.101Z", &format!("10.{:03}Z", i % 1000)));
            input.push('\n');
            if i % 97 == 0 {
                input.push_str("garbage\n\n");
            }
        }
        assert!(input.len() > 1024 * 1024);
        let seq = parse_bytes("big", input.as_bytes());
        let par = parse_bytes_par("big", input.as_bytes());
        assert_eq!(seq, par);
        assert_eq!(seq.events.len(), 1000);
        assert_eq!(seq.duplicates, 7000);
    }

    #[test]
    fn a_line_beyond_the_limit_is_refused_unread_and_one_at_it_is_read() {
        // Padding inside the JSON: at the limit the line is a valid event.
        let pad =
            |n: usize| UPDATE.replacen('{', &format!("{{{}", " ".repeat(n - UPDATE.len())), 1);
        let at_limit = pad(MAX_LINE_BYTES);
        assert_eq!(at_limit.len(), MAX_LINE_BYTES);
        assert!(parse_line(at_limit.as_bytes()).is_ok());
        let over = pad(MAX_LINE_BYTES + 1);
        let err = parse_line(over.as_bytes()).unwrap_err();
        assert_eq!(err.code(), "line_too_long");
        assert_eq!(
            err.to_string(),
            format!(
                "line of {} bytes, longer than the limit of 1048576 bytes",
                MAX_LINE_BYTES + 1
            )
        );
        // In a file, with a CRLF ending (not counted), between two events.
        let input = format!(
            "{UPDATE}\r\n{over}\r\n{}\n",
            UPDATE.replace("52.45", "52.46")
        );
        let p = parse_bytes("f", input.as_bytes());
        assert_eq!((p.lines, p.events.len(), p.rejects.len()), (3, 2, 1));
        assert_eq!(p.rejects[0].line, 2);
        assert_eq!(p.rejects[0].raw.len(), MAX_LINE_BYTES + 1);
    }

    #[test]
    fn pieces_number_their_lines_after_the_ones_before() {
        let mut input = String::new();
        for i in 0..3000 {
            input.push_str(&UPDATE.replace("10.101Z", &format!("10.{:03}Z", i % 1000)));
            input.push('\n');
            if i % 89 == 0 {
                input.push_str("garbage\n\n");
            }
        }
        let whole = parse_bytes("f", input.as_bytes());
        // Cut at a line end past the middle; both pieces are above CHUNK, so parsed in parallel.
        let cut = input[input.len() / 2..].find('\n').unwrap() + input.len() / 2 + 1;
        let first = parse_piece("f", &input.as_bytes()[..cut], 0);
        let lines_before = input[..cut].matches('\n').count() as u64;
        let second = parse_piece("f", &input.as_bytes()[cut..], lines_before);
        let rejects: Vec<_> = first
            .rejects
            .iter()
            .chain(&second.rejects)
            .cloned()
            .collect();
        assert_eq!(rejects, whole.rejects);
        assert_eq!(first.lines + second.lines, whole.lines);
        // Each piece drops its own duplicates; across pieces, merging drops the rest.
        assert_eq!(Parsed::merge([first, second]), whole);
    }

    #[test]
    fn every_line_keeps_the_repeats_that_merging_drops() {
        let mut input = String::new();
        for i in 0..500 {
            input.push_str(&UPDATE.replace("10.101Z", &format!("10.{:03}Z", i % 90)));
            input.push_str(if i % 7 == 0 { "\r\n" } else { "\n" });
            if i % 61 == 0 {
                input.push_str("garbage\n\n");
            }
        }
        let every = parse_every_line("f", input.as_bytes(), 0);
        assert_eq!((every.events.len(), every.duplicates), (500, 0));
        assert_eq!(every.lines, 500 + every.rejects.len() as u64);
        assert_eq!(Parsed::merge([every]), parse_bytes("f", input.as_bytes()));
    }

    #[test]
    fn many_small_chunks_and_batches_equal_one_pass() {
        let mut input = String::new();
        for i in 0..400 {
            // Every event comes back 3 times, far apart, so duplicates cross chunks and batches.
            let t = format!("10.{:03}Z", i % 131);
            input.push_str(&UPDATE.replace("10.101Z", &t));
            input.push_str(if i % 3 == 0 { "\r\n" } else { "\n" });
            if i % 37 == 0 {
                input.push_str("garbage\n\n");
            }
        }
        let seq = parse_bytes("f", input.as_bytes());
        assert_eq!((seq.events.len(), seq.rejects.len()), (131, 11));
        assert_eq!(seq.duplicates, 400 - 131);
        for chunk in [1, 100, 1000, 7000] {
            for batch in [1, 3000, 1 << 20] {
                let par = parse_split("f", input.as_bytes(), chunk, batch);
                assert_eq!(par, seq, "chunk {chunk}, batch {batch}");
            }
        }
        let files: Vec<(String, String)> = input
            .split_inclusive('\n')
            .collect::<Vec<_>>()
            .chunks(50)
            .enumerate()
            .map(|(i, lines)| (format!("f{i}"), lines.concat()))
            .collect();
        let merged = Parsed::merge(files.iter().map(|(n, b)| parse_bytes(n, b.as_bytes())));
        assert_eq!(parse_sources(&files), merged);
        assert_eq!(merged.events.len(), 131);
    }

    #[test]
    fn a_parse_shares_equal_ids_and_refuses_bad_ones_as_parse_line_does() {
        let bad = REGISTER.replace(r#""id":"v1""#, r#""id":"""#);
        let input = format!("{REGISTER}\n{UPDATE}\n{bad}\n{CREATE}\n");
        let p = parse_bytes("f", input.as_bytes());
        let (a, b) = (&p.events[0].event, &p.events[1].event);
        let vehicle = |e: &Event| e.kind.vehicle().map(|v| v.as_str().as_ptr());
        assert_eq!(vehicle(a), vehicle(b));
        assert!(std::ptr::eq(
            a.organization_id.as_str(),
            p.events[2].event.organization_id.as_str()
        ));
        assert_eq!(p.rejects.len(), 1);
        assert_eq!(Err(p.rejects[0].reason.clone()), parse_line(bad.as_bytes()));
        assert_eq!(p.events[0].event, parse_line(REGISTER.as_bytes()).unwrap());
    }

    #[test]
    fn sources_deduplicate_across_files() {
        let a = format!("{REGISTER}\n{UPDATE}\n");
        let b = format!("{UPDATE}\n{CREATE}\n");
        let p = parse_sources(&[("a", a.as_bytes()), ("b", b.as_bytes())]);
        assert_eq!((p.lines, p.events.len(), p.duplicates), (4, 3, 1));
        assert_eq!(&*p.events[2].source, "b");
        assert_eq!(p.events[2].line, 2);
    }
}
