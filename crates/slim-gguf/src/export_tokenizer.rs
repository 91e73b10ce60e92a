//! The tokenizer metadata of an export (`tokenizer.ggml.*`), made from a model directory's
//! `tokenizer.json` and `tokenizer_config.json`: the inverse of [`crate::build_tokenizer_json`].
//!
//! Only byte-level BPE with one of the pre-tokenizers [`crate::build_tokenizer_json`] writes
//! (gpt-2, smollm, qwen2) is exported: llama.cpp picks its pre-tokenizer regex by name, so a
//! tokenizer.json whose pre-tokenizer is none of those could not be tokenized the same way there,
//! and is refused with an error naming the file rather than exported with a guess.

use std::path::Path;

use anyhow::{bail, ensure, format_err, Context, Result};
use serde_json::Value;

use crate::reader::{MetaArray, MetaValue};
use crate::tokenizer::QWEN2_REGEX;

/// llama.cpp token types (`llama_token_type`).
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

/// The `tokenizer.*` metadata for a model directory, with `n_vocab` tokens (the embedding's rows:
/// ids the tokenizer does not use become `[PAD<id>]` tokens of type unused, as llama.cpp's converter
/// writes them). `bos` and `eos` come from config.json.
pub(crate) fn tokenizer_metadata(
    dir: &Path,
    n_vocab: usize,
    bos: Option<u32>,
    eos: Option<u32>,
) -> Result<Vec<(String, MetaValue)>> {
    let path = dir.join("tokenizer.json");
    let tok = read_json(&path)?;
    let cfg_path = dir.join("tokenizer_config.json");
    let tok_cfg = if cfg_path.exists() { read_json(&cfg_path)? } else { Value::Null };
    build(&tok, &tok_cfg, n_vocab, bos, eos).with_context(|| format!("exporting the tokenizer of {}", path.display()))
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

fn build(
    tok: &Value,
    tok_cfg: &Value,
    n_vocab: usize,
    bos: Option<u32>,
    eos: Option<u32>,
) -> Result<Vec<(String, MetaValue)>> {
    let model = &tok["model"];
    ensure!(model["type"] == "BPE", "model.type is {}, only byte-level BPE can be exported", model["type"]);
    let pre = pre_name(&tok["normalizer"], &tok["pre_tokenizer"])?;
    let vocab = model["vocab"].as_object().ok_or_else(|| format_err!("model.vocab is not an object"))?;
    let mut tokens: Vec<Option<String>> = vec![None; n_vocab];
    let mut types = vec![NORMAL; n_vocab];
    let mut place = |id: u64, content: &str, what: &str| -> Result<()> {
        let slot = tokens.get_mut(id as usize).ok_or_else(|| {
            format_err!("{what} {content:?} has id {id}, outside the model's {n_vocab} embedding rows")
        })?;
        ensure!(slot.is_none() || slot.as_deref() == Some(content), "id {id} is given to two tokens");
        *slot = Some(content.to_owned());
        Ok(())
    };
    for (content, id) in vocab {
        let id = id.as_u64().ok_or_else(|| format_err!("model.vocab[{content:?}] is not a token id"))?;
        place(id, content, "token")?;
    }
    for a in tok["added_tokens"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let id = a["id"].as_u64().ok_or_else(|| format_err!("an added token has no id: {a}"))?;
        let content = a["content"].as_str().ok_or_else(|| format_err!("added token {id} has no content"))?;
        place(id, content, "added token")?;
        types[id as usize] = if a["special"].as_bool().unwrap_or(false) { CONTROL } else { USER_DEFINED };
    }
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(id, t)| {
            t.unwrap_or_else(|| {
                types[id] = UNUSED;
                format!("[PAD{id}]")
            })
        })
        .collect();
    let merges = merges(&model["merges"])?;

    let id_of = |key: &str| -> Result<Option<u32>> {
        let name = match &tok_cfg[key] {
            Value::String(s) => s.as_str(),
            Value::Object(o) => o.get("content").and_then(Value::as_str).unwrap_or_default(),
            _ => return Ok(None),
        };
        let id = tokens.iter().position(|t| t == name);
        Ok(Some(id.ok_or_else(|| format_err!("tokenizer_config.json's {key} {name:?} is not a token"))? as u32))
    };
    let mut meta = vec![
        ("tokenizer.ggml.model".to_owned(), MetaValue::String("gpt2".into())),
        ("tokenizer.ggml.pre".to_owned(), MetaValue::String(pre.into())),
        ("tokenizer.ggml.tokens".to_owned(), MetaValue::Array(MetaArray::String(tokens.clone()))),
        ("tokenizer.ggml.token_type".to_owned(), MetaValue::Array(MetaArray::I32(types))),
        ("tokenizer.ggml.merges".to_owned(), MetaValue::Array(MetaArray::String(merges))),
    ];
    let bos = bos.or(id_of("bos_token")?);
    let eos = eos.or(id_of("eos_token")?);
    for (key, id) in [("bos", bos), ("eos", eos), ("unknown", id_of("unk_token")?), ("padding", id_of("pad_token")?)] {
        if let Some(id) = id {
            ensure!((id as usize) < n_vocab, "the {key} token id {id} is outside the {n_vocab} embedding rows");
            meta.push((format!("tokenizer.ggml.{key}_token_id"), MetaValue::U32(id)));
        }
    }
    for key in ["add_bos_token", "add_eos_token"] {
        let flag = tok_cfg[key].as_bool().unwrap_or(false);
        meta.push((format!("tokenizer.ggml.{key}"), MetaValue::Bool(flag)));
    }
    if let Some(t) = tok_cfg["chat_template"].as_str() {
        meta.push(("tokenizer.chat_template".to_owned(), MetaValue::String(t.to_owned())));
    }
    Ok(meta)
}

/// Merges as llama.cpp stores them, `"a b"`, from either tokenizer.json spelling (`"a b"` or `["a", "b"]`).
fn merges(v: &Value) -> Result<Vec<String>> {
    let list = v.as_array().ok_or_else(|| format_err!("model.merges is not a list"))?;
    list.iter()
        .enumerate()
        .map(|(i, m)| match m {
            Value::String(s) => Ok(s.clone()),
            Value::Array(p)
                if p.len() == 2 && p.iter().all(|x| x.is_string() && !x.as_str().unwrap().contains(' ')) =>
            {
                Ok(format!("{} {}", p[0].as_str().unwrap(), p[1].as_str().unwrap()))
            }
            other => bail!("merge #{i} {other} is neither \"a b\" nor [\"a\", \"b\"]"),
        })
        .collect()
}

/// llama.cpp's name for the pre-tokenizer a tokenizer.json describes.
fn pre_name(normalizer: &Value, pre: &Value) -> Result<&'static str> {
    let byte_level = |v: &Value, regex: bool| v["type"] == "ByteLevel" && v["use_regex"].as_bool() == Some(regex);
    let parts = pre["pretokenizers"].as_array().map(Vec::as_slice).unwrap_or_default();
    let name = if byte_level(pre, true) && normalizer.is_null() {
        Some("gpt-2")
    } else if pre["type"] == "Sequence" && parts.len() == 2 {
        let digits = parts[0]["type"] == "Digits" && parts[0]["individual_digits"] == true;
        let qwen_split = parts[0]["type"] == "Split" && parts[0]["pattern"]["Regex"] == QWEN2_REGEX;
        if digits && byte_level(&parts[1], true) && normalizer.is_null() {
            Some("smollm")
        } else if qwen_split && byte_level(&parts[1], false) && normalizer["type"] == "NFC" {
            Some("qwen2")
        } else {
            None
        }
    } else {
        None
    };
    name.ok_or_else(|| {
        format_err!(
            "its normalizer and pre_tokenizer match none of llama.cpp's gpt-2, smollm or qwen2 pre-tokenizers, \
             so llama.cpp would tokenize differently"
        )
    })
}
