//! # d2d
//!
//! A ride-pooling fleet's raw GPS and shift events, turned into a data lake and a PostgreSQL
//! warehouse. This facade re-exports the member crates and owns the runnable examples and the
//! benchmarks; depend on a member directly when you need only part of it.
//!
//! | crate | re-exported as | what it does |
//! |---|---|---|
//! | `d2d-model` | [`model`] | typed events, parsing with rejects, periods, tracks, distances, data checks; no IO |
//! | `d2d-pipeline` | [`pipeline`] | IO: object stores (S3, local folder), the data lake, the PostgreSQL warehouse, the daily run |
//!
//! Cargo feature `lambda` (off by default) forwards to `d2d-pipeline/lambda`: the daily run as an
//! AWS Lambda handler, served by the `d2d-lambda` binary (`src/bin/d2d-lambda.rs`).

pub use d2d_model as model;
pub use d2d_pipeline as pipeline;
