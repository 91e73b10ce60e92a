//! Builds a Hugging Face `tokenizer.json` (and `tokenizer_config.json`) from a GGUF's tokenizer metadata.
//!
//! The project tokenizes with the `tokenizers` crate, but its models arrive as GGUF files whose
//! tokenizer is stored as llama.cpp metadata (`tokenizer.ggml.*`).
//! Only byte-level BPE (`tokenizer.ggml.model = gpt2`) is supported, with the pre-tokenizers of the
//! model families the project uses; the result must tokenize exactly as llama.cpp does, which the
//! integration tests check against llama.cpp's own vocab test files.
//!
//! llama.cpp's pre-tokenizer regexes (src/llama-vocab.cpp, `llm_tokenizer_bpe`) and their
//! `tokenizers` equivalents:
//! - `gpt-2` / `default`: the GPT-2 regex, which is ByteLevel's built-in regex.
//! - `smollm`: `\p{N}` first (each digit its own piece), then the GPT-2 regex: Digits(individual)
//!   followed by ByteLevel, as in SmolLM2's own tokenizer.json.
//! - `qwen2`: the Qwen2 regex (llama.cpp spells `(?i:'s|...)` out as `'[sS]|...`), as in
//!   Qwen2's tokenizer.json, with its NFC normalizer.

use anyhow::{bail, format_err, Context, Result};
use serde_json::{json, Map, Value};

use crate::reader::{GgufFile, MetaArray};

/// llama.cpp token types (`llama_token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// Qwen2's pre-tokenizer regex, as in its tokenizer.json (spelled once, in slim-checkpoint, whose
/// byte-level test tokenizer uses it too).
pub use slim_checkpoint::tokenizer_json::QWEN2_REGEX;

/// What the GGUF says about special tokens, resolved once.
#[derive(Clone, Debug, PartialEq)]
pub struct SpecialTokens {
    /// BOS id, if the GGUF defines one.
    pub bos: Option<u32>,
    /// EOS id, if the GGUF defines one.
    pub eos: Option<u32>,
    /// UNK id, if the GGUF defines one.
    pub unk: Option<u32>,
    /// Padding id, if the GGUF defines one.
    pub pad: Option<u32>,
    /// Whether encoding prepends BOS. From `tokenizer.ggml.add_bos_token`; when the key is absent,
    /// llama.cpp's default for BPE vocabs with the supported pre-tokenizers is false.
    pub add_bos: bool,
    /// Whether encoding appends EOS (`tokenizer.ggml.add_eos_token`, absent = false as in llama.cpp).
    pub add_eos: bool,
}

/// Builds the `tokenizer.json` of a byte-level BPE GGUF tokenizer.
pub fn build_tokenizer_json(gguf: &GgufFile) -> Result<Value> {
    let ctx = || format!("building tokenizer.json from {}", gguf.path().display());
    build(gguf).with_context(ctx)
}

/// Builds the `tokenizer_config.json`: special token strings, add_bos/add_eos, and the chat template if any.
pub fn build_tokenizer_config_json(gguf: &GgufFile) -> Result<Value> {
    let tokens = gguf.get_str_array("tokenizer.ggml.tokens")?;
    let sp = special_tokens(gguf, tokens.len())?;
    let name = |id: Option<u32>| id.map(|i| Value::String(tokens[i as usize].clone())).unwrap_or(Value::Null);
    let mut cfg = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": name(sp.bos),
        "eos_token": name(sp.eos),
        "unk_token": name(sp.unk),
        "pad_token": name(sp.pad),
        "add_bos_token": sp.add_bos,
        "add_eos_token": sp.add_eos,
        "clean_up_tokenization_spaces": false,
        "model_max_length": 1_000_000_000_000_000_000u64,
    });
    if gguf.get("tokenizer.chat_template").is_some() {
        cfg["chat_template"] = Value::String(gguf.get_str("tokenizer.chat_template")?.to_owned());
    }
    Ok(cfg)
}

/// Reads the special token ids and add_bos/add_eos flags, checking ids against the vocab size.
pub fn special_tokens(gguf: &GgufFile, vocab_size: usize) -> Result<SpecialTokens> {
    let id = |key: &str| -> Result<Option<u32>> {
        if gguf.get(key).is_none() {
            return Ok(None);
        }
        let v = gguf.get_u64(key)?;
        if v >= vocab_size as u64 {
            bail!("`{key}` = {v} is outside the vocabulary of {vocab_size} tokens");
        }
        Ok(Some(v as u32))
    };
    let flag = |key: &str| -> Result<bool> {
        // Absent means false: llama.cpp's default for BPE vocabs with the pre-tokenizers supported here.
        if gguf.get(key).is_none() {
            return Ok(false);
        }
        gguf.get_bool(key)
    };
    Ok(SpecialTokens {
        bos: id("tokenizer.ggml.bos_token_id")?,
        eos: id("tokenizer.ggml.eos_token_id")?,
        unk: id("tokenizer.ggml.unknown_token_id")?,
        pad: id("tokenizer.ggml.padding_token_id")?,
        add_bos: flag("tokenizer.ggml.add_bos_token")?,
        add_eos: flag("tokenizer.ggml.add_eos_token")?,
    })
}

fn build(gguf: &GgufFile) -> Result<Value> {
    let model = gguf.get_str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        bail!("tokenizer model `{model}` is not supported (only `gpt2`, byte-level BPE)");
    }
    let pre = gguf.get_str("tokenizer.ggml.pre")?;
    let (normalizer, pre_tokenizer) = pre_tokenizer(pre)?;

    let tokens = gguf.get_str_array("tokenizer.ggml.tokens")?;
    let types = token_types(gguf, tokens.len())?;
    let merges = gguf.get_str_array("tokenizer.ggml.merges")?;
    let sp = special_tokens(gguf, tokens.len())?;

    let mut vocab = Map::with_capacity(tokens.len());
    let mut added = Vec::new();
    for (id, (tok, &ty)) in tokens.iter().zip(&types).enumerate() {
        if vocab.insert(tok.clone(), json!(id)).is_some() {
            bail!("token {tok:?} (id {id}) appears twice in tokenizer.ggml.tokens");
        }
        if ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_USER_DEFINED {
            added.push(json!({
                "id": id,
                "content": tok,
                "single_word": false,
                "lstrip": false,
                "rstrip": false,
                "normalized": false,
                "special": ty == TOKEN_TYPE_CONTROL,
            }));
        }
    }
    let merges = merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let (a, b) = m
                .split_once(' ')
                .filter(|(_, b)| !b.contains(' '))
                .ok_or_else(|| format_err!("merge #{i} {m:?} is not two tokens separated by one space"))?;
            Ok(json!([a, b]))
        })
        .collect::<Result<Vec<_>>>()?;

    let unk = sp.unk.map(|i| Value::String(tokens[i as usize].clone())).unwrap_or(Value::Null);
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor(&sp, tokens)?,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": unk,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": vocab,
            "merges": merges,
        },
    }))
}

/// The normalizer and pre-tokenizer for a `tokenizer.ggml.pre` value.
fn pre_tokenizer(pre: &str) -> Result<(Value, Value)> {
    let byte_level = |use_regex: bool| {
        json!({
            "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex,
        })
    };
    Ok(match pre {
        "gpt-2" | "default" => (Value::Null, byte_level(true)),
        "smollm" => (
            Value::Null,
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                byte_level(true),
            ]}),
        ),
        "qwen2" => (
            json!({"type": "NFC"}),
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": QWEN2_REGEX}, "behavior": "Isolated", "invert": false},
                byte_level(false),
            ]}),
        ),
        other => bail!("pre-tokenizer type `{other}` is not supported (supported: gpt-2, default, smollm, qwen2)"),
    })
}

/// TemplateProcessing adding BOS/EOS when the GGUF asks for them, else ByteLevel (offsets only).
fn post_processor(sp: &SpecialTokens, tokens: &[String]) -> Result<Value> {
    if !sp.add_bos && !sp.add_eos {
        return Ok(json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true}));
    }
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let mut specials = Map::new();
    let mut special = |id: Option<u32>, what: &str| -> Result<Value> {
        let id =
            id.ok_or_else(|| format_err!("tokenizer.ggml.add_{what}_token is true but no {what} token id is set"))?;
        let tok = &tokens[id as usize];
        specials.insert(tok.clone(), json!({"id": tok, "ids": [id], "tokens": [tok]}));
        Ok(json!({"SpecialToken": {"id": tok, "type_id": 0}}))
    };
    let bos = if sp.add_bos { Some(special(sp.bos, "bos")?) } else { None };
    let eos = if sp.add_eos { Some(special(sp.eos, "eos")?) } else { None };
    for (seq, ids) in [(&mut single, &["A"][..]), (&mut pair, &["A", "B"][..])] {
        for (i, s) in ids.iter().enumerate() {
            seq.extend(bos.clone());
            seq.push(json!({"Sequence": {"id": s, "type_id": i}}));
            seq.extend(eos.clone());
        }
    }
    Ok(json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials}))
}

/// `tokenizer.ggml.token_type` as i64s, one per token.
fn token_types(gguf: &GgufFile, n_tokens: usize) -> Result<Vec<i64>> {
    let key = "tokenizer.ggml.token_type";
    let types: Vec<i64> = match gguf.get_array(key)? {
        MetaArray::I32(v) => v.iter().map(|&x| x.into()).collect(),
        MetaArray::U32(v) => v.iter().map(|&x| x.into()).collect(),
        MetaArray::I8(v) => v.iter().map(|&x| x.into()).collect(),
        MetaArray::U8(v) => v.iter().map(|&x| x.into()).collect(),
        _ => bail!("`{key}` is not an array of integers"),
    };
    if types.len() != n_tokens {
        bail!("`{key}` has {} entries but there are {n_tokens} tokens", types.len());
    }
    Ok(types)
}
