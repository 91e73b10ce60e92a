//! Whole runs ([`crate::run_and_evaluate`]) on a tiny synthetic model with a word-level
//! tokenizer and texts of our own: the summary's JSON is pinned, every entry a run used is
//! recorded, and the texts' contents (not their names) key the calibration and evaluation.

use crate::fixtures::{worded_model, write_texts};
use crate::{
    run_and_evaluate, CalibMode, EvalInput, ModelSource, PipelineConfig, RunName, RunOptions, RunRequest, RunSummary,
    RunsRoot,
};
use slim_artifact::schema::GqaMode;
use slim_artifact::Store;
use slim_capture::{CalibConfig, CalibSource};
use slim_data::EvalText;
use slim_model::Cpu;
use std::path::Path;

pub(crate) fn config() -> PipelineConfig {
    let mut c = PipelineConfig::paper(0.25, GqaMode::WholeGroup);
    c.calib = CalibConfig { source: CalibSource::PtbTrain, n_windows: 4, seq_len: 16, seed: 7 };
    c.pruned_layers = Some(3);
    c.calib_mode = CalibMode::Sequential;
    c
}

/// One whole run named `run` with perplexity on PTB-valid.
pub(crate) fn whole_run(root: &Path, store: &Store, cfg: &PipelineConfig, run: &str) -> RunSummary {
    let model = ModelSource::open(&root.join("m")).unwrap();
    let evals = [EvalInput::load(EvalText::PtbValid, root).unwrap()];
    let dir = RunsRoot::under(root).run(&RunName::new(run).unwrap());
    dir.prepare().unwrap();
    let req = RunRequest {
        model: &model,
        cfg,
        evals: &evals,
        eval_windows: None,
        run: &dir,
        backend: "cpu",
        data_root: root,
        tune: None,
    };
    run_and_evaluate::<Cpu>(&req, store, &burn_flex::FlexDevice, &RunOptions::default()).unwrap()
}

#[test]
fn the_texts_contents_key_calibration_and_evaluation() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    worded_model(&root.join("m"));
    write_texts(root, 1);
    let store = Store::open(&root.join("cache")).unwrap();
    let first = whole_run(root, &store, &config(), "a");
    let again = whole_run(root, &store, &config(), "a");
    let ran = |s: &RunSummary, stage: &str| s.stages.iter().find(|x| x.name == stage).map_or(0, |x| x.ran);
    assert_eq!((ran(&again, "calib"), ran(&again, "eval"), ran(&again, "capture")), (0, 0, 0));
    // The same names, other words: nothing keyed by the texts may be reused.
    write_texts(root, 2);
    let other = whole_run(root, &store, &config(), "a");
    assert_eq!(ran(&other, "calib"), 1, "calibration windows of the old text were reused");
    assert_eq!(ran(&other, "eval"), 2, "the old text's perplexities were reused");
    let (p1, p2) = (first.ppl["ptb-valid"].before.ppl, other.ppl["ptb-valid"].before.ppl);
    assert!((p1 - p2).abs() > 1e-6 * p1, "the dense perplexity should differ on another text: {p1} vs {p2}");
}

#[test]
fn a_summary_records_every_entry_its_run_used_and_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    worded_model(&root.join("m"));
    write_texts(root, 1);
    let store = Store::open(&root.join("cache")).unwrap();
    let s = whole_run(root, &store, &config(), "a");
    let mut all: Vec<_> = store.entries().unwrap();
    all.sort();
    let recorded: Vec<_> = s.cache_keys.iter().map(|c| (c.stage.clone(), c.key)).collect();
    assert_eq!(recorded, all, "one run in an empty cache made every entry there and must record each");
    let back = RunSummary::read(&RunsRoot::under(root).run(&RunName::new("a").unwrap()).summary_path()).unwrap();
    assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&s).unwrap());
    assert_eq!(s.model_key, Some(ModelSource::open(&root.join("m")).unwrap().key()));
    assert!(s.pruned_model.join("config.json").is_file());
}

/// The summary's JSON with what varies between machines and runs replaced: numbers by 0,
/// keys by zeros, paths by `<path>`. What remains is the layout every reader relies on.
fn normalized(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(_) => Value::from(0),
        Value::String(s) if s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) => "0".repeat(32).into(),
        Value::String(s) if s.contains('/') => "<path>".into(),
        Value::Array(a) => Value::Array(a.iter().take(2).map(normalized).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), normalized(v))).collect()),
        other => other.clone(),
    }
}

#[test]
fn golden_summary_layout_is_pinned() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    worded_model(&root.join("m"));
    write_texts(root, 1);
    let store = Store::open(&root.join("cache")).unwrap();
    let s = whole_run(root, &store, &config(), "golden");
    let got = serde_json::to_string_pretty(&normalized(&serde_json::to_value(&s).unwrap())).unwrap() + "\n";
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/golden/summary.json");
    if std::env::var_os("SLIMLLM_BLESS").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        got, want,
        "the summary's layout changed: readers (report, cache gc, xtask) must follow; \
                           SLIMLLM_BLESS=1 rewrites src/golden/summary.json"
    );
    // The golden file also reads back as a summary (xtask's view is tested against it too),
    // and so does a summary written before `calib_mode` was renamed from `mode`.
    let _: RunSummary = serde_json::from_str(&want).unwrap();
    let old: RunSummary = serde_json::from_str(&want.replace("\"calib_mode\"", "\"mode\"")).unwrap();
    assert_eq!(old.config.calib_mode, CalibMode::Sequential);
}
