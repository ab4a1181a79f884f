//! Object stores: an S3 bucket (through `aws-sdk-s3`) or a local folder, behind one type,
//! [`Store`].
//!
//! Everything above this module (the lake, the daily run, the examples) works on `Store` and
//! never asks which backend it has. A store is opened from a URL:
//!
//! | URL | backend |
//! |---|---|
//! | `s3://bucket` or `s3://bucket/some/prefix` | S3; region and credentials from the standard AWS chain; endpoint override from [`StoreOptions::s3_endpoint`] (or `D2D_S3_ENDPOINT`), with path-style addressing when set |
//! | `file:///abs/dir` | local folder (no percent-decoding) |
//! | `./dir`, `dir`, `/abs/dir` | local folder: the embedded default |
//!
//! **Keys** are always relative to the store's prefix or root and use `/`: `data/2019-06-01-9-5-0-events.json`.
//! A key must be non-empty, relative, and made of non-empty segments other than `.` and `..`
//! (and without `\` or NUL); the local store refuses anything else with
//! [`Error::InvalidKey`], so no key can name a file outside its root. S3 keys are literal, so
//! the S3 store only refuses an empty key.
//!
//! Semantics shared by both backends: `list` is recursive, sorted by key, and matches a plain
//! string prefix (`data/2019-06-01-` lists flat files of one day); `put` replaces an object
//! atomically (readers never see half an object); `delete` of a missing object succeeds;
//! `get` of a missing object is [`Error::NotFound`]; `head` of one is `None`.
//!
//! **A local store never leaves its folder.** A symbolic link that leads out of the root (or
//! nowhere) is not an object: listings leave it out ([`Store::list_checked`] reports it),
//! `head` says `None` and `get` refuses it with [`Error::InvalidKey`]. Writes and deletions
//! refuse a key whose folders pass through a symbolic link, so a link planted in the lake
//! cannot redirect a write elsewhere. Links to files inside the root are followed.
//! Temporary files of interrupted writes (`.d2d-tmp-<pid>-<n>`) are never listed, and
//! [`Store::remove_stale_temporaries`] deletes those of writers that are gone.

mod local;
pub(crate) mod s3;

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::{Error, Result};
use local::LocalStore;
use s3::S3Store;

/// What a listing or `head` says about one object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectMeta {
    /// Key relative to the store's prefix or root, `/`-separated.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// An opaque version tag that changes when the object is rewritten: S3's ETag (without
    /// quotes), or for a local file its modification time and size. Only compare it with
    /// tags from the same store.
    pub etag: Option<String>,
}

/// An entry a listing met that is not an object of the store, and why: a local symbolic
/// link leading out of the store's folder, or nowhere. S3 listings have none.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Unlisted {
    /// The key it would have had.
    pub key: String,
    /// A short stable code: `link_outside` (a link leading out of the store's folder) or
    /// `not_a_file` (a broken link, a link to a folder, a FIFO, ...).
    pub code: &'static str,
    /// Why it is not an object, e.g. `a symbolic link leads out of the store's folder`.
    pub reason: &'static str,
}

/// A listing with the entries it left out ([`Store::list_checked`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The objects, sorted by key (what [`Store::list`] returns).
    pub objects: Vec<ObjectMeta>,
    /// Entries under the prefix that are not objects, sorted by key.
    pub unlisted: Vec<Unlisted>,
}

/// A streaming read of one object.
pub type ObjectReader = Pin<Box<dyn AsyncRead + Send>>;

/// How [`Store::copy_from`] moved the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMethod {
    /// Inside the service: S3 `CopyObject` (same endpoint, region and credentials) or a
    /// file copy between two local folders. The bytes did not pass through this process.
    ServerSide,
    /// Read from the source, then written to the destination.
    GetPut,
}

/// Settings for opening stores; [`StoreOptions::from_env`] reads them from the environment.
///
/// **Bounded waits.** Every S3 request gives up on an endpoint that does not answer: each
/// attempt waits at most [`s3_connect_timeout`](Self::s3_connect_timeout) for the connection
/// and [`s3_read_timeout`](Self::s3_read_timeout) for the response, and a response body that
/// stops flowing for the read timeout fails too; failed attempts are retried
/// [`s3_max_attempts`](Self::s3_max_attempts) times in all, each retry logged as a warning
/// (`retrying S3 request`, naming the endpoint, operation, attempt and cause). With the
/// defaults (3 s, 8 s, 5 attempts) a request fails after at most
/// [`StoreOptions::unanswered_bound`] = 56.5 s, and the error names the endpoint, the
/// operation and the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Endpoint of an S3-compatible server (`http://127.0.0.1:59100`). When set, requests use
    /// path-style addressing (`endpoint/bucket/key`), which such servers need.
    pub s3_endpoint: Option<String>,
    /// Total attempts per S3 request, first try included (the SDK's *standard* retry mode:
    /// timeouts, connection errors, 5xx and throttling responses are retried with exponential
    /// backoff and full jitter, between 100 ms and 20 s; a GET whose body breaks off is asked
    /// again the same way). `1` disables retries.
    pub s3_max_attempts: u32,
    /// Fail an S3 connection attempt after this long (then retried as above). Default 3 s.
    pub s3_connect_timeout: Duration,
    /// Fail an S3 attempt when the server has not answered this long after the request was
    /// sent, or when a response body sends nothing for this long (then retried). An upload
    /// gets one extra second per MiB of its body, so a large object at a slow but steady pace
    /// is not cut off. Default 8 s.
    pub s3_read_timeout: Duration,
}

/// Retries back off exponentially from this...
pub(crate) const S3_INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// ...up to this.
pub(crate) const S3_MAX_BACKOFF: Duration = Duration::from_secs(20);

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            s3_endpoint: None,
            s3_max_attempts: 5,
            s3_connect_timeout: Duration::from_secs(3),
            s3_read_timeout: Duration::from_secs(8),
        }
    }
}

impl StoreOptions {
    /// Defaults, with [`StoreOptions::s3_endpoint`] from `D2D_S3_ENDPOINT` when it is set and
    /// not empty.
    pub fn from_env() -> Self {
        Self {
            s3_endpoint: std::env::var("D2D_S3_ENDPOINT")
                .ok()
                .filter(|s| !s.trim().is_empty()),
            ..Self::default()
        }
    }

    /// The longest an S3 request (other than an upload) can wait on an endpoint that accepts
    /// connections slowly or never answers before it fails: every attempt spending its whole
    /// connect and read timeouts, plus the longest backoffs between them.
    pub fn unanswered_bound(&self) -> Duration {
        let attempts = self.s3_max_attempts.max(1);
        let per_attempt = self.s3_connect_timeout + self.s3_read_timeout;
        per_attempt * attempts + (1..attempts).map(backoff).sum::<Duration>()
    }
}

/// The longest wait before retry number `retry` (1 for the first retry): exponential from
/// [`S3_INITIAL_BACKOFF`], capped at [`S3_MAX_BACKOFF`]. The SDK waits a random share of it.
pub(crate) fn backoff(retry: u32) -> Duration {
    let factor = 2u32.saturating_pow(retry.saturating_sub(1));
    S3_INITIAL_BACKOFF
        .saturating_mul(factor)
        .min(S3_MAX_BACKOFF)
}

/// An object store: an S3 bucket and prefix, or a local folder. Cheap to clone (shared).
#[derive(Clone)]
pub struct Store {
    backend: Arc<Backend>,
}

enum Backend {
    Local(LocalStore),
    S3(S3Store),
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Store").field(&self.url()).finish()
    }
}

impl Store {
    /// Opens the store named by `url` (see the module docs), with [`StoreOptions::from_env`].
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(url, &StoreOptions::from_env()).await
    }

    /// Opens the store named by `url` with explicit options.
    pub async fn open_with(url: &str, options: &StoreOptions) -> Result<Self> {
        // Messages quote the URL, and they end up in logs, alerts and `etl.load_run`: never
        // with a password someone put in it.
        let shown = crate::alert::redact(url, &[]);
        let backend = if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::Config(format!("{shown}: S3 URL without a bucket")));
            }
            if bucket.contains('@') {
                return Err(Error::Config(format!(
                    "{shown}: credentials do not belong in an S3 URL; they come from the AWS credential chain (AWS_ACCESS_KEY_ID, a profile, a role)"
                )));
            }
            // S3's bucket naming rules, checked here so that a typo fails before any request.
            let valid = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-'
                })
                && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
                && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
            if !valid {
                return Err(Error::Config(format!(
                    "{shown}: {bucket:?} is not an S3 bucket name (3 to 63 of a-z, 0-9, '.', '-', starting and ending with a letter or digit)"
                )));
            }
            Backend::S3(S3Store::open(bucket, prefix, options).await?)
        } else if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(Error::Config(format!(
                    "{shown}: a file:// URL needs an absolute path (file:///abs/dir)"
                )));
            }
            Backend::Local(LocalStore::new(path))
        } else if url.contains("://") {
            return Err(Error::Config(format!(
                "{shown}: unsupported store URL (use s3://bucket/prefix, file:///dir or a folder path)"
            )));
        } else if url.is_empty() {
            return Err(Error::Config("empty store URL".into()));
        } else {
            Backend::Local(LocalStore::new(url))
        };
        Ok(Self {
            backend: Arc::new(backend),
        })
    }

    /// A local-folder store rooted at `dir` (which need not exist yet: `put` creates it).
    pub fn local(dir: impl Into<std::path::PathBuf>) -> Self {
        Self {
            backend: Arc::new(Backend::Local(LocalStore::new(dir))),
        }
    }

    /// The URL this store was opened with, normalised (`s3://bucket/prefix/`, or the folder
    /// path). Every error names it.
    pub fn url(&self) -> &str {
        match &*self.backend {
            Backend::Local(s) => s.url(),
            Backend::S3(s) => s.url(),
        }
    }

    /// Is this an S3 store?
    pub fn is_s3(&self) -> bool {
        matches!(&*self.backend, Backend::S3(_))
    }

    /// Every object whose key starts with `prefix` (`""` for all), recursively, sorted by key.
    /// S3 listings are paginated (1,000 keys a page) and followed to the end.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        Ok(self.list_checked(prefix).await?.objects)
    }

    /// [`Store::list`], with the entries it left out and why (see the module docs): a landing
    /// run reports a link leading out of the landing folder instead of ignoring it.
    pub async fn list_checked(&self, prefix: &str) -> Result<Listing> {
        let mut listing = match &*self.backend {
            Backend::Local(s) => s.list(prefix).await?,
            Backend::S3(s) => Listing {
                objects: s.list(prefix).await?,
                unlisted: Vec::new(),
            },
        };
        listing.objects.sort_by(|a, b| a.key.cmp(&b.key));
        listing.unlisted.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(listing)
    }

    /// Deletes the temporary files that interrupted writes left under `prefix` (a killed
    /// process never renames its `.d2d-tmp-<pid>-<n>` file into place), and returns how many.
    /// Only those of writers that are gone: last modified before `written_before` (a live
    /// writer keeps touching its file until it renames it) and, where `/proc` shows processes,
    /// of a process id that no longer runs on this machine. S3 puts leave no temporary
    /// objects: nothing to do there.
    pub async fn remove_stale_temporaries(
        &self,
        prefix: &str,
        written_before: std::time::SystemTime,
    ) -> Result<u64> {
        match &*self.backend {
            Backend::Local(s) => s.remove_stale_temporaries(prefix, written_before).await,
            Backend::S3(_) => Ok(0),
        }
    }

    /// The whole object in memory. Use [`Store::get_reader`] for objects of unbounded size.
    pub async fn get(&self, key: &str) -> Result<Bytes> {
        match &*self.backend {
            Backend::Local(s) => s.get(key).await,
            Backend::S3(s) => s.get(key).await,
        }
    }

    /// A streaming read of the object: memory stays bounded whatever its size. Errors in the
    /// middle of the stream are `std::io::Error`s (the S3 body is not retried mid-stream).
    pub async fn get_reader(&self, key: &str) -> Result<ObjectReader> {
        match &*self.backend {
            Backend::Local(s) => s.get_reader(key).await,
            Backend::S3(s) => s.get_reader(key).await,
        }
    }

    /// Writes `bytes` at `key`, replacing any object there. Atomic: a reader sees the old
    /// object or the new one, never part of one (local: temporary file, flushed, renamed; S3:
    /// a single `PutObject`, so at most 5 GB).
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<()> {
        match &*self.backend {
            Backend::Local(s) => s.put(key, bytes).await,
            Backend::S3(s) => s.put(key, bytes).await,
        }
    }

    /// Writes the local file `path` at `key`, streaming it (memory stays bounded whatever its
    /// size), with the same atomicity as [`Store::put`].
    pub async fn put_file(&self, key: &str, path: &std::path::Path) -> Result<()> {
        match &*self.backend {
            Backend::Local(s) => s.put_file(key, path).await,
            Backend::S3(s) => s.put_file(key, path).await,
        }
    }

    /// Size and version tag of the object, `None` if there is none.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        match &*self.backend {
            Backend::Local(s) => s.head(key).await,
            Backend::S3(s) => s.head(key).await,
        }
    }

    /// Deletes the object; deleting a missing object succeeds (as in S3). The local store
    /// also removes folders the deletion left empty, up to its root.
    pub async fn delete(&self, key: &str) -> Result<()> {
        match &*self.backend {
            Backend::Local(s) => s.delete(key).await,
            Backend::S3(s) => s.delete(key).await,
        }
    }

    /// Copies `src_key` of `src` to `dst_key` of this store, replacing any object there.
    /// Server-side when both are on the same S3 service (same endpoint, region and access
    /// key: one `CopyObject`, at most 5 GB) or both are local folders; otherwise the object
    /// is read into memory and written.
    pub async fn copy_from(&self, src: &Store, src_key: &str, dst_key: &str) -> Result<CopyMethod> {
        match (&*src.backend, &*self.backend) {
            (Backend::S3(from), Backend::S3(to)) if from.same_service(to) => {
                to.copy_from(from, src_key, dst_key).await?;
                Ok(CopyMethod::ServerSide)
            }
            (Backend::Local(from), Backend::Local(to)) => {
                to.copy_from(from, src_key, dst_key).await?;
                Ok(CopyMethod::ServerSide)
            }
            _ => {
                let bytes = src.get(src_key).await?;
                self.put(dst_key, bytes).await?;
                Ok(CopyMethod::GetPut)
            }
        }
    }

    /// Would [`Store::copy_from`] copy from `src` to this store without the bytes passing
    /// through this process?
    pub fn copies_server_side_from(&self, src: &Store) -> bool {
        match (&*src.backend, &*self.backend) {
            (Backend::S3(from), Backend::S3(to)) => from.same_service(to),
            (Backend::Local(_), Backend::Local(_)) => true,
            _ => false,
        }
    }

    /// Size and SHA-256 of the object, computed from a streaming read (bounded memory).
    pub async fn sha256(&self, key: &str) -> Result<(u64, [u8; 32])> {
        let (size, sha, _) = self.copy_to(key, tokio::io::sink()).await?;
        Ok((size, sha))
    }

    /// Streams the object into `out` in pieces (bounded memory), hashing it on the way: its
    /// size, SHA-256, and `out`. Errors writing `out` are returned as they are, for the caller
    /// to name what `out` is.
    pub async fn copy_to<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        key: &str,
        mut out: W,
    ) -> Result<(u64, [u8; 32], std::result::Result<W, std::io::Error>)> {
        use tokio::io::AsyncWriteExt;
        let mut reader = self.get_reader(key).await?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = reader.read(&mut buf).await.map_err(|source| Error::Io {
                url: self.url().to_owned(),
                key: key.to_owned(),
                op: "read",
                source,
            })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
            if let Err(e) = out.write_all(&buf[..n]).await {
                return Ok((size, hasher.finalize().into(), Err(e)));
            }
        }
        let written = out.flush().await.map(|()| out);
        Ok((size, hasher.finalize().into(), written))
    }

    /// Size, version tag and SHA-256 of the object as the storage service recorded them when
    /// it was written, without reading the object: S3 keeps the SHA-256 that [`Store::put`]
    /// sends and that a server-side [`Store::copy_from`] asks S3 to compute over the copy.
    /// `None` when there is no such record (a local folder, an S3 object written without a
    /// SHA-256 checksum or in parts) or no object: then [`Store::sha256`] reads it.
    pub async fn stored_sha256(&self, key: &str) -> Result<Option<(ObjectMeta, [u8; 32])>> {
        match &*self.backend {
            Backend::Local(_) => Ok(None),
            Backend::S3(s) => s.stored_sha256(key).await,
        }
    }

    /// Size and SHA-256 of the object: the service's record ([`Store::stored_sha256`]) when
    /// there is one, else computed from a streaming read ([`Store::sha256`]).
    pub async fn checksum(&self, key: &str) -> Result<(u64, [u8; 32])> {
        match self.stored_sha256(key).await? {
            Some((meta, sha)) => Ok((meta.size, sha)),
            None => self.sha256(key).await,
        }
    }

    /// Makes sure the bucket (S3) or root folder (local) exists, creating it if needed. For
    /// S3-compatible test servers and first runs; production buckets are made by their owners.
    pub async fn create_if_missing(&self) -> Result<()> {
        match &*self.backend {
            Backend::Local(s) => s.create_root().await,
            Backend::S3(s) => s.create_bucket().await,
        }
    }
}

/// Checks that `key` is a relative path of non-empty segments other than `.`/`..`, so joining
/// it to a folder cannot leave that folder. Returns which rule it breaks.
pub(crate) fn check_key(key: &str) -> std::result::Result<(), &'static str> {
    if key.is_empty() {
        return Err("empty key");
    }
    if key.starts_with('/') {
        return Err("absolute key (starts with '/')");
    }
    if key.contains('\\') {
        return Err("'\\' is not a key separator");
    }
    if key.contains('\0') {
        return Err("NUL byte in key");
    }
    for segment in key.split('/') {
        match segment {
            "" => return Err("empty segment (doubled or trailing '/')"),
            "." | ".." => return Err("'.' or '..' segment"),
            _ => {}
        }
    }
    Ok(())
}

/// Lower-case hex of `bytes` (checksums in the audit tables). Crate-private: not part of the
/// store's domain.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_could_escape_are_refused() {
        for good in [
            "a",
            "a/b.txt",
            "raw/dt=2019-06-01/data/x-events.txt",
            "..a/b..",
            ".hidden",
        ] {
            assert_eq!(check_key(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "a//b",
            "a/",
            "../x",
            "a/../../x",
            "./a",
            "a/.",
            "a\\..\\b",
            "a\0b",
        ] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }

    /// Issue 8: an endpoint that never answers must fail a request within 60 s by default
    /// (it took 5 × 60 s before).
    #[test]
    fn default_waits_are_bounded_by_a_minute() {
        let options = StoreOptions::default();
        assert_eq!(options.unanswered_bound(), Duration::from_millis(56_500));
        assert!(options.unanswered_bound() < Duration::from_secs(60));
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(30), S3_MAX_BACKOFF);
        let once = StoreOptions {
            s3_max_attempts: 1,
            s3_connect_timeout: Duration::from_secs(1),
            s3_read_timeout: Duration::from_secs(2),
            ..options
        };
        assert_eq!(once.unanswered_bound(), Duration::from_secs(3));
    }

    #[test]
    fn hex_is_lower_case_and_padded() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
        assert_eq!(hex(&[]), "");
    }

    #[tokio::test]
    async fn urls_pick_the_backend() {
        let options = StoreOptions::default();
        assert!(!Store::open_with("./x", &options).await.unwrap().is_s3());
        assert!(!Store::open_with("file:///tmp/x", &options)
            .await
            .unwrap()
            .is_s3());
        for bad in [
            "",
            "file://rel/x",
            "gs://bucket",
            "s3://",
            "s3:///prefix",
            "s3://Upper_Case/x",
            "s3://ab/x",
            "s3://-bucket/x",
        ] {
            assert!(
                matches!(Store::open_with(bad, &options).await, Err(Error::Config(_))),
                "{bad:?}"
            );
        }
        // Credentials in the URL: refused, and not repeated in the message.
        for bad in ["s3://key:s3cr3t-pw@bucket/x", "file://u:s3cr3t-pw@/tmp/x"] {
            let Err(Error::Config(message)) = Store::open_with(bad, &options).await else {
                panic!("{bad:?} was not refused");
            };
            assert!(!message.contains("s3cr3t-pw"), "{message}");
        }
    }
}
