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
    let text = EvalText::PtbValid.load(&repo().join("data")).expect("run `cargo xtask fetch ptb`");
    let ids = Tokenizer::load(&dir).unwrap().encode(&text).unwrap();
    assert_eq!(ids.len(), 93_459, "PTB-valid token count (transformers' tokenizer gives 93,459)");
    let model = Llama::<Cpu>::load(&dir, &burn_flex::FlexDevice).unwrap();
    let r = perplexity(&model, &ids, &PplConfig { seq_len: 128, batch: 8, max_windows: Some(16), progress: false })
        .unwrap();
    assert_eq!((r.windows, r.tokens_scored), (16, 16 * 127));
    let rel = (r.ppl - 132.449).abs() / 132.449;
    assert!(rel < 1e-4, "ppl {} vs 132.449 (relative difference {rel})", r.ppl);
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

/// transformers 5.24 (tools/reference/zeroshot.py, float32, CPU, its own prompt building and
/// tokenization) on the first three documents of every task: per-choice log-likelihoods and
/// greedy flags. Ours must agree to 1e-4 relative (float32 sums over up to ~60 tokens).
const TRANSFORMERS_FIRST_3: [(&str, u64, &[f64], &[bool]); 24] = [
    ("boolq", 0, &[-3.871272087097168, -2.1658153533935547], &[false, false]),
    ("boolq", 1, &[-3.9576635360717773, -3.6951208114624023], &[false, false]),
    ("boolq", 2, &[-3.02783203125, -2.817152976989746], &[false, false]),
    ("piqa", 0, &[-110.69859313964844, -110.98263549804688], &[false, false]),
    ("piqa", 1, &[-48.04566955566406, -68.30271911621094], &[false, false]),
    ("piqa", 2, &[-55.65961456298828, -72.013427734375], &[false, false]),
    (
        "hellaswag",
        0,
        &[-39.92963790893555, -31.425559997558594, -22.907489776611328, -31.269718170166016],
        &[false, false, false, false],
    ),
    (
        "hellaswag",
        1,
        &[-28.67681884765625, -14.960875511169434, -20.077056884765625, -25.692588806152344],
        &[false, false, false, false],
    ),
    (
        "hellaswag",
        2,
        &[-43.634552001953125, -49.48497772216797, -26.173473358154297, -105.87925720214844],
        &[false, false, false, false],
    ),
    ("winogrande", 0, &[-27.423559188842773, -25.068668365478516], &[false, false]),
    ("winogrande", 1, &[-27.496109008789062, -24.849855422973633], &[false, false]),
    ("winogrande", 2, &[-17.534582138061523, -17.81696319580078], &[false, false]),
    (
        "arc_easy",
        0,
        &[-23.54340362548828, -34.06306076049805, -32.448646545410156, -29.22406578063965],
        &[false, false, false, false],
    ),
    (
        "arc_easy",
        1,
        &[-15.362812042236328, -16.443960189819336, -15.426109313964844, -21.408201217651367],
        &[false, false, false, false],
    ),
    (
        "arc_easy",
        2,
        &[-21.1214656829834, -25.087514877319336, -23.081623077392578, -20.192581176757812],
        &[false, false, false, false],
    ),
    (
        "arc_challenge",
        0,
        &[-29.653499603271484, -38.70454406738281, -36.15867233276367, -31.501995086669922],
        &[false, false, false, false],
    ),
    (
        "arc_challenge",
        1,
        &[-29.248201370239258, -32.017242431640625, -32.66951370239258, -29.563859939575195],
        &[false, false, false, false],
    ),
    (
        "arc_challenge",
        2,
        &[-28.88519287109375, -18.835756301879883, -21.128568649291992, -24.9437198638916],
        &[false, false, false, false],
    ),
    (
        "openbookqa",
        0,
        &[-18.675275802612305, -24.729150772094727, -34.07160949707031, -15.959327697753906],
        &[false, false, false, false],
    ),
    (
        "openbookqa",
        1,
        &[-15.719779968261719, -16.56739616394043, -15.218866348266602, -11.215045928955078],
        &[false, false, false, false],
    ),
    (
        "openbookqa",
        2,
        &[-8.461362838745117, -5.9420084953308105, -12.743985176086426, -6.989253520965576],
        &[false, false, false, false],
    ),
    ("lambada", 0, &[-4.65014123916626], &[false]),
    ("lambada", 1, &[-6.90090274810791], &[false]),
    ("lambada", 2, &[-0.7855184674263], &[true]),
];

#[test]
fn zero_shot_log_likelihoods_match_transformers() {
    use slim_data::zeroshot::Task;
    use slim_eval::zeroshot::{score_tasks, tokenize_doc, Progress};
    let dir = smollm2();
    let tok = Tokenizer::load(&dir).unwrap();
    let model = Llama::<Cpu>::load(&dir, &burn_flex::FlexDevice).unwrap();
    for task in Task::ALL {
        let docs = task.load(&repo().join("data"), Some(3)).expect("run `cargo xtask fetch zeroshot`");
        let toks: Vec<_> = docs.iter().map(|d| tokenize_doc(&tok, d, 0).unwrap()).collect();
        let got = score_tasks(&model, &[(task.name(), &toks)], &mut Progress::new(0, false)).unwrap().pop().unwrap();
        let want: Vec<_> = TRANSFORMERS_FIRST_3.iter().filter(|r| r.0 == task.name()).collect();
        assert_eq!(want.len(), 3);
        for ((d, g), w) in docs.iter().zip(&got).zip(want) {
            assert_eq!(d.doc_id, w.1);
            for (i, (s, (&ll, &greedy))) in g.iter().zip(w.2.iter().zip(w.3)).enumerate() {
                let rel = (s.ll - ll).abs() / ll.abs().max(1.0);
                assert!(rel < 1e-4, "{task} doc {} choice {i}: ll {} vs transformers {ll}", d.doc_id, s.ll);
                assert_eq!(s.greedy, greedy, "{task} doc {} choice {i}: greedy flag", d.doc_id);
            }
        }
    }
}
