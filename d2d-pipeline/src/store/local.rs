//! The local-folder store: keys are relative paths under a root folder.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::{check_key, Listing, ObjectMeta, ObjectReader, Unlisted};
use crate::error::{Error, Result};

/// Why a read is refused: the key resolves (through a symbolic link) outside the root.
const LINK_OUT: &str = "a symbolic link leads out of the store's folder";
/// Why a write or deletion is refused: one of the key's folders is a symbolic link.
const LINK_ON_PATH: &str =
    "a folder on the key's path is a symbolic link; writes never follow links";

/// Temporary files start with this, so listings skip them and they never collide with keys
/// written by the API (whose file names are `YYYY-...`).
const TMP_PREFIX: &str = ".d2d-tmp-";

/// Makes temporary file names unique within the process (the pid separates processes).
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

pub(crate) struct LocalStore {
    root: PathBuf,
    url: String,
}

impl LocalStore {
    pub(crate) fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let url = root.display().to_string();
        Self { root, url }
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    fn io_error(&self, op: &'static str, key: &str, source: io::Error) -> Error {
        Error::Io {
            url: self.url.clone(),
            key: key.to_owned(),
            op,
            source,
        }
    }

    fn invalid(&self, key: &str, reason: &'static str) -> Error {
        Error::InvalidKey {
            url: self.url.clone(),
            key: key.to_owned(),
            reason,
        }
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key).map_err(|reason| self.invalid(key, reason))?;
        Ok(self.root.join(key))
    }

    /// The file to read for `key`, every link resolved, refused when that leads outside the
    /// root (or does not exist: [`Error::NotFound`]). Links are resolved when the file is
    /// opened, so a link swapped afterwards is not followed.
    fn read_path(&self, key: &str) -> Result<PathBuf> {
        let path = self.path(key)?;
        match resolve_inside(&self.root, &path) {
            Ok(Some(real)) => Ok(real),
            Ok(None) => Err(self.invalid(key, LINK_OUT)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(self.not_found(key)),
            Err(e) => Err(self.io_error("get", key, e)),
        }
    }

    /// The path to write or delete `key` at, refused when one of its folders below the root
    /// is a symbolic link (it could lead anywhere; the final name itself may be a link: a
    /// write renames over it and a deletion removes it, neither follows it).
    fn write_path(&self, op: &'static str, key: &str) -> Result<PathBuf> {
        let path = self.path(key)?;
        match link_on_path(&self.root, key) {
            Ok(false) => Ok(path),
            Ok(true) => Err(self.invalid(key, LINK_ON_PATH)),
            Err(e) => Err(self.io_error(op, key, e)),
        }
    }

    /// Runs blocking file-system work off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        op: &'static str,
        key: &str,
        f: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> Result<T> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| self.io_error(op, key, io::Error::other(e)))?
            .map_err(|e| self.io_error(op, key, e))
    }

    pub(crate) async fn list(&self, prefix: &str) -> Result<Listing> {
        // Walk only the deepest folder the prefix names in full, then filter by the rest of
        // the prefix as a plain string, as S3 does.
        let dir = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        if !dir.is_empty() {
            check_key(dir).map_err(|reason| Error::InvalidKey {
                url: self.url.clone(),
                key: prefix.to_owned(),
                reason,
            })?;
        }
        let root = self.root.clone();
        let dir = dir.to_owned();
        let prefix_owned = prefix.to_owned();
        self.blocking("list", prefix, move || {
            if !root.is_dir() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "the store's root folder does not exist",
                ));
            }
            let mut out = Listing::default();
            // Folders reached through a link are never entered, the prefix's own included.
            if !dir.is_empty() && link_on_path(&root, &format!("{dir}/"))? {
                return Ok(out);
            }
            let start = if dir.is_empty() {
                root.clone()
            } else {
                root.join(&dir)
            };
            let key_base = if dir.is_empty() {
                String::new()
            } else {
                format!("{dir}/")
            };
            let walk = Walk {
                real_root: std::fs::canonicalize(&root)?,
                prefix: &prefix_owned,
            };
            walk.dir(&start, &key_base, &mut out)?;
            Ok(out)
        })
        .await
    }

    pub(crate) async fn remove_stale_temporaries(
        &self,
        prefix: &str,
        written_before: SystemTime,
    ) -> Result<u64> {
        let dir = prefix.rfind('/').map_or("", |i| &prefix[..i]).to_owned();
        if !dir.is_empty() {
            check_key(&dir).map_err(|reason| self.invalid(prefix, reason))?;
        }
        let root = self.root.clone();
        self.blocking("remove stale temporary files", prefix, move || {
            if !dir.is_empty() && link_on_path(&root, &format!("{dir}/"))? {
                return Ok(0);
            }
            let mut removed = 0;
            remove_stale(&root.join(&dir), written_before, &mut removed)?;
            Ok(removed)
        })
        .await
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Bytes> {
        let path = self.read_path(key)?;
        match tokio::fs::read(&path).await {
            Ok(v) => Ok(Bytes::from(v)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(self.not_found(key)),
            Err(e) => Err(self.io_error("get", key, e)),
        }
    }

    pub(crate) async fn get_reader(&self, key: &str) -> Result<ObjectReader> {
        let path = self.read_path(key)?;
        match tokio::fs::File::open(&path).await {
            Ok(f) => Ok(Box::pin(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(self.not_found(key)),
            Err(e) => Err(self.io_error("get", key, e)),
        }
    }

    fn not_found(&self, key: &str) -> Error {
        Error::NotFound {
            url: self.url.clone(),
            key: key.to_owned(),
        }
    }

    pub(crate) async fn put(&self, key: &str, bytes: Bytes) -> Result<()> {
        let path = self.write_path("put", key)?;
        self.blocking("put", key, move || {
            write_atomically(&path, |f| f.write_all(&bytes))
        })
        .await
    }

    pub(crate) async fn put_file(&self, key: &str, from: &Path) -> Result<()> {
        let path = self.write_path("put", key)?;
        let from = from.to_owned();
        self.blocking("put", key, move || {
            write_atomically(&path, |f| {
                let mut input = std::fs::File::open(&from)?;
                io::copy(&mut input, f).map(|_| ())
            })
        })
        .await
    }

    pub(crate) async fn copy_from(
        &self,
        src: &LocalStore,
        src_key: &str,
        dst_key: &str,
    ) -> Result<()> {
        let from = src.read_path(src_key)?;
        let to = self.write_path("copy", dst_key)?;
        let result = self
            .blocking("copy", dst_key, move || {
                write_atomically(&to, |f| {
                    let mut input = std::fs::File::open(&from)?;
                    io::copy(&mut input, f).map(|_| ())
                })
            })
            .await;
        match result {
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                // Either the source is missing or the destination's folder vanished; name the
                // source when it is the culprit.
                if src.head(src_key).await?.is_none() {
                    Err(src.not_found(src_key))
                } else {
                    Err(self.io_error("copy", dst_key, source))
                }
            }
            other => other,
        }
    }

    pub(crate) async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        // A link leading out of the root is no object of this store, as in a listing.
        let path = match self.read_path(key) {
            Ok(path) => path,
            Err(
                Error::NotFound { .. }
                | Error::InvalidKey {
                    reason: LINK_OUT, ..
                },
            ) => return Ok(None),
            Err(e) => return Err(e),
        };
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => Ok(Some(meta(key.to_owned(), &m))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_error("head", key, e)),
        }
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<()> {
        let path = self.write_path("delete", key)?;
        let root = self.root.clone();
        self.blocking("delete", key, move || {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
            // Drop folders left empty (a moved landing day), stopping at the first one that
            // is not empty (or the root).
            let mut dir = path.parent();
            while let Some(d) = dir {
                if d == root || std::fs::remove_dir(d).is_err() {
                    break;
                }
                dir = d.parent();
            }
            Ok(())
        })
        .await
    }

    pub(crate) async fn create_root(&self) -> Result<()> {
        tokio::fs::create_dir_all(&self.root)
            .await
            .map_err(|e| self.io_error("create", "", e))
    }
}

fn meta(key: String, m: &std::fs::Metadata) -> ObjectMeta {
    let mtime = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    ObjectMeta {
        key,
        size: m.len(),
        etag: Some(format!("{mtime:x}-{:x}", m.len())),
    }
}

/// `path` with every link resolved, if that stays inside `root` (`None` when it leads out).
fn resolve_inside(root: &Path, path: &Path) -> io::Result<Option<PathBuf>> {
    let real = std::fs::canonicalize(path)?;
    let real_root = std::fs::canonicalize(root)?;
    Ok(real.starts_with(&real_root).then_some(real))
}

/// Is one of the folders of `key` (its segments but the last) a symbolic link below `root`?
/// Folders that do not exist yet are no links (a write creates them as real folders).
fn link_on_path(root: &Path, key: &str) -> io::Result<bool> {
    let mut dir = root.to_path_buf();
    let folders = key.rsplit_once('/').map_or("", |(folders, _)| folders);
    for segment in folders.split('/').filter(|s| !s.is_empty()) {
        dir.push(segment);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() => return Ok(true),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// A recursive listing below a root.
struct Walk<'a> {
    /// The root with every link resolved: links must lead below it.
    real_root: PathBuf,
    /// Keys must start with it.
    prefix: &'a str,
}

impl Walk<'_> {
    /// Collects the files under `dir` (whose key is `key_base`) that start with the prefix.
    /// Symbolic links to files inside the root count as files; links leading out of the root
    /// or nowhere, links to folders and anything not a regular file (a FIFO would block a
    /// reader) are reported as unlisted. Folders behind links are never entered, so a loop
    /// cannot hang a listing and a listing never leaves the root.
    fn dir(&self, dir: &Path, key_base: &str, out: &mut Listing) -> io::Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            // A prefix naming a folder that does not exist lists nothing, like S3.
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.kind() == io::ErrorKind::NotADirectory =>
            {
                return Ok(())
            }
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                // Keys are UTF-8; a file that cannot have a key is not an object of this store.
                continue;
            };
            if name.starts_with(TMP_PREFIX) {
                continue;
            }
            let key = format!("{key_base}{name}");
            let file_type = entry.file_type()?;
            if file_type.is_dir() {
                let sub = format!("{key}/");
                // Only descend where keys can still match the prefix.
                if sub.starts_with(self.prefix) || self.prefix.starts_with(&sub) {
                    self.dir(&entry.path(), &sub, out)?;
                }
                continue;
            }
            if !key.starts_with(self.prefix) {
                continue;
            }
            let found = if file_type.is_symlink() {
                match std::fs::canonicalize(entry.path()) {
                    Ok(real) if !real.starts_with(&self.real_root) => Err(LINK_OUT),
                    Ok(real) => match std::fs::metadata(real) {
                        Ok(m) if m.is_file() => Ok(m),
                        Ok(m) if m.is_dir() => Err("a symbolic link to a folder (not followed)"),
                        _ => Err("a symbolic link to something that is not a regular file"),
                    },
                    Err(_) => Err("a broken symbolic link"),
                }
            } else if file_type.is_file() {
                Ok(entry.metadata()?)
            } else {
                Err("not a regular file (a FIFO, socket or device)")
            };
            match found {
                Ok(m) => out.objects.push(meta(key, &m)),
                Err(reason) => out.unlisted.push(Unlisted {
                    key,
                    code: if reason == LINK_OUT {
                        "link_outside"
                    } else {
                        "not_a_file"
                    },
                    reason,
                }),
            }
        }
        Ok(())
    }
}

/// Deletes the stale temporary files under `dir` (see `Store::remove_stale_temporaries`),
/// counting them in `removed`. Never enters a folder through a link.
fn remove_stale(dir: &Path, written_before: SystemTime, removed: &mut u64) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory =>
        {
            return Ok(())
        }
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            remove_stale(&entry.path(), written_before, removed)?;
            continue;
        }
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(temp_file_pid) else {
            continue;
        };
        let m = entry.metadata()?;
        let old = m.modified().is_ok_and(|t| t < written_before);
        if file_type.is_file() && old && !process_runs(pid) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => *removed += 1,
                // Another run cleaned it up first.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// The writer's process id in a temporary file name `.d2d-tmp-<pid>-<n>`.
fn temp_file_pid(name: &str) -> Option<u32> {
    let (pid, n) = name.strip_prefix(TMP_PREFIX)?.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// Does process `pid` run on this machine? Read from `/proc`; where there is none, the
/// answer is "no" and only the modification time protects a writer.
fn process_runs(pid: u32) -> bool {
    pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists()
}

/// Writes `path` through a temporary file in the same folder, flushed to disk, then renamed
/// over `path`, so no reader and no crash ever sees a half-written object. Creates the parent
/// folders. The temporary file is removed if anything fails.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> io::Result<()>,
) -> io::Result<()> {
    let parent = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "key has no parent folder"))?;
    std::fs::create_dir_all(parent)?;
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = parent.join(format!("{TMP_PREFIX}{}-{n}", std::process::id()));
    let guard = TmpFile(&tmp);
    let mut f = std::fs::File::create_new(&tmp)?;
    write(&mut f)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::mem::forget(guard);
    Ok(())
}

/// Removes a temporary file on drop unless forgotten after the rename.
struct TmpFile<'a>(&'a Path);

impl Drop for TmpFile<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn failed_writes_leave_nothing_behind() {
        let dir = std::env::temp_dir().join(format!("d2d-local-{}", std::process::id()));
        let target = dir.join("sub/obj");
        let err = write_atomically(&target, |f| {
            f.write_all(b"half")?;
            Err(io::Error::other("boom"))
        });
        assert!(err.is_err());
        assert!(!target.exists());
        let left: Vec<_> = std::fs::read_dir(dir.join("sub")).unwrap().collect();
        assert!(left.is_empty(), "temporary file left behind: {left:?}");
        write_atomically(&target, |f| f.write_all(b"whole")).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"whole");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
