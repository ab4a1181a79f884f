//! The README examples, compiled and run as a user's crate would: `cargo test --doc`.
#![doc = include_str!("../../../README.md")]

#[doc = include_str!("../../../d2d-model/README.md")]
pub mod d2d_model_readme {}

#[doc = include_str!("../../../d2d-pipeline/README.md")]
pub mod d2d_pipeline_readme {}
