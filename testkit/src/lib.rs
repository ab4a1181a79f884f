//! Test support shared by the integration tests of the d2d workspace: the facade's (`tests/`)
//! and d2d-pipeline's (`d2d-pipeline/tests/`). Not published; a dev-dependency by path only.
//!
//! What it gives, so that no test file writes its own copy:
//!
//! - [`TestDb`]: a database of its own on a real PostgreSQL server (`DATABASE_URL`, or any
//!   admin URL such as the TLS cluster's), created and dropped through the pipeline's own
//!   connection code;
//! - [`TempDir`]: a temporary folder removed when dropped ([`tempfile`] underneath);
//! - the bundled sample day ([`landing_dir`], [`sample_day`]) and folder trees read in landing
//!   order ([`read_tree`], [`copy_tree`], [`file_paths`]; [`walkdir`] underneath);
//! - S3 on the S3-compatible test server: [`s3_endpoint`], [`unique_tag`] for bucket names,
//!   [`s3_buckets_with`] to create a landing and a lake bucket and upload files;
//! - [`example`]: an example binary built next to the test binary, refused when stale;
//! - the curated zone's Parquet read back: [`parquet_batches`], [`parquet_batches_under`];
//! - [`CurateGate`]: holds a run's curate phase at a known point (debug builds' test gate).
//!
//! Every helper panics with a message on failure: in a test, a failed set-up is a failed test.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use arrow_array::RecordBatch;
use bytes::Bytes;
use d2d_model::landing::landing_order;
use d2d_pipeline::store::Store;
use d2d_pipeline::warehouse::{TableChecksum, Warehouse};
use futures_util::{StreamExt, TryStreamExt};

/// Distinguishes names made in the same process within the same nanosecond.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Nanoseconds of the wall clock, to keep names unique across processes that reuse an id.
fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos()
}

/// `<pid>-<counter>-<nanos>`: unique per call, made of `[0-9-]` (valid in bucket names).
pub fn unique_tag() -> String {
    format!(
        "{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos()
    )
}

/// The admin URL of the test PostgreSQL server, from `DATABASE_URL`.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL").expect(
        "DATABASE_URL must name a PostgreSQL server the tests may create databases on; \
         run `eval \"$(scripts/services start)\"` or scripts/test",
    )
}

/// The S3-compatible test server, from `D2D_S3_ENDPOINT`.
pub fn s3_endpoint() -> String {
    std::env::var("D2D_S3_ENDPOINT").expect(
        "D2D_S3_ENDPOINT must name the S3-compatible test server; \
         run `eval \"$(scripts/services start)\"` or scripts/test",
    )
}

/// A database created for one test on a real server and dropped when the value is (also when
/// the test panics). Set `D2D_KEEP_TEST_DB=1` to keep it for a post-mortem.
pub struct TestDb {
    /// URL of the test database: the admin URL with the database name replaced (its query
    /// string, e.g. `sslmode`, kept).
    pub url: String,
    admin: String,
    name: String,
}

impl TestDb {
    /// A fresh database on the server of `DATABASE_URL`.
    pub async fn create() -> TestDb {
        TestDb::create_on(&database_url(), "db").await
    }

    /// A fresh database on the server of `DATABASE_URL`, `tag` in its name (to find it when
    /// kept).
    pub async fn create_tagged(tag: &str) -> TestDb {
        TestDb::create_on(&database_url(), tag).await
    }

    /// A fresh database on the server of `admin` (any URL the pipeline connects with, TLS
    /// included), named `d2d_test_<tag>_<pid>_<counter>_<nanos>`. `tag` is `[a-z0-9_]`.
    pub async fn create_on(admin: &str, tag: &str) -> TestDb {
        assert!(
            tag.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "a test database tag is [a-z0-9_]: {tag:?}"
        );
        let name = format!(
            "d2d_test_{tag}_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            nanos() % 1_000_000_000
        );
        let wh = Warehouse::connect(admin)
            .await
            .unwrap_or_else(|e| panic!("connect to the test server: {e}"));
        // Our own [a-z0-9_] name: safe to splice (identifiers cannot be bound).
        wh.client()
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("create the test database {name}: {e}"));
        TestDb {
            url: with_dbname(admin, &name),
            admin: admin.to_owned(),
            name,
        }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A connection to the test database.
    pub async fn connect(&self) -> Warehouse {
        Warehouse::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("connect to the test database {}: {e}", self.name))
    }

    /// The checksums of the warehouse's tables (`etl.dwh_checksums()`): equal checksums, same
    /// warehouse.
    pub async fn checksums(&self) -> Vec<TableChecksum> {
        self.connect()
            .await
            .dwh_checksums()
            .await
            .unwrap_or_else(|e| panic!("checksums of {}: {e}", self.name))
    }

    /// Status and error of the latest run in `etl.load_run`.
    pub async fn last_run(&self) -> (String, Option<String>) {
        let row = self
            .connect()
            .await
            .client()
            .query_one(
                "SELECT status, error FROM etl.load_run ORDER BY run_id DESC LIMIT 1",
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("the latest run in {}: {e}", self.name));
        (row.get(0), row.get(1))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::env::var_os("D2D_KEEP_TEST_DB").is_some() {
            eprintln!("keeping test database {}", self.name);
            return;
        }
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot block on itself: use a thread.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let wh = Warehouse::connect(&admin)
                    .await
                    .map_err(|e| e.to_string())?;
                wh.client()
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {dropped:?}", self.name);
        }
    }
}

/// `url` (a `postgres://` URI) with its database name replaced; the query string is kept.
pub fn with_dbname(url: &str, dbname: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    let mut out = format!("{}/{dbname}", &base[..path]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A fresh empty folder under the system's temporary folder, named `d2d-<tag>-…`, removed
/// with its contents when dropped.
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    /// Creates the folder; `tag` shows in its name.
    pub fn new(tag: &str) -> TempDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("d2d-{tag}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("create a temporary folder for {tag}: {e}"));
        TempDir(dir)
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ lies in the repository")
        .to_path_buf()
}

/// The bundled landing folder (717 files of 2019-06-01).
pub fn landing_dir() -> PathBuf {
    repo_root().join("testdata/landing")
}

/// Every file under `dir`, at any depth, sorted by path; links are followed. A missing `dir`
/// panics: a test that expects files there is wrong if there is no folder.
pub fn file_paths(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(dir)
        .follow_links(true)
        .sort_by_file_name()
    {
        let entry = entry.unwrap_or_else(|e| panic!("walk {}: {e}", dir.display()));
        if !entry.file_type().is_dir() {
            out.push(entry.into_path());
        }
    }
    out
}

/// Every file under `dir`, at any depth, as (key relative to `dir` with `/`, bytes), in
/// landing order. Links are followed.
pub fn read_tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = file_paths(dir)
        .into_iter()
        .map(|path| {
            let key = path
                .strip_prefix(dir)
                .expect("walkdir yields paths under its root")
                .components()
                .map(|c| {
                    c.as_os_str()
                        .to_str()
                        .unwrap_or_else(|| panic!("not UTF-8: {}", path.display()))
                })
                .collect::<Vec<_>>()
                .join("/");
            let bytes =
                std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            (key, bytes)
        })
        .collect();
    out.sort_by(|a, b| landing_order(&a.0, &b.0));
    out
}

/// The sample day's files, in landing order.
pub fn sample_day() -> Vec<(String, Vec<u8>)> {
    let files = read_tree(&landing_dir());
    assert_eq!(
        files.len(),
        717,
        "testdata/landing holds the 717 files of 2019-06-01"
    );
    files
}

/// Copies a folder tree (the landing sample) to `to`.
pub fn copy_tree(from: &Path, to: &Path) {
    for (key, bytes) in read_tree(from) {
        let path = to.join(&key);
        let parent = path.parent().expect("a key names a file under `to`");
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

/// Creates the buckets of `landing_url` and `lake_url` (`s3://bucket/prefix` URLs on the
/// S3-compatible test server) and puts `files` (key, bytes) under the landing URL, 16 at a
/// time. Returns the landing store.
pub async fn s3_buckets_with(
    landing_url: &str,
    lake_url: &str,
    files: &[(String, Vec<u8>)],
) -> Store {
    let landing = Store::open(landing_url)
        .await
        .unwrap_or_else(|e| panic!("open {landing_url}: {e}"));
    landing
        .create_if_missing()
        .await
        .unwrap_or_else(|e| panic!("create {landing_url}: {e}"));
    Store::open(lake_url)
        .await
        .unwrap_or_else(|e| panic!("open {lake_url}: {e}"))
        .create_if_missing()
        .await
        .unwrap_or_else(|e| panic!("create {lake_url}: {e}"));
    futures_util::stream::iter(files.iter().map(|(key, bytes)| {
        let landing = landing.clone();
        async move { landing.put(key, Bytes::from(bytes.clone())).await }
    }))
    .buffer_unordered(16)
    .try_collect::<Vec<()>>()
    .await
    .unwrap_or_else(|e| panic!("upload to {landing_url}: {e}"));
    landing
}

/// Runs the fleet generator (`examples/generate_fleet.rs`) with `--out out` and `args`;
/// panics with its standard error when it fails.
pub fn generate_fleet(out: &Path, args: &[&str]) {
    let output = std::process::Command::new(example("generate_fleet"))
        .arg("--out")
        .arg(out)
        .args(args)
        .output()
        .expect("generate_fleet runs");
    assert!(
        output.status.success(),
        "generate_fleet {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The example binary `name`, built next to the test binaries. A plain `cargo test` builds
/// the examples; a targeted `cargo test --test X` does not, so a binary older than its source
/// is refused rather than tested.
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in <profile>/deps");
    let binary = profile_dir.join("examples").join(name);
    let source = repo_root().join(format!("examples/{name}.rs"));
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    assert!(
        modified(&binary) >= modified(&source),
        "{} is missing or older than its source: `cargo build --example {name}` first",
        binary.display()
    );
    binary
}

/// The record batches of the Parquet object `key` of `lake`.
pub async fn parquet_batches(lake: &Store, key: &str) -> Vec<RecordBatch> {
    let bytes = lake
        .get(key)
        .await
        .unwrap_or_else(|e| panic!("reading {key}: {e}"));
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap_or_else(|e| panic!("{key} is not Parquet: {e}"))
        .build()
        .unwrap_or_else(|e| panic!("reading {key}: {e}"))
        .map(|b| b.unwrap_or_else(|e| panic!("a batch of {key}: {e}")))
        .collect()
}

/// The record batches of every Parquet object under `prefix` of `lake` (other objects, such
/// as fingerprint files, are passed over), in listing order.
pub async fn parquet_batches_under(lake: &Store, prefix: &str) -> Vec<RecordBatch> {
    let mut batches = Vec::new();
    let objects = lake
        .list(prefix)
        .await
        .unwrap_or_else(|e| panic!("listing {prefix}: {e}"));
    for o in objects.iter().filter(|o| o.key.ends_with(".parquet")) {
        batches.extend(parquet_batches(lake, &o.key).await);
    }
    batches
}

/// The curate phase's test gate of debug builds (`D2D_TEST_CURATE_GATE=<day>:<path>`): the
/// curate phase of `day` fixes its snapshot, says so, and waits until the gate opens. It is
/// an environment variable: a test that sets one must be the only test of its process.
pub struct CurateGate {
    dir: TempDir,
}

impl CurateGate {
    /// Sets the gate, closed, for the curate phase of landing day `day`.
    pub fn close_on(day: &str) -> CurateGate {
        let dir = TempDir::new("curate-gate");
        std::env::set_var(
            "D2D_TEST_CURATE_GATE",
            format!("{day}:{}", dir.path().join("open").display()),
        );
        CurateGate { dir }
    }

    /// Waits until a run's curate phase has fixed its snapshot and waits at the gate.
    pub async fn reached(&self) {
        let waiting = self.dir.path().join("open.waiting");
        while !waiting.exists() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Lets the waiting run go on.
    pub fn open(&self) {
        std::fs::write(self.dir.path().join("open"), b"").expect("the gate's folder is writable");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn with_dbname_replaces_only_the_database() {
        assert_eq!(
            with_dbname(
                "postgres://u:p@h:1/d2d?sslmode=verify-full&sslrootcert=/a/b.pem",
                "x"
            ),
            "postgres://u:p@h:1/x?sslmode=verify-full&sslrootcert=/a/b.pem"
        );
        assert_eq!(
            with_dbname("postgres://u@h/d2d?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(with_dbname("postgres://u@h", "x"), "postgres://u@h/x");
    }

    #[test]
    fn read_tree_gives_slash_keys_in_landing_order_and_temp_dirs_go_away() {
        let tmp = TempDir::new("testkit");
        let kept = tmp.path().to_path_buf();
        for (key, body) in [("a/b/f-10", "x"), ("a/b/f-9", "y"), ("c", "z")] {
            let path = kept.join(key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, body).unwrap();
        }
        let copy = TempDir::new("testkit-copy");
        copy_tree(&kept, copy.path());
        let tree = read_tree(copy.path());
        let mut expected = vec![
            ("a/b/f-10".to_owned(), b"x".to_vec()),
            ("a/b/f-9".to_owned(), b"y".to_vec()),
            ("c".to_owned(), b"z".to_vec()),
        ];
        expected.sort_by(|a, b| landing_order(&a.0, &b.0));
        assert_eq!(tree, expected);
        drop(tmp);
        assert!(!kept.exists());
    }
}
