//! The Brown corpus: its genres, and the rule that turns the tagged NLTK files into plain text.
//!
//! `cargo xtask fetch brown` applies [`detag_line`] (xtask has its own copy: it depends on no workspace crate) and
//! keeps the tagged originals in `brown/tagged/`; this crate's integration test checks that both copies agree.

use std::{fmt, str::FromStr};

use anyhow::{bail, format_err};

/// One tagged Brown line to plain text.
///
/// The rule: split on white space, cut each `word/tag` token at its **last** `/` and keep the word
/// (`1/2/cd` gives `1/2`), map the quote tokens `` `` `` and `''` to `"`, re-join with single spaces.
/// The space before punctuation is kept (`the jury said , " no evidence " .`): no detokenisation, so the rule is
/// trivial to reproduce in any language. A blank line gives an empty string; files keep one sentence per line.
pub fn detag_line(line: &str) -> String {
    let words: Vec<&str> = line
        .split_whitespace()
        .map(|token| {
            let word = token.rsplit_once('/').map_or(token, |(word, _tag)| word);
            if word == "``" || word == "''" {
                "\""
            } else {
                word
            }
        })
        .collect();
    words.join(" ")
}

/// A Brown corpus genre (category), as named in NLTK's `cats.txt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BrownGenre {
    /// A. Press: reportage.
    News,
    /// B. Press: editorial.
    Editorial,
    /// C. Press: reviews.
    Reviews,
    /// D. Religion.
    Religion,
    /// E. Skill and hobbies.
    Hobbies,
    /// F. Popular lore.
    Lore,
    /// G. Belles-lettres.
    BellesLettres,
    /// H. Miscellaneous: government and house organs.
    Government,
    /// J. Learned.
    Learned,
    /// K. Fiction: general.
    Fiction,
    /// L. Fiction: mystery and detective.
    Mystery,
    /// M. Fiction: science.
    ScienceFiction,
    /// N. Fiction: adventure and western.
    Adventure,
    /// P. Fiction: romance and love story.
    Romance,
    /// R. Humor.
    Humor,
}

impl BrownGenre {
    /// All genres, in category letter order (A-R).
    pub const ALL: [BrownGenre; 15] = [
        BrownGenre::News,
        BrownGenre::Editorial,
        BrownGenre::Reviews,
        BrownGenre::Religion,
        BrownGenre::Hobbies,
        BrownGenre::Lore,
        BrownGenre::BellesLettres,
        BrownGenre::Government,
        BrownGenre::Learned,
        BrownGenre::Fiction,
        BrownGenre::Mystery,
        BrownGenre::ScienceFiction,
        BrownGenre::Adventure,
        BrownGenre::Romance,
        BrownGenre::Humor,
    ];

    /// The non-fiction genres, categories A-J (374 files).
    pub const NONFICTION: [BrownGenre; 9] = [
        BrownGenre::News,
        BrownGenre::Editorial,
        BrownGenre::Reviews,
        BrownGenre::Religion,
        BrownGenre::Hobbies,
        BrownGenre::Lore,
        BrownGenre::BellesLettres,
        BrownGenre::Government,
        BrownGenre::Learned,
    ];

    /// The fiction genres, categories K-R (126 files).
    pub const FICTION: [BrownGenre; 6] = [
        BrownGenre::Fiction,
        BrownGenre::Mystery,
        BrownGenre::ScienceFiction,
        BrownGenre::Adventure,
        BrownGenre::Romance,
        BrownGenre::Humor,
    ];

    /// The name used in `cats.txt` (`belles_lettres`).
    pub fn name(self) -> &'static str {
        match self {
            BrownGenre::News => "news",
            BrownGenre::Editorial => "editorial",
            BrownGenre::Reviews => "reviews",
            BrownGenre::Religion => "religion",
            BrownGenre::Hobbies => "hobbies",
            BrownGenre::Lore => "lore",
            BrownGenre::BellesLettres => "belles_lettres",
            BrownGenre::Government => "government",
            BrownGenre::Learned => "learned",
            BrownGenre::Fiction => "fiction",
            BrownGenre::Mystery => "mystery",
            BrownGenre::ScienceFiction => "science_fiction",
            BrownGenre::Adventure => "adventure",
            BrownGenre::Romance => "romance",
            BrownGenre::Humor => "humor",
        }
    }

    /// The category letter, which is also the second letter of the file ids (`ca01` is news).
    pub fn letter(self) -> char {
        b"abcdefghjklmnpr"[self as usize] as char
    }

    /// Whether the genre is one of the fiction genres (K-R).
    pub fn is_fiction(self) -> bool {
        BrownGenre::FICTION.contains(&self)
    }
}

impl fmt::Display for BrownGenre {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BrownGenre {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<BrownGenre> {
        BrownGenre::ALL.into_iter().find(|g| g.name() == s).ok_or_else(|| format_err!("unknown Brown genre `{s}`"))
    }
}

/// Parses `cats.tsv` (`<fileid>\t<genre>` per line) into (file id, genre) pairs sorted by file id.
/// Checks that each file id's letter matches its genre.
pub(crate) fn parse_cats(text: &str) -> anyhow::Result<Vec<(String, BrownGenre)>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let Some((id, genre)) = line.split_once('\t') else { bail!("line {}: expected `<fileid>\\t<genre>`", i + 1) };
        let genre: BrownGenre = genre.trim().parse().map_err(|e| format_err!("line {}: {e}", i + 1))?;
        if id.len() != 4 || id.chars().nth(1) != Some(genre.letter()) {
            bail!("line {}: file id `{id}` does not belong to genre {genre}", i + 1);
        }
        out.push((id.to_owned(), genre));
    }
    out.sort();
    Ok(out)
}
