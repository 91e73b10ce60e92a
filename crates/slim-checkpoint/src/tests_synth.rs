//! Tests of the synthetic model directories (`synthetic::write_synthetic_model`), their shapes and
//! the byte-level tokenizer.

use std::path::Path;

use crate::synthetic::{
    byte_level_tokenizer, tensor_values, write_synthetic_model, ModelShape, ShapeSpec, SynthOptions, TokenizerSource,
    WeightDtype, BYTE_BPE_VOCAB, SHARD_BYTES,
};
use crate::{Arch, ModelConfig, Weights};
use slim_artifact::Kind;
use slim_fs::Existing;

/// A qwen2 shape small enough to write in milliseconds (GQA 4/2, q/k/v biases, tied).
pub(crate) fn tiny(layers: usize) -> ShapeSpec {
    ShapeSpec {
        arch: Arch::Qwen2,
        hidden_size: 32,
        num_layers: layers,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 8,
        intermediate_size: 48,
        vocab_size: 300,
        tied: true,
        rope_theta: 1e6,
        rms_norm_eps: 1e-6,
        max_position_embeddings: 512,
        bos_token_id: 0,
        eos_token_id: 0,
    }
}

fn opts(seed: u64, dtype: WeightDtype) -> SynthOptions {
    SynthOptions {
        seed,
        dtype,
        tokenizer: TokenizerSource::ByteLevel,
        existing: Existing::Refuse,
        shard_bytes: SHARD_BYTES,
        label: "tiny".into(),
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn shapes_and_dtypes_are_kinds() {
    slim_artifact::check_kind::<ModelShape>();
    slim_artifact::check_kind::<WeightDtype>();
    assert_eq!(ModelShape::parse("qwen2.5-1.5b"), Ok(ModelShape::Qwen25_1_5b));
    assert_eq!(WeightDtype::parse("bf16"), Ok(WeightDtype::Bf16));
}

#[test]
fn every_preset_config_parses_with_its_published_values() {
    for &shape in ModelShape::ALL {
        let spec = shape.spec();
        let cfg = ModelConfig::from_json_str(&spec.config_json("float32").to_string()).unwrap();
        assert_eq!(cfg.num_params(), spec.num_params(), "{shape:?}");
        assert_eq!(cfg.arch, spec.arch);
        assert_eq!(cfg.qkv_bias, spec.arch == Arch::Qwen2);
        assert_eq!(cfg.head_dim * spec.num_heads, spec.hidden_size, "{shape:?}: heads × head_dim is the width");
        assert!(cfg.vocab_size >= BYTE_BPE_VOCAB);
    }
    let s = ModelShape::Qwen25_1_5b.spec();
    let got = (s.hidden_size, s.num_layers, s.num_heads, s.num_kv_heads, s.head_dim, s.intermediate_size);
    assert_eq!(got, (1536, 28, 12, 2, 128, 8960));
    assert_eq!((s.vocab_size, s.tied, s.rope_theta, s.rms_norm_eps), (151936, true, 1e6, 1e-6));
    let s = ModelShape::Llama7b.spec();
    assert_eq!((s.hidden_size, s.num_layers, s.num_heads, s.num_kv_heads, s.head_dim), (4096, 32, 32, 32, 128));
    assert_eq!((s.intermediate_size, s.vocab_size, s.tied), (11008, 32000, false));
    assert_eq!(ModelShape::Llama7b.spec().num_params(), 6_738_415_616, "LLaMA-7B's published count");
    let s = ModelShape::Llama13b.spec();
    assert_eq!((s.hidden_size, s.num_layers, s.num_heads, s.intermediate_size), (5120, 40, 40, 13824));
    assert_eq!(s.num_params(), 13_015_864_320, "LLaMA-13B's published count");
    assert_eq!(ModelShape::Smollm2_135m.spec().num_params(), 134_515_008, "SmolLM2-135M's count");
}

/// The presets of the fetched models match their config.json (those fields that say the shape),
/// when the models are there (`cargo xtask fetch`).
#[test]
fn presets_match_the_fetched_configs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/models");
    for (shape, dir) in [(ModelShape::Smollm2_135m, "smollm2-135m"), (ModelShape::Qwen25_0_5b, "qwen2.5-coder-0.5b")] {
        let Ok(text) = std::fs::read_to_string(root.join(dir).join("config.json")) else { continue };
        let want: serde_json::Value = serde_json::from_str(&text).unwrap();
        let got = shape.spec().config_json("float32");
        for key in [
            "model_type",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "head_dim",
            "vocab_size",
            "rope_theta",
            "rms_norm_eps",
            "max_position_embeddings",
            "bos_token_id",
            "eos_token_id",
        ] {
            assert_eq!(got[key].as_f64(), want[key].as_f64(), "{dir}: {key}");
            assert_eq!(got[key].as_str(), want[key].as_str(), "{dir}: {key}");
        }
    }
}

#[test]
fn a_written_model_round_trips_through_the_loader() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    let spec = tiny(2);
    let s = write_synthetic_model(&spec, &out, &opts(7, WeightDtype::F32)).unwrap();
    assert_eq!(s.files, ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]);
    let cfg = ModelConfig::load(&out).unwrap();
    assert_eq!((cfg.arch, cfg.hidden_size, cfg.num_layers(), cfg.vocab_size), (Arch::Qwen2, 32, 2, 300));
    assert_eq!((cfg.tie_word_embeddings, cfg.rope_theta, cfg.rms_norm_eps), (true, 1e6, 1e-6));
    assert_eq!(cfg.raw["synthetic"]["seed"], 7);
    let w = Weights::load(&out).unwrap();
    w.check_against(&cfg).unwrap();
    assert_eq!(w.num_values(), s.params);
    assert_eq!(s.weight_bytes, 4 * s.params);
    let q = w.get("model.layers.1.self_attn.q_proj.weight").unwrap();
    assert_eq!(q.data, tensor_values("model.layers.1.self_attn.q_proj.weight", &q.shape, 7).unwrap());
    // The draws of SyntheticSpec: projections of variance 1 / fan_in, norms 1 ± 0.2, biases ± 0.1.
    let up = w.get("model.layers.0.mlp.up_proj.weight").unwrap();
    let var = up.data.iter().map(|v| (v * v) as f64).sum::<f64>() / up.data.len() as f64;
    assert!((var * 32.0 - 1.0).abs() < 0.1, "variance × fan_in = {}", var * 32.0);
    let norm = w.get("model.norm.weight").unwrap();
    assert!(norm.data.iter().all(|v| (0.8..=1.2).contains(v)));
    let bias = w.get("model.layers.0.self_attn.k_proj.bias").unwrap();
    assert!(bias.data.iter().all(|v| v.abs() <= 0.1) && bias.data.iter().any(|&v| v != 0.0));
    assert!(!w.contains("lm_head.weight"), "tied");
    crate::load_model_tokenizer(&out).unwrap();
}

#[test]
fn a_seed_gives_the_same_bytes_and_another_seed_others() {
    let tmp = tempfile::tempdir().unwrap();
    let file = |name: &str, seed| {
        let out = tmp.path().join(name);
        write_synthetic_model(&tiny(2), &out, &opts(seed, WeightDtype::F32)).unwrap();
        read(&out.join("model.safetensors"))
    };
    let (a, b, c) = (file("a", 3), file("b", 3), file("c", 4));
    assert_eq!(a, b);
    assert_eq!(a.len(), c.len());
    assert_ne!(a, c);
    // Fewer layers: the same first layers (tensor values depend on the seed, name and shape only).
    let one = tmp.path().join("one");
    write_synthetic_model(&tiny(1), &one, &opts(3, WeightDtype::F32)).unwrap();
    let (w1, w2) = (Weights::load(&one).unwrap(), Weights::load(&tmp.path().join("a")).unwrap());
    for name in w1.names() {
        assert_eq!(w1.get(name).unwrap().data, w2.get(name).unwrap().data, "{name}");
    }
}

#[test]
fn chunks_are_seeded_apart() {
    // A tensor of several chunks: no chunk repeats another, nor is a shifted copy of it.
    let v = tensor_values("model.embed_tokens.weight", &[3 * crate::synthetic::CHUNK / 64, 64], 1).unwrap();
    let chunks: Vec<&[f32]> = v.chunks(crate::synthetic::CHUNK).collect();
    assert_eq!(chunks.len(), 3);
    for (i, a) in chunks.iter().enumerate() {
        for b in &chunks[i + 1..] {
            assert!(!b.windows(4).any(|w| w == &a[..4]), "a chunk repeats another's start");
        }
    }
}

#[test]
fn half_precision_models_load_as_the_rounded_f32_values() {
    let tmp = tempfile::tempdir().unwrap();
    let f32_dir = tmp.path().join("f32");
    write_synthetic_model(&tiny(1), &f32_dir, &opts(5, WeightDtype::F32)).unwrap();
    let w32 = Weights::load(&f32_dir).unwrap();
    for (dtype, torch, round) in [
        (WeightDtype::F16, "float16", (|v| half::f16::from_f32(v).to_f32()) as fn(f32) -> f32),
        (WeightDtype::Bf16, "bfloat16", |v| half::bf16::from_f32(v).to_f32()),
    ] {
        let out = tmp.path().join(torch);
        let s = write_synthetic_model(&tiny(1), &out, &opts(5, dtype)).unwrap();
        assert_eq!(s.weight_bytes, 2 * s.params);
        assert_eq!(ModelConfig::load(&out).unwrap().raw["torch_dtype"], torch);
        let w = Weights::load(&out).unwrap();
        for name in w32.names() {
            let want: Vec<f32> = w32.get(name).unwrap().data.iter().map(|&v| round(v)).collect();
            assert_eq!(w.get(name).unwrap().data, want, "{torch} {name}");
        }
    }
}

#[test]
fn large_models_are_sharded_with_an_index_the_loader_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let single = tmp.path().join("single");
    write_synthetic_model(&tiny(3), &single, &opts(9, WeightDtype::F32)).unwrap();
    let sharded = tmp.path().join("sharded");
    let s =
        write_synthetic_model(&tiny(3), &sharded, &SynthOptions { shard_bytes: 40_000, ..opts(9, WeightDtype::F32) })
            .unwrap();
    assert!(s.files.contains(&"model.safetensors.index.json".to_string()), "{:?}", s.files);
    assert!(s.files.iter().any(|f| f.starts_with("model-00001-of-")), "{:?}", s.files);
    assert!(!s.files.contains(&"model.safetensors".to_string()));
    let (a, b) = (Weights::load(&single).unwrap(), Weights::load(&sharded).unwrap());
    assert_eq!(a.names().collect::<Vec<_>>(), b.names().collect::<Vec<_>>());
    for name in a.names() {
        assert_eq!(a.get(name).unwrap().data, b.get(name).unwrap().data, "{name}");
    }
}

#[test]
fn an_occupied_destination_is_refused_and_replaced_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let err = write_synthetic_model(&tiny(1), &out, &opts(1, WeightDtype::F32)).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err:#}");
    assert_eq!(std::fs::read_to_string(out.join("keep.txt")).unwrap(), "mine");
    let replace = SynthOptions { existing: Existing::Replace, ..opts(1, WeightDtype::F32) };
    write_synthetic_model(&tiny(1), &out, &replace).unwrap();
    assert!(!out.join("keep.txt").exists() && out.join("model.safetensors").is_file());
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, ["m"], "temporary folders left behind");
    let err = write_synthetic_model(&tiny(0), &tmp.path().join("z"), &opts(1, WeightDtype::F32)).unwrap_err();
    assert!(err.to_string().contains("at least 1 layer"), "{err:#}");
}

#[test]
fn a_copied_tokenizer_must_fit_the_vocabulary() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write_synthetic_model(&tiny(1), &src, &opts(1, WeightDtype::F32)).unwrap();
    let copy = SynthOptions { tokenizer: TokenizerSource::CopyFrom(src.clone()), ..opts(2, WeightDtype::F32) };
    write_synthetic_model(&tiny(1), &tmp.path().join("ok"), &copy).unwrap();
    assert_eq!(read(&tmp.path().join("ok/tokenizer.json")), read(&src.join("tokenizer.json")));
    let small = ShapeSpec { vocab_size: 200, ..tiny(1) };
    let err = write_synthetic_model(&small, &tmp.path().join("small"), &copy).unwrap_err().to_string();
    assert!(err.contains("token ids up to 258") && err.contains("vocab_size is 200"), "{err}");
    assert!(!tmp.path().join("small").exists(), "nothing written for a refused tokenizer");
    let missing = SynthOptions { tokenizer: TokenizerSource::CopyFrom(tmp.path().join("none")), ..copy };
    let err = format!("{:#}", write_synthetic_model(&tiny(1), &tmp.path().join("x"), &missing).unwrap_err());
    assert!(err.contains("none/tokenizer.json"), "{err}");
}

#[test]
fn the_byte_level_tokenizer_encodes_text_to_ids_below_its_vocabulary() {
    for arch in [Arch::Llama, Arch::Qwen2] {
        let (tok, _) = byte_level_tokenizer(arch);
        let tok = crate::parse_tokenizer_json(&tok.to_string(), Path::new("tokenizer.json")).unwrap();
        let text = "The quick brown fox, 1234 times: the end.\n\tÜber naïve ☃";
        let enc = tok.encode(text, false).unwrap();
        assert!(enc.get_ids().iter().all(|&id| (id as usize) < BYTE_BPE_VOCAB), "{arch:?}: {:?}", enc.get_ids());
        assert!(enc.get_ids().len() < text.len(), "{arch:?}: the merges apply");
        assert!(enc.get_ids().contains(&258), "{arch:?}: `he` merged");
        assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), text, "{arch:?}");
    }
}
