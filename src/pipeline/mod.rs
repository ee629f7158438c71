//! The pipeline.
pub mod backoff;
pub mod settings;
