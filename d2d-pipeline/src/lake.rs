//! The data lake: one landing day's files kept unchanged, and the lines that were refused.
//!
//! Layout of the lake store (Hive-style partitions, readable by Athena, Trino, Spark, DuckDB):
//!
//! ```text
//! raw/dt=2019-06-01/<original landing key>       byte-for-byte copies of the day's files
//! quarantine/dt=2019-06-01/rejects.ndjson         that day's refused lines, one JSON object each
//! ```
//!
//! # Which files belong to day D
//!
//! A landing file belongs to the day **written in its file name**
//! (`YYYY-MM-DD-H-M-S-events.<ext>`, see [`d2d_model::landing::LandingName`]), whatever
//! folder it sits in and whatever the timestamps of the events inside it. That name's clock is
//! not UTC, so some events of day D's files fall on D+1 in UTC: a day's load is keyed by landing
//! day and object key, never by event time. Objects whose names do not follow the pattern are
//! never selected; `….txt.gz` files (and any file starting with gzip's magic bytes) are
//! decompressed when read ([`d2d_model::landing::decode`]).
//!
//! # Files refused as a whole
//!
//! A landing object is never archived nor loaded, but **reported** ([`RefusedFile`]: in the run
//! summary, and for the day it belongs to in `etl.reject` with line 0 and in the quarantine),
//! when:
//!
//! | code | what |
//! |---|---|
//! | `unsafe_key` | its key cannot be a lake key: a `.` or `..` segment, an empty segment (`data//…`), a leading `/`, a `\` or a NUL (S3 allows such keys; `raw/dt=D/<key>` must stay a plain path inside the lake, whatever the lake) |
//! | `link_outside` | a local landing folder holds a symbolic link leading out of it (it is never read) |
//! | `not_a_file` | a broken link, a link to a folder, a FIFO or device named like an event file |
//! | `not_a_landing_name` | named like an event file (`-events`) but not a landing file: an impossible date or time, another suffix (`….txt.bak`), a malformed stamp |
//! | `invalid_gzip`, `gzip_too_large` | archived, but its compressed bytes do not decode (found while loading) |
//!
//! A refused file belongs to the date its name starts with; one with no real date there
//! (`2019-02-30-…`) belongs to no day and is reported in the summary of every run that lists it,
//! as is any other link or FIFO in a local landing folder (a linked folder is never entered).
//! Files named for other days are left to their own runs.
//!
//! How much of the landing store is *listed* to find them is set by a [`DayLayout`]:
//!
//! | layout | lists | fits |
//! |---|---|---|
//! | [`DayLayout::Scan`] (default) | every key of the store | any layout; cost grows with the store |
//! | [`DayLayout::Nested`] `{ root: "data/resources/" }` | `data/resources/YYYY/MM/DD/` | the nested `…/YYYY/MM/DD/HH/MM/` layout |
//! | [`DayLayout::Flat`] `{ dir: "data/" }` | `data/YYYY-MM-DD-` | the flat `data/YYYY-MM-DD-H-M-S-events.json` layout |
//!
//! Whatever was listed, [`select_day`] then keeps exactly the objects named for D, so a file
//! of another day in D's folder is never taken. With a prefix layout a file of D filed under
//! another day's folder is not seen; use `Scan` to find such strays. `Scan` skips the lake's
//! own `raw/dt=…` and `quarantine/dt=…` keys, so a store that serves as both landing and lake
//! does not archive its archive.
//!
//! # The lake defines the day
//!
//! Landing files may vanish (`--move`, retention) while the lake keeps them, so a load of day D
//! takes every file of `raw/dt=D/`: those archived by this run and those archived earlier
//! ([`with_archived_rest`]). A file leaves day D only when it is deleted from the lake's
//! `raw/dt=D/` (and D re-run). The lake keeps what it archived unchanged: a landing file
//! rewritten under an archived name is refused unless [`LakeOptions::replace_changed`].

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use chrono::NaiveDate;
use d2d_model::landing::{check_name, landing_order, LandingName, NameCheck};
use d2d_model::reject::{Reject, RejectReason};
use futures_util::stream::{self, StreamExt};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::lines::LongLine;
use crate::scratch::FileKind;
use crate::store::{check_key, hex, CopyMethod, ObjectMeta, Store, Unlisted};

/// Top-level folder of the archived landing files.
pub const RAW_DIR: &str = "raw";
/// Top-level folder of the refused lines.
pub const QUARANTINE_DIR: &str = "quarantine";

/// How to list a landing store for one day's files (see the module docs for the rule).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DayLayout {
    /// List every key of the landing store and keep the day's by name.
    #[default]
    Scan,
    /// Files of a day live under `{root}YYYY/MM/DD/` (any depth below).
    Nested {
        /// Key prefix above the date folders, e.g. `data/resources/` (or empty).
        root: String,
    },
    /// Files live directly in `{dir}`, named `YYYY-MM-DD-…`.
    Flat {
        /// Key prefix of the folder, e.g. `data/` (or empty).
        dir: String,
    },
}

impl DayLayout {
    /// The key prefix to list for `day`.
    ///
    /// ```
    /// use d2d_pipeline::lake::DayLayout;
    /// let day = "2019-06-01".parse().unwrap();
    /// let nested: DayLayout = "nested:data/resources".parse().unwrap();
    /// assert_eq!(nested.listing_prefix(day), "data/resources/2019/06/01/");
    /// let flat: DayLayout = "flat:data/".parse().unwrap();
    /// assert_eq!(flat.listing_prefix(day), "data/2019-06-01-");
    /// assert_eq!(DayLayout::Scan.listing_prefix(day), "");
    /// ```
    pub fn listing_prefix(&self, day: NaiveDate) -> String {
        match self {
            Self::Scan => String::new(),
            Self::Nested { root } => format!(
                "{}{}",
                folder(root),
                d2d_model::landing::nested_day_prefix(day)
            ),
            Self::Flat { dir } => format!("{}{}-", folder(dir), day.format("%Y-%m-%d")),
        }
    }
}

/// `p` as a folder prefix: empty, or ending with exactly one `/`.
fn folder(p: &str) -> String {
    match p.trim_end_matches('/') {
        "" => String::new(),
        p => format!("{p}/"),
    }
}

impl FromStr for DayLayout {
    type Err = Error;

    /// `scan`, `nested:<root>` (e.g. `nested:data/resources/`) or `flat:<dir>` (e.g.
    /// `flat:data/`); the part after `:` may be empty.
    fn from_str(s: &str) -> Result<Self> {
        match s.split_once(':') {
            None if s == "scan" => Ok(Self::Scan),
            Some(("nested", root)) => Ok(Self::Nested { root: folder(root) }),
            Some(("flat", dir)) => Ok(Self::Flat { dir: folder(dir) }),
            _ => Err(Error::Config(format!(
                "landing layout {s:?}: expected `scan`, `nested:<root>` or `flat:<dir>`"
            ))),
        }
    }
}

impl fmt::Display for DayLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Scan => f.write_str("scan"),
            Self::Nested { root } => write!(f, "nested:{root}"),
            Self::Flat { dir } => write!(f, "flat:{dir}"),
        }
    }
}

/// A landing object refused as a whole (see the module docs): never archived nor loaded, and
/// reported with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedFile {
    /// Its key, as listed (an odd key is reported, never used as a path).
    pub key: String,
    /// Its size as listed (0 when not known).
    pub size: u64,
    /// The day it belongs to (the date its name starts with); `None` for a name with no real
    /// date, which belongs to no day.
    pub day: Option<NaiveDate>,
    /// Short stable code: `unsafe_key`, `link_outside`, `not_a_file`, `not_a_landing_name`,
    /// `invalid_gzip`, `gzip_too_large`.
    pub code: &'static str,
    /// What is wrong, e.g. `its key cannot be a lake key: '.' or '..' segment`.
    pub reason: String,
}

impl fmt::Display for RefusedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {} ({})", self.key, self.reason, self.code)
    }
}

/// The landing objects of one day, and the objects refused while choosing them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DayListing {
    /// The day's landing files, in landing order.
    pub objects: Vec<ObjectMeta>,
    /// Objects of the day (or of no day) that look like event files but are refused, by key.
    pub refused: Vec<RefusedFile>,
}

/// Keeps exactly the objects whose file name carries the date `day` and whose key can be a
/// lake key, in landing order (by the time in the name, numerically, then by key).
pub fn select_day(
    objects: impl IntoIterator<Item = ObjectMeta>,
    day: NaiveDate,
) -> Vec<ObjectMeta> {
    select_day_report(objects, &[], day).objects
}

/// [`select_day`], also returning what it refused (see the module docs): objects named for
/// `day` (or for no real day) that look like event files but cannot be loaded, and the
/// `unlisted` entries of a local listing named for them.
pub fn select_day_report(
    objects: impl IntoIterator<Item = ObjectMeta>,
    unlisted: &[Unlisted],
    day: NaiveDate,
) -> DayListing {
    let mut out = DayListing::default();
    let mut refuse = |key: &str, size, day, code, reason| {
        out.refused.push(RefusedFile {
            key: key.to_owned(),
            size,
            day,
            code,
            reason,
        })
    };
    let mut selected = Vec::new();
    for o in objects {
        match check_name(&o.key) {
            NameCheck::Landing(n) if n.date == day => match check_key(&o.key) {
                Ok(()) => selected.push(o),
                Err(why) => refuse(
                    &o.key,
                    o.size,
                    Some(day),
                    "unsafe_key",
                    format!("its key cannot be a lake key: {why}"),
                ),
            },
            NameCheck::Skipped { day: d, reason } if d.is_none_or(|d| d == day) => {
                refuse(&o.key, o.size, d, "not_a_landing_name", reason)
            }
            _ => {}
        }
    }
    for u in unlisted {
        let d = match check_name(&u.key) {
            NameCheck::Landing(n) if n.date == day => Some(day),
            NameCheck::Skipped { day: d, .. } if d.is_none_or(|d| d == day) => d,
            // A link or FIFO under another name (a linked folder may hide a whole day): of no
            // day, so named in the summary only.
            NameCheck::Other => None,
            _ => continue,
        };
        refuse(&u.key, 0, d, u.code, u.reason.to_owned());
    }
    selected.sort_by(|a, b| landing_order(&a.key, &b.key));
    out.objects = selected;
    out.refused.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// Lists the landing objects of `day` (see the module docs for the rule), in landing order.
pub async fn list_day(
    landing: &Store,
    day: NaiveDate,
    layout: &DayLayout,
) -> Result<Vec<ObjectMeta>> {
    Ok(list_day_report(landing, day, layout).await?.objects)
}

/// [`list_day`], with the objects refused on the way ([`RefusedFile`]).
pub async fn list_day_report(
    landing: &Store,
    day: NaiveDate,
    layout: &DayLayout,
) -> Result<DayListing> {
    let listed = landing.list_checked(&layout.listing_prefix(day)).await?;
    let own = |key: &str| {
        key.strip_prefix(RAW_DIR)
            .or_else(|| key.strip_prefix(QUARANTINE_DIR))
            .is_some_and(|rest| rest.starts_with("/dt="))
    };
    let unlisted: Vec<Unlisted> = listed
        .unlisted
        .into_iter()
        .filter(|u| !own(&u.key))
        .collect();
    Ok(select_day_report(
        listed.objects.into_iter().filter(|o| !own(&o.key)),
        &unlisted,
        day,
    ))
}

/// Deletes the temporary files that killed writers left in the lake partitions of `day`
/// (`raw/dt=D/` and `quarantine/dt=D/`): only those last written before `written_before` by a
/// process that is gone ([`Store::remove_stale_temporaries`]). Returns how many.
pub async fn remove_stale_temporaries(
    lake: &Store,
    day: NaiveDate,
    written_before: std::time::SystemTime,
) -> Result<u64> {
    let quarantine = format!("{QUARANTINE_DIR}/dt={}/", day.format("%Y-%m-%d"));
    let mut removed = 0;
    for prefix in [raw_prefix(day), quarantine] {
        removed += lake
            .remove_stale_temporaries(&prefix, written_before)
            .await?;
    }
    Ok(removed)
}

/// `raw/dt=YYYY-MM-DD/`: where the lake keeps the files of `day`.
pub fn raw_prefix(day: NaiveDate) -> String {
    format!("{RAW_DIR}/dt={}/", day.format("%Y-%m-%d"))
}

/// The lake key of landing object `landing_key` of `day`: `raw/dt=YYYY-MM-DD/<landing_key>`.
pub fn raw_key(day: NaiveDate, landing_key: &str) -> String {
    format!("{}{landing_key}", raw_prefix(day))
}

/// `quarantine/dt=YYYY-MM-DD/rejects.ndjson`: where the lake keeps the refused lines of `day`.
pub fn quarantine_key(day: NaiveDate) -> String {
    format!(
        "{QUARANTINE_DIR}/dt={}/rejects.ndjson",
        day.format("%Y-%m-%d")
    )
}

/// What archiving did for one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveAction {
    /// The object was copied into the lake (and verified).
    Copied(CopyMethod),
    /// The lake already held an identical object (same size and SHA-256): nothing written.
    AlreadyArchived,
    /// Rebuilt from the lake alone ([`list_archived`]); the landing object was not consulted.
    FromLake,
}

/// One archived landing file: a row of the run's file manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedFile {
    /// Key in the landing store (the original key, also the lineage key of its events).
    pub landing_key: String,
    /// Key in the lake store: `raw/dt=D/<landing_key>`.
    pub lake_key: String,
    /// Size in bytes (equal in landing and lake).
    pub size: u64,
    /// SHA-256 of the bytes read back from the lake (equal to the landing object's).
    pub sha256: [u8; 32],
    /// The landing object's version tag when it was archived; `None` when rebuilt from the
    /// lake. [`delete_landing`] refuses to delete a landing object whose tag has changed.
    pub landing_etag: Option<String>,
    /// What archiving did.
    pub action: ArchiveAction,
}

impl ArchivedFile {
    /// The SHA-256 as 64 lower-case hex digits.
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }
}

/// Where a bulk step is, reported after each file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress<'a> {
    /// Files finished so far (this one included).
    pub files_done: usize,
    /// Files in the step.
    pub files_total: usize,
    /// Bytes of the finished files.
    pub bytes_done: u64,
    /// Bytes of all files of the step (as listed).
    pub bytes_total: u64,
    /// The file just finished.
    pub key: &'a str,
}

/// A progress callback that ignores every report.
pub fn no_progress(_: Progress<'_>) {}

/// Settings of the bulk lake steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LakeOptions {
    /// Files in flight at once (at least 1). Each holds at most one object in memory (when
    /// copying between different services) plus a 64 KiB read buffer.
    pub concurrency: usize,
    /// Let [`archive_day`] overwrite a lake object whose bytes differ from the landing object
    /// of the same key (a landing file rewritten under its old name). Off by default: the lake
    /// keeps files unchanged, and such a file is refused with [`Error::Verify`].
    pub replace_changed: bool,
}

impl Default for LakeOptions {
    fn default() -> Self {
        Self {
            concurrency: 16,
            replace_changed: false,
        }
    }
}

/// Archives the landing objects of `day` into the lake: each is copied byte-for-byte to
/// [`raw_key`] (server-side when both stores are on the same service), read back, and
/// verified: the lake object's size and SHA-256 must equal the landing object's (and the
/// listed size). Returns one [`ArchivedFile`] per object, in landing order; fails on the first
/// error, naming the key. Up to `options.concurrency` files are in flight; `progress` hears of
/// each finished file.
///
/// Re-running is safe: an identical lake object is left as it is ([`ArchiveAction::AlreadyArchived`]).
/// A *different* object already at the lake key (a landing file rewritten under the same name)
/// is refused with [`Error::Verify`] naming the key and both sizes and SHA-256s, because the
/// lake keeps what it archived unchanged; with [`LakeOptions::replace_changed`] it is
/// overwritten instead (and a warning logged).
///
/// Every object must be named for `day` (as [`list_day`] returns them); anything else is a
/// [`Error::Config`] and nothing is copied.
pub async fn archive_day(
    landing: &Store,
    lake: &Store,
    day: NaiveDate,
    objects: &[ObjectMeta],
    options: &LakeOptions,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<Vec<ArchivedFile>> {
    if let Some(stray) = objects.iter().find(|o| {
        LandingName::parse(&o.key).is_none_or(|n| n.date != day) || check_key(&o.key).is_err()
    }) {
        return Err(Error::Config(format!(
            "{}: {:?} is not a landing file of {day}; refusing to archive it under {}",
            landing.url(),
            stray.key,
            raw_prefix(day)
        )));
    }
    let server_side = lake.copies_server_side_from(landing);
    // One listing of the day's partition instead of a HEAD per file: what is already there.
    let prefix = raw_prefix(day);
    let in_lake: HashMap<String, u64> = lake
        .list(&prefix)
        .await?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    let in_lake = &in_lake;
    for_each_object(objects, options, progress, |_, object| {
        let existing = in_lake.get(&format!("{prefix}{}", object.key)).copied();
        archive_one(
            landing,
            lake,
            day,
            object,
            existing,
            server_side,
            options.replace_changed,
        )
    })
    .await
}

async fn archive_one(
    landing: &Store,
    lake: &Store,
    day: NaiveDate,
    object: &ObjectMeta,
    existing_size: Option<u64>,
    server_side: bool,
    replace_changed: bool,
) -> Result<ArchivedFile> {
    if server_side && lake.is_s3() {
        if let Some(done) = archive_in_service(landing, lake, day, object, existing_size).await? {
            return Ok(done);
        }
    }
    archive_by_reading(
        landing,
        lake,
        day,
        object,
        existing_size,
        server_side,
        replace_changed,
    )
    .await
}

/// Landing and lake in one S3 service: the object is copied there and verified by the SHA-256
/// S3 computes over the copy ([`Store::stored_sha256`]); this process reads none of its bytes,
/// so in a daily run each landing byte crosses the network once, when the parser reads the
/// lake copy (and checks it against that checksum). An object already in the lake is taken as
/// archived when it carries a recorded SHA-256 and the same size and ETag as the landing
/// object (S3 ETags of single-part objects are content hashes, and a copy keeps them).
/// `None` when this cannot decide (no recorded checksum, a different ETag): nothing was
/// written, and [`archive_by_reading`] decides by reading both objects.
async fn archive_in_service(
    landing: &Store,
    lake: &Store,
    day: NaiveDate,
    object: &ObjectMeta,
    existing_size: Option<u64>,
) -> Result<Option<ArchivedFile>> {
    let lake_key = raw_key(day, &object.key);
    let archived = |size, sha256, action| ArchivedFile {
        landing_key: object.key.clone(),
        lake_key: lake_key.clone(),
        size,
        sha256,
        landing_etag: object.etag.clone(),
        action,
    };
    if existing_size.is_some() {
        let same = match lake.stored_sha256(&lake_key).await? {
            Some((meta, sha))
                if meta.size == object.size && meta.etag.is_some() && meta.etag == object.etag =>
            {
                Some(sha)
            }
            _ => None,
        };
        return Ok(same.map(|sha| archived(object.size, sha, ArchiveAction::AlreadyArchived)));
    }
    let method = lake.copy_from(landing, &object.key, &lake_key).await?;
    let (size, sha) = match lake.stored_sha256(&lake_key).await? {
        Some((meta, sha)) => (meta.size, sha),
        // A server that keeps no checksum: compare both objects byte for byte instead.
        None => {
            let (landing_size, landing_sha) = landing.sha256(&object.key).await?;
            let (size, sha) = lake.sha256(&lake_key).await?;
            if (size, sha) != (landing_size, landing_sha) {
                return Err(Error::Verify {
                    landing_key: object.key.clone(),
                    lake_key,
                    detail: format!(
                        "the lake copy has {size} bytes with SHA-256 {}, the landing object {landing_size} bytes with SHA-256 {}",
                        hex(&sha),
                        hex(&landing_sha)
                    ),
                });
            }
            (size, sha)
        }
    };
    if size != object.size {
        return Err(Error::Verify {
            landing_key: object.key.clone(),
            lake_key,
            detail: format!(
                "the landing object changed while being archived: listed with {} bytes, copied with {size}",
                object.size
            ),
        });
    }
    Ok(Some(archived(size, sha, ArchiveAction::Copied(method))))
}

/// Landing objects up to this size (8 MiB) that pass through this process on their way to
/// the lake are held in memory; larger ones go through a scratch file, so that memory does
/// not follow the size of a file.
const READ_WHOLE_BYTES: u64 = 8 << 20;

/// A landing object's bytes on their way to the lake.
enum Body {
    Bytes(Bytes),
    File(tempfile::NamedTempFile),
}

/// Copies the landing object `key` into a scratch file, in pieces: the file, its size and its
/// SHA-256.
async fn read_to_scratch(
    landing: &Store,
    key: &str,
) -> Result<(tempfile::NamedTempFile, u64, [u8; 32])> {
    let scratch_error = |op: &'static str, source: std::io::Error| Error::Io {
        url: std::env::temp_dir().display().to_string(),
        key: key.to_owned(),
        op,
        source,
    };
    let file = crate::scratch::file(FileKind::Archive).map_err(|e| scratch_error("create", e))?;
    let out = file
        .as_file()
        .try_clone()
        .map_err(|e| scratch_error("create", e))?;
    let (size, sha, written) = landing.copy_to(key, tokio::fs::File::from_std(out)).await?;
    written.map_err(|e| scratch_error("write", e))?;
    Ok((file, size, sha))
}

/// Archives by reading: the landing object's SHA-256 is computed here (from the bytes about
/// to be written when the copy passes through this process, by a streaming read otherwise),
/// and the lake copy is checked against it ([`Store::checksum`]: S3's record of the upload
/// when there is one, else a streaming read).
async fn archive_by_reading(
    landing: &Store,
    lake: &Store,
    day: NaiveDate,
    object: &ObjectMeta,
    existing_size: Option<u64>,
    server_side: bool,
    replace_changed: bool,
) -> Result<ArchivedFile> {
    let lake_key = raw_key(day, &object.key);
    let verify_error = |detail: String| Error::Verify {
        landing_key: object.key.clone(),
        lake_key: lake_key.clone(),
        detail,
    };
    // Across services the bytes must pass through here anyway: read them once, hash and put
    // them, from memory when small, through a scratch file otherwise. Within a service the
    // landing object is hashed by a streaming read instead.
    let (landing_size, landing_sha, body) = if server_side {
        let (size, sha) = landing.sha256(&object.key).await?;
        (size, sha, None)
    } else if object.size <= READ_WHOLE_BYTES {
        let bytes = landing.get(&object.key).await?;
        (bytes.len() as u64, sha256(&bytes), Some(Body::Bytes(bytes)))
    } else {
        let (file, size, sha) = read_to_scratch(landing, &object.key).await?;
        (size, sha, Some(Body::File(file)))
    };
    if landing_size != object.size {
        return Err(verify_error(format!(
            "the landing object changed while being archived: listed with {} bytes, read {landing_size}",
            object.size
        )));
    }
    if existing_size.is_some() {
        let (lake_size, lake_sha) = lake.checksum(&lake_key).await?;
        if (lake_size, lake_sha) == (landing_size, landing_sha) {
            return Ok(ArchivedFile {
                landing_key: object.key.clone(),
                lake_key,
                size: landing_size,
                sha256: landing_sha,
                landing_etag: object.etag.clone(),
                action: ArchiveAction::AlreadyArchived,
            });
        }
        let change = format!(
            "the lake holds {lake_size} bytes with SHA-256 {}, the landing object now has {landing_size} bytes with SHA-256 {}",
            hex(&lake_sha),
            hex(&landing_sha)
        );
        if !replace_changed {
            return Err(verify_error(format!(
                "{change}: a landing file was rewritten under the same name; the lake keeps its original (allow replacing changed files to overwrite it)"
            )));
        }
        tracing::warn!(lake_key, "{change}; replacing the lake object as allowed");
    }
    let method = match body {
        Some(Body::Bytes(bytes)) => {
            lake.put(&lake_key, bytes).await?;
            CopyMethod::GetPut
        }
        Some(Body::File(file)) => {
            lake.put_file(&lake_key, file.path()).await?;
            CopyMethod::GetPut
        }
        None => lake.copy_from(landing, &object.key, &lake_key).await?,
    };
    let (lake_size, lake_sha) = lake.checksum(&lake_key).await?;
    if (lake_size, lake_sha) != (landing_size, landing_sha) {
        return Err(verify_error(format!(
            "the lake copy has {lake_size} bytes with SHA-256 {}, the landing object {landing_size} bytes with SHA-256 {}",
            hex(&lake_sha),
            hex(&landing_sha)
        )));
    }
    Ok(ArchivedFile {
        landing_key: object.key.clone(),
        lake_key,
        size: lake_size,
        sha256: lake_sha,
        landing_etag: object.etag.clone(),
        action: ArchiveAction::Copied(method),
    })
}

/// Rebuilds the archived file list of `day` from the lake alone (for `--from-lake`, when the
/// landing files may be gone): lists [`raw_prefix`], keeps the files named for `day` (others
/// are logged and skipped), and reads each one for its size and SHA-256. Same keys, sizes and
/// checksums as [`archive_day`] returned, in landing order, with [`ArchiveAction::FromLake`].
pub async fn list_archived(
    lake: &Store,
    day: NaiveDate,
    options: &LakeOptions,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<Vec<ArchivedFile>> {
    let prefix = raw_prefix(day);
    let listed = lake.list(&prefix).await?;
    // Selection works on the original keys, so the landing-day rule applies unchanged.
    let originals = listed.into_iter().filter_map(|o| {
        let original = o.key.strip_prefix(&prefix).map(str::to_owned);
        if original.is_none() || LandingName::parse(&o.key).is_none_or(|n| n.date != day) {
            tracing::warn!(
                key = o.key,
                "not a landing file of {day}; not part of the day"
            );
        }
        original.map(|key| ObjectMeta { key, ..o })
    });
    let selected = select_lake_day(originals, day);
    checksum_archived(lake, day, &selected, options, progress).await
}

/// [`select_day`] on the original keys of a lake partition: a file the day rule refuses there
/// (an S3 lake written before keys were checked may hold `raw/dt=D/../…`) stays out of the day,
/// with a warning.
fn select_lake_day(
    originals: impl IntoIterator<Item = ObjectMeta>,
    day: NaiveDate,
) -> Vec<ObjectMeta> {
    let listing = select_day_report(originals, &[], day);
    for r in listing.refused.iter().filter(|r| r.day == Some(day)) {
        tracing::warn!(
            key = r.key,
            code = r.code,
            "{}; not part of the day",
            r.reason
        );
    }
    listing.objects
}

/// Reads the lake copies of `objects` (original keys, as listed under [`raw_prefix`]) for
/// their size and SHA-256.
async fn checksum_archived(
    lake: &Store,
    day: NaiveDate,
    objects: &[ObjectMeta],
    options: &LakeOptions,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<Vec<ArchivedFile>> {
    for_each_object(objects, options, progress, |_, object| async move {
        let lake_key = raw_key(day, &object.key);
        // S3's record of the object's SHA-256 when it has one: a run's parser reads the
        // object anyway and checks it against this, so it need not be read twice.
        let (size, sha256) = lake.checksum(&lake_key).await?;
        if size != object.size {
            return Err(Error::Verify {
                landing_key: object.key.clone(),
                lake_key,
                detail: format!(
                    "listed with {} bytes, read {size}: changed while being read",
                    object.size
                ),
            });
        }
        Ok(ArchivedFile {
            landing_key: object.key.clone(),
            lake_key,
            size,
            sha256,
            landing_etag: None,
            action: ArchiveAction::FromLake,
        })
    })
    .await
}

/// The files of `day` as the lake holds them after a landing run archived `archived`: those
/// plus every other file of the day already under [`raw_prefix`] (archived by earlier runs,
/// whose landing objects may be gone), in landing order. Only the others are read (for their
/// size and SHA-256, as [`list_archived`] does, marked [`ArchiveAction::FromLake`]); the
/// just-archived files keep what [`archive_day`] verified, and each key appears once.
///
/// This is what makes the lake, not landing, define a day: a file leaves day D only when it is
/// deleted from the lake's `raw/dt=D/`.
pub async fn with_archived_rest(
    lake: &Store,
    day: NaiveDate,
    archived: Vec<ArchivedFile>,
    options: &LakeOptions,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<Vec<ArchivedFile>> {
    let prefix = raw_prefix(day);
    let known: std::collections::HashSet<&str> =
        archived.iter().map(|f| f.landing_key.as_str()).collect();
    let rest: Vec<ObjectMeta> = select_lake_day(
        lake.list(&prefix).await?.into_iter().filter_map(|o| {
            let original = o.key.strip_prefix(&prefix)?.to_owned();
            (!known.contains(original.as_str())).then_some(ObjectMeta { key: original, ..o })
        }),
        day,
    );
    let rest = checksum_archived(lake, day, &rest, options, progress).await?;
    let mut all = archived;
    all.extend(rest);
    all.sort_by(|a, b| landing_order(&a.landing_key, &b.landing_key));
    Ok(all)
}

/// For `--move`: deletes the landing objects of `archived`, which [`archive_day`] verified.
/// Before each deletion it checks again that the lake copy is there with the archived size and
/// that the landing object still has the size and version tag it had when archived; a landing
/// object rewritten since is **not** deleted (a [`Error::Verify`] names it). Objects already
/// gone are skipped. Files rebuilt from the lake ([`ArchiveAction::FromLake`]) were never
/// compared with landing, so they are refused with [`Error::Config`] before anything is deleted.
/// Returns how many objects were deleted.
pub async fn delete_landing(
    landing: &Store,
    lake: &Store,
    archived: &[ArchivedFile],
    options: &LakeOptions,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<usize> {
    if let Some(f) = archived
        .iter()
        .find(|f| f.action == ArchiveAction::FromLake)
    {
        return Err(Error::Config(format!(
            "{:?} was rebuilt from the lake, not archived from {}: it cannot be moved",
            f.landing_key,
            landing.url()
        )));
    }
    let metas: Vec<ObjectMeta> = archived
        .iter()
        .map(|f| ObjectMeta {
            key: f.landing_key.clone(),
            size: f.size,
            etag: f.landing_etag.clone(),
        })
        .collect();
    let deleted = for_each_object(&metas, options, progress, |i, _| async move {
        let file = &archived[i];
        let refuse = |detail: String| Error::Verify {
            landing_key: file.landing_key.clone(),
            lake_key: file.lake_key.clone(),
            detail: format!("{detail}; the landing object was not deleted"),
        };
        match lake.head(&file.lake_key).await? {
            Some(m) if m.size == file.size => {}
            Some(m) => {
                return Err(refuse(format!(
                    "the lake copy now has {} bytes, {} when archived",
                    m.size, file.size
                )))
            }
            None => return Err(refuse("the lake copy is gone".into())),
        }
        let Some(now) = landing.head(&file.landing_key).await? else {
            return Ok(false);
        };
        let tag_changed = matches!((&now.etag, &file.landing_etag), (Some(a), Some(b)) if a != b);
        if now.size != file.size || tag_changed {
            return Err(refuse(format!(
                "it changed since it was archived ({} bytes, tag {:?}; archived {} bytes, tag {:?})",
                now.size, now.etag, file.size, file.landing_etag
            )));
        }
        landing.delete(&file.landing_key).await?;
        Ok(true)
    })
    .await?;
    Ok(deleted.into_iter().filter(|d| *d).count())
}

/// Runs `f(index, object)` on every object, at most `options.concurrency` at once, reports
/// progress as each one finishes, and returns the results in the order of `objects`. Stops at
/// the first error (objects in flight are abandoned; not yet started ones never start). The
/// bulk steps of this module are built on it. Crate-private: a generic concurrency helper is
/// not part of the lake's domain (a caller outside uses `futures_util`'s `buffer_unordered`).
pub(crate) async fn for_each_object<'a, T, F, Fut>(
    objects: &'a [ObjectMeta],
    options: &LakeOptions,
    progress: &(dyn Fn(Progress<'_>) + Sync),
    f: F,
) -> Result<Vec<T>>
where
    F: Fn(usize, &'a ObjectMeta) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let files_total = objects.len();
    let bytes_total = objects.iter().map(|o| o.size).sum();
    let mut results: Vec<Option<T>> = std::iter::repeat_with(|| None).take(files_total).collect();
    let mut bytes_done = 0;
    let mut files_done = 0;
    // A future is made as a slot frees, not all up front: each holds a whole copy's state
    // (about 20 KB), and a day may have a hundred thousand files. (Made in this loop rather
    // than in a stream's closure, which would make the returned future lose `Send`: rustc's
    // higher-ranked lifetime limitation; callers spawn it.)
    let limit = options.concurrency.max(1);
    let mut running = stream::FuturesUnordered::new();
    let mut next = 0;
    loop {
        while running.len() < limit && next < files_total {
            let i = next;
            let fut = f(i, &objects[i]);
            running.push(async move { (i, fut.await) });
            next += 1;
        }
        let Some((i, result)) = running.next().await else {
            break;
        };
        let object = &objects[i];
        results[i] = Some(result?);
        files_done += 1;
        bytes_done += object.size;
        progress(Progress {
            files_done,
            files_total,
            bytes_done,
            bytes_total,
            key: &object.key,
        });
    }
    Ok(results.into_iter().flatten().collect())
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Bytes of a refused line kept in `etl.reject.raw` and in the quarantine's `raw` (4 KiB). A
/// line can be of any size (a 100 MB line is one reject, read past in bounded memory); its
/// length and SHA-256 are kept beside the prefix, and the whole line stays in the lake's
/// `raw/` copy of its file.
pub const REJECT_RAW_BYTES: usize = crate::lines::KEPT_BYTES;

/// The kept prefix of a refused line (at most [`REJECT_RAW_BYTES`]), its length in bytes and
/// its SHA-256.
pub(crate) fn raw_line(raw: &[u8]) -> (&[u8], u64, [u8; 32]) {
    (
        &raw[..raw.len().min(REJECT_RAW_BYTES)],
        raw.len() as u64,
        sha256(raw),
    )
}

/// The refused lines of one day, gathered as NDJSON for `quarantine/dt=D/rejects.ndjson`.
///
/// Each line is one JSON object: `source` (object key), `line` (1-based), `code` (stable, e.g.
/// `missing_field`), `field` (dotted path or `null`), `reason` (the message), `raw` (the
/// line's first [`REJECT_RAW_BYTES`] bytes as text, invalid UTF-8 replaced by U+FFFD),
/// `raw_length` and `raw_sha256` (of the whole line) and, only when that prefix is not valid
/// UTF-8 (so `raw` is not its exact bytes), `raw_hex` (the exact bytes of that prefix). A file refused as a whole
/// ([`RefusedFile`]) is one object with `line` 0, an empty `raw` and no length or checksum.
///
/// Memory stays bounded however many lines are refused: past [`Quarantine::SPILL_BYTES`] the
/// lines go to a temporary file of the machine's temporary folder (removed when the value is
/// dropped), which [`Quarantine::write`] then streams to the lake. The lines are written by
/// the caller's thread: spilling appends a megabyte at a time to a local file, too short a
/// wait to hand to a blocking thread.
///
/// ```
/// use d2d_pipeline::lake::Quarantine;
/// let parsed = d2d_model::parse::parse_bytes("data/2019-06-01-9-5-0-events.json", b"{not json\n");
/// let mut q = Quarantine::new("2019-06-01".parse().unwrap());
/// q.extend(&parsed.rejects)?;
/// assert_eq!(q.len(), 1);
/// assert!(String::from_utf8(q.contents()?).unwrap().contains(r#""code":"invalid_json""#));
/// # Ok::<(), d2d_pipeline::Error>(())
/// ```
#[derive(Debug)]
pub struct Quarantine {
    day: NaiveDate,
    /// Lines not yet spilled.
    buffer: Vec<u8>,
    spill_bytes: usize,
    /// Lines beyond `spill_bytes`, in a scratch file (removed when dropped).
    spool: Option<tempfile::NamedTempFile>,
    size: u64,
    count: u64,
}

/// What [`Quarantine::write`] left in the lake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineFile {
    /// The lake key ([`quarantine_key`]).
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Refused lines in it.
    pub rejects: u64,
}

impl Quarantine {
    /// Bytes of NDJSON kept in memory before the lines go to a temporary file.
    pub const SPILL_BYTES: usize = 1 << 20;

    /// An empty quarantine for `day`.
    pub fn new(day: NaiveDate) -> Self {
        Self {
            day,
            buffer: Vec::new(),
            spill_bytes: Self::SPILL_BYTES,
            spool: None,
            size: 0,
            count: 0,
        }
    }

    /// The same, spilling to its temporary file past `bytes` instead of
    /// [`Quarantine::SPILL_BYTES`] (tests use a few bytes to spill early).
    pub fn spill_after(mut self, bytes: usize) -> Self {
        self.spill_bytes = bytes;
        self
    }

    fn io_error(&self, op: &'static str, source: std::io::Error) -> Error {
        Error::Io {
            url: self
                .spool
                .as_ref()
                .map_or_else(std::env::temp_dir, |s| s.path().to_path_buf())
                .display()
                .to_string(),
            key: quarantine_key(self.day),
            op,
            source,
        }
    }

    /// Adds one refused line.
    pub fn push(&mut self, reject: &Reject) -> Result<()> {
        let (prefix, length, sha) = raw_line(&reject.raw);
        self.push_refused(
            &reject.source,
            reject.line,
            &reject.reason,
            (prefix, length, sha),
        )
    }

    /// Adds a line too long to be read whole, refused as `line_too_long`.
    pub(crate) fn push_long(&mut self, source: &str, long: &LongLine) -> Result<()> {
        self.push_refused(source, long.line, &long.reason(), long.kept())
    }

    fn push_refused(
        &mut self,
        source: &str,
        number: u64,
        reason: &RejectReason,
        (prefix, length, sha): (&[u8], u64, [u8; 32]),
    ) -> Result<()> {
        let mut line = serde_json::json!({
            "source": source,
            "line": number,
            "code": reason.code(),
            "field": reason.field(),
            "reason": reason.to_string(),
            "raw": String::from_utf8_lossy(prefix),
            "raw_length": length,
            "raw_sha256": hex(&sha),
        });
        if std::str::from_utf8(prefix).is_err() {
            line["raw_hex"] = serde_json::Value::String(hex(prefix));
        }
        self.push_line(&line)
    }

    /// Adds a file refused as a whole (line 0).
    pub fn push_file(&mut self, refused: &RefusedFile) -> Result<()> {
        let line = serde_json::json!({
            "source": refused.key,
            "line": 0,
            "code": refused.code,
            "field": null,
            "reason": refused.reason,
            "raw": "",
        });
        self.push_line(&line)
    }

    fn push_line(&mut self, line: &serde_json::Value) -> Result<()> {
        // A `Value` always serialises; its `Display` is compact JSON on one line.
        let start = self.buffer.len();
        self.buffer.extend_from_slice(line.to_string().as_bytes());
        self.buffer.push(b'\n');
        self.size += (self.buffer.len() - start) as u64;
        self.count += 1;
        if self.buffer.len() > self.spill_bytes {
            self.spill()?;
        }
        Ok(())
    }

    /// Adds refused lines.
    pub fn extend<'a>(&mut self, rejects: impl IntoIterator<Item = &'a Reject>) -> Result<()> {
        for r in rejects {
            self.push(r)?;
        }
        Ok(())
    }

    /// Moves the buffered lines to the temporary file (created on first use).
    fn spill(&mut self) -> Result<()> {
        use std::io::Write;
        if self.spool.is_none() {
            let file = crate::scratch::file(FileKind::Quarantine);
            self.spool = Some(file.map_err(|e| self.io_error("create", e))?);
        }
        if let Some(spool) = &mut self.spool {
            if let Err(e) = spool.as_file_mut().write_all(&self.buffer) {
                return Err(self.io_error("write", e));
            }
        }
        self.buffer.clear();
        Ok(())
    }

    /// Refused lines gathered.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// No refused line?
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of NDJSON gathered.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Has the quarantine moved its lines to a temporary file?
    pub fn spilled(&self) -> bool {
        self.spool.is_some()
    }

    /// The NDJSON gathered so far, read back into memory (for tests and small days).
    pub fn contents(&mut self) -> Result<Vec<u8>> {
        use std::io::{Read, Seek};
        let mut out = Vec::new();
        if let Some(spool) = &mut self.spool {
            let file = spool.as_file_mut();
            let read = file
                .seek(std::io::SeekFrom::Start(0))
                .and_then(|_| file.read_to_end(&mut out));
            if let Err(e) = read {
                return Err(self.io_error("read", e));
            }
        }
        out.extend_from_slice(&self.buffer);
        Ok(out)
    }

    /// Replaces the day's quarantine file in `lake` with these rejects, so re-runs are
    /// idempotent; with none, deletes any file an earlier run left and returns `None`. A
    /// spilled quarantine is streamed from its temporary file.
    pub async fn write(mut self, lake: &Store) -> Result<Option<QuarantineFile>> {
        let key = quarantine_key(self.day);
        if self.count == 0 {
            lake.delete(&key).await?;
            return Ok(None);
        }
        let file = QuarantineFile {
            key,
            size: self.size,
            rejects: self.count,
        };
        if self.spool.is_none() {
            lake.put(&file.key, Bytes::from(std::mem::take(&mut self.buffer)))
                .await?;
            return Ok(Some(file));
        }
        self.spill()?;
        if let Some(spool) = &mut self.spool {
            if let Err(e) = spool.as_file().sync_data() {
                return Err(self.io_error("flush", e));
            }
            lake.put_file(&file.key, spool.path()).await?;
        }
        Ok(Some(file))
    }
}

/// Writes (or, with no rejects, removes) the quarantine file of `day`: see [`Quarantine`].
pub async fn write_quarantine<'a>(
    lake: &Store,
    day: NaiveDate,
    rejects: impl IntoIterator<Item = &'a Reject>,
) -> Result<Option<QuarantineFile>> {
    let mut q = Quarantine::new(day);
    q.extend(rejects)?;
    q.write(lake).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn obj(key: &str) -> ObjectMeta {
        ObjectMeta {
            key: key.into(),
            size: 1,
            etag: None,
        }
    }

    fn day() -> NaiveDate {
        "2019-06-01".parse().unwrap()
    }

    #[test]
    fn selects_exactly_the_day_in_landing_order() {
        let listed = [
            "data/resources/2019/06/01/15/17/2019-06-01-15-17-10-events.txt",
            "data/resources/2019/06/01/15/17/2019-06-01-15-17-9-events.txt",
            // Neighbouring days, also one misfiled under the day's folder.
            "data/resources/2019/06/01/23/59/2019-05-31-23-59-59-events.txt",
            "data/resources/2019/06/02/00/00/2019-06-02-0-0-0-events.txt",
            // Flat layout, other extension.
            "data/2019-06-01-0-0-0-events.json",
            // Not landing names.
            "data/resources/2019/06/01/README.md",
            "data/2019-06-01-events.txt",
            "data/2019-06-01-15-17-10-events",
            "data/2019-06-01-15-17-10-notes.txt",
            "data/2019-06-01-25-0-0-events.txt",
        ];
        let keys: Vec<String> = select_day(listed.iter().map(|k| obj(k)), day())
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(
            keys,
            [
                "data/2019-06-01-0-0-0-events.json",
                "data/resources/2019/06/01/15/17/2019-06-01-15-17-9-events.txt",
                "data/resources/2019/06/01/15/17/2019-06-01-15-17-10-events.txt",
            ]
        );
    }

    #[test]
    fn odd_keys_and_stray_names_of_the_day_are_refused_with_why() {
        let listed = [
            "data/2019-06-01-1-0-0-events.txt",
            "../x/2019-06-01-1-0-1-events.txt",
            "data//2019-06-01-1-0-2-events.txt",
            "/abs/2019-06-01-1-0-3-events.txt",
            "data\\2019-06-01-1-0-4-events.txt",
            "data/./2019-06-01-1-0-5-events.txt",
            "data/2019-06-01-1-0-6-events.txt.bak",
            "data/2019-02-30-1-0-0-events.txt",
            // Another day's odd key and stray copy are that day's to report.
            "../x/2019-06-02-1-0-0-events.txt",
            "data/2019-06-02-1-0-0-events.txt.bak",
            "data/README.md",
        ];
        let unlisted = [Unlisted {
            key: "data/2019-06-01-1-0-7-events.txt".into(),
            code: "link_outside",
            reason: "a symbolic link leads out of the store's folder",
        }];
        let got = select_day_report(listed.iter().map(|k| obj(k)), &unlisted, day());
        let keys: Vec<&str> = got.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["data/2019-06-01-1-0-0-events.txt"]);
        let refused: Vec<(&str, &str, Option<NaiveDate>)> = got
            .refused
            .iter()
            .map(|r| (r.key.as_str(), r.code, r.day))
            .collect();
        let d = Some(day());
        assert_eq!(
            refused,
            [
                ("../x/2019-06-01-1-0-1-events.txt", "unsafe_key", d),
                ("/abs/2019-06-01-1-0-3-events.txt", "unsafe_key", d),
                ("data/./2019-06-01-1-0-5-events.txt", "unsafe_key", d),
                ("data//2019-06-01-1-0-2-events.txt", "unsafe_key", d),
                (
                    "data/2019-02-30-1-0-0-events.txt",
                    "not_a_landing_name",
                    None
                ),
                (
                    "data/2019-06-01-1-0-6-events.txt.bak",
                    "not_a_landing_name",
                    d
                ),
                ("data/2019-06-01-1-0-7-events.txt", "link_outside", d),
                ("data\\2019-06-01-1-0-4-events.txt", "unsafe_key", d),
            ]
        );
        assert!(got.refused[0].reason.contains("'..'"), "{}", got.refused[0]);
        // select_day alone never returns an odd key either.
        assert_eq!(select_day(listed.iter().map(|k| obj(k)), day()).len(), 1);
    }

    #[test]
    fn quarantine_keeps_a_bounded_prefix_with_length_and_checksum() {
        let mut line = b"{\"x\":\"".to_vec();
        line.resize(10 * REJECT_RAW_BYTES, b'a');
        let parsed = d2d_model::parse::parse_bytes("data/x.json", &line);
        let mut q = Quarantine::new(day());
        q.extend(&parsed.rejects).unwrap();
        q.push_file(&RefusedFile {
            key: "../x/2019-06-01-1-0-0-events.txt".into(),
            size: 3,
            day: Some(day()),
            code: "unsafe_key",
            reason: "its key cannot be a lake key".into(),
        })
        .unwrap();
        let text = q.contents().unwrap();
        let lines: Vec<serde_json::Value> = text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines[0]["raw"].as_str().unwrap().len(), REJECT_RAW_BYTES);
        assert_eq!(lines[0]["raw_length"], line.len());
        assert_eq!(lines[0]["raw_sha256"], hex(&sha256(&line)));
        assert_eq!(lines[1]["line"], 0);
        assert_eq!(lines[1]["code"], "unsafe_key");
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn layouts_parse_and_name_their_prefix() {
        let cases = [
            ("scan", ""),
            ("nested:data/resources/", "data/resources/2019/06/01/"),
            ("nested:data/resources", "data/resources/2019/06/01/"),
            ("nested:", "2019/06/01/"),
            ("flat:data", "data/2019-06-01-"),
            ("flat:", "2019-06-01-"),
        ];
        for (text, prefix) in cases {
            let layout: DayLayout = text.parse().unwrap();
            assert_eq!(layout.listing_prefix(day()), prefix, "{text}");
            assert_eq!(layout.to_string().parse::<DayLayout>().unwrap(), layout);
        }
        for bad in ["", "nested", "deep:data/", "scan:x"] {
            assert!(bad.parse::<DayLayout>().is_err(), "{bad}");
        }
    }

    #[test]
    fn lake_keys_are_hive_partitions() {
        assert_eq!(
            raw_key(day(), "data/2019-06-01-0-0-0-events.json"),
            "raw/dt=2019-06-01/data/2019-06-01-0-0-0-events.json"
        );
        assert_eq!(
            quarantine_key(day()),
            "quarantine/dt=2019-06-01/rejects.ndjson"
        );
    }

    #[test]
    fn quarantine_lines_keep_the_raw_bytes() {
        let input = b"{\"event\":1}\n\xff\xfe bad\n\n";
        let parsed = d2d_model::parse::parse_bytes("data/x.json", input);
        assert_eq!(parsed.rejects.len(), 2);
        let mut q = Quarantine::new(day());
        q.extend(&parsed.rejects).unwrap();
        let lines: Vec<serde_json::Value> = q
            .contents()
            .unwrap()
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["source"], "data/x.json");
        assert_eq!(lines[0]["line"], 1);
        assert_eq!(lines[0]["raw"], "{\"event\":1}");
        assert!(lines[0].get("raw_hex").is_none());
        assert_eq!(lines[0]["code"], parsed.rejects[0].reason.code());
        assert_eq!(lines[0]["reason"], parsed.rejects[0].reason.to_string());
        assert_eq!(lines[1]["line"], 2);
        assert_eq!(lines[1]["code"], "invalid_utf8");
        assert_eq!(lines[1]["raw"], "\u{fffd}\u{fffd} bad");
        assert_eq!(lines[1]["raw_hex"], "fffe20626164");
    }

    /// Many rejects do not stay in memory: the quarantine spills them to a temporary file
    /// and streams that to the lake, and the file is the same as one gathered in memory.
    #[tokio::test]
    async fn a_spilled_quarantine_writes_the_same_file() {
        let input: Vec<u8> = (0..2_000)
            .flat_map(|i| [format!("{{\"bad\":{i}\n").into_bytes(), b"\xff\n".to_vec()].concat())
            .collect();
        let parsed = d2d_model::parse::parse_bytes("data/x.json", &input);
        assert_eq!(parsed.rejects.len(), 4_000);
        let mut in_memory = Quarantine::new(day());
        in_memory.extend(&parsed.rejects).unwrap();
        assert!(!in_memory.spilled());
        let mut spilled = Quarantine::new(day()).spill_after(4096);
        spilled.extend(&parsed.rejects).unwrap();
        assert!(spilled.spilled());
        let expected = in_memory.contents().unwrap();
        assert_eq!(spilled.contents().unwrap(), expected);
        assert_eq!(spilled.size(), expected.len() as u64);

        let root = std::env::temp_dir().join(format!("d2d-spill-unit-{}", std::process::id()));
        let lake = Store::local(&root);
        let written = spilled.write(&lake).await.unwrap().unwrap();
        assert_eq!(
            (written.rejects, written.size),
            (4_000, expected.len() as u64)
        );
        assert_eq!(lake.get(&written.key).await.unwrap(), expected);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[tokio::test]
    async fn bulk_steps_keep_order_and_report_progress() {
        let objects: Vec<ObjectMeta> = (0..40)
            .map(|i| ObjectMeta {
                key: format!("k{i:02}"),
                size: i,
                etag: None,
            })
            .collect();
        let seen = std::sync::Mutex::new(Vec::new());
        let report = |p: Progress<'_>| seen.lock().unwrap().push((p.files_done, p.bytes_done));
        // Futures made and not yet finished: never more than the concurrency (a future per
        // file made up front held the whole day's copy states at once).
        let (made, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let out = for_each_object(
            &objects,
            &LakeOptions {
                concurrency: 7,
                ..LakeOptions::default()
            },
            &report,
            |_, o| {
                let alive = made.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(alive, Ordering::SeqCst);
                let made = &made;
                async move {
                    // Finish out of order on purpose.
                    tokio::task::yield_now().await;
                    if o.size % 3 == 0 {
                        tokio::task::yield_now().await;
                    }
                    made.fetch_sub(1, Ordering::SeqCst);
                    Ok(o.key.clone())
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(most.into_inner(), 7);
        let keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(out, keys);
        let seen = seen.into_inner().unwrap();
        assert_eq!(seen.len(), 40);
        assert_eq!(seen.last(), Some(&(40, (0..40).sum())));
        let failed = for_each_object(
            &objects,
            &LakeOptions::default(),
            &no_progress,
            |_, o| async move {
                if o.key == "k13" {
                    Err(Error::Config("boom".into()))
                } else {
                    Ok(())
                }
            },
        )
        .await;
        assert!(matches!(failed, Err(Error::Config(m)) if m == "boom"));
    }

    #[test]
    fn archiving_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let store = Store::local("/nonexistent");
        let options = LakeOptions::default();
        let fut = archive_day(&store, &store, day(), &[], &options, &no_progress);
        assert_send(&fut);
        let fut = list_archived(&store, day(), &options, &no_progress);
        assert_send(&fut);
        let fut = delete_landing(&store, &store, &[], &options, &no_progress);
        assert_send(&fut);
    }
}
