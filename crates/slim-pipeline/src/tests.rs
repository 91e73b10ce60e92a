//! Cache behaviour of the stage graph on a tiny synthetic GQA model, asserted from the
//! run report (what ran, what was reused), never from timings.

use crate::{explain_pipeline, run_pipeline, CalibMode, ModelSource, PipelineConfig, RunOptions, RunReport, Stage};
use slim_artifact::schema::GqaMode;
use slim_artifact::Store;
use slim_capture::{CalibConfig, CalibSource};
use slim_checkpoint::synthetic::SyntheticSpec;
use slim_checkpoint::{save_model_dir, ModelConfig, Weights};
use slim_model::{Cpu, Llama};
use slim_recover::RecoveryKind;
use slim_score::ScorerKind;
use std::path::Path;

fn tiny_model(dir: &Path) {
    let (cfg, w) = SyntheticSpec::dense("llama", 5, 32, 6, 2, 8, 45, 71, 21).build();
    save_model_dir(dir, &cfg, &w, dir).unwrap();
    // Hashed into the model key; never parsed with random calibration.
    std::fs::write(dir.join("tokenizer.json"), "{}").unwrap();
}

fn config(mode: CalibMode) -> PipelineConfig {
    let mut c = PipelineConfig::paper(0.25, GqaMode::PerGroup);
    c.calib = CalibConfig { source: CalibSource::Random, n_windows: 4, seq_len: 16, seed: 7 };
    c.pruned_layers = Some(3);
    c.calib_mode = mode;
    c
}

fn run(dir: &Path, store: &Store, cfg: &PipelineConfig) -> (RunReport, crate::PipelineOutcome) {
    let out = run_pipeline::<Cpu>(
        &ModelSource::open(dir).unwrap(),
        cfg,
        store,
        Path::new("/nonexistent"),
        &burn_flex::FlexDevice,
        &RunOptions::default(),
    )
    .unwrap();
    (out.report.clone(), out)
}

#[test]
fn second_run_reuses_everything_and_the_pruned_model_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let (mdir, cache) = (tmp.path().join("m"), tmp.path().join("cache"));
    tiny_model(&mdir);
    let store = Store::open(&cache).unwrap();
    let cfg = config(CalibMode::Sequential);
    let (r1, out) = run(&mdir, &store, &cfg);
    // importance + 3 pruned layers × (attn, mlp) captures, all computed.
    assert_eq!((r1.ran("capture"), r1.reused("capture")), (7, 0));
    assert_eq!(r1.ran("score"), 6);
    assert_eq!(r1.ran("alloc"), 1);
    assert!(out.params_after < out.params_before);
    let pruned = ModelConfig::load(&out.pruned_dir).unwrap();
    assert_eq!(pruned.num_params(), out.params_after);
    let m = Llama::<Cpu>::load(&out.pruned_dir, &burn_flex::FlexDevice).unwrap();
    let logits = m.forward(m.ids_tensor(&[1, 2, 3], 1, 3).unwrap());
    assert_eq!(logits.dims(), [1, 3, 71]);

    let (r2, out2) = run(&mdir, &store, &cfg);
    for stage in ["calib", "capture", "score", "alloc", "recover"] {
        assert_eq!(r2.ran(stage), 0, "{stage} ran again: {}", r2.table());
    }
    assert_eq!(r2.reused("surgery"), 1);
    assert_eq!(out2.pruned_dir, out.pruned_dir);
    // Nothing was sliced or read: no surgery ran, no weight was loaded.
    assert_eq!((r2.ran("surgery"), r2.ran("load")), (0, 0), "{}", r2.table());
    assert_eq!(out2.layers.len(), 5);
    assert_eq!(format!("{:?}", out2.layers), format!("{:?}", out.layers));

    // A fully cached rerun reads no weight: with every dense value overwritten by NaN after
    // the key was hashed (the headers kept), it still completes; reading any tensor would fail.
    let source = ModelSource::open(&mdir).unwrap();
    let st = mdir.join("model.safetensors");
    let mut bytes = std::fs::read(&st).unwrap();
    let n = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes[n..].fill(0xff);
    std::fs::write(&st, bytes).unwrap();
    assert!(format!("{:#}", Weights::load(&mdir).unwrap_err()).contains("non-finite"));
    let dev = burn_flex::FlexDevice;
    let out3 =
        run_pipeline::<Cpu>(&source, &cfg, &store, Path::new("/nonexistent"), &dev, &RunOptions::default()).unwrap();
    assert_eq!(out3.pruned_dir, out.pruned_dir);
    assert_eq!(out3.report.reused("surgery"), 1);
}

#[test]
fn sequential_scorer_change_reuses_only_what_precedes_the_first_changed_decision() {
    let tmp = tempfile::tempdir().unwrap();
    let (mdir, cache) = (tmp.path().join("m"), tmp.path().join("cache"));
    tiny_model(&mdir);
    let store = Store::open(&cache).unwrap();
    let cfg = config(CalibMode::Sequential);
    run(&mdir, &store, &cfg);
    let cfg2 = PipelineConfig { scorer: ScorerKind::Magnitude, ..cfg };
    let (r, _) = run(&mdir, &store, &cfg2);
    // Reused: the importance pass and the first pruned layer's attention capture.
    assert_eq!(r.reused("capture"), 2, "{}", r.table());
    assert_eq!(r.ran("capture"), 5);
    assert_eq!(r.reused("alloc"), 1);
}

#[test]
fn dense_mode_scorer_and_recovery_changes_reuse_the_capture() {
    let tmp = tempfile::tempdir().unwrap();
    let (mdir, cache) = (tmp.path().join("m"), tmp.path().join("cache"));
    tiny_model(&mdir);
    let store = Store::open(&cache).unwrap();
    let cfg = config(CalibMode::Dense);
    run(&mdir, &store, &cfg);
    let (r, _) = run(&mdir, &store, &PipelineConfig { scorer: ScorerKind::Magnitude, ..cfg.clone() });
    assert_eq!(r.ran("capture"), 0, "{}", r.table());
    assert_eq!(r.ran("score"), 6);
    let (r, _) = run(&mdir, &store, &PipelineConfig { recovery: RecoveryKind::None, ..cfg });
    for stage in ["capture", "alloc", "score"] {
        assert_eq!(r.ran(stage), 0, "{stage} ran: {}", r.table());
    }
    assert_eq!(r.ran("recover"), 6);
}

#[test]
fn sequential_recovery_change_reuses_the_plan_and_the_first_layers_decisions() {
    let tmp = tempfile::tempdir().unwrap();
    let (mdir, cache) = (tmp.path().join("m"), tmp.path().join("cache"));
    tiny_model(&mdir);
    let store = Store::open(&cache).unwrap();
    let cfg = config(CalibMode::Sequential);
    run(&mdir, &store, &cfg);
    let (r, _) = run(&mdir, &store, &PipelineConfig { recovery: RecoveryKind::None, ..cfg });
    assert_eq!(r.reused("alloc"), 1, "{}", r.table());
    // The first pruned layer's attention capture and head choice stand; everything after
    // its (changed) attention recovery is calibrated anew.
    assert_eq!((r.reused("capture"), r.ran("capture")), (2, 5), "{}", r.table());
    assert_eq!(r.reused("score"), 1, "{}", r.table());
}

#[test]
fn forcing_a_stage_recomputes_exactly_its_entries_with_identical_results() {
    let tmp = tempfile::tempdir().unwrap();
    let (mdir, cache) = (tmp.path().join("m"), tmp.path().join("cache"));
    tiny_model(&mdir);
    let store = Store::open(&cache).unwrap();
    let cfg = config(CalibMode::Sequential);
    let (_, first) = run(&mdir, &store, &cfg);
    let want = std::fs::read(first.pruned_dir.join("model.safetensors")).unwrap();
    for (stage, label, n) in [
        (Stage::Score, "score", 6),
        (Stage::Recover, "recover", 6),
        (Stage::Alloc, "alloc", 1),
        (Stage::Capture, "capture", 7),
    ] {
        let opts = RunOptions { force: Some(stage), ..RunOptions::default() };
        let out = run_pipeline::<Cpu>(
            &ModelSource::open(&mdir).unwrap(),
            &cfg,
            &store,
            Path::new("/nonexistent"),
            &burn_flex::FlexDevice,
            &opts,
        )
        .unwrap();
        let r = &out.report;
        assert_eq!((r.ran(label), r.reused(label)), (n, 0), "{label}: {}", r.table());
        for other in ["capture", "score", "alloc", "recover"].into_iter().filter(|o| *o != label) {
            assert_eq!(r.ran(other), 0, "forcing {label} reran {other}: {}", r.table());
        }
        assert_eq!(out.pruned_dir, first.pruned_dir);
        assert_eq!(
            std::fs::read(out.pruned_dir.join("model.safetensors")).unwrap(),
            want,
            "forcing {label} changed the model"
        );
    }
    let opts = RunOptions { force: Some(Stage::Surgery), ..RunOptions::default() };
    let out = run_pipeline::<Cpu>(
        &ModelSource::open(&mdir).unwrap(),
        &cfg,
        &store,
        Path::new("/nonexistent"),
        &burn_flex::FlexDevice,
        &opts,
    )
    .unwrap();
    assert_eq!(std::fs::read(out.pruned_dir.join("model.safetensors")).unwrap(), want);
    // Forcing a stage on an empty cache simply runs everything.
    for stage in [Stage::Capture, Stage::Surgery] {
        let empty = Store::open(&tmp.path().join(format!("empty-{stage:?}"))).unwrap();
        let opts = RunOptions { force: Some(stage), ..RunOptions::default() };
        let out = run_pipeline::<Cpu>(
            &ModelSource::open(&mdir).unwrap(),
            &cfg,
            &empty,
            Path::new("/nonexistent"),
            &burn_flex::FlexDevice,
            &opts,
        )
        .unwrap();
        assert_eq!(std::fs::read(out.pruned_dir.join("model.safetensors")).unwrap(), want);
    }
}

#[test]
fn explain_matches_what_the_next_run_does() {
    let tmp = tempfile::tempdir().unwrap();
    let (mdir, cache) = (tmp.path().join("m"), tmp.path().join("cache"));
    tiny_model(&mdir);
    let store = Store::open(&cache).unwrap();
    let cfg = config(CalibMode::Sequential);
    // Nothing cached: the walk stops after the importance pass it cannot see.
    let lines = explain_pipeline(&ModelSource::open(&mdir).unwrap(), &cfg, &store, Path::new("/nonexistent")).unwrap();
    assert_eq!(lines.iter().map(|l| l.stage.as_str()).collect::<Vec<_>>(), ["calib", "importance", "alloc"]);
    assert!(lines.iter().all(|l| !l.is_hit()));
    run(&mdir, &store, &cfg);
    let lines = explain_pipeline(&ModelSource::open(&mdir).unwrap(), &cfg, &store, Path::new("/nonexistent")).unwrap();
    assert_eq!(lines.len(), 3 + 3 * 6 + 1);
    assert!(lines.iter().all(|l| l.is_hit()), "{lines:#?}");
    // A scorer change: the first pruned layer's attention capture is still a hit, its head
    // scores are not, and the reason names the scorer.
    let cfg2 = PipelineConfig { scorer: ScorerKind::Magnitude, ..cfg };
    let lines = explain_pipeline(&ModelSource::open(&mdir).unwrap(), &cfg2, &store, Path::new("/nonexistent")).unwrap();
    let misses: Vec<String> = lines.iter().filter(|l| !l.is_hit()).map(|l| l.to_string()).collect();
    let (r, _) = run(&mdir, &store, &cfg2);
    let ran: usize = ["capture", "score", "recover"].iter().map(|s| r.ran(s)).sum();
    assert_eq!(misses.len(), ran + 1, "explain: {misses:#?}\nrun: {}", r.table()); // + the surgery entry
    assert!(misses[0].contains("score-attn") && misses[0].contains("scorer"), "{}", misses[0]);
}

#[test]
fn lstsq_recovery_refits_o_proj_and_down_proj() {
    let tmp = tempfile::tempdir().unwrap();
    let (mdir, cache) = (tmp.path().join("m"), tmp.path().join("cache"));
    tiny_model(&mdir);
    let store = Store::open(&cache).unwrap();
    let cfg = config(CalibMode::Sequential);
    let (_, affine) = run(&mdir, &store, &cfg);
    let (r, lstsq) = run(&mdir, &store, &PipelineConfig { recovery: RecoveryKind::Lstsq, ..cfg });
    // The importance pass, the first pruned layer's attention capture and its head choice
    // are reused; its o_proj refit and everything after it are new.
    assert_eq!((r.reused("capture"), r.reused("score"), r.reused("recover")), (2, 1, 0), "{}", r.table());
    assert_eq!(lstsq.params_after, affine.params_after);
    let m = Llama::<Cpu>::load(&lstsq.pruned_dir, &burn_flex::FlexDevice).unwrap();
    let logits = m.forward(m.ids_tensor(&[1, 2, 3], 1, 3).unwrap());
    assert!(logits.into_data().into_vec::<f32>().unwrap().iter().all(|x| x.is_finite()));
    let pruned = ModelConfig::load(&lstsq.pruned_dir).unwrap();
    let touched: Vec<_> = pruned.layers.iter().filter(|s| s.intermediate_size < 45).collect();
    assert_eq!(touched.len(), 3);
    assert!(touched.iter().all(|s| s.down_proj_bias && s.o_proj_bias));
}

#[test]
fn a_run_refers_to_exactly_the_entries_it_made() {
    let tmp = tempfile::tempdir().unwrap();
    let (mdir, cache) = (tmp.path().join("m"), tmp.path().join("cache"));
    tiny_model(&mdir);
    let store = Store::open(&cache).unwrap();
    let cfg = config(CalibMode::Sequential);
    let (r1, _) = run(&mdir, &store, &cfg);
    let all: std::collections::BTreeSet<_> = store.entries().unwrap().into_iter().collect();
    let used = |r: &RunReport| -> std::collections::BTreeSet<_> {
        r.entries().into_iter().map(|c| (c.stage, c.key)).collect()
    };
    assert_eq!(used(&r1), all, "the first run made every entry and refers to each");
    // A second recipe adds entries the first does not refer to; gc with the first's set
    // removes exactly those, and the first still runs entirely from the cache, referring to
    // the same entries.
    run(&mdir, &store, &PipelineConfig { scorer: ScorerKind::Magnitude, ..cfg.clone() });
    let removed = store.gc(&used(&r1)).unwrap();
    assert!(!removed.is_empty());
    let (r, _) = run(&mdir, &store, &cfg);
    for stage in ["calib", "capture", "score", "alloc", "recover"] {
        assert_eq!(r.ran(stage), 0, "{stage} ran after gc: {}", r.table());
    }
    assert_eq!(used(&r), used(&r1));
}

#[test]
fn a_pruned_model_edited_in_the_cache_is_rebuilt_not_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let (mdir, cache) = (tmp.path().join("m"), tmp.path().join("cache"));
    tiny_model(&mdir);
    let store = Store::open(&cache).unwrap();
    let cfg = config(CalibMode::Sequential);
    let (_, out) = run(&mdir, &store, &cfg);
    let weights = out.pruned_dir.join("model.safetensors");
    let original = std::fs::read(&weights).unwrap();
    // Same size, other bytes: only the contents (re-hashed because the file changed after
    // the entry was committed) give it away.
    let mut edited = original.clone();
    let n = edited.len();
    edited[n - 1] ^= 0x55;
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut perm = std::fs::metadata(&weights).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    std::fs::set_permissions(&weights, perm).unwrap();
    std::fs::write(&weights, &edited).unwrap();
    let (r, out2) = run(&mdir, &store, &cfg);
    assert_eq!(r.reused("surgery"), 0, "the damaged entry was reused: {}", r.table());
    assert_eq!(std::fs::read(out2.pruned_dir.join("model.safetensors")).unwrap(), original);
    // A file of another size is caught by its size alone, before anything is read.
    let config = out2.pruned_dir.join("config.json");
    let mut perm = std::fs::metadata(&config).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    std::fs::set_permissions(&config, perm).unwrap();
    std::fs::write(&config, b"{}").unwrap();
    let (r, _) = run(&mdir, &store, &cfg);
    assert_eq!(r.reused("surgery"), 0, "{}", r.table());
    let (r, _) = run(&mdir, &store, &cfg);
    assert_eq!(r.reused("surgery"), 1, "the rebuilt entry is reused: {}", r.table());
}

#[test]
fn dense_grid_of_every_variant_captures_once_and_recovery_changes_reuse_capture_scores_and_plan() {
    use crate::AllocationKind;
    let tmp = tempfile::tempdir().unwrap();
    let (mdir, cache) = (tmp.path().join("m"), tmp.path().join("cache"));
    tiny_model(&mdir);
    let store = Store::open(&cache).unwrap();
    let base = config(CalibMode::Dense);
    let scorers = [
        ScorerKind::SlimLlm,
        ScorerKind::Magnitude,
        ScorerKind::WandaSp,
        ScorerKind::Flap,
        ScorerKind::Taylor,
        ScorerKind::Random,
    ];
    let allocations = [AllocationKind::Cosine, AllocationKind::Uniform, AllocationKind::FlapGlobal];
    let recoveries = [RecoveryKind::Affine, RecoveryKind::None, RecoveryKind::FlapBias, RecoveryKind::Lstsq];
    let mut captures = 0;
    let mut taylor_passes = 0;
    for (i, &scorer) in scorers.iter().enumerate() {
        for &allocation in &allocations {
            for (j, &recovery) in recoveries.iter().enumerate() {
                let cfg = PipelineConfig { scorer, allocation, recovery, ..base.clone() };
                let (r, out) = run(&mdir, &store, &cfg);
                assert!(out.params_after < out.params_before, "{scorer:?} {allocation:?} {recovery:?} pruned nothing");
                assert_eq!(ModelConfig::load(&out.pruned_dir).unwrap().num_params(), out.params_after);
                // Activation captures: the importance pass and each layer's attention and MLP
                // statistics of the dense model, whatever the variant; the Taylor capture is
                // the one gradient pass, shared by every Taylor run.
                let ran = r.ran("capture");
                if scorer == ScorerKind::Taylor && ran > 0 && taylor_passes == 0 {
                    taylor_passes += 1;
                    captures += ran - 1;
                } else {
                    captures += ran;
                }
                if j > 0 {
                    // Only the recovery changed from the previous run.
                    for stage in ["capture", "score", "alloc"] {
                        assert_eq!(
                            r.ran(stage),
                            0,
                            "{scorer:?} {allocation:?} {recovery:?}: {stage} ran: {}",
                            r.table()
                        );
                    }
                    assert!(r.ran("recover") > 0, "{}", r.table());
                }
                if i > 0 && allocation == AllocationKind::Cosine && j == 0 && scorer != ScorerKind::Taylor {
                    assert_eq!(r.ran("capture"), 0, "{scorer:?}: {}", r.table());
                }
            }
        }
    }
    // 1 importance pass + 5 layers × (attention, MLP): the global allocation touches every
    // layer's statistics, the cosine one 3 of them; all of it happens once.
    assert_eq!(captures, 1 + 5 * 2, "activation captures over the whole grid");
    assert_eq!(taylor_passes, 1);
}

#[test]
fn explain_walks_the_same_keys_as_the_run_for_every_allocation_and_the_taylor_capture() {
    use crate::AllocationKind;
    let tmp = tempfile::tempdir().unwrap();
    let (mdir, cache) = (tmp.path().join("m"), tmp.path().join("cache"));
    tiny_model(&mdir);
    let store = Store::open(&cache).unwrap();
    for mode in [CalibMode::Sequential, CalibMode::Dense] {
        for allocation in [AllocationKind::Uniform, AllocationKind::FlapGlobal] {
            let cfg = PipelineConfig { allocation, scorer: ScorerKind::Taylor, ..config(mode) };
            let before =
                explain_pipeline(&ModelSource::open(&mdir).unwrap(), &cfg, &store, Path::new("/nonexistent")).unwrap();
            run(&mdir, &store, &cfg);
            let after =
                explain_pipeline(&ModelSource::open(&mdir).unwrap(), &cfg, &store, Path::new("/nonexistent")).unwrap();
            let misses: Vec<String> = after.iter().filter(|l| !l.is_hit()).map(|l| l.to_string()).collect();
            assert!(misses.is_empty(), "{mode:?} {allocation:?}: {misses:#?}");
            assert!(after.iter().any(|l| l.stage == "capture-taylor"), "the Taylor capture is listed");
            assert_eq!(after.iter().any(|l| l.stage == "global-scores"), allocation == AllocationKind::FlapGlobal);
            assert!(after.len() >= before.len());
        }
    }
}

#[test]
fn aligned_runs_keep_aligned_sizes_in_every_allocation_and_reuse_the_capture() {
    use crate::AllocationKind;
    let tmp = tempfile::tempdir().unwrap();
    let (mdir, cache) = (tmp.path().join("m"), tmp.path().join("cache"));
    tiny_model(&mdir);
    let store = Store::open(&cache).unwrap();
    let dense = ModelConfig::load(&mdir).unwrap();
    // Heads of 8 over 2 KV groups (per-group: always an even count, a multiple of 16 with
    // head_dim 8); 45 channels: 16 or 32 kept.
    for allocation in [AllocationKind::Cosine, AllocationKind::Uniform, AllocationKind::FlapGlobal] {
        let base = PipelineConfig { allocation, ..config(CalibMode::Dense) };
        let (_, plain) = run(&mdir, &store, &base);
        let cfg = PipelineConfig { align: 16, ..base.clone() };
        let (r, out) = run(&mdir, &store, &cfg);
        assert_eq!(r.ran("alloc"), 1, "{allocation:?}: the alignment is in the allocation's key");
        assert_eq!(r.ran("calib") + r.ran("capture"), 0, "{allocation:?}: {}", r.table());
        let pruned = ModelConfig::load(&out.pruned_dir).unwrap();
        assert_eq!(pruned.num_params(), out.params_after);
        assert!(out.params_after < out.params_before, "{allocation:?} pruned nothing");
        assert_ne!(out.pruned_key, plain.pruned_key);
        for (l, (s, d)) in pruned.layers.iter().zip(&dense.layers).enumerate() {
            let what = format!("{allocation:?} layer {l}");
            assert!(
                s.intermediate_size == d.intermediate_size || s.intermediate_size.is_multiple_of(16),
                "{what}: {s:?}"
            );
            assert!(s.num_heads == d.num_heads || (s.num_heads * dense.head_dim).is_multiple_of(16), "{what}: {s:?}");
        }
        let m = Llama::<Cpu>::load(&out.pruned_dir, &burn_flex::FlexDevice).unwrap();
        assert_eq!(m.forward(m.ids_tensor(&[1, 2, 3], 1, 3).unwrap()).dims(), [1, 3, 71]);
        // Explain walks the run's keys.
        let lines = explain_pipeline(&ModelSource::open(&mdir).unwrap(), &cfg, &store, Path::new("/x")).unwrap();
        assert!(lines.iter().all(|l| l.is_hit()), "{allocation:?}");
    }
    // An alignment no layer can meet, and 0.
    for (align, want) in [(64, "alignment 64 leaves no layer anything to prune"), (0, "at least 1")] {
        let cfg = PipelineConfig { align, ..config(CalibMode::Dense) };
        let err = run_pipeline::<Cpu>(
            &ModelSource::open(&mdir).unwrap(),
            &cfg,
            &store,
            Path::new("/nonexistent"),
            &burn_flex::FlexDevice,
            &RunOptions::default(),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains(want), "{err:#}");
    }
}

/// A model stored in bf16 is computed in f32 and its pruned model stored in bf16: the same
/// decisions as the f32 model holding the same (bf16-representable) values, and every pruned
/// weight that f32 run's rounded to bf16, nothing more.
#[test]
fn a_bf16_model_prunes_like_its_f32_copy_and_stays_bf16() {
    use slim_checkpoint::{WeightDtype, WeightSource, Weights};
    let tmp = tempfile::tempdir().unwrap();
    let (f32_dir, bf16_dir) = (tmp.path().join("f32"), tmp.path().join("bf16"));
    let (cfg, mut w) = SyntheticSpec::dense("qwen2", 5, 32, 6, 2, 8, 45, 71, 23).build();
    let names: Vec<String> = w.names().map(str::to_owned).collect();
    for n in &names {
        let mut t = w.get(n).unwrap().clone();
        t.data.iter_mut().for_each(|v| *v = half::bf16::from_f32(*v).to_f32());
        w.insert(n.clone(), t);
    }
    save_model_dir(&f32_dir, &cfg, &w, &f32_dir).unwrap();
    slim_checkpoint::save_model_dir_with(&bf16_dir, &cfg, &bf16_dir, WeightDtype::Bf16, &mut |n| Ok(w.get(n)?.clone()))
        .unwrap();
    for d in [&f32_dir, &bf16_dir] {
        std::fs::write(d.join("tokenizer.json"), "{}").unwrap();
    }
    assert_eq!(Weights::load(&bf16_dir).unwrap().get(&names[3]).unwrap(), w.get(&names[3]).unwrap());
    let store = Store::open(&tmp.path().join("cache")).unwrap();
    let cfg = config(CalibMode::Sequential);
    let (_, a) = run(&f32_dir, &store, &cfg);
    let (_, b) = run(&bf16_dir, &store, &cfg);
    assert_eq!(format!("{:?}", a.layers), format!("{:?}", b.layers));
    assert_eq!(WeightSource::open(&a.pruned_dir).unwrap().model_dtype(), WeightDtype::F32);
    assert_eq!(WeightSource::open(&b.pruned_dir).unwrap().model_dtype(), WeightDtype::Bf16);
    assert_eq!(ModelConfig::load(&b.pruned_dir).unwrap().raw["torch_dtype"], "bfloat16");
    let (pa, pb) = (Weights::load(&a.pruned_dir).unwrap(), Weights::load(&b.pruned_dir).unwrap());
    let mut changed = 0;
    for n in pa.names() {
        let (x, y) = (pa.get(n).unwrap(), pb.get(n).unwrap());
        let rounded: Vec<f32> = x.data.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect();
        assert_eq!(y.data, rounded, "{n}");
        changed += usize::from(rounded != x.data);
    }
    // The affine recovery's scales make the o_proj/down_proj weights of pruned layers not
    // bf16-representable, so the rounding is real (3 pruned layers × 2 weights and 2 biases).
    assert!(changed >= 6, "{changed} tensors changed by the rounding");
}
