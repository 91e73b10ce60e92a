//! Perplexity and greedy decoding of the real SmolLM2-135M (imported from its GGUF by
//! `cargo xtask fetch smollm2-135m`) against numbers from an independent implementation.

use slim_data::EvalText;
use slim_eval::{perplexity, PplConfig};
use slim_model::{Cpu, Llama, Tokenizer};
use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn smollm2() -> PathBuf {
    let dir = repo().join("data/models/smollm2-135m");
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} is missing: run `cargo xtask fetch smollm2-135m`",
        dir.display()
    );
    dir
}

/// transformers 5.24 (float32, CPU) on the same weights, loaded from the GGUF by its own
/// converter, gave 132.449 for the first 16 windows of 128 tokens (tools/reference/ppl.py).
#[test]
fn ptb_valid_first_16_windows_match_transformers() {
    let dir = smollm2();
    let text = EvalText::PtbValid
        .load(&repo().join("data"))
        .expect("run `cargo xtask fetch ptb`");
    let ids = Tokenizer::load(&dir).unwrap().encode(&text).unwrap();
    assert_eq!(
        ids.len(),
        93_459,
        "PTB-valid token count (transformers' tokenizer gives 93,459)"
    );
    let model = Llama::<Cpu>::load(&dir, &burn_flex::FlexDevice).unwrap();
    let r = perplexity(
        &model,
        &ids,
        &PplConfig {
            seq_len: 128,
            batch: 8,
            max_windows: Some(16),
            progress: false,
        },
    )
    .unwrap();
    assert_eq!((r.windows, r.tokens_scored), (16, 16 * 127));
    let rel = (r.ppl - 132.449).abs() / 132.449;
    assert!(
        rel < 1e-4,
        "ppl {} vs 132.449 (relative difference {rel})",
        r.ppl
    );
}

#[test]
fn greedy_completion_of_the_capital_of_france_is_paris() {
    let dir = smollm2();
    let tok = Tokenizer::load(&dir).unwrap();
    let model = Llama::<Cpu>::load(&dir, &burn_flex::FlexDevice).unwrap();
    let mut ids = tok.encode("The capital of France is").unwrap();
    let n0 = ids.len();
    for _ in 0..2 {
        let t = ids.len();
        let logits = model.forward(model.ids_tensor(&ids, 1, t).unwrap());
        let v = logits.dims()[2];
        let last = logits.slice([0..1, t - 1..t, 0..v]).reshape([v]);
        ids.push(last.argmax(0).into_scalar() as u32);
    }
    assert_eq!(tok.decode(&ids[n0..]).unwrap(), " Paris.");
}
