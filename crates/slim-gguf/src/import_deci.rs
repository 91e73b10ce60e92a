//! Import of a `deci` GGUF written by [`crate::export_gguf`]: the model's config.json travels in
//! its metadata ([`SLIMLLM_CONFIG_KEY`]), so the directory comes back as it was exported, with the
//! dummy query heads of uneven GQA groups dropped and llama.cpp's rotary row order undone.
//! A `deci` file from elsewhere (a Nemotron-NAS model) lacks that key and is refused.

use std::collections::BTreeMap;

use anyhow::{bail, ensure, Context, Result};
use serde_json::json;
use slim_checkpoint::dtype::write_values;
use slim_checkpoint::layout;
use slim_checkpoint::{ModelConfig, WeightDtype};
use slim_fs::{DirInstall, SafetensorsConfig, SafetensorsWriter, Sharding, TensorSpec};

use crate::export::{ExportShape, SLIMLLM_CONFIG_KEY};
use crate::import::ImportSummary;
use crate::reader::GgufFile;
use crate::tokenizer::{build_tokenizer_config_json, build_tokenizer_json};

/// Writes the directory of a `deci` export into `install` and commits it.
pub(crate) fn import_deci(file: &GgufFile, install: DirInstall, dtype: WeightDtype) -> Result<ImportSummary> {
    let gguf = file.path();
    if file.get(SLIMLLM_CONFIG_KEY).is_none() {
        bail!(
            "{}: a `deci` GGUF without `{SLIMLLM_CONFIG_KEY}` was not written by `slimllm export`; \
             importing other deci models is not supported",
            gguf.display()
        );
    }
    let text = file.get_str(SLIMLLM_CONFIG_KEY)?;
    let cfg =
        ModelConfig::from_json_str(text).with_context(|| format!("{}: `{SLIMLLM_CONFIG_KEY}`", gguf.display()))?;
    let shape = ExportShape::of(&cfg);
    let ids = layout::tensors(&cfg);
    let by_name: BTreeMap<&str, _> = file.tensors().iter().map(|t| (t.name.as_str(), t)).collect();
    for id in &ids {
        let name = id.gguf_name();
        let t = by_name.get(name.as_str()).with_context(|| format!("{}: tensor `{name}` missing", gguf.display()))?;
        let want: Vec<u64> = shape.padded_shape(&cfg, id).iter().rev().map(|&d| d as u64).collect();
        ensure!(t.dims == want, "{}: tensor `{name}` has dims {:?}, expected {want:?}", gguf.display(), t.dims);
    }
    ensure!(
        by_name.len() == ids.len(),
        "{}: {} tensors, the config in `{SLIMLLM_CONFIG_KEY}` describes {}",
        gguf.display(),
        by_name.len(),
        ids.len()
    );
    let tokenizer = build_tokenizer_json(file)?;
    let tokenizer_config = build_tokenizer_config_json(file)?;

    let dir = install.path();
    let mut cfg_json = cfg.to_json();
    if cfg_json.get("torch_dtype").is_some() || dtype != WeightDtype::F32 {
        cfg_json["torch_dtype"] = dtype.torch_dtype().into();
    }
    slim_fs::write_atomic(&dir.join("config.json"), serde_json::to_string_pretty(&cfg_json)?.as_bytes())?;
    let gen = json!({"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id});
    slim_fs::write_json_atomic(&dir.join("generation_config.json"), &gen)?;
    slim_fs::write_atomic(&dir.join("tokenizer.json"), &serde_json::to_vec(&tokenizer)?)?;
    slim_fs::write_json_atomic(&dir.join("tokenizer_config.json"), &tokenizer_config)?;
    let mut sorted: Vec<_> = ids.iter().map(|id| (id.hf_name(), *id)).collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let specs = sorted
        .iter()
        .map(|(n, id)| TensorSpec::new(n, dtype.to_fs(), &id.shape(&cfg).expect("a tensor of the config")))
        .collect();
    let metadata =
        BTreeMap::from([("format".to_owned(), "pt".to_owned()), ("source".to_owned(), "slim-gguf import".to_owned())]);
    let mut w = SafetensorsWriter::create(dir, specs, &SafetensorsConfig { sharding: Sharding::Single, metadata })?;
    let mut buf = Vec::new();
    for (name, id) in &sorted {
        let values = file.tensor_f32(&id.gguf_name())?;
        write_values(&mut w, name, &shape.untransform(&cfg, id, &values), dtype, &mut buf)?;
    }
    w.finish()?;
    let out_dir = install.destination().to_path_buf();
    install.commit()?;
    Ok(ImportSummary { architecture: "deci".to_owned(), n_tensors: ids.len(), n_params: cfg.num_params(), out_dir })
}
