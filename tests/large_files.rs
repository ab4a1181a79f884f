//! A landing file larger than the loader's memory, holding a line longer than any the parser
//! reads: `daily_load` reads both in bounded pieces. Its peak resident memory (`VmHWM`, read
//! from `/proc` while it runs) stays far below the file's size, and the day loads exactly as a
//! parse of the whole file says: same lines, events, duplicates (repeats across the pieces
//! included) and rejects, the long line kept as its first 4 KiB, length and SHA-256.

// Tests fail loudly on purpose: an unwrap here is an assertion.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use d2d_testkit::{example, TempDir, TestDb};
use sha2::{Digest, Sha256};

/// The long line: 128 MiB, far beyond the parser's 1 MiB.
const LONG: usize = 128 << 20;

/// Fixes in the file: about 190 bytes each, so the file is about 240 MiB with the long line.
const FIXES: usize = 600_000;

/// A fix of vehicle `i % 997` at second `i`: every one distinct.
fn fix(i: usize) -> String {
    let (s, v) = (i % 86_400, i % 997);
    format!(
        r#"{{"event":"update","on":"vehicle","at":"2019-06-01T{:02}:{:02}:{:02}Z","data":{{"id":"v{v}","location":{{"lat":52.{i:06},"lng":13.4,"at":"2019-06-01T{:02}:{:02}:{:02}Z"}}}},"organization_id":"org"}}"#,
        s / 3600,
        s / 60 % 60,
        s % 60,
        s / 3600,
        s / 60 % 60,
        s % 60,
    )
}

/// Writes the day's one landing file, returning its size and the long line's SHA-256.
fn write_landing(path: &Path) -> (u64, [u8; 32]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..FIXES / 2 {
        writeln!(out, "{}", fix(i)).unwrap();
    }
    // Line FIXES / 2 + 1: an unterminated string of 128 MiB.
    let mut long = b"{\"event\":\"".to_vec();
    long.resize(LONG, b'b');
    out.write_all(&long).unwrap();
    out.write_all(b"\r\n").unwrap();
    for i in FIXES / 2..FIXES {
        writeln!(out, "{}", fix(i)).unwrap();
    }
    // Repeats of lines far back, in other pieces: duplicates the merge must drop.
    for i in (0..FIXES).step_by(1000) {
        writeln!(out, "{}", fix(i)).unwrap();
    }
    out.flush().unwrap();
    drop(out);
    (
        std::fs::metadata(path).unwrap().len(),
        Sha256::digest(&long).into(),
    )
}

/// The `VmHWM` of process `pid`, in bytes, or `None` once it has exited.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[tokio::test]
async fn a_file_larger_than_memory_and_a_line_larger_than_a_piece_load_in_bounded_memory() {
    let db = TestDb::create_tagged("large").await;
    let tmp = TempDir::new("large");
    let (landing, lake) = (tmp.path().join("landing"), tmp.path().join("lake"));
    let key = "data/2019-06-01-9-0-0-events.txt";
    let (size, long_sha) = write_landing(&landing.join(key));

    let out = Command::new(example("setup_warehouse"))
        .args(["--database-url", &db.url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut child = Command::new(example("daily_load"))
        .args(["--date", "2019-06-01", "--output", "json"])
        .args(["--landing", landing.to_str().unwrap()])
        .args(["--lake", lake.to_str().unwrap()])
        .env("DATABASE_URL", &db.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The high-water mark only grows: the last one read before the process exits is its
    // peak, unless the peak came in its last few milliseconds (they are the run's
    // cleanup, after the load's buffers are gone).
    let pid = child.id();
    let mut peak = 0;
    let status = loop {
        if let Some(p) = peak_rss(pid) {
            peak = peak.max(p);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = child.wait_with_output().unwrap();
    assert!(status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(peak > 0, "VmHWM was read");
    eprintln!(
        "peak RSS {} MiB for a file of {} MiB",
        peak >> 20,
        size >> 20
    );
    // Whole, the file alone would be 240 MiB, and its parse more.
    assert!(
        peak < size / 2,
        "peak RSS {} MiB for a file of {} MiB",
        peak >> 20,
        size >> 20
    );

    let wh = db.connect().await;
    let client = wh.client();
    let run = client
        .query_one(
            "SELECT files, lines, events, duplicates, rejects FROM etl.load_run
              WHERE status = 'succeeded'",
            &[],
        )
        .await
        .unwrap();
    let repeats = FIXES.div_ceil(1000) as i64;
    let counts: Vec<i64> = (0..5).map(|i| run.get(i)).collect();
    assert_eq!(
        counts,
        [1, FIXES as i64 + 1 + repeats, FIXES as i64, repeats, 1]
    );
    let facts: i64 = client
        .query_one("SELECT count(*) FROM dwh.fact_vehicle_event", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(facts, FIXES as i64);
    let reject = client
        .query_one(
            "SELECT line, code, octet_length(raw), raw_length, raw_sha256 FROM etl.reject",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(reject.get::<_, i64>(0) as usize, FIXES / 2 + 1);
    assert_eq!(reject.get::<_, String>(1), "line_too_long");
    assert_eq!(reject.get::<_, i32>(2), 4096);
    assert_eq!(reject.get::<_, Option<i64>>(3), Some(LONG as i64));
    assert_eq!(
        reject.get::<_, Option<String>>(4),
        Some(hex::encode(long_sha))
    );
}
