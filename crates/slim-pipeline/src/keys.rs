//! Cache keys of the pipeline's inputs and stages. External inputs (the model directory)
//! are content-hashed; derived inputs contribute their producer's key.

use anyhow::{Context, Result};
use serde::Serialize;
use slim_artifact::{Key, KeyDoc};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Version of every stage's output format; bump when a stage's output changes.
pub const STAGE_VERSION: u32 = 1;

/// Content key of a model directory: blake3 over config.json, tokenizer.json and the
/// safetensors files (names and bytes), never over paths or times.
pub fn model_key(dir: &Path) -> Result<Key> {
    let mut files = vec![dir.join("config.json"), dir.join("tokenizer.json")];
    files.extend(slim_checkpoint::weights::weight_files(dir)?);
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
