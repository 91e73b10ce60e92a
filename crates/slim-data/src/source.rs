//! [`TextSource`]: a named list of plain-text documents loaded from `<data_root>/datasets/`.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context;

use crate::brown::{self, BrownGenre};

/// A Penn Treebank split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PtbSplit {
    /// `train.txt` (42,068 lines).
    Train,
    /// `valid.txt` (3,370 lines): the split the perplexity protocol uses.
    Valid,
    /// `test.txt` (3,761 lines).
    Test,
}

impl PtbSplit {
    /// `train`, `valid` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            PtbSplit::Train => "train",
            PtbSplit::Valid => "valid",
            PtbSplit::Test => "test",
        }
    }
}

/// One document: its text, one sentence (PTB: one line of the split) per line, each line ending in `'\n'`.
#[derive(Clone, Debug)]
pub struct Document {
    /// `ptb.valid` or the Brown file id (`ca01`).
    pub id: String,
    /// The Brown genre; `None` for PTB.
    pub genre: Option<BrownGenre>,
    /// The text.
    pub text: String,
}

/// A named set of documents, in a fixed order (Brown: by file id).
#[derive(Clone, Debug)]
pub struct TextSource {
    name: String,
    documents: Vec<Document>,
}

impl TextSource {
    /// The PTB split `split`: one document, the exact text of `<data_root>/datasets/ptb/<split>.txt`.
    pub fn ptb(data_root: &Path, split: PtbSplit) -> anyhow::Result<TextSource> {
        let path = data_root.join("datasets/ptb").join(format!("{}.txt", split.name()));
        let text = read(&path, "ptb")?;
        let doc = Document { id: format!("ptb.{}", split.name()), genre: None, text };
        Ok(TextSource { name: format!("ptb-{}", split.name()), documents: vec![doc] })
    }

    /// The Brown files of the given genres, in file id order.
    pub fn brown(data_root: &Path, genres: &[BrownGenre]) -> anyhow::Result<TextSource> {
        let dir = data_root.join("datasets/brown");
        let cats_path = dir.join("cats.tsv");
        let cats =
            brown::parse_cats(&read(&cats_path, "brown")?).with_context(|| format!("bad {}", cats_path.display()))?;
        let mut documents = Vec::new();
        for (id, genre) in cats {
            if genres.contains(&genre) {
                let text = read(&dir.join(format!("{id}.txt")), "brown")?;
                documents.push(Document { id, genre: Some(genre), text });
            }
        }
        let mut names: Vec<&str> = genres.iter().map(|g| g.name()).collect();
        names.sort_unstable();
        names.dedup();
        Ok(TextSource { name: format!("brown[{}]", names.join(",")), documents })
    }

    /// The Brown fiction genres (K-R): the calibration stand-in for BookCorpus.
    pub fn brown_fiction(data_root: &Path) -> anyhow::Result<TextSource> {
        let mut source = TextSource::brown(data_root, &BrownGenre::FICTION)?;
        source.name = "brown-fiction".to_owned();
        Ok(source)
    }

    /// The Brown non-fiction genres (A-J): a held-out perplexity set, disjoint from the calibration text.
    pub fn brown_nonfiction(data_root: &Path) -> anyhow::Result<TextSource> {
        let mut source = TextSource::brown(data_root, &BrownGenre::NONFICTION)?;
        source.name = "brown-nonfiction".to_owned();
        Ok(source)
    }

    /// A short name (`ptb-valid`, `brown-fiction`, `brown[news,lore]`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The documents, in order.
    pub fn documents(&self) -> &[Document] {
        &self.documents
    }

    /// All documents' text concatenated in order (for PTB: the file's exact text).
    pub fn text(&self) -> String {
        self.documents.iter().map(|d| d.text.as_str()).collect()
    }
}

/// Reads a data file, naming it and the fetch command on failure.
fn read(path: &Path, fetch: &str) -> anyhow::Result<String> {
    fs::read_to_string(path)
        .with_context(|| format!("cannot read {} (run `cargo xtask fetch {fetch}` to download it)", display(path)))
}

fn display(path: &Path) -> String {
    // A path that does not exist cannot be canonicalized; show it as given.
    fs::canonicalize(path).unwrap_or_else(|_| PathBuf::from(path)).display().to_string()
}
