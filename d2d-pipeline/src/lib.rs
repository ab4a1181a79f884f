//! # d2d-pipeline
//!
//! The IO half of d2d: object stores (S3 and a local folder), the data lake, the PostgreSQL
//! warehouse, and the daily run that ties them together. Parsing and every computation come
//! from `d2d-model`.
//!
//! | cargo feature | default | what it adds |
//! |---|---|---|
//! | `lambda` | off | `lambda` module: the daily run as an AWS Lambda handler (`lambda_runtime`), the warehouse URL from AWS Secrets Manager |

pub mod alert;
pub mod curated;
pub mod error;
pub mod lake;
#[cfg(feature = "lambda")]
pub mod lambda;
mod lines;
pub mod run;
mod scratch;
pub mod store;
pub mod warehouse;

pub use error::{Error, Result};
