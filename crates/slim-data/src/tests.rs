//! Unit tests on small inline texts and a throw-away data folder.

use std::{fs, path::PathBuf};

use crate::{brown::detag_line, join_for_ppl, BrownGenre, EvalText, PtbSplit, TextSource};

/// A fresh data root under the system temp dir, unique per test.
fn temp_root(name: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("slim-data-test-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).unwrap();
    root
}

#[test]
fn join_strips_and_drops_empty_lines() {
    assert_eq!(join_for_ppl(" a b \n\n\t\nc\r\n  d\n"), "a b\n\nc\n\nd");
    assert_eq!(join_for_ppl(""), "");
    assert_eq!(join_for_ppl("\n \n"), "");
    assert_eq!(join_for_ppl("x"), "x");
    // Python's str.strip() also removes the separators \x1c..\x1f and U+00A0.
    assert_eq!(join_for_ppl("\x1fa\u{a0}\nb"), "a\n\nb");
}

#[test]
fn detag_rule() {
    assert_eq!(
        detag_line("\tThe/at jury/nn said/vbd ,/, ``/`` no/at evidence/nn ''/'' ./."),
        "The jury said , \" no evidence \" ."
    );
    assert_eq!(detag_line("1/2/cd //( it's/pps+bez"), "1/2 / it's");
    assert_eq!(detag_line(" \t "), "");
}

#[test]
fn genres() {
    assert_eq!(BrownGenre::ALL.len(), BrownGenre::FICTION.len() + BrownGenre::NONFICTION.len());
    assert!(BrownGenre::FICTION.iter().all(|g| g.is_fiction()));
    assert!(!BrownGenre::NONFICTION.iter().any(|g| g.is_fiction()));
    assert_eq!(BrownGenre::Learned.letter(), 'j');
    assert_eq!(BrownGenre::Fiction.letter(), 'k');
    assert_eq!(BrownGenre::Humor.letter(), 'r');
    assert_eq!("science_fiction".parse::<BrownGenre>().unwrap(), BrownGenre::ScienceFiction);
    assert!("scifi".parse::<BrownGenre>().is_err());
}

#[test]
fn eval_text_names() {
    for t in EvalText::ALL {
        assert_eq!(t.name().parse::<EvalText>().unwrap(), t);
    }
    let err = "wikitext2".parse::<EvalText>().unwrap_err().to_string();
    assert!(err.contains("ptb-valid, ptb-test, brown-nonfiction"), "{err}");
}

#[test]
fn loads_from_a_data_root() {
    let root = temp_root("load");
    let ptb = root.join("datasets/ptb");
    fs::create_dir_all(&ptb).unwrap();
    fs::write(ptb.join("valid.txt"), " one two \n three \n").unwrap();
    let brown = root.join("datasets/brown");
    fs::create_dir_all(&brown).unwrap();
    fs::write(brown.join("cats.tsv"), "ck01\tfiction\nca02\tnews\nca01\tnews\n").unwrap();
    fs::write(brown.join("ca01.txt"), "A first .\nA second .\n").unwrap();
    fs::write(brown.join("ca02.txt"), "B first .\n").unwrap();
    fs::write(brown.join("ck01.txt"), "K first .\n").unwrap();

    let valid = TextSource::ptb(&root, PtbSplit::Valid).unwrap();
    assert_eq!(valid.text(), " one two \n three \n");
    assert_eq!(EvalText::PtbValid.load(&root).unwrap(), "one two\n\nthree");

    let nonfiction = TextSource::brown_nonfiction(&root).unwrap();
    let ids: Vec<&str> = nonfiction.documents().iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["ca01", "ca02"]);
    assert_eq!(EvalText::BrownNonfiction.load(&root).unwrap(), "A first .\n\nA second .\n\nB first .");
    let fiction = TextSource::brown_fiction(&root).unwrap();
    assert_eq!(fiction.text(), "K first .\n");
    assert_eq!(fiction.documents()[0].genre, Some(BrownGenre::Fiction));
    assert_eq!(TextSource::brown(&root, &[BrownGenre::News]).unwrap().name(), "brown[news]");

    let _ = fs::remove_dir_all(&root);
}

#[test]
fn missing_data_names_the_file_and_the_fetch_command() {
    let root = temp_root("missing");
    let err = format!("{:#}", EvalText::PtbTest.load(&root).unwrap_err());
    assert!(err.contains("datasets/ptb/test.txt") && err.contains("cargo xtask fetch ptb"), "{err}");
    let err = format!("{:#}", EvalText::BrownNonfiction.load(&root).unwrap_err());
    assert!(err.contains("datasets/brown/cats.tsv") && err.contains("cargo xtask fetch brown"), "{err}");
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn bad_cats_file_is_an_error() {
    let root = temp_root("badcats");
    let brown = root.join("datasets/brown");
    fs::create_dir_all(&brown).unwrap();
    fs::write(brown.join("cats.tsv"), "ca01\tfiction\n").unwrap();
    let err = format!("{:#}", TextSource::brown_fiction(&root).unwrap_err());
    assert!(err.contains("does not belong to genre fiction"), "{err}");
    let _ = fs::remove_dir_all(&root);
}
