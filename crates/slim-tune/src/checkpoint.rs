//! Checkpoints of a training run, so that a killed run resumes where it stopped.
//!
//! A checkpoint is a folder: `adapter/` (PEFT's format), `optimizer.safetensors` (AdamW's
//! moments, `m.<i>` and `v.<i>` in the order of [`Adapter::tensors`]) and `state.json` (the
//! settings, the step, the logs). It is built under a temporary name and renamed over the
//! previous one ([`slim_fs::DirInstall`]), so a kill at any point leaves either the old or
//! the new checkpoint, whole. Because batches and dropout masks are functions of the seed and
//! the step, a resumed run computes what the uninterrupted run would have.

use crate::adapter::Adapter;
use crate::train::TrainState;
use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use slim_checkpoint::ModelConfig;
use std::path::Path;

const STATE: &str = "state.json";
const OPTIMIZER: &str = "optimizer.safetensors";
const ADAPTER: &str = "adapter";

/// `state.json`: the state without the moments, plus what it was trained on.
#[derive(Serialize, Deserialize)]
struct StateFile {
    /// What the run starts from and learns on (model and data keys); a checkpoint of other
    /// inputs is refused.
    inputs: String,
    state: TrainState,
}

/// Writes the checkpoint of `state` and `adapter` to `dir`, replacing the previous one.
pub fn save(dir: &Path, inputs: &str, state: &TrainState, adapter: &Adapter) -> Result<()> {
    let install = slim_fs::DirInstall::begin(dir, slim_fs::Existing::Replace)?;
    adapter.save_peft(&install.path().join(ADAPTER), None)?;
    let mut owned = Vec::new();
    for (i, (m, v)) in state.optimizer.m.iter().zip(&state.optimizer.v).enumerate() {
        owned.push((format!("m.{i}"), m.len(), m.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()));
        owned.push((format!("v.{i}"), v.len(), v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, len, b)| {
            Ok((n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![*len], b)?))
        })
        .collect::<Result<_>>()?;
    slim_fs::write_atomic(&install.path().join(OPTIMIZER), &safetensors::serialize(views, None)?)?;
    let mut light = state.clone();
    light.optimizer.m.clear();
    light.optimizer.v.clear();
    let file = StateFile { inputs: inputs.to_string(), state: light };
    slim_fs::write_atomic(&install.path().join(STATE), serde_json::to_string_pretty(&file)?.as_bytes())?;
    install.commit()?;
    Ok(())
}

/// Reads the checkpoint in `dir`, if there is one, for a run on `inputs` with the settings of
/// `expected` (a checkpoint of other settings or inputs is an error naming what differs).
pub fn load(
    dir: &Path,
    inputs: &str,
    expected: &TrainState,
    cfg: &ModelConfig,
) -> Result<Option<(TrainState, Adapter)>> {
    let state_path = dir.join(STATE);
    if !state_path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&state_path).with_context(|| format!("reading {}", state_path.display()))?;
    let file: StateFile = serde_json::from_str(&text).with_context(|| format!("parsing {}", state_path.display()))?;
    ensure!(
        file.inputs == inputs,
        "{} is a checkpoint of another model or data ({}, this run: {inputs}); \
         remove it or pass another --checkpoint-dir",
        dir.display(),
        file.inputs
    );
    ensure!(
        file.state.settings == expected.settings,
        "{} is a checkpoint of other settings ({:?}; this run: {:?}); remove it or pass the same options",
        dir.display(),
        file.state.settings,
        expected.settings
    );
    let adapter = Adapter::load_peft(&dir.join(ADAPTER), cfg)?;
    let opt_path = dir.join(OPTIMIZER);
    let bytes = std::fs::read(&opt_path).with_context(|| format!("reading {}", opt_path.display()))?;
    let st =
        safetensors::SafeTensors::deserialize(&bytes).with_context(|| format!("parsing {}", opt_path.display()))?;
    let mut state = file.state;
    let n = expected.optimizer.m.len();
    for i in 0..n {
        for (which, out) in [("m", &mut state.optimizer.m), ("v", &mut state.optimizer.v)] {
            let name = format!("{which}.{i}");
            let t = slim_checkpoint::weights::to_host(
                &name,
                st.tensor(&name).with_context(|| format!("{}: no `{name}`", opt_path.display()))?.dtype(),
                vec![expected.optimizer.m[i].len()],
                st.tensor(&name)?.data(),
                &opt_path,
            )?;
            out.push(t.data);
        }
    }
    Ok(Some((state, adapter)))
}
