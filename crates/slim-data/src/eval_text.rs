//! [`EvalText`]: the named, prepared perplexity texts.

use std::{fmt, path::Path, str::FromStr};

use anyhow::format_err;

use crate::{join_for_ppl, PtbSplit, TextSource};

/// A perplexity evaluation text, prepared with [`join_for_ppl`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvalText {
    /// PTB validation split: the protocol of SlimLLM and LLM-Pruner.
    PtbValid,
    /// PTB test split.
    PtbTest,
    /// Brown non-fiction genres (A-J), sentences of all files in file id order; disjoint from the calibration text.
    BrownNonfiction,
}

impl EvalText {
    /// All of them.
    pub const ALL: [EvalText; 3] = [EvalText::PtbValid, EvalText::PtbTest, EvalText::BrownNonfiction];

    /// `ptb-valid`, `ptb-test` or `brown-nonfiction`.
    pub fn name(self) -> &'static str {
        match self {
            EvalText::PtbValid => "ptb-valid",
            EvalText::PtbTest => "ptb-test",
            EvalText::BrownNonfiction => "brown-nonfiction",
        }
    }

    /// The source text (before joining).
    pub fn source(self, data_root: &Path) -> anyhow::Result<TextSource> {
        match self {
            EvalText::PtbValid => TextSource::ptb(data_root, PtbSplit::Valid),
            EvalText::PtbTest => TextSource::ptb(data_root, PtbSplit::Test),
            EvalText::BrownNonfiction => TextSource::brown_nonfiction(data_root),
        }
    }

    /// Where the text lives under `data_root`: the PTB split's file, or the Brown corpus's folder (for messages).
    pub fn location(self, data_root: &Path) -> std::path::PathBuf {
        let ptb = data_root.join("datasets/ptb");
        match self {
            EvalText::PtbValid => ptb.join(format!("{}.txt", PtbSplit::Valid.name())),
            EvalText::PtbTest => ptb.join(format!("{}.txt", PtbSplit::Test.name())),
            EvalText::BrownNonfiction => data_root.join("datasets/brown"),
        }
    }

    /// The prepared text: the source's lines stripped, non-empty ones joined with `"\n\n"`.
    pub fn load(&self, data_root: &Path) -> anyhow::Result<String> {
        Ok(join_for_ppl(&self.source(data_root)?.text()))
    }
}

impl fmt::Display for EvalText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EvalText {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<EvalText> {
        EvalText::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| {
            format_err!("unknown evaluation text `{s}` (expected one of ptb-valid, ptb-test, brown-nonfiction)")
        })
    }
}
