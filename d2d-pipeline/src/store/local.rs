//! The local-folder store: keys are relative paths under a root folder.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use bytes::Bytes;

use super::{check_key, ObjectMeta, ObjectReader};
use crate::error::{Error, Result};

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

    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key).map_err(|reason| Error::InvalidKey {
            url: self.url.clone(),
            key: key.to_owned(),
            reason,
        })?;
        Ok(self.root.join(key))
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

    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
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
            let mut out = Vec::new();
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
            walk(&start, &key_base, &prefix_owned, &mut out)?;
            Ok(out)
        })
        .await
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Bytes> {
        let path = self.path(key)?;
        match tokio::fs::read(&path).await {
            Ok(v) => Ok(Bytes::from(v)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(self.not_found(key)),
            Err(e) => Err(self.io_error("get", key, e)),
        }
    }

    pub(crate) async fn get_reader(&self, key: &str) -> Result<ObjectReader> {
        let path = self.path(key)?;
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
        let path = self.path(key)?;
        self.blocking("put", key, move || {
            write_atomically(&path, |f| f.write_all(&bytes))
        })
        .await
    }

    pub(crate) async fn put_file(&self, key: &str, from: &Path) -> Result<()> {
        let path = self.path(key)?;
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
        let from = src.path(src_key)?;
        let to = self.path(dst_key)?;
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
        let path = self.path(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => Ok(Some(meta(key.to_owned(), &m))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_error("head", key, e)),
        }
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
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

/// Recursively collects the files under `dir` (whose key is `key_base`) that start with
/// `prefix`. Symbolic links to files count as files; links to folders are not followed, so a
/// loop cannot hang a listing.
fn walk(dir: &Path, key_base: &str, prefix: &str, out: &mut Vec<ObjectMeta>) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        // A prefix naming a folder that does not exist lists nothing, like S3.
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory =>
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
            if sub.starts_with(prefix) || prefix.starts_with(&sub) {
                walk(&entry.path(), &sub, prefix, out)?;
            }
        } else if key.starts_with(prefix) {
            let m = entry.metadata()?;
            let m = if file_type.is_symlink() {
                match std::fs::metadata(entry.path()) {
                    Ok(m) if m.is_file() => m,
                    _ => continue,
                }
            } else {
                m
            };
            out.push(meta(key, &m));
        }
    }
    Ok(())
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
