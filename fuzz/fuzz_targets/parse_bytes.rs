//! The file parser on arbitrary bytes: no panic, every non-blank line becomes exactly one of
//! an event, a duplicate or a reject, rejects keep their line verbatim, and the parallel path
//! agrees with the sequential one.
#![no_main]

use d2d_model::parse::{parse_bytes, parse_bytes_par};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let p = parse_bytes("fuzz", data);
    let lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let non_blank = lines
        .iter()
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .count() as u64;
    assert_eq!(p.lines, non_blank);
    assert_eq!(
        p.lines,
        p.events.len() as u64 + p.duplicates + p.rejects.len() as u64
    );
    for r in &p.rejects {
        let raw = lines[(r.line - 1) as usize];
        assert_eq!(r.raw, raw.strip_suffix(b"\r").unwrap_or(raw));
        assert!(!r.to_string().is_empty());
    }
    assert_eq!(parse_bytes_par("fuzz", data), p);
});
