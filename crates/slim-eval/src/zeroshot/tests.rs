use super::*;
use slim_checkpoint::synthetic::{SplitMix, SyntheticSpec};
use slim_checkpoint::LayerShape;
use slim_data::zeroshot::Request;
use slim_model::Cpu;

/// The log-likelihood of `cont` after `ctx` and its greedy flag, from one full forward pass in f64.
fn naive(model: &Llama<Cpu>, ctx: &[u32], cont: &[u32]) -> Loglik {
    let seq: Vec<u32> = ctx.iter().chain(cont).copied().collect();
    let logits = model.forward(model.ids_tensor(&seq, 1, seq.len()).unwrap()).into_data().into_vec::<f32>().unwrap();
    let v = logits.len() / seq.len();
    let (mut ll, mut greedy) = (0.0, true);
    for (j, &t) in cont.iter().enumerate() {
        let row = &logits[(ctx.len() + j - 1) * v..(ctx.len() + j) * v];
        let z: f64 = row.iter().map(|&x| (x as f64).exp()).sum();
        ll += row[t as usize] as f64 - z.ln();
        greedy &=
            row.iter().enumerate().all(|(i, &x)| x < row[t as usize] || (x == row[t as usize] && i >= t as usize));
    }
    Loglik { ll, greedy }
}

/// Random documents: a context group per document (two for every third, like WinoGrande's partial scoring),
/// 1 to 4 continuations of 1 to 5 tokens, contexts of a few lengths so that batches form.
fn random_docs(vocab: usize, n: usize, seed: u64) -> Vec<TokDoc> {
    let mut rng = SplitMix(seed);
    let tok = |len: usize, rng: &mut SplitMix| (0..len).map(|_| rng.below(vocab as u64) as u32).collect::<Vec<u32>>();
    (0..n)
        .map(|d| {
            let groups = if d % 3 == 0 { 2 } else { 1 };
            let mut req = 0;
            let groups = (0..groups)
                .map(|_| {
                    let c = 3 + rng.below(3) as usize;
                    let ctx = tok(c, &mut rng);
                    let conts = (0..1 + rng.below(4) as usize)
                        .map(|_| {
                            let k = 1 + rng.below(5) as usize;
                            req += 1;
                            (req - 1, tok(k, &mut rng))
                        })
                        .collect::<Vec<_>>();
                    (ctx, conts)
                })
                .collect::<Vec<_>>();
            TokDoc { groups, requests: req }
        })
        .collect()
}

fn check_against_naive(spec: &SyntheticSpec) {
    let (cfg, w) = spec.build();
    let model = Llama::<Cpu>::from_weights(cfg.clone(), &w, &Default::default()).unwrap();
    let docs = random_docs(cfg.vocab_size, 14, 5);
    let batched = score_tasks(&model, &[("t", &docs)], &mut super::Progress::new(0, false)).unwrap().pop().unwrap();
    for (d, doc) in docs.iter().enumerate() {
        let alone = score_doc(&model, doc).unwrap();
        for (ctx, conts) in &doc.groups {
            for (r, k) in conts {
                let want = naive(&model, ctx, k);
                for (what, got) in [("alone", alone[*r]), ("batched", batched[d][*r])] {
                    assert!(
                        (got.ll - want.ll).abs() < 1e-4 * (1.0 + want.ll.abs()),
                        "doc {d} request {r} ({what}): ll {} vs {}",
                        got.ll,
                        want.ll
                    );
                    assert_eq!(got.greedy, want.greedy, "doc {d} request {r} ({what}): greedy flag");
                }
            }
        }
    }
    // A random model rarely makes a continuation greedy: check both values of the flag on purpose.
    let first = &docs[0].groups[0];
    let logits =
        model.forward(model.ids_tensor(&first.0, 1, first.0.len()).unwrap()).into_data().into_vec::<f32>().unwrap();
    let v = cfg.vocab_size;
    let last = &logits[logits.len() - v..];
    let top = last.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32;
    let doc =
        TokDoc { groups: vec![(first.0.clone(), vec![(0, vec![top]), (1, vec![(top + 1) % v as u32])])], requests: 2 };
    let s = score_doc(&model, &doc).unwrap();
    assert!(s[0].greedy && !s[1].greedy && s[0].ll > s[1].ll);
}

#[test]
fn shared_context_scores_equal_full_forward_passes_gqa() {
    check_against_naive(&SyntheticSpec::dense("llama", 2, 30, 6, 2, 10, 43, 61, 11));
}

#[test]
fn shared_context_scores_equal_full_forward_passes_mha_uneven_with_biases() {
    let mut spec = SyntheticSpec::dense("qwen2", 3, 24, 5, 5, 8, 37, 53, 17);
    spec.layers[1] = LayerShape {
        num_heads: 3,
        num_kv_heads: 3,
        kv_head_of: vec![0, 1, 2],
        intermediate_size: 11,
        o_proj_bias: true,
        down_proj_bias: true,
    };
    check_against_naive(&spec);
}

fn doc(gold: usize, choices: &[&str]) -> McDoc {
    McDoc {
        doc_id: 0,
        requests: choices.iter().map(|c| Request { context: "q".into(), continuation: format!(" {c}") }).collect(),
        gold,
        choices: choices.iter().map(|c| c.to_string()).collect(),
    }
}

fn lls(xs: &[f64]) -> Vec<Loglik> {
    xs.iter().map(|&ll| Loglik { ll, greedy: false }).collect()
}

#[test]
fn acc_and_acc_norm_follow_lm_eval() {
    // acc: argmax of ll; acc_norm: argmax of ll / characters of the choice ("é" is one character, two bytes).
    let d = doc(1, &["ab", "éééé"]);
    assert_eq!(doc_correct(&d, &lls(&[-2.0, -3.0])), (false, true)); // -1.0 vs -0.75 per character
    assert_eq!(doc_correct(&d, &lls(&[-2.0, -5.0])), (false, false)); // -1.0 vs -1.25

    // Ties go to the first choice, as numpy's argmax.
    assert_eq!(doc_correct(&d, &lls(&[-4.0, -4.0])), (false, true));
    assert_eq!(doc_correct(&doc(0, &["ab", "cd"]), &lls(&[-4.0, -4.0])), (true, true));
}

#[test]
fn aggregate_gives_means_and_lm_eval_standard_errors() {
    let docs: Vec<McDoc> = (0..5).map(|i| doc(i % 2, &["a", "bb"])).collect();
    // Choice 0 always wins on ll; choice 1 wins on ll per character in the last two documents.
    let scores =
        vec![lls(&[-1.0, -3.0]), lls(&[-1.0, -3.0]), lls(&[-1.0, -3.0]), lls(&[-1.0, -1.5]), lls(&[-1.0, -1.5])];
    let r = aggregate(Task::Piqa, &docs, &scores).unwrap();
    // gold: 0,1,0,1,0 → acc hits 1,0,1,0,1 = 0.6; acc_norm picks 0,0,0,1,1 → hits 1,0,1,1,0 = 0.6.
    assert_eq!((r.n, r.acc, r.acc_norm), (5, 0.6, Some(0.6)));
    // Sample standard deviation (ddof 1) over √n: sqrt(0.6 · 0.4 / 4).
    assert!((r.acc_stderr.unwrap() - (0.24f64 / 4.0).sqrt()).abs() < 1e-12);
    // BoolQ and WinoGrande report acc only.
    assert_eq!(aggregate(Task::Boolq, &docs, &scores).unwrap().acc_norm, None);
    // LAMBADA: greedy accuracy and exp(−mean ll).
    let lam = vec![vec![Loglik { ll: -1.0, greedy: true }], vec![Loglik { ll: -3.0, greedy: false }]];
    let r = aggregate(Task::Lambada, &docs[..2], &lam).unwrap();
    assert_eq!(r.acc, 0.5);
    assert!((r.ppl.unwrap() - 2f64.exp()).abs() < 1e-12);
    assert!(aggregate(Task::Piqa, &docs, &scores[..4]).is_err());
}

#[test]
fn continuation_chunks_bound_padding_and_positions() {
    use super::continuation_chunks;
    // Longest first; 0.8 fill: 10 takes 9 and 8 but not 7; 7 takes 6 (6 ≥ 5.6) but not 5.
    assert_eq!(continuation_chunks(&[10, 9, 8, 7, 6, 5, 0, 0], 1000, 0.8), vec![0..3, 3..5, 5..6, 6..8]);
    // The position cap: width 4, at most 12 positions = 3 rows per chunk; a single row wider than the cap is alone.
    assert_eq!(continuation_chunks(&[20, 4, 4, 4, 4, 4, 4, 4], 12, 0.8), vec![0..1, 1..4, 4..7, 7..8]);
    assert_eq!(continuation_chunks(&[0, 0], 12, 0.8), vec![0..2]);
    assert!(continuation_chunks(&[], 12, 0.8).is_empty());
    // Every index in exactly one chunk, in order, and no chunk pads more than 20 % of its longest.
    let mut rng = SplitMix(9);
    let mut w: Vec<usize> = (0..500).map(|_| rng.below(60) as usize).collect();
    w.sort_by(|a, b| b.cmp(a));
    let chunks = continuation_chunks(&w, 256, 0.8);
    assert_eq!(chunks.first().unwrap().start, 0);
    assert_eq!(chunks.last().unwrap().end, w.len());
    for pair in chunks.windows(2) {
        assert_eq!(pair[0].end, pair[1].start);
    }
    for c in &chunks {
        let top = w[c.start];
        assert!(c.len() == 1 || c.len() * top <= 256, "{c:?}");
        assert!(w[c.clone()].iter().all(|&x| x as f64 >= 0.8 * top as f64), "{c:?}");
    }
}

#[test]
fn batch_shapes_follow_the_batching_rules() {
    // 300 documents with a 4-token context and two 3-token continuations, and one with a 5000-token context.
    let doc = |c: usize| TokDoc { groups: vec![(vec![1; c], vec![(0, vec![2; 3]), (1, vec![3; 3])])], requests: 2 };
    let mut docs: Vec<TokDoc> = (0..300).map(|_| doc(4)).collect();
    docs.push(doc(5000));
    let shapes = batch_shapes(&docs);
    // The long context alone first; then 256 groups (MAX_GROUPS; 256 · 4 ≤ 2048 context tokens) and the other 44.
    // Each batch's rows (two per group) continue by 2 positions, 512 rows to a chunk of ≤ 1024 positions.
    let want = [
        BatchShape { groups: 1, context: 5000, chunks: vec![(2, 2)] },
        BatchShape { groups: 256, context: 4, chunks: vec![(512, 2)] },
        BatchShape { groups: 44, context: 4, chunks: vec![(88, 2)] },
    ];
    assert_eq!(shapes, want);
    // 600-token contexts: three to a batch (3 · 600 ≤ 2048); single-token continuations run no chunk.
    let one = |c: usize| TokDoc { groups: vec![(vec![1; c], vec![(0, vec![2])])], requests: 1 };
    let docs: Vec<TokDoc> = (0..4).map(|_| one(600)).collect();
    let shapes = batch_shapes(&docs);
    assert_eq!(
        shapes.iter().map(|s| (s.groups, s.context, s.chunks.len())).collect::<Vec<_>>(),
        [(3, 600, 0), (1, 600, 0)]
    );
}

/// One layer at a time, in groups of batches, gives the scores of the whole model to the bit: GQA llama and an
/// uneven qwen2 with biases, with a budget that puts every batch in a group of its own and with one that puts them
/// all in one group. The documents have zero-width chunks (single-token continuations) and two tasks run.
#[test]
fn streamed_scores_equal_the_whole_models_to_the_bit() {
    let mut uneven = SyntheticSpec::dense("qwen2", 3, 24, 6, 3, 8, 37, 53, 17);
    uneven.layers[2] = LayerShape {
        num_heads: 2,
        num_kv_heads: 1,
        kv_head_of: vec![0, 0],
        intermediate_size: 9,
        o_proj_bias: true,
        down_proj_bias: false,
    };
    for spec in [SyntheticSpec::dense("llama", 2, 30, 6, 2, 10, 43, 61, 11), uneven] {
        let (cfg, w) = spec.build();
        let dir = tempfile::tempdir().unwrap();
        slim_checkpoint::save_model_dir(dir.path(), &cfg, &w, dir.path()).unwrap();
        let dev = Default::default();
        let model = Llama::<Cpu>::from_weights(cfg.clone(), &w, &dev).unwrap();
        let (a, b) = (random_docs(cfg.vocab_size, 14, 5), random_docs(cfg.vocab_size, 9, 6));
        let tasks = [("a", &a[..]), ("b", &b[..])];
        let whole = score_tasks(&model, &tasks, &mut super::Progress::new(0, false)).unwrap();
        let src = slim_checkpoint::WeightSource::open(dir.path()).unwrap();
        for budget in [1, usize::MAX] {
            let mut progress = super::Progress::new(0, false);
            let got = super::streamed::streamed::<Cpu>(&src, &cfg, &tasks, &mut progress, &dev, budget).unwrap();
            assert_eq!(got.len(), 2);
            for (t, (g, w)) in got.iter().zip(&whole).enumerate() {
                assert_eq!(g.len(), w.len());
                for (d, (gd, wd)) in g.iter().zip(w).enumerate() {
                    for (r, (x, y)) in gd.iter().zip(wd).enumerate() {
                        assert_eq!(x.ll.to_bits(), y.ll.to_bits(), "task {t} doc {d} request {r}, budget {budget}");
                        assert_eq!(x.greedy, y.greedy);
                    }
                }
            }
        }
        let all = score_tasks_streamed::<Cpu>(&src, &cfg, &tasks, &mut super::Progress::new(0, false), &dev).unwrap();
        assert_eq!(all[1][3][0].ll.to_bits(), whole[1][3][0].ll.to_bits());
    }
}
