//! # d2d-pipeline
//!
//! The IO half of d2d: object stores (S3 and a local folder), the data lake, the PostgreSQL
//! warehouse, and the daily run that ties them together. Parsing and every computation come
//! from `d2d-model`.

pub mod alert;
pub mod curated;
pub mod error;
pub mod lake;
pub mod run;
pub mod store;
pub mod warehouse;

pub use error::{Error, Result};
