//! The one error type of the pipeline: each variant says what failed and on what.

/// Everything that can go wrong in a pipeline step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value (URL, date, option) is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// `Result` with the pipeline's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
