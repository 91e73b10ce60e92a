//! Filesystem writes that a crash, a full disk or a failed step cannot leave half done.
//!
//! Domain-free, like rust-analyzer's `stdx`: nothing here knows models, stages or caches, and the
//! only dependencies are std, serde and serde_json. Every write of a user-visible file in the
//! workspace goes through one of these:
//!
//! - [`write_atomic`], [`write_json_atomic`] and [`AtomicFile`] (streaming): one file, written under a
//!   unique temporary name in the same folder, fsynced, renamed over the destination, and the folder
//!   fsynced. Readers see the old file or the new one, never a mix; on any error the temporary file
//!   is removed.
//! - [`write_new`]: a fresh file created exclusively and fsynced, for folders that are private until
//!   renamed into place (a cache entry's temporary folder, a [`DirInstall`]).
//! - [`DirInstall`]: a folder built under a temporary name beside its destination and renamed into
//!   place, refusing a non-empty destination unless asked to replace it.
//! - [`SafetensorsWriter`]: the one safetensors writer, streaming one tensor at a time into a single
//!   file or into shards with a `model.safetensors.index.json`.
//!
//! docs/reliability.md ("Writes and imports") states the guarantees and names the tests that check
//! them.

mod atomic;
mod dir;
mod error;
pub mod safetensors;

#[cfg(test)]
mod tests;

pub use atomic::{sync_dir, sync_file, unique_suffix, write_atomic, write_json_atomic, write_new, AtomicFile, NewFile};
pub use dir::{DirInstall, Existing};
pub use error::{Error, Result};
pub use safetensors::{Dtype, SafetensorsConfig, SafetensorsWriter, Sharding, TensorSpec};
