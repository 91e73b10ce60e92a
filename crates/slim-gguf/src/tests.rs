//! Unit tests: crafted GGUF buffers for every reader error path, and the Q/K permutation round trip.

use crate::{permute_qk, unpermute_qk, GgmlType, GgufFile, MetaArray, MetaValue};

/// Builds small GGUF files byte by byte.
struct Builder {
    version: u32,
    kvs: Vec<u8>,
    n_kv: u64,
    infos: Vec<u8>,
    n_tensors: u64,
    data: Vec<u8>,
}

fn gstr(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

impl Builder {
    fn new() -> Builder {
        Builder { version: 3, kvs: vec![], n_kv: 0, infos: vec![], n_tensors: 0, data: vec![] }
    }

    fn kv_raw(mut self, key: &str, ty: u32, value: &[u8]) -> Builder {
        self.kvs.extend(gstr(key));
        self.kvs.extend(ty.to_le_bytes());
        self.kvs.extend_from_slice(value);
        self.n_kv += 1;
        self
    }

    fn kv_str(self, key: &str, value: &str) -> Builder {
        self.kv_raw(key, 8, &gstr(value))
    }

    fn kv_u32(self, key: &str, value: u32) -> Builder {
        self.kv_raw(key, 4, &value.to_le_bytes())
    }

    fn tensor_raw(mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Builder {
        self.infos.extend(gstr(name));
        self.infos.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            self.infos.extend(d.to_le_bytes());
        }
        self.infos.extend(ty.to_le_bytes());
        self.infos.extend(offset.to_le_bytes());
        self.n_tensors += 1;
        self
    }

    fn data(mut self, bytes: &[u8]) -> Builder {
        self.data.extend_from_slice(bytes);
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut v = b"GGUF".to_vec();
        v.extend(self.version.to_le_bytes());
        v.extend(self.n_tensors.to_le_bytes());
        v.extend(self.n_kv.to_le_bytes());
        v.extend(&self.kvs);
        v.extend(&self.infos);
        while !v.len().is_multiple_of(32) {
            v.push(0);
        }
        v.extend(&self.data);
        v
    }

    fn open(&self) -> anyhow::Result<GgufFile> {
        GgufFile::from_bytes(self.bytes(), "crafted.gguf")
    }
}

fn err(b: &Builder) -> String {
    match b.open() {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

fn check_err(b: &Builder, needle: &str) {
    let e = err(b);
    assert!(e.contains(needle), "error {e:?} should contain {needle:?}");
    assert!(e.contains("crafted.gguf"), "error {e:?} should name the file");
}

#[test]
fn valid_file_roundtrip() {
    let f32s: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0].iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut nested = 9u32.to_le_bytes().to_vec(); // array of arrays
    nested.extend(2u64.to_le_bytes());
    for n in [1u8, 2] {
        nested.extend(0u32.to_le_bytes()); // of u8
        nested.extend((n as u64).to_le_bytes());
        nested.extend(std::iter::repeat_n(n, n as usize));
    }
    let mut strs = 8u32.to_le_bytes().to_vec();
    strs.extend(2u64.to_le_bytes());
    strs.extend(gstr("a"));
    strs.extend(gstr("bc"));
    let b = Builder::new()
        .kv_str("general.architecture", "llama")
        .kv_u32("n", 7)
        .kv_raw("f", 6, &0.5f32.to_le_bytes())
        .kv_raw("b", 7, &[1])
        .kv_raw("i64", 11, &(-3i64).to_le_bytes())
        .kv_raw("f64", 12, &1.25f64.to_le_bytes())
        .kv_raw("nested", 9, &nested)
        .kv_raw("strs", 9, &strs)
        .tensor_raw("w", &[3, 2], 0, 0)
        .data(&f32s);
    let g = b.open().unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(g.get_u64("n").unwrap(), 7);
    assert_eq!(g.get_f64("f").unwrap(), 0.5);
    assert!(g.get_bool("b").unwrap());
    assert_eq!(g.get("i64"), Some(&MetaValue::I64(-3)));
    assert_eq!(g.get_f64("f64").unwrap(), 1.25);
    assert_eq!(
        g.get_array("nested").unwrap(),
        &MetaArray::Array(vec![MetaArray::U8(vec![1]), MetaArray::U8(vec![2, 2])])
    );
    assert_eq!(g.get_str_array("strs").unwrap(), &["a".to_owned(), "bc".to_owned()]);
    let t = g.tensor_info("w").unwrap();
    assert_eq!((t.dims.clone(), t.ggml_type, t.n_elements, t.n_bytes), (vec![3, 2], GgmlType::F32, 6, 24));
    assert_eq!(g.tensor_f32("w").unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    // Missing keys and wrong types are errors naming the key.
    let e = format!("{:#}", g.get_u64("missing").unwrap_err());
    assert!(e.contains("`missing`") && e.contains("crafted.gguf"), "{e}");
    let e = format!("{:#}", g.get_u64("general.architecture").unwrap_err());
    assert!(e.contains("expected an integer"), "{e}");
    let e = format!("{:#}", g.tensor_f32("nope").unwrap_err());
    assert!(e.contains("tensor `nope` missing"), "{e}");
}

#[test]
fn version_2_is_accepted() {
    let mut b = Builder::new().kv_u32("n", 1);
    b.version = 2;
    assert_eq!(b.open().unwrap().version, 2);
}

#[test]
fn truncated_header() {
    let b = Builder::new().kv_str("general.architecture", "llama");
    let full = b.bytes();
    let end = 24 + b.kvs.len(); // header and metadata, without the padding
    for len in [0, 3, 4, 7, 8, 15, 23, 30, 40, end - 1] {
        let e = format!("{:#}", GgufFile::from_bytes(full[..len].to_vec(), "crafted.gguf").unwrap_err());
        assert!(e.contains("truncated") || e.contains("bad magic") || e.contains("cannot fit"), "len {len}: {e}");
    }
}

#[test]
fn bad_magic_and_version() {
    let mut bytes = Builder::new().bytes();
    bytes[0] = b'X';
    let e = format!("{:#}", GgufFile::from_bytes(bytes, "crafted.gguf").unwrap_err());
    assert!(e.contains("bad magic"), "{e}");
    let mut b = Builder::new();
    b.version = 1;
    check_err(&b, "version 1 is not supported");
    b.version = 0x0300_0000;
    check_err(&b, "big-endian");
    b.version = 77;
    check_err(&b, "unknown GGUF version 77");
}

#[test]
fn huge_string_length() {
    // A key whose length claims far more bytes than the file has.
    let mut b = Builder::new().kv_u32("n", 1);
    b.kvs[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    check_err(&b, "exceeds the cap");
    b.kvs[..8].copy_from_slice(&1000u64.to_le_bytes());
    check_err(&b, "truncated");
}

#[test]
fn huge_counts() {
    let mut b = Builder::new();
    b.n_kv = u64::MAX;
    check_err(&b, "metadata kv count");
    let mut b = Builder::new();
    b.n_tensors = 1 << 40;
    check_err(&b, "tensor info count");
}

#[test]
fn huge_array_length() {
    let mut arr = 4u32.to_le_bytes().to_vec(); // u32 elements
    arr.extend((1u64 << 60).to_le_bytes());
    check_err(&Builder::new().kv_raw("a", 9, &arr), "array element count");
}

#[test]
fn deeply_nested_arrays() {
    let mut v = Vec::new();
    for _ in 0..10 {
        v.extend(9u32.to_le_bytes());
        v.extend(1u64.to_le_bytes());
    }
    v.extend(0u32.to_le_bytes());
    v.extend(0u64.to_le_bytes());
    check_err(&Builder::new().kv_raw("a", 9, &v), "nested deeper");
}

#[test]
fn bad_value_types() {
    check_err(&Builder::new().kv_raw("a", 13, &[0; 8]), "unknown metadata value type 13");
    check_err(&Builder::new().kv_raw("b", 7, &[2]), "invalid bool");
    check_err(&Builder::new().kv_raw("s", 8, &[1, 0, 0, 0, 0, 0, 0, 0, 0xFF]), "UTF-8");
    check_err(&Builder::new().kv_u32("n", 1).kv_u32("n", 2), "duplicate metadata key");
    check_err(&Builder::new().kv_raw("general.alignment", 4, &3u32.to_le_bytes()), "power of two");
}

#[test]
fn tensor_errors() {
    let data = vec![0u8; 64];
    check_err(&Builder::new().tensor_raw("t", &[4], 0, 64).data(&data), "extends past the end");
    check_err(&Builder::new().tensor_raw("t", &[2048], 0, 0).data(&[0u8; 4096]), "more than the whole file");
    check_err(&Builder::new().tensor_raw("t", &[1 << 32, 1 << 32, 1 << 32], 0, 0).data(&data), "more elements");
    check_err(&Builder::new().tensor_raw("t", &[1, 1, 1, 1, 1], 0, 0).data(&data), "more than ggml's maximum");
    check_err(&Builder::new().tensor_raw("t", &[4], 99, 0).data(&data), "unknown ggml type id 99");
    check_err(&Builder::new().tensor_raw("t", &[16], 2, 0).data(&data), "not a multiple of the block size 32");
    check_err(&Builder::new().tensor_raw("t", &[4], 0, 4).data(&data), "not a multiple of the alignment");
    check_err(&Builder::new().tensor_raw("t", &[4], 0, 0).tensor_raw("t", &[4], 0, 32).data(&data), "duplicate tensor");
    check_err(&Builder::new().tensor_raw("t", &[4], 0, u64::MAX - 7).data(&data), "extends past the end");
}

#[test]
fn unsupported_dequant_type_names_type_and_tensor() {
    // Q2_K is a known type (the reader accepts it) but has no decoder here.
    let b = Builder::new().tensor_raw("blk.0.attn_q.weight", &[256], 10, 0).data(&[0u8; 84]);
    let g = b.open().unwrap();
    let e = format!("{:#}", g.tensor_f32("blk.0.attn_q.weight").unwrap_err());
    assert!(e.contains("Q2_K (type id 10)") && e.contains("blk.0.attn_q.weight"), "{e}");
}

#[test]
fn dequantize_checks_lengths() {
    assert!(crate::dequantize(GgmlType::Q8_0, &[0u8; 33], 32).is_err());
    assert!(crate::dequantize(GgmlType::Q8_0, &[0u8; 34], 31).is_err());
    assert_eq!(crate::dequantize(GgmlType::Q8_0, &[0u8; 34], 32).unwrap(), vec![0.0; 32]);
}

#[test]
fn permutation_round_trip() {
    // 3 heads of dim 8, 5 input features.
    let (n_head, d_h, n_in) = (3, 8, 5);
    let w: Vec<f32> = (0..n_head * d_h * n_in).map(|i| i as f32).collect();
    let p = permute_qk(&w, n_head, n_in);
    assert_ne!(p, w);
    assert_eq!(unpermute_qk(&p, n_head, n_in), w);
    // Against the converter's formula: GGUF row h·d_h + 2i + j holds HF row h·d_h + j·d_h/2 + i.
    let row = |m: &[f32], r: usize| m[r * n_in..(r + 1) * n_in].to_vec();
    for h in 0..n_head {
        for i in 0..d_h / 2 {
            for j in 0..2 {
                assert_eq!(row(&p, h * d_h + 2 * i + j), row(&w, h * d_h + j * d_h / 2 + i));
            }
        }
    }
}

#[test]
fn tensor_names() {
    use crate::{hf_tensor_name, Arch};
    let ok = |g: &str, a| hf_tensor_name(g, a).unwrap();
    assert_eq!(ok("token_embd.weight", Arch::Llama), "model.embed_tokens.weight");
    assert_eq!(ok("output.weight", Arch::Llama), "lm_head.weight");
    assert_eq!(ok("blk.12.ffn_down.weight", Arch::Llama), "model.layers.12.mlp.down_proj.weight");
    assert_eq!(ok("blk.3.attn_k.bias", Arch::Qwen2), "model.layers.3.self_attn.k_proj.bias");
    for bad in
        ["blk.3.attn_k.bias", "blk.x.attn_q.weight", "blk.01.attn_q.weight", "rope_freqs.weight", "blk.0.attn_o.weight"]
    {
        let e = hf_tensor_name(bad, Arch::Llama).unwrap_err().to_string();
        assert!(e.contains("unknown tensor name"), "{bad}: {e}");
    }
    assert!(hf_tensor_name("blk.0.attn_output.bias", Arch::Qwen2).is_err());
    // Every tensor of a llama (tied) and a qwen2 (untied, q/k/v biases) model: the importer maps
    // the layout's GGUF name to the layout's HF name.
    for (model_type, arch) in [("llama", Arch::Llama), ("qwen2", Arch::Qwen2)] {
        let (cfg, _) = slim_checkpoint::synthetic::SyntheticSpec::dense(model_type, 2, 8, 2, 1, 4, 6, 11, 7).build();
        let tensors = slim_checkpoint::layout::tensors(&cfg);
        assert_eq!(tensors.len(), if arch == Arch::Qwen2 { 3 + 2 * 12 } else { 2 + 2 * 9 });
        for t in tensors {
            assert_eq!(ok(&t.gguf_name(), arch), t.hf_name());
        }
    }
}

/// A minimal vocab-only tokenizer GGUF with the given model/pre and three tokens.
fn vocab_gguf(arch: &str, model: &str, pre: &str) -> Builder {
    let mut toks = 8u32.to_le_bytes().to_vec();
    toks.extend(3u64.to_le_bytes());
    for t in ["a", "b", "ab"] {
        toks.extend(gstr(t));
    }
    let mut types = 5u32.to_le_bytes().to_vec();
    types.extend(3u64.to_le_bytes());
    for t in [1i32, 1, 3] {
        types.extend(t.to_le_bytes());
    }
    let mut merges = 8u32.to_le_bytes().to_vec();
    merges.extend(1u64.to_le_bytes());
    merges.extend(gstr("a b"));
    Builder::new()
        .kv_str("general.architecture", arch)
        .kv_str("tokenizer.ggml.model", model)
        .kv_str("tokenizer.ggml.pre", pre)
        .kv_raw("tokenizer.ggml.tokens", 9, &toks)
        .kv_raw("tokenizer.ggml.token_type", 9, &types)
        .kv_raw("tokenizer.ggml.merges", 9, &merges)
}

#[test]
fn tokenizer_json_and_errors() {
    let g = vocab_gguf("llama", "gpt2", "smollm").open().unwrap();
    let j = crate::build_tokenizer_json(&g).unwrap();
    assert_eq!(j["model"]["merges"], serde_json::json!([["a", "b"]]));
    assert_eq!(j["added_tokens"][0]["content"], "ab");
    assert_eq!(j["added_tokens"][0]["special"], true);
    assert_eq!(j["pre_tokenizer"]["pretokenizers"][0]["type"], "Digits");
    assert_eq!(j["post_processor"]["type"], "ByteLevel");

    let e = |b: Builder| format!("{:#}", crate::build_tokenizer_json(&b.open().unwrap()).unwrap_err());
    assert!(e(vocab_gguf("llama", "llama", "default")).contains("tokenizer model `llama` is not supported"));
    assert!(e(vocab_gguf("llama", "gpt2", "llama3")).contains("pre-tokenizer type `llama3` is not supported"));
    let b = vocab_gguf("llama", "gpt2", "gpt-2").kv_u32("tokenizer.ggml.bos_token_id", 7);
    assert!(e(b).contains("outside the vocabulary"));
    let b = vocab_gguf("llama", "gpt2", "gpt-2").kv_raw("tokenizer.ggml.add_bos_token", 7, &[1]);
    assert!(e(b).contains("no bos token id"));
    let b = vocab_gguf("llama", "gpt2", "gpt-2")
        .kv_raw("tokenizer.ggml.add_bos_token", 7, &[1])
        .kv_u32("tokenizer.ggml.bos_token_id", 2);
    let j = crate::build_tokenizer_json(&b.open().unwrap()).unwrap();
    assert_eq!(j["post_processor"]["single"][0]["SpecialToken"]["id"], "ab");
}

#[test]
fn config_errors() {
    let e = |b: Builder| format!("{:#}", crate::build_config_json(&b.open().unwrap()).unwrap_err());
    assert!(e(vocab_gguf("gpt2", "gpt2", "gpt-2")).contains("architecture `gpt2` is not supported"));
    // The tokenizer keys are there, the model keys are not: the first missing one is named.
    assert!(e(vocab_gguf("llama", "gpt2", "gpt-2")).contains("`llama.block_count` missing"));
    let b = vocab_gguf("qwen2", "gpt2", "qwen2")
        .kv_u32("qwen2.block_count", 2)
        .kv_u32("qwen2.embedding_length", 64)
        .kv_u32("qwen2.feed_forward_length", 128)
        .kv_u32("qwen2.attention.head_count", 4)
        .kv_u32("qwen2.attention.head_count_kv", 2)
        .kv_raw("qwen2.attention.layer_norm_rms_epsilon", 6, &1e-6f32.to_le_bytes())
        .kv_u32("qwen2.context_length", 128);
    assert!(e(b).contains("`qwen2.rope.freq_base` missing"));
}

/// A complete one-layer llama GGUF: hidden 256, 2 query heads of 128, 1 KV head, FFN 8, the three
/// tokens of [`vocab_gguf`], F32 tensors. With `broken_norm`, `output_norm.weight` is Q2_K, which the
/// reader accepts and the importer cannot decode: the import fails on the last tensor it writes
/// (`model.norm.weight` sorts after the layers), with everything else already written.
fn tiny_llama(broken_norm: bool) -> Builder {
    let (hidden, ffn, vocab, kv) = (256u64, 8u64, 3u64, 128u64);
    let mut b = vocab_gguf("llama", "gpt2", "smollm")
        .kv_u32("tokenizer.ggml.bos_token_id", 0)
        .kv_u32("tokenizer.ggml.eos_token_id", 1)
        .kv_u32("llama.block_count", 1)
        .kv_u32("llama.embedding_length", hidden as u32)
        .kv_u32("llama.feed_forward_length", ffn as u32)
        .kv_u32("llama.attention.head_count", 2)
        .kv_u32("llama.attention.head_count_kv", 1)
        .kv_raw("llama.attention.layer_norm_rms_epsilon", 6, &1e-5f32.to_le_bytes())
        .kv_raw("llama.rope.freq_base", 6, &10000f32.to_le_bytes())
        .kv_u32("llama.context_length", 64);
    // GGUF dims are the HF shape reversed; every F32 size below is a multiple of the 32-byte alignment.
    let tensors: [(&str, Vec<u64>); 11] = [
        ("token_embd.weight", vec![hidden, vocab]),
        ("blk.0.attn_norm.weight", vec![hidden]),
        ("blk.0.ffn_norm.weight", vec![hidden]),
        ("blk.0.attn_q.weight", vec![hidden, hidden]),
        ("blk.0.attn_k.weight", vec![hidden, kv]),
        ("blk.0.attn_v.weight", vec![hidden, kv]),
        ("blk.0.attn_output.weight", vec![hidden, hidden]),
        ("blk.0.ffn_gate.weight", vec![hidden, ffn]),
        ("blk.0.ffn_up.weight", vec![hidden, ffn]),
        ("blk.0.ffn_down.weight", vec![ffn, hidden]),
        ("output_norm.weight", vec![hidden]),
    ];
    let mut offset = 0u64;
    for (i, (name, dims)) in tensors.iter().enumerate() {
        let n: u64 = dims.iter().product();
        let (ty, bytes) = if broken_norm && *name == "output_norm.weight" {
            (10, vec![0u8; 84]) // one Q2_K block of 256 values
        } else {
            (0, (0..n).flat_map(|j| ((j as f32 + i as f32) * 1e-3).to_le_bytes()).collect())
        };
        b = b.tensor_raw(name, dims, ty, offset).data(&bytes);
        offset += bytes.len() as u64;
    }
    b
}

/// Every file under `dir` with its bytes, by relative path.
fn snapshot(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(snapshot(&e.path()).into_iter().map(|(k, v)| (format!("{name}/{k}"), v)));
        } else {
            out.insert(name, std::fs::read(e.path()).unwrap());
        }
    }
    out
}

#[test]
fn import_refuses_a_non_empty_folder_and_replaces_it_when_asked() {
    use crate::{import_gguf, Existing, FsError};
    let tmp = tempfile::tempdir().unwrap();
    let gguf = tmp.path().join("tiny.gguf");
    std::fs::write(&gguf, tiny_llama(false).bytes()).unwrap();
    let out = tmp.path().join("models/out");
    let s = import_gguf(&gguf, &out, Existing::Refuse).unwrap();
    assert_eq!((s.n_tensors, s.n_params), (11, 3 * 256 + 3 * 256 + 2 * 256 * 256 + 2 * 128 * 256 + 3 * 8 * 256));
    let first = snapshot(&out);
    let names: Vec<&str> = first.keys().map(String::as_str).collect();
    let expected =
        ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"];
    assert_eq!(names, expected);
    let st = safetensors::SafeTensors::deserialize(&first["model.safetensors"]).unwrap();
    assert_eq!(st.len(), 11);
    assert_eq!(st.tensor("model.layers.0.self_attn.k_proj.weight").unwrap().shape(), [128, 256]);

    // Non-empty, not asked to replace: refused, with nothing read or written.
    std::fs::write(out.join("notes.txt"), b"mine").unwrap();
    let before = snapshot(tmp.path());
    let e = import_gguf(&gguf, &out, Existing::Refuse).unwrap_err();
    assert!(matches!(e.downcast_ref::<FsError>(), Some(FsError::Occupied { .. })), "{e:#}");
    assert_eq!(format!("{e:#}"), format!("{} is a folder that is not empty", out.display()));
    assert_eq!(snapshot(tmp.path()), before);

    // Asked to replace: the same import again, and the extra file is gone with the old folder.
    import_gguf(&gguf, &out, Existing::Replace).unwrap();
    assert_eq!(snapshot(&out), first);
    let siblings: Vec<_> =
        std::fs::read_dir(tmp.path().join("models")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(siblings, ["out"], "no temporary or replaced folder is left beside it");
}

#[test]
fn a_failed_import_leaves_the_old_model_byte_identical_and_no_temporary_folder() {
    use crate::{import_gguf, Existing};
    let tmp = tempfile::tempdir().unwrap();
    let (good, bad) = (tmp.path().join("good.gguf"), tmp.path().join("bad.gguf"));
    std::fs::write(&good, tiny_llama(false).bytes()).unwrap();
    std::fs::write(&bad, tiny_llama(true).bytes()).unwrap();
    let out = tmp.path().join("out");
    import_gguf(&good, &out, Existing::Refuse).unwrap();
    let before = snapshot(tmp.path());
    for existing in [Existing::Replace, Existing::Refuse] {
        let target = if existing == Existing::Replace { out.clone() } else { tmp.path().join("new") };
        let e = format!("{:#}", import_gguf(&bad, &target, existing).unwrap_err());
        assert!(e.contains("Q2_K (type id 10)") && e.contains("output_norm.weight"), "{e}");
        assert_eq!(snapshot(tmp.path()), before, "after a failed import into {}", target.display());
    }
}

/// `import --dtype bf16|f16`: the same tensors, each value the f32 import's rounded to the
/// dtype, the folder's weights half the size, and config.json saying so.
#[test]
fn a_half_precision_import_holds_the_f32_import_rounded() {
    use crate::{import_gguf, import_gguf_as, Existing};
    use slim_checkpoint::{ModelConfig, WeightDtype, WeightSource, Weights};
    let tmp = tempfile::tempdir().unwrap();
    let gguf = tmp.path().join("tiny.gguf");
    std::fs::write(&gguf, tiny_llama(false).bytes()).unwrap();
    let full = tmp.path().join("f32");
    import_gguf(&gguf, &full, Existing::Refuse).unwrap();
    let reference = Weights::load(&full).unwrap();
    let size = |d: &std::path::Path| std::fs::metadata(d.join("model.safetensors")).unwrap().len();
    for (dtype, torch, round) in [
        (WeightDtype::Bf16, "bfloat16", (|v| half::bf16::from_f32(v).to_f32()) as fn(f32) -> f32),
        (WeightDtype::F16, "float16", |v| half::f16::from_f32(v).to_f32()),
    ] {
        let out = tmp.path().join(torch);
        import_gguf_as(&gguf, &out, Existing::Refuse, dtype).unwrap();
        assert_eq!(ModelConfig::load(&out).unwrap().raw["torch_dtype"], torch);
        let src = WeightSource::open(&out).unwrap();
        assert_eq!(src.model_dtype(), dtype);
        let half = src.read_all().unwrap();
        assert_eq!(half.names().collect::<Vec<_>>(), reference.names().collect::<Vec<_>>());
        for name in reference.names() {
            let want: Vec<f32> = reference.get(name).unwrap().data.iter().map(|&v| round(v)).collect();
            assert_eq!(half.get(name).unwrap().data, want, "{torch} {name}");
        }
        // Header aside, half the bytes.
        assert!(size(&out) * 2 < size(&full) + 4096, "{} vs {}", size(&out), size(&full));
    }
}
