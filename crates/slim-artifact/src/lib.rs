//! Artifacts exchanged by the pipeline stages, and the store that keeps them.
//!
//! Stage crates never depend on one another: they read and write the types of
//! [`schema`] through the store. Nothing here knows about burn or any backend.

pub mod schema;
