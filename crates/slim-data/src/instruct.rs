//! Instruction data in Alpaca's format (`instruction`, `input`, `output`) and the prompt template
//! LLM-Pruner's post-training uses (`templates/alpaca.json`), which SlimLLM's scripts reuse.
//!
//! The only such set the registries ship is the 999-record demo file of `llamafactory` 0.9.5
//! (`cargo xtask fetch alpaca-demo`, to `datasets/alpaca-demo/alpaca_en_demo.json`).

use anyhow::{ensure, Context};
use std::path::Path;

/// One record.
#[derive(Clone, Debug, PartialEq)]
pub struct Instruction {
    /// The task.
    pub instruction: String,
    /// Its context (often empty).
    pub input: String,
    /// The answer the model is trained to give.
    pub output: String,
}

/// Alpaca's template with an input (LLM-Pruner's `prompt_input`).
const WITH_INPUT: &str = "Below is an instruction that describes a task, paired with an input that provides further \
                          context. Write a response that appropriately completes the request.\n\n### Instruction:\n";
/// Alpaca's template without an input (`prompt_no_input`).
const NO_INPUT: &str =
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n\
     ### Instruction:\n";

impl Instruction {
    /// The prompt: everything before the response, which is not scored when prompts are masked.
    pub fn prompt(&self) -> String {
        if self.input.is_empty() {
            format!("{NO_INPUT}{}\n\n### Response:\n", self.instruction)
        } else {
            format!("{WITH_INPUT}{}\n\n### Input:\n{}\n\n### Response:\n", self.instruction, self.input)
        }
    }

    /// The prompt followed by the output.
    pub fn full(&self) -> String {
        format!("{}{}", self.prompt(), self.output)
    }
}

/// Parses a JSON array of Alpaca records (`input` may be missing).
pub fn parse_alpaca(text: &str) -> anyhow::Result<Vec<Instruction>> {
    let v: serde_json::Value = serde_json::from_str(text)?;
    let arr = v.as_array().context("expected a JSON array of records")?;
    arr.iter()
        .enumerate()
        .map(|(i, r)| {
            let field = |k: &str, required: bool| -> anyhow::Result<String> {
                match r.get(k) {
                    Some(serde_json::Value::String(s)) => Ok(s.clone()),
                    None | Some(serde_json::Value::Null) if !required => Ok(String::new()),
                    _ => anyhow::bail!("record {i}: `{k}` is missing or not a string"),
                }
            };
            Ok(Instruction {
                instruction: field("instruction", true)?,
                input: field("input", false)?,
                output: field("output", true)?,
            })
        })
        .collect()
}

/// Where [`load_alpaca_demo`] reads.
pub fn alpaca_demo_path(data_root: &Path) -> std::path::PathBuf {
    data_root.join("datasets/alpaca-demo/alpaca_en_demo.json")
}

/// The 999 records of `cargo xtask fetch alpaca-demo`.
pub fn load_alpaca_demo(data_root: &Path) -> anyhow::Result<Vec<Instruction>> {
    let path = alpaca_demo_path(data_root);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("cannot read {} (run `cargo xtask fetch alpaca-demo` to download it)", path.display())
    })?;
    let records = parse_alpaca(&text).with_context(|| format!("parsing {}", path.display()))?;
    ensure!(!records.is_empty(), "{} holds no record", path.display());
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_follow_llm_pruners_template() {
        let records = r#"[{"instruction": "Add.", "input": "1 and 2", "output": "3"},
                          {"instruction": "Hi.", "output": "Hello"}]"#;
        let r = parse_alpaca(records).unwrap();
        assert_eq!(
            r[0].prompt(),
            "Below is an instruction that describes a task, paired with an input that provides further context. \
             Write a response that appropriately completes the request.\n\n### Instruction:\nAdd.\n\n\
             ### Input:\n1 and 2\n\n### Response:\n"
        );
        assert_eq!(
            r[1].full(),
            "Below is an instruction that describes a task. Write a response that appropriately completes the \
             request.\n\n### Instruction:\nHi.\n\n### Response:\nHello"
        );
        assert!(parse_alpaca(r#"[{"input": "x", "output": "y"}]"#).unwrap_err().to_string().contains("instruction"));
    }
}
