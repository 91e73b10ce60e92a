//! Fixtures for tests of this crate and of the crates that drive it: a tiny synthetic GQA
//! model whose tokenizer is word-level (`t0` … `t70`), and seeded PTB-shaped texts in a data
//! folder, so that a whole run (calibration on text, perplexity on text) needs no download.

use slim_checkpoint::save_model_dir;
use slim_checkpoint::synthetic::SyntheticSpec;
use std::path::Path;

/// Vocabulary size of [`worded_model`].
pub const VOCAB: usize = 71;

/// Writes into `dir` a 5-layer GQA model (hidden 32, 6 heads over 2 KV heads, FFN 45) whose
/// tokenizer maps the words `t0` … `t70` to their ids.
pub fn worded_model(dir: &Path) {
    let (cfg, w) = SyntheticSpec::dense("llama", 5, 32, 6, 2, 8, 45, VOCAB, 21).build();
    save_model_dir(dir, &cfg, &w, dir).unwrap();
    let vocab: serde_json::Map<String, serde_json::Value> = (0..VOCAB).map(|i| (format!("t{i}"), i.into())).collect();
    let tok = serde_json::json!({"version": "1.0", "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "t0"},
        "pre_tokenizer": {"type": "Whitespace"}});
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
}

/// PTB-shaped texts under `root/datasets/ptb/`: seeded words, 40 lines a calibration document.
pub fn write_texts(root: &Path, seed: u64) {
    let dir = root.join("datasets/ptb");
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = slim_checkpoint::synthetic::SplitMix(seed);
    for (split, lines) in [("train", 400), ("valid", 60), ("test", 60)] {
        let text: String = (0..lines)
            .map(|_| {
                let words: Vec<String> = (0..12).map(|_| format!("t{}", 1 + rng.below(VOCAB as u64 - 1))).collect();
                format!(" {} \n", words.join(" "))
            })
            .collect();
        std::fs::write(dir.join(format!("{split}.txt")), text).unwrap();
    }
}
