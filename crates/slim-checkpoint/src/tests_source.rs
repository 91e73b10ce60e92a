//! Tests of [`crate::WeightSource`]: reading one layer or one tensor at a time gives what loading
//! everything gives, in every stored dtype and across shards, and bad files are named.

use crate::layout::{layer_tensors, Global};
use crate::synthetic::{write_synthetic_model, SynthOptions, TokenizerSource, WeightDtype};
use crate::tests_synth::tiny;
use crate::{ModelConfig, WeightSource, Weights};
use slim_fs::Existing;

fn written(dtype: WeightDtype, shard_bytes: u64) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let opts = SynthOptions {
        seed: 7,
        dtype,
        tokenizer: TokenizerSource::ByteLevel,
        existing: Existing::Refuse,
        shard_bytes,
        label: "tiny".into(),
    };
    write_synthetic_model(&tiny(3), &dir, &opts).unwrap();
    (tmp, dir)
}

#[test]
fn layers_read_one_at_a_time_equal_the_whole_load_in_every_dtype_and_across_shards() {
    for dtype in [WeightDtype::F32, WeightDtype::F16, WeightDtype::Bf16] {
        // 4 KB shards: the 3-layer model is spread over several files.
        for shard_bytes in [1 << 30, 4096] {
            let (_tmp, dir) = written(dtype, shard_bytes);
            let cfg = ModelConfig::load(&dir).unwrap();
            let all = Weights::load(&dir).unwrap();
            let src = WeightSource::open(&dir).unwrap();
            src.check_against(&cfg).unwrap();
            assert_eq!(src.names().count(), all.names().count());
            for l in 0..cfg.num_layers() {
                let lw = src.read_layer(&cfg, l).unwrap();
                let names: Vec<String> = layer_tensors(&cfg, l).iter().map(|t| t.hf_name()).collect();
                assert_eq!(lw.names().collect::<Vec<_>>().len(), names.len());
                // q/k/v biases (qwen2), norms and the seven weights.
                assert_eq!(names.len(), 2 + 7 + 3);
                for n in &names {
                    assert_eq!(lw.get(n).unwrap(), all.get(n).unwrap(), "{dtype:?} {shard_bytes} {n}");
                }
            }
            let e = src.read_global(&cfg, Global::Embedding).unwrap();
            assert_eq!(&e, all.get(Global::Embedding.hf_name()).unwrap());
            // Tied: no lm_head to read, and the error says so.
            let err = format!("{:#}", src.read_global(&cfg, Global::LmHead).unwrap_err());
            assert!(err.contains("lm_head.weight"), "{err}");
            let files = std::fs::read_dir(&dir).unwrap().count();
            assert!(shard_bytes > 4096 || files > 4, "{files} files: the small shard size must shard");
        }
    }
}

#[test]
fn a_shape_that_does_not_match_the_config_names_the_tensor_without_reading_it() {
    let (_tmp, dir) = written(WeightDtype::Bf16, 1 << 30);
    let mut cfg = ModelConfig::load(&dir).unwrap();
    cfg.layers[1].intermediate_size -= 1;
    let src = WeightSource::open(&dir).unwrap();
    let e = format!("{:#}", src.read_layer(&cfg, 1).unwrap_err());
    assert!(e.contains("model.layers.1.mlp.gate_proj.weight") && e.contains("expected [47, 32]"), "{e}");
    let e = format!("{:#}", src.check_against(&cfg).unwrap_err());
    assert!(e.contains("model.layers.1.mlp"), "{e}");
    let e = format!("{:#}", src.read("model.layers.9.mlp.up_proj.weight").unwrap_err());
    assert!(e.contains("missing tensor `model.layers.9.mlp.up_proj.weight`") && e.contains(&*dir.to_string_lossy()));
}

#[test]
fn an_unsupported_dtype_is_named_when_the_file_is_opened() {
    let tmp = tempfile::tempdir().unwrap();
    let header = serde_json::json!({"w": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}});
    let mut h = header.to_string().into_bytes();
    h.resize(h.len().next_multiple_of(8), b' ');
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend(h);
    bytes.extend([0u8; 8]);
    std::fs::write(tmp.path().join("model.safetensors"), bytes).unwrap();
    let e = format!("{:#}", WeightSource::open(tmp.path()).unwrap_err());
    assert!(e.contains("model.safetensors: tensor `w` has unsupported dtype I64"), "{e}");
}
