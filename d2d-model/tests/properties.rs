//! Property tests of the parser: events survive a round trip through their JSON, the parallel
//! parser agrees with the sequential one on any mixture of lines, and no input makes it panic
//! or lose a line.

use chrono::{DateTime, Utc};
use d2d_model::event::{
    Event, EventKind, Location, OperatingPeriod, OrganizationId, PeriodId, Position, VehicleId,
};
use d2d_model::parse::{parse_bytes, parse_bytes_par, parse_line, Parsed};
use proptest::prelude::*;
use proptest::sample::Index;

/// 2100-01-01T00:00:00Z: timestamps are drawn from [1970, 2100).
const END_SECS: i64 = 4_102_444_800;

/// `parse_bytes_par` splits only inputs above this size (its chunk size).
const PAR_CHUNK: usize = 256 * 1024;

// ---------------------------------------------------------------------------------------------
// Strategies for valid events.

/// Ids: any printable Unicode, with the characters JSON must escape (quote, backslash) and the
/// ones that are easy to get wrong (`/`, U+2028, astral plane) made frequent, plus the length
/// limits (1 and 256 bytes).
fn id_text() -> BoxedStrategy<String> {
    let tricky = prop::sample::select(vec![
        '"', '\\', '/', '\'', '{', '}', ':', ',', ' ', 'é', '\u{2028}', '\u{feff}', '😀', 'a', '0',
        '-',
    ]);
    prop_oneof![
        4 => "[^\\p{Cc}]{1,64}",
        4 => prop::collection::vec(tricky, 1..40).prop_map(|cs| cs.into_iter().collect()),
        1 => Just("x".repeat(256)),
        1 => Just("\"".to_string()),
        1 => Just("\\".to_string()),
        1 => "[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}",
    ]
    .boxed()
}

fn vehicle_id() -> impl Strategy<Value = VehicleId> {
    id_text().prop_map(|s| VehicleId::new(s).expect("id strategy yields valid ids"))
}

fn period_id() -> impl Strategy<Value = PeriodId> {
    id_text().prop_map(|s| PeriodId::new(s).expect("id strategy yields valid ids"))
}

fn organization_id() -> impl Strategy<Value = OrganizationId> {
    id_text().prop_map(|s| OrganizationId::new(s).expect("id strategy yields valid ids"))
}

/// A coordinate in [-limit, limit]: uniform over the range (full 53-bit mantissas), the
/// boundaries, zeros of both signs, subnormals, and short decimals like the feed's.
fn coordinate(limit: f64) -> BoxedStrategy<f64> {
    prop_oneof![
        6 => -limit..=limit,
        1 => Just(limit),
        1 => Just(-limit),
        1 => Just(0.0),
        1 => Just(-0.0),
        1 => prop::sample::select(vec![f64::MIN_POSITIVE, 5e-324, -5e-324, f64::EPSILON]),
        1 => prop::num::f64::NORMAL.prop_filter("in range", move |v| v.abs() <= limit),
        2 => (-(limit as i64) * 100_000..=(limit as i64) * 100_000)
            .prop_map(|n| n as f64 / 100_000.0),
    ]
    .boxed()
}

fn position() -> impl Strategy<Value = Position> {
    (coordinate(90.0), coordinate(180.0))
        .prop_map(|(lat, lng)| Position::new(lat, lng).expect("coordinates are in range"))
}

/// A UTC instant in [1970, 2100) with arbitrary microseconds (the model's precision);
/// sometimes a whole second or millisecond (the feed's precision), sometimes a leap second
/// (`:60`).
fn timestamp() -> BoxedStrategy<DateTime<Utc>> {
    let nanos = prop_oneof![
        3 => (0u32..1_000_000).prop_map(|us| us * 1_000),
        1 => Just(0u32),
        1 => (0u32..1000).prop_map(|ms| ms * 1_000_000),
    ];
    let leap = (0i64..END_SECS / 60, 0u32..1_000_000)
        .prop_map(|(minute, us)| (minute * 60 + 59, 1_000_000_000 + us * 1_000));
    prop_oneof![
        8 => (0i64..END_SECS, nanos),
        1 => Just((0i64, 0u32)),
        1 => Just((END_SECS - 1, 999_999_000u32)),
        1 => leap,
    ]
    .prop_map(|(s, n)| DateTime::from_timestamp(s, n).expect("in chrono's range"))
    .boxed()
}

fn location() -> BoxedStrategy<Location> {
    (position(), timestamp())
        .prop_map(|(position, at)| Location { position, at })
        .boxed()
}

fn period() -> BoxedStrategy<OperatingPeriod> {
    (period_id(), timestamp(), timestamp(), any::<bool>())
        .prop_map(|(id, a, b, same)| {
            let (start, finish) = if same { (a, a) } else { (a.min(b), a.max(b)) };
            OperatingPeriod::new(id, start, finish).expect("start <= finish")
        })
        .boxed()
}

fn kind() -> BoxedStrategy<EventKind> {
    prop_oneof![
        (vehicle_id(), prop::option::of(location()))
            .prop_map(|(vehicle, location)| EventKind::VehicleRegister { vehicle, location }),
        (vehicle_id(), location())
            .prop_map(|(vehicle, location)| EventKind::VehicleUpdate { vehicle, location }),
        (vehicle_id(), prop::option::of(location()))
            .prop_map(|(vehicle, location)| EventKind::VehicleDeregister { vehicle, location }),
        period().prop_map(EventKind::PeriodCreate),
        period().prop_map(EventKind::PeriodDelete),
    ]
    .boxed()
}

fn event() -> BoxedStrategy<Event> {
    (timestamp(), organization_id(), kind())
        .prop_map(|(at, organization_id, kind)| Event {
            at,
            organization_id,
            kind,
        })
        .boxed()
}

fn to_line(event: &Event) -> String {
    serde_json::to_string(event).expect("an event always serialises")
}

// ---------------------------------------------------------------------------------------------
// Mixtures of lines with a known expected outcome.

/// A line of a generated input, with what the parser must make of it.
#[derive(Debug, Clone)]
enum Line {
    /// Must become this event (or a duplicate of it).
    Valid(Event),
    /// Must be skipped without counting.
    Blank(String),
    /// Must become a reject.
    Junk(Vec<u8>),
}

/// Lines that can never be a valid event: not UTF-8, not JSON, not an object, a strict
/// prefix of an object, or an object missing what every kind needs.
fn junk(valid: Event) -> impl Strategy<Value = Vec<u8>> {
    let line = to_line(&valid).into_bytes();
    let len = line.len();
    prop_oneof![
        Just(b"not json".to_vec()),
        Just(b"{}".to_vec()),
        Just(b"[1,2]".to_vec()),
        Just(b"null".to_vec()),
        Just(b"\xff\xfe{}".to_vec()),
        Just(br#"{"event":"teleport","on":"vehicle"}"#.to_vec()),
        // Cutting anywhere inside the object leaves it unclosed.
        (1..len).prop_map(move |cut| line[..cut].to_vec()),
        Just(
            to_line(&valid)
                .replacen("\"at\"", "\"at\":1,\"at\"", 1)
                .into_bytes()
        ),
    ]
}

fn blank() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["", " ", "\t", "  \t ", "\r"]).prop_map(str::to_owned)
}

fn lines() -> impl Strategy<Value = Vec<Line>> {
    let one = prop_oneof![
        6 => event().prop_map(Line::Valid),
        2 => blank().prop_map(Line::Blank),
        2 => event().prop_flat_map(junk).prop_map(Line::Junk),
    ];
    (
        prop::collection::vec(one, 0..40),
        prop::collection::vec(any::<Index>(), 0..10),
    )
        .prop_map(|(mut lines, dups)| {
            // Exact duplicates of earlier valid lines, inserted at random later positions.
            for d in dups {
                if lines.is_empty() {
                    break;
                }
                let from = d.index(lines.len());
                let copy = lines[from].clone();
                let to = from + 1 + d.index(lines.len() - from);
                lines.insert(to.min(lines.len()), copy);
            }
            lines
        })
}

/// How a block of lines becomes an input buffer.
#[derive(Debug, Clone)]
struct Layout {
    /// CRLF instead of LF, per line (cycled).
    crlf: Vec<bool>,
    /// Whether the last line has a line end.
    trailing_newline: bool,
    /// Copies of the block; enough of them cross the parallel parser's chunk size.
    copies: usize,
    /// Whether each copy's valid events are shifted in time (distinct) or repeated (all
    /// duplicates of the first copy, including across chunks).
    distinct_copies: bool,
}

fn layout() -> impl Strategy<Value = Layout> {
    (
        prop::collection::vec(any::<bool>(), 1..8),
        any::<bool>(),
        prop_oneof![3 => 1usize..3, 1 => Just(usize::MAX)],
        any::<bool>(),
    )
        .prop_map(|(crlf, trailing_newline, copies, distinct_copies)| Layout {
            crlf,
            trailing_newline,
            copies,
            distinct_copies,
        })
}

/// Builds the buffer and, next to it, what the parser must report: the non-blank line count,
/// the distinct events with the 1-based line of their first occurrence, duplicates and the
/// line numbers of rejects.
struct Expected {
    bytes: Vec<u8>,
    lines: u64,
    events: Vec<(Event, u64)>,
    duplicates: u64,
    reject_lines: Vec<u64>,
}

fn build(block: &[Line], layout: &Layout) -> Expected {
    let block_len: usize = block
        .iter()
        .map(|l| match l {
            Line::Valid(e) => to_line(e).len() + 2,
            Line::Blank(s) => s.len() + 2,
            Line::Junk(b) => b.len() + 2,
        })
        .sum::<usize>()
        .max(1);
    let copies = if layout.copies == usize::MAX {
        // Just past the chunk size, so the parallel path really splits.
        (PAR_CHUNK + PAR_CHUNK / 2) / block_len + 1
    } else {
        layout.copies
    };
    let mut exp = Expected {
        bytes: Vec::new(),
        lines: 0,
        events: Vec::new(),
        duplicates: 0,
        reject_lines: Vec::new(),
    };
    let mut seen = std::collections::HashSet::new();
    let mut number = 0u64;
    let total = copies * block.len();
    for copy in 0..copies {
        for line in block {
            number += 1;
            let text: Vec<u8> = match line {
                Line::Valid(e) => {
                    let mut e = e.clone();
                    if layout.distinct_copies && copy > 0 {
                        e.at = shifted(e.at, copy);
                    }
                    exp.lines += 1;
                    let text = to_line(&e).into_bytes();
                    if seen.insert(e.clone()) {
                        exp.events.push((e, number));
                    } else {
                        exp.duplicates += 1;
                    }
                    text
                }
                Line::Blank(s) => s.clone().into_bytes(),
                Line::Junk(b) => {
                    exp.lines += 1;
                    exp.reject_lines.push(number);
                    b.clone()
                }
            };
            exp.bytes.extend_from_slice(&text);
            let last = number as usize == total;
            if !last || layout.trailing_newline {
                if layout.crlf[number as usize % layout.crlf.len()] {
                    exp.bytes.push(b'\r');
                }
                exp.bytes.push(b'\n');
            }
        }
    }
    exp
}

/// Moves an instant by `copy` seconds, wrapping inside [1970, 2100) so it stays parsable.
fn shifted(at: DateTime<Utc>, copy: usize) -> DateTime<Utc> {
    let secs = (at.timestamp() + copy as i64).rem_euclid(END_SECS);
    // A leap second only exists at :59; elsewhere keep the sub-second part below 1 s.
    let nanos = if secs % 60 == 59 {
        at.timestamp_subsec_nanos()
    } else {
        at.timestamp_subsec_nanos() % 1_000_000_000
    };
    DateTime::from_timestamp(secs, nanos).expect("in chrono's range")
}

/// What must hold for any parse, whatever the input: every non-blank line is accounted for
/// exactly once, rejects keep the line verbatim, and every message can be rendered.
fn check_accounting(bytes: &[u8], p: &Parsed) -> Result<(), TestCaseError> {
    let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    let non_blank = lines
        .iter()
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .count() as u64;
    prop_assert_eq!(p.lines, non_blank);
    prop_assert_eq!(
        p.lines,
        p.events.len() as u64 + p.duplicates + p.rejects.len() as u64
    );
    for r in &p.rejects {
        let raw = lines[(r.line - 1) as usize];
        prop_assert_eq!(&r.raw[..], raw.strip_suffix(b"\r").unwrap_or(raw));
        prop_assert!(!r.to_string().is_empty());
        prop_assert!(!r.reason.code().is_empty());
    }
    for rec in &p.events {
        let raw = lines[(rec.line - 1) as usize];
        prop_assert_eq!(
            parse_line(raw.strip_suffix(b"\r").unwrap_or(raw)),
            Ok(rec.event.clone())
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Byte-level mutations of valid lines.

#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Truncate(Index),
    Insert(Index, u8),
    Delete(Index),
    Splice(Index, &'static str),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let token = prop::sample::select(vec![
        "\"",
        "\\",
        "\\u",
        "\\ud800",
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "null",
        "1e999",
        "-",
        "NaN",
        "\u{0}",
        "\n",
        "\r",
        "é",
        "\"at\":",
        "\"data\":{}",
        " ",
        "\t",
        "0",
        "9",
        ".",
        "e",
        "null,",
        "\"lat\":1,",
    ]);
    prop_oneof![
        (any::<Index>(), 1u8..=255).prop_map(|(i, m)| Mutation::Flip(i, m)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<Index>().prop_map(Mutation::Delete),
        (any::<Index>(), token).prop_map(|(i, t)| Mutation::Splice(i, t)),
    ]
}

fn mutate(mut line: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        if line.is_empty() {
            line.push(b'{');
        }
        match *m {
            Mutation::Flip(i, mask) => {
                let i = i.index(line.len());
                line[i] ^= mask;
            }
            Mutation::Truncate(i) => line.truncate(i.index(line.len())),
            Mutation::Insert(i, b) => line.insert(i.index(line.len() + 1), b),
            Mutation::Delete(i) => {
                line.remove(i.index(line.len()));
            }
            Mutation::Splice(i, t) => {
                let at = i.index(line.len() + 1);
                line.splice(at..at, t.bytes());
            }
        }
    }
    line
}

// ---------------------------------------------------------------------------------------------
// Lines in the feed's own shape, written by hand rather than by `Event`'s serialiser: short
// decimals, optional or null locations, whitespace, ranges crossed by a little. These are the
// lines the parser's fast path takes, so they are where it must agree with serde.

fn decimal(limit: u32) -> impl Strategy<Value = String> {
    (any::<bool>(), 0..=limit + 1, "[0-9]{0,12}").prop_map(|(negative, int, frac)| {
        let sign = if negative { "-" } else { "" };
        if frac.is_empty() {
            format!("{sign}{int}")
        } else {
            format!("{sign}{int}.{frac}")
        }
    })
}

fn number_text(limit: u32) -> impl Strategy<Value = String> {
    prop_oneof![
        8 => decimal(limit),
        1 => prop::sample::select(vec!["null", "-0", "0.0", "1e1", "-1.5E-3", "00", "1.", "\"1\""])
            .prop_map(str::to_owned),
    ]
}

fn timestamp_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => timestamp().prop_map(|t| d2d_model::time::format_timestamp(&t)),
        1 => timestamp().prop_map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3f+02:00").to_string()),
        1 => Just("2019-06-01T18:17:10".to_owned()),
    ]
}

fn feed_line() -> impl Strategy<Value = String> {
    let kind = prop::sample::select(vec![
        ("vehicle", "register"),
        ("vehicle", "update"),
        ("vehicle", "deregister"),
        ("operating_period", "create"),
        ("operating_period", "delete"),
        ("vehicle", "teleport"),
    ]);
    let location = prop_oneof![
        4 => (number_text(90), number_text(180), timestamp_text(), any::<bool>()).prop_map(
            |(lat, lng, at, same_at)| {
                let at = if same_at { "AT".to_owned() } else { format!("\"{at}\"") };
                format!(r#","location":{{"lat":{lat},"lng":{lng},"at":{at}}}"#)
            }
        ),
        1 => Just(r#","location":null"#.to_owned()),
        1 => Just(String::new()),
    ];
    (
        kind,
        timestamp_text(),
        id_text(),
        id_text(),
        location,
        (timestamp(), timestamp()),
        any::<bool>(),
        prop::option::weighted(0.2, repeated_member()),
    )
        .prop_map(|((on, verb), at, id, org, location, (a, b), spaced, repeat)| {
            let data = if on == "vehicle" {
                format!("{{\"id\":{}{location}}}", json(&id))
            } else {
                format!(
                    r#"{{"id":{},"start":"{}","finish":"{}"}}"#,
                    json(&id),
                    d2d_model::time::format_timestamp(&a.min(b)),
                    d2d_model::time::format_timestamp(&a.max(b)),
                )
            };
            // The location's `at` is usually the envelope's, as in the feed.
            let line = format!(
                r#"{{"event":"{verb}","on":"{on}","at":"{at}","data":{data},"organization_id":{}}}"#,
                json(&org)
            )
            .replace(":AT}", &format!(":\"{at}\"}}"));
            // A key given twice: serde refuses the line, whatever the values.
            let line = match repeat {
                Some((object, member)) => line.replacen(object, &format!("{object}{member},"), 1),
                None => line,
            };
            if spaced {
                line.replace("\":", "\" : ").replace(",\"", " ,\t\"")
            } else {
                line
            }
        })
        .boxed()
}

/// A member to insert at the start of an object (named by its opening text) that already has
/// the same key, with a value of the right type.
fn repeated_member() -> impl Strategy<Value = (&'static str, &'static str)> {
    prop::sample::select(vec![
        ("{", r#""event":"update""#),
        ("{", r#""on":"vehicle""#),
        ("{", r#""at":"2019-06-01T18:17:10Z""#),
        ("{", r#""organization_id":"o""#),
        ("{", r#""data":null"#),
        (r#""data":{"#, r#""id":"x""#),
        (r#""data":{"#, r#""location":null"#),
        (r#""data":{"#, r#""start":"2019-06-01T18:17:10Z""#),
        (r#""location":{"#, r#""lat":1"#),
        (r#""location":{"#, r#""lng":1"#),
        (r#""location":{"#, r#""at":"2019-06-01T18:17:10Z""#),
    ])
}

fn json(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// The parser agrees with `Event`'s own serde `Deserialize` (which never takes the parser's
/// fast path) on every line that is not a JSON array: same event, or both refuse. (`Event`'s
/// `Deserialize` would also take an array positionally; the parser refuses those.)
fn agrees_with_serde(line: &[u8]) -> Result<(), TestCaseError> {
    let ours = parse_line(line);
    if let Ok(text) = std::str::from_utf8(line) {
        if !text
            .trim_start_matches([' ', '\t', '\n', '\r'])
            .starts_with('[')
        {
            let theirs = serde_json::from_str::<Event>(text);
            prop_assert_eq!(ours.as_ref().ok(), theirs.as_ref().ok(), "line: {}", text);
        }
    }
    if let Ok(event) = ours {
        prop_assert_eq!(parse_line(to_line(&event).as_bytes()), Ok(event));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The properties.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Instants are kept to the microsecond, truncated towards the past, in every year the
    /// model keeps (what Parquet's microseconds count; PostgreSQL then stores them exactly).
    #[test]
    fn timestamps_keep_the_microsecond_towards_the_past(
        secs in -62_135_596_800i64..253_402_300_800,
        nanos in 0u32..1_000_000_000,
    ) {
        let t = DateTime::from_timestamp(secs, nanos).unwrap();
        let text = t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let parsed = d2d_model::time::parse_timestamp(&text).unwrap();
        prop_assert_eq!(parsed.timestamp_micros(), t.timestamp_micros(), "{}", text);
        prop_assert_eq!(parsed.timestamp_subsec_nanos() % 1_000, 0);
    }

    /// (a) Any event serialises to a line that both parsers read back as the same event.
    #[test]
    fn any_event_round_trips_through_its_json(event in event()) {
        let line = to_line(&event);
        prop_assert_eq!(parse_line(line.as_bytes()), Ok(event.clone()), "line: {}", line);
        let via_serde: Event = serde_json::from_str(&line)
            .map_err(|e| TestCaseError::fail(format!("{e}: {line}")))?;
        prop_assert_eq!(&via_serde, &event);
        // Serialising is stable: the re-parsed event writes the same line.
        prop_assert_eq!(to_line(&via_serde), line);
    }

    /// (c) Arbitrary bytes never make the line parser panic; what it accepts is a real event.
    #[test]
    fn parse_line_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        agrees_with_serde(&bytes)?;
    }

    /// Hand-written feed lines, intact or mutated, read exactly as serde reads them.
    #[test]
    fn feed_lines_parse_as_serde_reads_them(
        line in feed_line(),
        mutations in prop::collection::vec(mutation(), 0..3),
    ) {
        let line = mutate(line.into_bytes(), &mutations);
        agrees_with_serde(&line)?;
    }

    /// (c) Arbitrary bytes, many lines: no panic, every non-blank line accounted for.
    /// Line ends and JSON punctuation are sprinkled in so that lines are short and some get
    /// past the first byte of the JSON parser.
    #[test]
    fn parse_bytes_accounts_for_arbitrary_bytes(
        mut bytes in prop::collection::vec(any::<u8>(), 0..2048),
        marks in prop::collection::vec(
            (any::<Index>(), prop::sample::select(b"\n\n\n{}\":,[]".to_vec())),
            0..128,
        ),
    ) {
        if !bytes.is_empty() {
            for (at, b) in marks {
                let at = at.index(bytes.len());
                bytes[at] = b;
            }
        }
        let p = parse_bytes("fuzz", &bytes);
        check_accounting(&bytes, &p)?;
        prop_assert_eq!(parse_bytes_par("fuzz", &bytes), p);
    }

    /// (c) Valid lines with flipped, truncated, inserted, deleted or spliced bytes: no panic;
    /// either a reject or an event that round-trips.
    #[test]
    fn mutated_lines_never_panic(
        event in event(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let line = mutate(to_line(&event).into_bytes(), &mutations);
        agrees_with_serde(&line)?;
        if let Err(reason) = parse_line(&line) {
            prop_assert!(!reason.to_string().is_empty());
            prop_assert!(!reason.code().is_empty());
        }
        let mut bytes = line.clone();
        bytes.push(b'\n');
        bytes.extend_from_slice(&line);
        let p = parse_bytes("mutated", &bytes);
        check_accounting(&bytes, &p)?;
    }
}

proptest! {
    // Some cases build inputs of ~384 KiB to cross the parallel chunk size; fewer cases keep
    // the debug-build test run short.
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// (b) For any mixture of valid, invalid, blank, CRLF and duplicate lines, large or small:
    /// the parallel parser equals the sequential one, and both report exactly the expected
    /// events (first occurrences, in order), duplicates and rejects.
    #[test]
    fn parallel_equals_sequential_and_both_are_right(block in lines(), layout in layout()) {
        let exp = build(&block, &layout);
        let seq = parse_bytes("mix", &exp.bytes);
        let par = parse_bytes_par("mix", &exp.bytes);
        prop_assert!(seq == par, "parallel result differs from sequential");

        prop_assert_eq!(seq.lines, exp.lines);
        prop_assert_eq!(
            seq.lines,
            seq.events.len() as u64 + seq.duplicates + seq.rejects.len() as u64
        );
        prop_assert_eq!(seq.duplicates, exp.duplicates);
        let got: Vec<(&Event, u64)> = seq.events.iter().map(|r| (&r.event, r.line)).collect();
        let want: Vec<(&Event, u64)> = exp.events.iter().map(|(e, n)| (e, *n)).collect();
        prop_assert_eq!(got, want);
        let reject_lines: Vec<u64> = seq.rejects.iter().map(|r| r.line).collect();
        prop_assert_eq!(reject_lines, exp.reject_lines);
        prop_assert!(seq.events.iter().all(|r| &*r.source == "mix"));
    }
}

/// The generator above really produces inputs that the parallel parser splits; without this,
/// property (b) could silently test only the sequential fallback.
#[test]
fn mixtures_cross_the_parallel_chunk_size() {
    let event: Event = serde_json::from_str(
        r#"{"event":"register","on":"vehicle","at":"2019-06-01T18:17:04.088Z","data":{"id":"v1"},"organization_id":"o"}"#,
    )
    .expect("a valid line");
    let block = vec![
        Line::Valid(event),
        Line::Blank(String::new()),
        Line::Junk(b"x".to_vec()),
    ];
    let layout = Layout {
        crlf: vec![true, false],
        trailing_newline: false,
        copies: usize::MAX,
        distinct_copies: true,
    };
    let exp = build(&block, &layout);
    assert!(exp.bytes.len() > PAR_CHUNK);
    let par = parse_bytes_par("mix", &exp.bytes);
    assert_eq!(par, parse_bytes("mix", &exp.bytes));
    assert_eq!(par.events.len(), exp.events.len());
    assert!(par.events.len() > 1000);
    assert_eq!(par.duplicates, 0);
}
