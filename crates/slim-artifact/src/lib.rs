//! Artifacts exchanged by the pipeline stages, and the store that keeps them.
//!
//! Stage crates never depend on one another: they read and write the types of
//! [`schema`] through the store. Nothing here knows about burn or any backend.
//!
//! The store is content-addressed: an entry lives at `<root>/<stage>/<key>/`, where the
//! [`Key`] is the hash of a canonical [`KeyDoc`] (stage, stage version, resolved config,
//! input keys). A stage run looks up its key, and on a miss writes its outputs through an
//! [`EntryWriter`] whose `commit` writes `manifest.json` last and renames the entry into
//! place. `docs/artifacts.md` is the format spec.
//!
//! ```no_run
//! # fn main() -> Result<(), slim_artifact::StoreError> {
//! use std::collections::BTreeMap;
//! use slim_artifact::{KeyDoc, Store};
//!
//! let store = Store::open(&Store::default_root())?;
//! let config = serde_json::json!({ "scorer": "slimllm", "ratio": 0.2 });
//! let doc = KeyDoc::new("score", 1, &config, BTreeMap::new())?;
//! let key = doc.key();
//! let entry = match store.lookup("score", &key)? {
//!     Some(entry) => entry,
//!     None => {
//!         let mut w = store.begin(&doc)?;
//!         w.put_json("scores.json", &vec![1.0, 2.0])?;
//!         w.commit()?;
//!         store.lookup("score", &key)?.expect("just committed")
//!     }
//! };
//! let scores: Vec<f64> = entry.get_json("scores.json")?;
//! # let _ = scores;
//! # Ok(())
//! # }
//! ```

pub mod codec;
mod entry;
mod error;
mod explain;
mod fsutil;
mod key;
mod kind;
pub mod schema;
mod store;
mod writer;

#[cfg(test)]
mod tests;

pub use entry::{parse_manifest, Entry, Manifest, Payload, Producer, CODEC_BYTES, CODEC_FILE, CODEC_JSON};
pub use error::{Result, StoreError};
pub use explain::{Change, Explanation};
pub use fsutil::write_json_atomic;
pub use key::{Key, KeyDoc};
pub use kind::{check_kind, serde_name, Kind, UnknownName};
pub use store::{Problem, Store, CACHE_ENV};
pub use writer::EntryWriter;

/// Version of the store layout, key document and hashing. Part of every key, and written
/// to the store's `FORMAT` file; a store of another format is refused.
pub const CACHE_FORMAT: u32 = 1;

/// Schema name written into every manifest.
pub const MANIFEST_SCHEMA: &str = "slimllm.manifest";

/// Manifest schema version; readers accept exactly this version.
pub const MANIFEST_VERSION: u32 = 1;

/// Name of the manifest file inside an entry; the commit marker.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Name of the file at the store root holding the cache format.
pub const FORMAT_FILE: &str = "FORMAT";
