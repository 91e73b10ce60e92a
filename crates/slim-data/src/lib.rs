//! Text data sets as plain text, and the text preparation of the perplexity protocol.
//!
//! The files come from `cargo xtask fetch ptb` / `cargo xtask fetch brown`, which write them under
//! `<data_root>/datasets/` (`data_root` is the repository's git-ignored `data/` folder):
//! - `ptb/{train,valid,test}.txt`: the standard Penn Treebank LM splits, byte-identical to `ptb.*.txt`;
//! - `brown/<fileid>.txt`: one Brown corpus file as plain text, one sentence per line (rule: [`brown::detag_line`]),
//!   and `brown/cats.tsv` (`<fileid>\t<genre>`).
//!
//! [`TextSource`] loads those, [`join_for_ppl`] prepares text the way LLM-Pruner / SlimLLM do before tokenizing it for
//! perplexity, and [`EvalText`] names the prepared evaluation texts (`ptb-valid`, `ptb-test`, `brown-nonfiction`).
//!
//! [`zeroshot`] builds the lm-eval 0.3 requests of the zero-shot tasks from `datasets/zeroshot/<task>.jsonl`.
//!
//! This crate knows nothing about tokenizers or models.

pub mod brown;
mod eval_text;
pub mod instruct;
mod join;
mod source;
pub mod zeroshot;

pub use brown::BrownGenre;
pub use eval_text::EvalText;
pub use join::join_for_ppl;
pub use source::{Document, PtbSplit, TextSource};

#[cfg(test)]
mod tests;
