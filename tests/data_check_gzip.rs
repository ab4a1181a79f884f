//! The data check reads gzip landing files decompressed, as the daily run does, and names a
//! gzip file that does not decode.

// Tests fail loudly on purpose: an unwrap here is an assertion.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use d2d_testkit::{example, TempDir};

fn data_check(args: &[&str]) -> std::process::Output {
    Command::new(example("data_check"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("data_check runs")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    child.wait_with_output().unwrap().stdout
}

#[test]
fn gzip_files_count_as_their_plain_text() {
    let sample = "testdata/landing/data/resources/2019/06/01/15/17/2019-06-01-15-17-4-events.txt";
    let plain = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(sample)).unwrap();
    let tmp = TempDir::new("check-gz");
    let dir = tmp.path();
    std::fs::write(dir.join("2019-06-01-15-17-4-events.txt.gz"), gzip(&plain)).unwrap();
    // gzip's magic bytes under a plain name, and the issue's `-events.gz`.
    std::fs::write(dir.join("2019-06-01-15-17-5-events.txt"), gzip(&plain)).unwrap();
    std::fs::write(dir.join("2019-06-01-15-17-6-events.gz"), gzip(&plain)).unwrap();
    let out = data_check(&["--json", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["files"], 3);
    assert_eq!(v["rejects"], 0, "{v}");
    assert_eq!(v["events"], 101);
    assert_eq!(v["duplicates"], 202);

    std::fs::write(dir.join("2019-06-01-15-17-7-events.txt.gz"), b"not gzip\n").unwrap();
    let out = data_check(&["--json", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("2019-06-01-15-17-7-events.txt.gz") && err.contains("not valid gzip"),
        "{err}"
    );
}
