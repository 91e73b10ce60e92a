//! The one error type of this crate; every variant names the path it is about.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, and where.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A filesystem operation failed.
    Io {
        /// The operation, as a verb phrase ("write", "rename into place").
        op: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// A value could not be encoded as JSON for `path`.
    Json {
        /// The file it was meant for.
        path: PathBuf,
        /// What serde_json said.
        source: serde_json::Error,
    },
    /// The destination of a [`crate::DirInstall`] holds something, and replacing it was not asked for.
    Occupied {
        /// The destination.
        path: PathBuf,
        /// What is there, as a phrase ("is a folder that is not empty").
        what: &'static str,
    },
    /// The [`crate::SafetensorsWriter`] was given something that would make an invalid file: a
    /// tensor out of order, a wrong byte count, a duplicate name.
    Safetensors {
        /// The folder or file being written.
        path: PathBuf,
        /// What is wrong, naming the tensor.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io { op, path: path.into(), source }
    }

    pub(crate) fn safetensors(path: impl Into<PathBuf>, reason: impl Into<String>) -> Error {
        Error::Safetensors { path: path.into(), reason: reason.into() }
    }
}

impl Error {
    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Error::Io { path, .. } | Error::Json { path, .. } | Error::Occupied { path, .. } => path,
            Error::Safetensors { path, .. } => path,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { op, path, .. } => write!(f, "cannot {op} {}", path.display()),
            Error::Json { path, .. } => write!(f, "cannot encode {} as JSON", path.display()),
            Error::Occupied { path, what } => write!(f, "{} {what}", path.display()),
            Error::Safetensors { path, reason } => write!(f, "{}: {reason}", path.display()),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Json { source, .. } => Some(source),
            Error::Occupied { .. } | Error::Safetensors { .. } => None,
        }
    }
}
