//! The `tune` stage in whole runs on the worded synthetic model: the tuned model becomes the
//! run's model and is evaluated beside the pruned one; a second run reuses the entry; another
//! learning rate tunes again without pruning again.

use crate::fixtures::{worded_model, write_texts};
use crate::tests_runs::config;
use crate::{
    run_and_evaluate, EvalInput, ModelSource, RunName, RunOptions, RunRequest, RunSummary, RunsRoot, TuneRequest,
};
use slim_artifact::Store;
use slim_data::EvalText;
use slim_model::Cpu;
use slim_tune::{LoraSpec, TuneSettings};
use std::path::Path;

fn request(root: &Path, lr: f64) -> TuneRequest {
    let mut settings = TuneSettings::paper(1);
    settings.lora = LoraSpec { rank: 2, alpha: 4.0, ..LoraSpec::paper() };
    settings.lr = lr;
    settings.warmup = 1;
    settings.batch = 2;
    settings.micro_batch = 1;
    TuneRequest {
        settings,
        steps: Some(3),
        epochs: 1.0,
        data: EvalInput::load(EvalText::PtbTest, root).unwrap(),
        seq_len: 16,
        val_size: 2,
        val_every: 2,
        checkpoint_every: 1,
    }
}

fn tuned_run(root: &Path, store: &Store, tune: &TuneRequest) -> RunSummary {
    let model = ModelSource::open(&root.join("m")).unwrap();
    let evals = [EvalInput::load(EvalText::PtbValid, root).unwrap()];
    let dir = RunsRoot::under(root).run(&RunName::new("t").unwrap());
    dir.prepare().unwrap();
    let req = RunRequest {
        model: &model,
        cfg: &config(),
        evals: &evals,
        eval_windows: None,
        run: &dir,
        backend: "cpu",
        data_root: root,
        tune: Some(tune),
    };
    run_and_evaluate::<Cpu>(&req, store, &burn_flex::FlexDevice, &RunOptions::default()).unwrap()
}

#[test]
fn a_tuned_run_evaluates_the_tuned_model_and_caches_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    worded_model(&root.join("m"));
    write_texts(root, 1);
    let store = Store::open(&root.join("cache")).unwrap();
    let ran = |s: &RunSummary, stage: &str| s.stages.iter().find(|x| x.name == stage).map_or(0, |x| x.ran);

    let first = tuned_run(root, &store, &request(root, 1e-2));
    let tune = first.tune.as_ref().expect("a tune section");
    assert_eq!(tune.log.steps.len(), 3);
    assert_eq!(ran(&first, "tune"), 1);
    let (pruned, tuned) = (first.ppl["ptb-valid"].after.ppl, tune.ppl["ptb-valid"].ppl);
    assert!(tuned.is_finite() && (tuned - pruned).abs() > 1e-9 * pruned, "pruned {pruned}, tuned {tuned}");
    assert!(first.pruned_model.join("adapter/adapter_model.safetensors").is_file(), "the run's model is the tuned one");
    assert!(first.cache_keys.iter().any(|c| c.stage == "tune" && c.key == tune.entry));
    assert!(!RunsRoot::under(root).run(&RunName::new("t").unwrap()).path().join("tune.checkpoint").exists());

    let again = tuned_run(root, &store, &request(root, 1e-2));
    assert_eq!((ran(&again, "tune"), ran(&again, "surgery")), (0, 0));
    assert_eq!(again.tune.as_ref().unwrap().entry, tune.entry);
    assert_eq!(again.tune.as_ref().unwrap().ppl["ptb-valid"].ppl, tuned);

    let other = tuned_run(root, &store, &request(root, 2e-2));
    assert_eq!((ran(&other, "tune"), ran(&other, "surgery")), (1, 0), "another learning rate tunes again, only");
    assert_ne!(other.tune.as_ref().unwrap().entry, tune.entry);
}
