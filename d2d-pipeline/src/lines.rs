//! A landing object's lines in bounded pieces, whatever its size and the length of its lines.
//!
//! The daily load reads a file larger than its batch budget through [`Pieces`]: pieces of
//! whole lines of about a target size, which the parser takes one at a time
//! ([`d2d_model::parse::parse_piece`]), and, for a line longer than
//! [`MAX_LINE_BYTES`], a [`LongLine`]: read past without being held, refused as
//! `line_too_long` with its first [`KEPT_BYTES`], its length and its SHA-256, as the parser
//! refuses such a line when it has it whole. Memory is then the target plus one line of at
//! most [`MAX_LINE_BYTES`], not the file.

use std::io::{self, Read};

use d2d_model::parse::MAX_LINE_BYTES;
use d2d_model::reject::RejectReason;
use sha2::{Digest, Sha256};

/// Bytes of a refused line kept in `etl.reject.raw` and in the quarantine's `raw` (4 KiB).
pub const KEPT_BYTES: usize = 4096;

/// Bytes asked of the reader at a time.
const READ_BYTES: usize = 64 * 1024;

/// A line longer than [`MAX_LINE_BYTES`], read past: what the warehouse and the quarantine keep
/// of any refused line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LongLine {
    /// 1-based line number.
    pub line: u64,
    /// The line's first [`KEPT_BYTES`] bytes.
    pub prefix: Vec<u8>,
    /// The line's length in bytes, without its line end (`\n` or `\r\n`).
    pub length: u64,
    /// The SHA-256 of those bytes.
    pub sha256: [u8; 32],
}

impl LongLine {
    /// Why it is refused: what the parser says of such a line when it has it whole.
    pub fn reason(&self) -> RejectReason {
        RejectReason::LineTooLong {
            length: self.length,
        }
    }

    /// What is kept of it, as `lake::raw_line` gives it of a line held whole: prefix, length
    /// and SHA-256.
    pub fn kept(&self) -> (&[u8], u64, [u8; 32]) {
        (&self.prefix, self.length, self.sha256)
    }
}

/// What [`Pieces::next_piece`] reads.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// Whole lines, each with its `\n` (the input's last line may lack it); the first is line
    /// `first_line + 1` of the input.
    Lines {
        /// The bytes.
        bytes: Vec<u8>,
        /// Lines before them.
        first_line: u64,
    },
    /// A line longer than [`MAX_LINE_BYTES`].
    Long(LongLine),
}

/// Splits a reader's bytes into [`Piece`]s of about `target` bytes.
pub struct Pieces<R> {
    reader: R,
    target: usize,
    /// Bytes read and not yet handed out; they start at a line start.
    buf: Vec<u8>,
    /// How far `buf` has been searched for a line end, and the last one found.
    searched: usize,
    last_end: Option<usize>,
    lines_before: u64,
    eof: bool,
    /// The largest `buf` held, for tests of the memory bound.
    #[cfg(test)]
    peak: usize,
}

impl<R: Read> Pieces<R> {
    /// Pieces of about `target` bytes (at least one line each) read from `reader`.
    pub fn new(reader: R, target: usize) -> Self {
        Self {
            reader,
            target: target.max(1),
            buf: Vec::new(),
            searched: 0,
            last_end: None,
            lines_before: 0,
            eof: false,
            #[cfg(test)]
            peak: 0,
        }
    }

    /// The next piece, or `None` at the end of the input.
    pub fn next_piece(&mut self) -> io::Result<Option<Piece>> {
        // A line is too long once its bytes pass the limit by more than a `\r`, which the
        // parser does not count as the line's.
        const TOO_LONG: usize = MAX_LINE_BYTES + 1;
        loop {
            self.search();
            let unterminated = self.buf.len() - self.last_end.map_or(0, |i| i + 1);
            match self.last_end {
                None if self.buf.len() > TOO_LONG => {
                    if let Some(long) = self.read_past_line()? {
                        return Ok(Some(Piece::Long(long)));
                    }
                }
                // The lines before a last line too long to pass on.
                Some(i) if self.eof && unterminated > TOO_LONG => {
                    return Ok(Some(self.take(i + 1)))
                }
                Some(i) if self.buf.len() >= self.target => return Ok(Some(self.take(i + 1))),
                _ if self.eof => {
                    return Ok((!self.buf.is_empty()).then(|| self.take(self.buf.len())))
                }
                _ => self.fill()?,
            }
        }
    }

    /// Finds the last line end in the bytes not searched yet.
    fn search(&mut self) {
        if let Some(i) = memchr::memrchr(b'\n', &self.buf[self.searched..]) {
            self.last_end = Some(self.searched + i);
        }
        self.searched = self.buf.len();
    }

    /// Hands out `buf[..end]` as lines.
    fn take(&mut self, end: usize) -> Piece {
        let rest = self.buf.split_off(end);
        let bytes = std::mem::replace(&mut self.buf, rest);
        let first_line = self.lines_before;
        self.lines_before += memchr::memchr_iter(b'\n', &bytes).count() as u64;
        // Whatever follows the last line end holds none.
        self.searched = 0;
        self.last_end = None;
        Piece::Lines { bytes, first_line }
    }

    /// Reads more of the input into `buf`: [`READ_BYTES`], or what is left.
    fn fill(&mut self) -> io::Result<()> {
        let n = read_block(&mut self.reader, &mut self.buf)?;
        #[cfg(test)]
        {
            self.peak = self.peak.max(self.buf.capacity());
        }
        self.eof = n < READ_BYTES;
        Ok(())
    }

    /// `buf` is the start of one line, longer than [`MAX_LINE_BYTES`] and without its end:
    /// reads on to its end, keeping its prefix, length and SHA-256. `None` for a line of
    /// whitespace only, which is blank and skipped, as the parser skips it.
    fn read_past_line(&mut self) -> io::Result<Option<LongLine>> {
        let line = self.lines_before + 1;
        let prefix = self.buf[..KEPT_BYTES].to_vec();
        let mut hash = HeldBack::new();
        hash.add(&self.buf);
        let mut block = Vec::with_capacity(READ_BYTES);
        let rest = loop {
            block.clear();
            let n = read_block(&mut self.reader, &mut block)?;
            self.eof = n < READ_BYTES;
            match memchr::memchr(b'\n', &block) {
                Some(i) => {
                    hash.add(&block[..i]);
                    self.lines_before += 1;
                    break block.split_off(i + 1);
                }
                None if self.eof => {
                    hash.add(&block);
                    break Vec::new();
                }
                None => hash.add(&block),
            }
        };
        self.buf = rest;
        self.searched = 0;
        self.last_end = None;
        let (length, sha256, blank) = hash.finish();
        Ok((!blank).then_some(LongLine {
            line,
            prefix,
            length,
            sha256,
        }))
    }
}

/// Appends up to [`READ_BYTES`] of `reader` to `buf`; fewer only at the end of the input.
fn read_block(reader: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<usize> {
    reader.take(READ_BYTES as u64).read_to_end(buf)
}

/// Hashes a line fed in parts, holding back its last byte: a `\r` before the `\n` is not part
/// of the line, as for the parser.
struct HeldBack {
    hasher: Sha256,
    length: u64,
    last: Option<u8>,
    blank: bool,
}

impl HeldBack {
    fn new() -> Self {
        Self {
            hasher: Sha256::new(),
            length: 0,
            last: None,
            blank: true,
        }
    }

    fn add(&mut self, bytes: &[u8]) {
        let Some((&last, head)) = bytes.split_last() else {
            return;
        };
        if let Some(held) = self.last.take() {
            self.hasher.update([held]);
            self.length += 1;
        }
        self.hasher.update(head);
        self.length += head.len() as u64;
        self.blank &= bytes.iter().all(u8::is_ascii_whitespace);
        self.last = Some(last);
    }

    /// Length, SHA-256 and whether the line is whitespace only.
    fn finish(mut self) -> (u64, [u8; 32], bool) {
        if let Some(held) = self.last.take().filter(|&b| b != b'\r') {
            self.hasher.update([held]);
            self.length += 1;
        }
        (self.length, self.hasher.finalize().into(), self.blank)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use d2d_model::parse::{parse_bytes, parse_piece, Parsed};
    use d2d_model::reject::Reject;

    /// A reader handing out at most `step` bytes a call, to cut lines anywhere.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.step).min(self.bytes.len());
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    fn pieces(input: &[u8], target: usize, step: usize) -> Vec<Piece> {
        let mut p = Pieces::new(Trickle { bytes: input, step }, target);
        std::iter::from_fn(|| p.next_piece().unwrap()).collect()
    }

    /// What the warehouse keeps of a refused line.
    fn kept(r: &Reject) -> LongLine {
        LongLine {
            line: r.line,
            prefix: r.raw[..r.raw.len().min(KEPT_BYTES)].to_vec(),
            length: r.raw.len() as u64,
            sha256: Sha256::digest(&r.raw).into(),
        }
    }

    /// What the whole-buffer parser makes of `input`, rejects reduced to what is kept.
    fn whole(input: &[u8]) -> (Parsed, Vec<LongLine>) {
        let parsed = parse_bytes("f", input);
        let kept = parsed.rejects.iter().map(kept).collect();
        (parsed, kept)
    }

    /// The same through pieces: pieces parsed one by one and merged, long lines as rejects.
    fn pieced(input: &[u8], target: usize, step: usize) -> (Parsed, Vec<LongLine>) {
        let mut parts = Vec::new();
        let mut long = Vec::new();
        for piece in pieces(input, target, step) {
            match piece {
                Piece::Lines { bytes, first_line } => {
                    assert!(bytes.len() <= target.max(MAX_LINE_BYTES) + READ_BYTES);
                    parts.push(parse_piece("f", &bytes, first_line));
                }
                Piece::Long(l) => long.push(l),
            }
        }
        let mut parsed = Parsed::merge(parts);
        let mut kept: Vec<_> = parsed.rejects.iter().map(kept).collect();
        parsed.lines += long.len() as u64;
        kept.extend(long);
        kept.sort_by_key(|k| k.line);
        parsed.rejects.clear();
        (parsed, kept)
    }

    const EVENT: &str = r#"{"event":"update","on":"vehicle","at":"2019-06-01T18:17:10.101Z","data":{"id":"v1","location":{"lat":52.45,"lng":13.4,"at":"2019-06-01T18:17:10.101Z"}},"organization_id":"o"}"#;

    fn sample() -> Vec<u8> {
        let mut input = Vec::new();
        for i in 0..4000 {
            input.extend_from_slice(
                EVENT
                    .replace("10.101Z", &format!("10.{:03}Z", i % 700))
                    .as_bytes(),
            );
            input.extend_from_slice(if i % 3 == 0 { b"\r\n" } else { b"\n" });
            match i {
                100 => input.extend_from_slice(&vec![b'a'; MAX_LINE_BYTES + 1]),
                200 => input.extend_from_slice(&vec![b' '; MAX_LINE_BYTES + 3]),
                300 => {
                    input.extend_from_slice(&vec![b'x'; MAX_LINE_BYTES + READ_BYTES + 5]);
                    input.push(b'\r');
                }
                400 => input.extend_from_slice(&vec![b'y'; MAX_LINE_BYTES]),
                // At the limit but for its \r: read, not refused.
                500 => {
                    input.extend_from_slice(EVENT.as_bytes());
                    input.extend_from_slice(&vec![b' '; MAX_LINE_BYTES - EVENT.len()]);
                    input.push(b'\r');
                }
                _ => {}
            }
            if (100..=500).contains(&i) && i % 100 == 0 {
                input.push(b'\n');
            }
            if i % 501 == 0 {
                input.extend_from_slice(b"garbage\n\n");
            }
        }
        input
    }

    #[test]
    fn pieces_give_what_the_whole_buffer_gives() {
        let input = sample();
        let (mut expected, expected_kept) = whole(&input);
        expected.rejects.clear();
        for (target, step) in [
            (1, 7),
            (1000, 4096),
            (64 * 1024, 100_000),
            (8 << 20, 1 << 20),
        ] {
            let (got, kept) = pieced(&input, target, step);
            assert_eq!(got, expected, "target {target}, step {step}");
            assert_eq!(kept, expected_kept, "target {target}, step {step}");
        }
        // Three lines beyond the limit: 'a's, 'x's (its \r not counted), none of whitespace.
        let lengths: Vec<u64> = expected_kept.iter().map(|k| k.length).collect();
        assert!(lengths.contains(&(MAX_LINE_BYTES as u64 + 1)));
        assert!(lengths.contains(&((MAX_LINE_BYTES + READ_BYTES + 5) as u64)));
    }

    #[test]
    fn a_last_line_without_its_end_is_read_too() {
        for tail in [
            b"{".to_vec(),
            vec![b'z'; MAX_LINE_BYTES + 10],
            vec![b'\t'; MAX_LINE_BYTES + 10],
        ] {
            let mut input = format!("{EVENT}\n").into_bytes();
            input.extend_from_slice(&tail);
            let (mut expected, expected_kept) = whole(&input);
            expected.rejects.clear();
            for (target, step) in [(1, 3), (1 << 20, 1 << 16)] {
                assert_eq!(
                    pieced(&input, target, step),
                    (expected.clone(), expected_kept.clone())
                );
            }
        }
        assert!(pieces(b"", 10, 10).is_empty());
    }

    #[test]
    fn a_line_at_the_limit_with_its_cr_cut_from_its_lf_is_read() {
        // Reads are 64 KiB from the start: a first line of 65,535 bytes puts the next line's
        // \n at a read's start, so its \r ends the bytes read before it.
        let mut input = vec![b'x'; READ_BYTES - 2];
        input.push(b'\n');
        input.extend_from_slice(EVENT.as_bytes());
        input.extend_from_slice(&vec![b' '; MAX_LINE_BYTES - EVENT.len()]);
        input.extend_from_slice(b"\r\n");
        assert_eq!((input.len() - 1) % READ_BYTES, 0);
        let (mut expected, expected_kept) = whole(&input);
        expected.rejects.clear();
        assert_eq!(
            expected.events.len(),
            1,
            "the parser reads a line at the limit"
        );
        assert_eq!(pieced(&input, 1, READ_BYTES), (expected, expected_kept));
    }

    #[test]
    fn memory_holds_a_piece_not_a_long_line() {
        // A 64 MiB line never sits in one buffer: the pieces stay near their target.
        struct Endless(u64);
        impl Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = (buf.len() as u64).min(self.0) as usize;
                buf[..n].fill(b'q');
                self.0 -= n as u64;
                Ok(n)
            }
        }
        let mut p = Pieces::new(Endless(64 << 20), 1 << 16);
        let Some(Piece::Long(l)) = p.next_piece().unwrap() else {
            panic!("a long line")
        };
        assert_eq!(
            (l.line, l.length, l.prefix.len()),
            (1, 64 << 20, KEPT_BYTES)
        );
        assert!(p.peak <= 2 * (MAX_LINE_BYTES + READ_BYTES), "{}", p.peak);
        assert_eq!(p.next_piece().unwrap(), None);
    }
}
