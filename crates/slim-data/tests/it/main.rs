//! Integration tests on the real data sets under the repository's `data/` folder.
//!
//! They need `cargo xtask fetch ptb brown zeroshot` (part of `cargo xtask ci`); without the data they fail, naming the
//! command.

use std::{
    fs,
    path::{Path, PathBuf},
};

use md5::{Digest, Md5};
use slim_data::{brown::detag_line, BrownGenre, EvalText, PtbSplit, TextSource};

fn data_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data")
}

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Unwraps a load result; a missing data set fails the test with the error, which names the fetch command.
fn need<T>(r: anyhow::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn ptb_splits_are_the_standard_files() {
    for (split, md5, lines, bytes) in [
        (PtbSplit::Valid, "aa0affc06ff7c36e977d7cd49e3839bf", 3_370, 399_782),
        (PtbSplit::Test, "8b80168b89c18661a38ef683c0dc3721", 3_761, 449_945),
        (PtbSplit::Train, "f26c4b92c5fdc7b3f8c7cdcb991d8420", 42_068, 5_101_618),
    ] {
        let text = need(TextSource::ptb(&data_root(), split)).text();
        assert_eq!(md5_hex(text.as_bytes()), md5, "{split:?}");
        assert_eq!(text.lines().count(), lines, "{split:?}");
        assert_eq!(text.len(), bytes, "{split:?}");
    }
}

#[test]
fn ptb_valid_prepared_for_perplexity() {
    let joined = need(EvalText::PtbValid.load(&data_root()));
    // Every one of the 3,370 lines is non-empty: 3,369 separators, no leading or trailing white space.
    assert_eq!(joined.matches("\n\n").count(), 3_369);
    assert_eq!(joined.split("\n\n").count(), 3_370);
    assert_eq!(joined.trim(), joined);
    assert!(
        joined.starts_with("consumers may want to move their telephones a little closer to the tv set\n\n<unk> <unk>")
    );
}

#[test]
fn brown_has_every_file_and_genre() {
    let root = data_root();
    let fiction = need(TextSource::brown_fiction(&root));
    let nonfiction = need(TextSource::brown_nonfiction(&root));
    assert_eq!(fiction.documents().len(), 126);
    assert_eq!(nonfiction.documents().len(), 374);
    assert!(fiction.documents().iter().all(|d| d.genre.is_some_and(BrownGenre::is_fiction)));
    assert_eq!(nonfiction.documents().first().map(|d| d.id.as_str()), Some("ca01"));
    assert_eq!(nonfiction.documents().last().map(|d| d.id.as_str()), Some("cj80"));
    let sentences: usize = [&fiction, &nonfiction].iter().map(|s| s.text().lines().count()).sum();
    assert_eq!(sentences, 57_340, "NLTK's Brown corpus has 57,340 sentences");
    let first = nonfiction.text().lines().next().unwrap().to_owned();
    let opening = "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary election \
                   produced \" no evidence \" that";
    assert!(first.starts_with(opening), "{first}");

    let joined = need(EvalText::BrownNonfiction.load(&root));
    assert_eq!(joined.split("\n\n").count(), nonfiction.text().lines().count());
}

/// xtask converted the tagged files with its own copy of the rule; it must agree with [`detag_line`].
#[test]
fn brown_text_files_follow_the_detag_rule() {
    let dir = data_root().join("datasets/brown");
    let nonfiction = need(TextSource::brown(&data_root(), &BrownGenre::ALL));
    for doc in nonfiction.documents() {
        let tagged_path = dir.join("tagged").join(&doc.id);
        let tagged = fs::read_to_string(&tagged_path).unwrap_or_else(|e| {
            panic!("cannot read {} ({e}); run `cargo xtask fetch brown --force`", tagged_path.display())
        });
        let expected: String = tagged.lines().map(detag_line).filter(|l| !l.is_empty()).map(|l| l + "\n").collect();
        assert!(
            doc.text == expected,
            "{}.txt differs from slim_data::brown::detag_line applied to tagged/{}",
            doc.id,
            doc.id
        );
    }
}

/// Every document of every fetched zero-shot task builds: the counts of sources.md, a request per choice, a gold
/// choice in range; the prompt shapes that lm-eval 0.3 uses hold on the whole set, not only on the unit-test samples.
#[test]
fn every_zeroshot_document_builds_with_the_expected_shape() {
    use slim_data::zeroshot::Task;
    for task in Task::ALL {
        let docs = need(task.load(&data_root(), None));
        assert_eq!(docs.len(), task.size(), "{task}");
        for d in &docs {
            assert!(d.gold < d.requests.len() && d.requests.len() == d.choices.len(), "{task} doc {}", d.doc_id);
            for r in &d.requests {
                assert!(r.continuation.starts_with(' ') && !r.context.is_empty(), "{task} doc {}: {r:?}", d.doc_id);
            }
            let choices = d.requests.len();
            match task {
                Task::Boolq => {
                    assert!(d.requests[0].continuation == " yes" && d.requests[0].context.ends_with("?\nAnswer:"))
                }
                Task::Piqa | Task::ArcEasy | Task::ArcChallenge => {
                    assert!(
                        d.requests[0].context.starts_with("Question: ") && d.requests[0].context.ends_with("\nAnswer:")
                    )
                }
                Task::Openbookqa => assert!(!d.requests[0].context.contains("Answer:")),
                Task::Winogrande => assert!(choices == 2 && d.requests[0].continuation == d.requests[1].continuation),
                Task::Hellaswag => assert_eq!(choices, 4),
                Task::Lambada => assert!(choices == 1 && !d.requests[0].continuation[1..].contains(' ')),
            }
        }
    }
}
