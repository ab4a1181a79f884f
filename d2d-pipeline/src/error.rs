//! The one error type of the pipeline: each variant says what failed and on what.

/// Everything that can go wrong in a pipeline step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value (URL, date, option) is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A key handed to an object store is unusable: empty, absolute, with an empty, `.` or
    /// `..` segment — anything that could name a file outside the store's root.
    #[error("{url}: invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The store's URL.
        url: String,
        /// The refused key.
        key: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// The object does not exist in the store.
    #[error("{url}: no object at key {key:?}")]
    NotFound {
        /// The store's URL.
        url: String,
        /// The missing key.
        key: String,
    },

    /// A local-folder store operation failed.
    #[error("{url}: {op} {key:?}: {source}")]
    Io {
        /// The store's URL.
        url: String,
        /// The key (or prefix) operated on.
        key: String,
        /// The operation (`get`, `put`, `list`, ...).
        op: &'static str,
        /// The underlying IO error.
        #[source]
        source: std::io::Error,
    },

    /// An S3 request failed (after the SDK's retries for transient errors).
    #[error("{url}: {op} {key:?}: {detail}")]
    S3 {
        /// The store's URL.
        url: String,
        /// The key (or prefix) operated on.
        key: String,
        /// The operation (`get`, `put`, `list`, `copy`, ...).
        op: &'static str,
        /// The SDK's error with its whole chain of causes.
        detail: String,
    },

    /// An archived object does not match its landing object (size or SHA-256), or changed
    /// since it was archived.
    #[error("archive of {landing_key:?} as {lake_key:?} failed verification: {detail}")]
    Verify {
        /// Key in the landing store.
        landing_key: String,
        /// Key in the lake store.
        lake_key: String,
        /// What differs.
        detail: String,
    },

    /// A statement against the PostgreSQL warehouse failed; `detail` carries the server's
    /// message, detail, hint and where (the procedure and line), when it sent them.
    #[error("warehouse: {context}: {detail}")]
    Database {
        /// What the pipeline was doing.
        context: String,
        /// The server's (or the driver's) full description.
        detail: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },

    /// The embedded migrations and the database's migration history disagree.
    #[error("warehouse migration {version} ({name}): {detail}")]
    Migration {
        /// Version of the migration.
        version: i32,
        /// Its name.
        name: String,
        /// What is wrong.
        detail: String,
    },

    /// A file of the lake's curated zone could not be encoded or spooled.
    #[error("curated zone: {key}: {detail}")]
    Curated {
        /// The lake key of the file.
        key: String,
        /// What went wrong.
        detail: String,
    },

    /// A service accepted the connection (or did not refuse it) but did not answer in time.
    #[error("{service}: {operation}: no answer within {after:?} ({hint})")]
    Timeout {
        /// What was asked, where: `warehouse 127.0.0.1:5432/d2d`.
        service: String,
        /// What was being done: `connect`.
        operation: &'static str,
        /// The limit that ran out.
        after: std::time::Duration,
        /// Which setting sets the limit.
        hint: &'static str,
    },

    /// TLS for the PostgreSQL connection cannot be set up (bad root certificate, ...).
    #[error("PostgreSQL TLS: {0}")]
    Tls(String),

    /// The same source object was handed twice to one day's load.
    #[error("source {key:?} was already added to the load of {day}")]
    DuplicateSource {
        /// The landing key.
        key: String,
        /// The landing day being loaded.
        day: chrono::NaiveDate,
    },

    /// The day's share of refused lines is above the configured maximum
    /// (`RunConfig::max_reject_ratio`, `--max-reject-ratio`). Checked before the merge, so
    /// nothing of the day was committed and no quarantine file was written.
    #[error("{rejects} of {lines} lines refused: reject ratio {ratio:.4} is above the maximum {max} (--max-reject-ratio); nothing of the day was loaded")]
    TooManyRejects {
        /// Refused lines.
        rejects: u64,
        /// Non-blank lines read.
        lines: u64,
        /// `rejects / lines`.
        ratio: f64,
        /// The maximum allowed.
        max: f64,
    },

    /// A daily run failed before its load was committed; `source` is the cause. The run is
    /// recorded as `failed` in `etl.load_run` (when the database could be reached) and the
    /// warehouse is unchanged (a failure after the commit is [`Error::AfterCommit`]).
    #[error("daily run of {day} failed while {phase}: {source}")]
    Run {
        /// The landing day.
        day: chrono::NaiveDate,
        /// Its id in `etl.load_run`, when it got that far.
        run_id: Option<i64>,
        /// What the run was doing (`archiving`, `loading`, ...).
        phase: &'static str,
        /// The cause.
        #[source]
        source: Box<Error>,
    },

    /// A daily run committed its load, then a later step failed: writing the quarantine
    /// file, deleting landing objects (`--move`), or closing the run record. The warehouse
    /// holds the new load and the run is recorded as `succeeded` with `error` set to
    /// `<phase>: <cause>` (when the database could be reached); re-running the day finishes
    /// the work. Worth an alert all the same.
    #[error("daily run of {day} committed its load, then failed while {phase} (the load stands; re-run the day to finish): {source}")]
    AfterCommit {
        /// The landing day.
        day: chrono::NaiveDate,
        /// Its id in `etl.load_run`.
        run_id: Option<i64>,
        /// What the run was doing (`writing the quarantine`, `deleting landing objects`, ...).
        phase: &'static str,
        /// The cause.
        #[source]
        source: Box<Error>,
    },

    /// A step that cannot fail on valid input did (a worker thread panicked, a counter
    /// overflowed): a bug, reported with what it was working on.
    #[error("internal error while {context}")]
    Internal {
        /// What failed and on which key or file.
        context: String,
    },

    /// The alert command could not be run or reported a failure.
    #[error("alert command {command:?}: {detail}")]
    Alert {
        /// The command line.
        command: String,
        /// What went wrong.
        detail: String,
    },

    /// Publishing the failure summary to an SNS topic failed.
    #[error("alert to SNS topic {topic}: {detail}")]
    AlertSns {
        /// The topic's ARN.
        topic: String,
        /// The SDK's error with its causes.
        detail: String,
    },

    /// A secret could not be read from AWS Secrets Manager, or is not what was expected.
    #[error("secret {secret}: {detail}")]
    Secret {
        /// The secret's ARN or name.
        secret: String,
        /// What went wrong.
        detail: String,
    },
}

/// `Result` with the pipeline's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
