//! The one error type of this crate, so that the pipeline can branch on what went wrong.

use std::io;
use std::path::PathBuf;

/// `Result` with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What can go wrong when reading or writing the store.
///
/// Every variant names the path it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Something that should exist does not: an entry, a payload of an entry, a file.
    #[error("{what} not found at {path}")]
    NotFound {
        /// What was looked for, in words.
        what: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The data on disk was written in another, incompatible format; it is never misread.
    #[error("incompatible {what} at {path}: expected {expected}, found {found}")]
    Incompatible {
        /// Which format, in words (store format, manifest schema, payload codec).
        what: String,
        /// Where.
        path: PathBuf,
        /// What this build reads.
        expected: String,
        /// What is on disk.
        found: String,
    },
    /// The data on disk is damaged or inconsistent with its manifest.
    #[error("corrupt artifact at {path}: {reason}")]
    Corrupt {
        /// The damaged file or entry.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A filesystem operation failed.
    #[error("cannot {op} {path}")]
    Io {
        /// The operation, as a verb phrase ("read", "rename into place").
        op: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A value could not be encoded (JSON or binary) for writing to `path`.
    #[error("cannot encode {path}: {reason}")]
    Encode {
        /// The file it was meant for.
        path: PathBuf,
        /// What the encoder said.
        reason: String,
    },
    /// A caller passed a name that cannot be used (stage, payload or role name).
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        /// Which kind of name.
        what: &'static str,
        /// The name given.
        value: String,
        /// Why it is rejected.
        reason: &'static str,
    },
}

impl StoreError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> StoreError {
        StoreError::Io { op, path: path.into(), source }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> StoreError {
        StoreError::Corrupt { path: path.into(), reason: reason.into() }
    }
}
