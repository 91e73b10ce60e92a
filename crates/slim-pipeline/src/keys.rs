//! Cache keys of the pipeline's inputs and stages. External inputs (the model directory)
//! are content-hashed; derived inputs contribute their producer's key.

use anyhow::{Context, Result};
use serde::Serialize;
use slim_artifact::{Key, KeyDoc};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

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

/// A stage's key document from its config and named inputs.
pub(crate) fn doc<T: Serialize>(stage: &str, config: &T, inputs: &[(&str, Key)]) -> Result<KeyDoc> {
    let inputs: BTreeMap<String, Key> = inputs.iter().map(|(r, k)| (r.to_string(), *k)).collect();
    Ok(KeyDoc::new(stage, STAGE_VERSION, config, inputs)?)
}
