//! A run's scratch on local disk — the row spill (`d2d-rows-*/`), a back-fill's spool
//! (`d2d-spool-*/`), the curated zone's Parquet being encoded (`d2d-curated-*.parquet`) and
//! the quarantine's overflow (`d2d-quarantine-*.ndjson`), a large landing file on its way
//! between two storage services (`d2d-archive-*.part`) — and the sweep that removes what a
//! killed process left of it.
//!
//! Each is held, while its owner lives, by an exclusive `flock` (`File::try_lock`): on a
//! `lock` file inside a folder, on the file itself otherwise. The kernel drops the lock with
//! the process, `SIGKILL` included, so an entry whose lock can be taken is dead. A graceful
//! end (success, failure, SIGTERM) removes its own scratch as its owners are dropped; the
//! sweep, run as every run starts, is for the rest.

use std::fs::File;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;

/// The kinds of scratch folder, named `<prefix><YYYY-MM-DD>-…` for the day they hold.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DirKind {
    /// A load's row spill (`warehouse::spill`).
    Rows,
    /// A back-fill's day staged ahead (`warehouse::load`).
    Spool,
}

impl DirKind {
    const ALL: [DirKind; 2] = [DirKind::Rows, DirKind::Spool];

    fn prefix(self) -> &'static str {
        match self {
            DirKind::Rows => "d2d-rows-",
            DirKind::Spool => "d2d-spool-",
        }
    }
}

/// The kinds of scratch file, named `<prefix>…<suffix>`, in the temporary folder.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FileKind {
    /// A curated partition's Parquet being encoded (`curated`).
    Curated,
    /// The quarantine's lines beyond what it keeps in memory (`lake`).
    Quarantine,
    /// A large landing file copied between storage services (`lake`).
    Archive,
}

impl FileKind {
    const ALL: [FileKind; 3] = [FileKind::Curated, FileKind::Quarantine, FileKind::Archive];

    fn affixes(self) -> (&'static str, &'static str) {
        match self {
            FileKind::Curated => ("d2d-curated-", ".parquet"),
            FileKind::Quarantine => ("d2d-quarantine-", ".ndjson"),
            FileKind::Archive => ("d2d-archive-", ".part"),
        }
    }
}

/// What the sweep may judge: an entry named and typed as scratch is, nothing else (a folder
/// of someone else's named `d2d-…` stays, whatever it holds).
fn is_scratch(name: &str, is_dir: bool) -> bool {
    if is_dir {
        DirKind::ALL.iter().any(|k| {
            name.strip_prefix(k.prefix()).is_some_and(|rest| {
                rest.len() > 11
                    && rest.as_bytes()[10] == b'-'
                    && NaiveDate::parse_from_str(&rest[..10], "%Y-%m-%d").is_ok()
            })
        })
    } else {
        FileKind::ALL.iter().any(|k| {
            let (prefix, suffix) = k.affixes();
            name.starts_with(prefix) && name.ends_with(suffix)
        })
    }
}

/// The lock file inside a scratch folder.
pub(crate) const LOCK: &str = "lock";

/// A scratch folder under `parent` for one day, held by its lock until dropped, then removed
/// with its content.
#[derive(Debug)]
pub(crate) struct ScratchDir {
    dir: tempfile::TempDir,
    _lock: File,
}

impl ScratchDir {
    /// Creates and claims the folder. On error: the path involved and the error.
    pub(crate) fn create(
        parent: &Path,
        kind: DirKind,
        day: NaiveDate,
    ) -> Result<ScratchDir, (PathBuf, std::io::Error)> {
        let prefix = format!("{}{day}-", kind.prefix());
        let dir = tempfile::Builder::new()
            .prefix(&prefix)
            .tempdir_in(parent)
            .map_err(|e| (parent.join(format!("{prefix}*")), e))?;
        let lock_path = dir.path().join(LOCK);
        let lock = File::create(&lock_path).map_err(|e| (lock_path.clone(), e))?;
        hold(&lock).map_err(|e| (lock_path, e))?;
        Ok(ScratchDir { dir, _lock: lock })
    }

    /// The folder.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A scratch file in the temporary folder, readable and writable, held until dropped, then
/// removed.
pub(crate) fn file(kind: FileKind) -> std::io::Result<tempfile::NamedTempFile> {
    let (prefix, suffix) = kind.affixes();
    let file = tempfile::Builder::new()
        .prefix(prefix)
        .suffix(suffix)
        .tempfile()?;
    hold(file.as_file())?;
    Ok(file)
}

/// Claims `file` (a scratch entry just created) for this process until it is closed.
fn hold(file: &File) -> std::io::Result<()> {
    file.try_lock().map_err(std::io::Error::other)
}

/// Removes the scratch entries under `parent` that no live process holds. Best effort: an
/// entry that cannot be read or removed stays, and costs only disk. (An entry in the instant
/// between its creation and its lock looks dead; runs start seconds apart, not within it.)
pub(crate) fn remove_dead(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // Not followed: a link named like scratch is not ours to judge.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !(meta.is_dir() || meta.is_file())
            || !is_scratch(&entry.file_name().to_string_lossy(), meta.is_dir())
        {
            continue;
        }
        let lock = if meta.is_dir() {
            path.join(LOCK)
        } else {
            path.clone()
        };
        let dead = match File::open(&lock) {
            Ok(file) => file.try_lock().is_ok(),
            // A folder killed between its creation and its lock file: still empty.
            Err(e) => {
                meta.is_dir()
                    && e.kind() == std::io::ErrorKind::NotFound
                    && std::fs::read_dir(&path).is_ok_and(|mut d| d.next().is_none())
            }
        };
        if !dead {
            continue;
        }
        tracing::info!(path = %path.display(), "removing the scratch of a run that died");
        let _ = if meta.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_killed_run_left_goes_and_what_a_live_one_holds_stays() {
        let parent = tempfile::tempdir().unwrap();
        let p = parent.path();
        // Live: a folder and a file this process holds.
        let day = NaiveDate::from_ymd_opt(2019, 6, 1).unwrap();
        let live_dir = ScratchDir::create(p, DirKind::Spool, day).unwrap();
        let live_file_path = p.join("d2d-curated-live.parquet");
        let live_file = File::create(&live_file_path).unwrap();
        hold(&live_file).unwrap();
        // Dead: what SIGKILL leaves of each kind (nobody holds the locks).
        let dead: Vec<PathBuf> = ["d2d-rows-2019-05-31-x", "d2d-spool-2019-05-31-y"]
            .iter()
            .map(|n| {
                let d = p.join(n);
                std::fs::create_dir(&d).unwrap();
                std::fs::write(d.join(LOCK), b"").unwrap();
                std::fs::write(d.join("data"), b"rows").unwrap();
                d
            })
            .chain(
                ["d2d-curated-dead.parquet", "d2d-quarantine-1-2-3.ndjson"]
                    .iter()
                    .map(|n| {
                        let f = p.join(n);
                        std::fs::write(&f, b"bytes").unwrap();
                        f
                    }),
            )
            .collect();
        let half = p.join("d2d-rows-2019-05-30-z");
        std::fs::create_dir(&half).unwrap();
        // Not scratch: stays whatever it is (another program's folders named `d2d-…`, a
        // folder named like a scratch file, a non-empty folder without a lock).
        let other = p.join("notes-d2d-curated.txt");
        std::fs::write(&other, b"mine").unwrap();
        let foreign: Vec<PathBuf> = [
            "d2d-other",
            "d2d-curated-rows-landing-x",
            "d2d-spool-unit-7",
            "d2d-rows-2019-05-29-full",
        ]
        .iter()
        .map(|n| {
            let d = p.join(n);
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("data"), b"kept").unwrap();
            d
        })
        .collect();

        remove_dead(p);
        for d in dead.iter().chain([&half]) {
            assert!(!d.exists(), "{} stayed", d.display());
        }
        assert!(live_dir.path().exists() && live_file_path.exists());
        assert!(other.exists());
        for d in &foreign {
            assert!(d.exists(), "{} was removed", d.display());
        }

        let dir = live_dir.path().to_path_buf();
        drop(live_dir);
        assert!(!dir.exists(), "a scratch folder is removed when dropped");
        drop(live_file);
        remove_dead(p);
        assert!(!live_file_path.exists(), "released, the file is dead");
    }
}
