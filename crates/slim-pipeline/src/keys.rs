//! Cache keys of the pipeline's inputs and stages. External inputs (the model directory)
//! are content-hashed; derived inputs contribute their producer's key.

use anyhow::{Context, Result};
use serde::Serialize;
use slim_artifact::{Key, KeyDoc, Store};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Version of every stage's output format; bump when a stage's output changes.
pub const STAGE_VERSION: u32 = 1;

/// Content key of a model directory: blake3 over config.json, tokenizer.json and the
/// safetensors files (names and bytes), never over paths or times.
pub fn model_key(dir: &Path) -> Result<Key> {
    let files = model_files(dir)?;
    let mut h = blake3::Hasher::new();
    for f in &files {
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        h.update(name.as_bytes());
        let mut file = std::fs::File::open(f).with_context(|| format!("opening {}", f.display()))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).with_context(|| format!("reading {}", f.display()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    let hex = h.finalize().to_hex();
    Key::parse(&hex[..32]).context("blake3 hex is a key")
}

/// The files [`model_key`] hashes, in order.
fn model_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = vec![dir.join("config.json"), dir.join("tokenizer.json")];
    files.extend(slim_checkpoint::weights::weight_files(dir)?);
    Ok(files)
}

/// The file in a cache's root that remembers model keys ([`ModelSource::open_in`]).
pub const HASHES_FILE: &str = "_hashes.json";

/// What identifies a file's contents without reading them: name, size, modification and
/// status-change times (ns) and inode. A write changes the status-change time, which no
/// program can set back, so contents that changed never keep a remembered key.
fn file_stamp(path: &Path) -> Result<serde_json::Value> {
    let m = std::fs::metadata(path).with_context(|| format!("inspecting {}", path.display()))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    #[cfg(unix)]
    let times = {
        use std::os::unix::fs::MetadataExt;
        serde_json::json!([m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec(), m.ino(), m.dev()])
    };
    #[cfg(not(unix))]
    let times = serde_json::json!(m.modified().ok().map(|t| format!("{t:?}")));
    Ok(serde_json::json!([name, m.len(), times]))
}

/// A model directory given as input, with its content key, hashed once when opened.
#[derive(Clone, Debug)]
pub struct ModelSource {
    dir: PathBuf,
    key: Key,
}

impl ModelSource {
    /// Hashes the model directory `dir` ([`model_key`]).
    pub fn open(dir: &Path) -> Result<ModelSource> {
        Ok(ModelSource { dir: dir.to_path_buf(), key: model_key(dir)? })
    }

    /// [`ModelSource::open`], remembering the key in the cache at `store` ([`HASHES_FILE`], keyed by
    /// the folder's canonical path and every hashed file's [`file_stamp`]): a model whose files
    /// are untouched since it was last hashed is not read again, so a rerun of a 7B model does not
    /// spend seconds reading 13 GB to find its key.
    pub fn open_in(dir: &Path, store: &Store) -> Result<ModelSource> {
        let canon = std::fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))?;
        let id = canon.to_string_lossy().into_owned();
        let stamps = model_files(dir)?.iter().map(|f| file_stamp(f)).collect::<Result<Vec<_>>>()?;
        let path = store.root().join(HASHES_FILE);
        let mut memo: serde_json::Map<String, serde_json::Value> =
            std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        let remembered = memo.get(&id).filter(|e| e["files"] == serde_json::Value::from(stamps.clone()));
        if let Some(key) = remembered.and_then(|e| e["key"].as_str()).and_then(Key::parse) {
            tracing::debug!("model key of {id}: {key} (remembered, files unchanged)");
            return Ok(ModelSource { dir: dir.to_path_buf(), key });
        }
        let key = model_key(dir)?;
        memo.insert(id, serde_json::json!({"files": stamps, "key": key.to_string()}));
        // Losing a concurrent writer's update only costs that model one more hashing.
        if let Err(e) = slim_fs::write_json_atomic(&path, &serde_json::Value::Object(memo)) {
            tracing::warn!("could not remember the model key in {}: {e}", path.display());
        }
        Ok(ModelSource { dir: dir.to_path_buf(), key })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its content key.
    pub fn key(&self) -> Key {
        self.key
    }
}

/// A stage's key document from its config and named inputs.
pub(crate) fn doc<T: Serialize>(stage: &str, config: &T, inputs: &[(&str, Key)]) -> Result<KeyDoc> {
    let inputs: BTreeMap<String, Key> = inputs.iter().map(|(r, k)| (r.to_string(), *k)).collect();
    Ok(KeyDoc::new(stage, STAGE_VERSION, config, inputs)?)
}

/// Content digest of a text input (calibration documents, an evaluation text): blake3 over
/// each part's length and bytes, 32 hex digits. Entered into the keys that depend on the
/// text, so that another text under the same name (`SLIMLLM_DATA` pointing elsewhere, an
/// edited file) is never mistaken for it.
pub fn text_digest<S: AsRef<str>>(parts: &[S]) -> String {
    let mut h = blake3::Hasher::new();
    for p in parts {
        let p = p.as_ref().as_bytes();
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().to_hex()[..32].to_string()
}
