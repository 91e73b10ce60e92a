//! Golden key documents: every stage's key document, for each allocation, scorer family,
//! recovery and calibration mode, built from fixed input keys and pinned in
//! `golden/keys.txt`. A renamed config field, a reordered enum or a changed default would
//! silently invalidate every cache; here it fails a test instead. When a stage's output
//! really changes, bump its format or `STAGE_VERSION` and rewrite the file with
//! `SLIMLLM_BLESS=1 cargo test -p slim-pipeline --release golden`.

use crate::graph::Graph;
use crate::{AllocationKind, CalibMode, PipelineConfig};
use slim_alloc::PruneCounts;
use slim_artifact::schema::GqaMode;
use slim_artifact::{Key, KeyDoc};
use slim_recover::RecoveryKind;
use slim_score::ScorerKind;

fn key(byte: u8) -> Key {
    Key::parse(&format!("{byte:02x}").repeat(16)).expect("32 hex digits")
}

fn counts(mode: GqaMode) -> PruneCounts {
    PruneCounts {
        gqa: Some(mode),
        heads_per_group: usize::from(mode == GqaMode::PerGroup),
        groups: usize::from(mode == GqaMode::WholeGroup),
        heads: 3,
        kv_heads: usize::from(mode == GqaMode::WholeGroup),
        channels: 17,
        heads_clipped: false,
    }
}

/// Every key document a run of `cfg` builds, from fixed input keys, in run order.
fn documents(cfg: &PipelineConfig) -> Vec<KeyDoc> {
    let g = Graph { cfg, model: key(0x11), calib_text: None };
    let (calib, importance, taylor_key, scores) = (key(0x22), key(0x33), key(0x44), key(0x55));
    let mut docs = vec![g.calib().unwrap(), g.importance(calib).unwrap()];
    let taylor = g.taylor(calib).unwrap();
    let taylor = taylor.map(|d| {
        docs.push(d);
        taylor_key
    });
    match cfg.allocation {
        AllocationKind::Cosine => docs.push(g.alloc(&g.alloc_config(30).unwrap(), importance).unwrap()),
        AllocationKind::Uniform => docs.push(g.alloc_uniform(&g.uniform_config(30)).unwrap()),
        AllocationKind::FlapGlobal => {
            docs.push(g.global_scores(calib, taylor).unwrap());
            docs.push(g.alloc_global(&g.global_config(), scores).unwrap());
        }
    }
    let chain = g.chain_start(calib).unwrap();
    let c = counts(cfg.gqa);
    let ca = g.capture_attn(3, chain, calib).unwrap();
    let sa = g.score_attn(&c, ca.key(), taylor).unwrap();
    let ra = g.recover_attn(ca.key(), sa.key()).unwrap();
    let cm = g.capture_mlp(3, chain, calib, ra.key()).unwrap();
    let sm = g.score_mlp(&c, cm.key(), taylor).unwrap();
    let rm = g.recover_mlp(cm.key(), sm.key()).unwrap();
    let next = g.chain_next(3, chain, ra.key(), rm.key()).unwrap();
    docs.extend([ca, sa, ra, cm, sm, rm]);
    docs.push(g.capture_attn_dense(3, calib).unwrap());
    docs.push(g.capture_mlp_dense(3, calib).unwrap());
    let f32_surgery = g.surgery(30, next, key(0x66), slim_checkpoint::WeightDtype::F32).unwrap();
    let bf16_surgery = g.surgery(30, next, key(0x66), slim_checkpoint::WeightDtype::Bf16).unwrap();
    assert_ne!(f32_surgery.key(), bf16_surgery.key(), "a model stored in bf16 gets its own surgery entry");
    docs.push(f32_surgery);
    docs.push(crate::graph::eval_doc(key(0x77), slim_data::EvalText::PtbValid, None, 128, None).unwrap());
    docs.push(crate::graph::eval_doc(key(0x77), slim_data::EvalText::PtbTest, None, 128, Some(64)).unwrap());
    docs
}

fn configs() -> Vec<(&'static str, PipelineConfig)> {
    let paper = PipelineConfig::paper(0.2, GqaMode::WholeGroup);
    vec![
        ("paper", paper.clone()),
        (
            "per-group, dense calibration",
            PipelineConfig { gqa: GqaMode::PerGroup, calib_mode: CalibMode::Dense, ..paper.clone() },
        ),
        ("uniform", PipelineConfig { allocation: AllocationKind::Uniform, ..paper.clone() }),
        (
            "flap-global, flap scorer, flap-bias",
            PipelineConfig {
                allocation: AllocationKind::FlapGlobal,
                scorer: ScorerKind::Flap,
                recovery: RecoveryKind::FlapBias,
                ..paper.clone()
            },
        ),
        (
            "taylor, lstsq, K and alpha set",
            PipelineConfig {
                scorer: ScorerKind::Taylor,
                recovery: RecoveryKind::Lstsq,
                pruned_layers: Some(20),
                alpha: Some(5.0),
                target: 0.5,
                ..paper.clone()
            },
        ),
        // Appended after the unaligned configurations, whose documents stay as they were.
        ("paper, --align 32", PipelineConfig { align: 32, ..paper.clone() }),
        ("uniform, --align 64", PipelineConfig { allocation: AllocationKind::Uniform, align: 64, ..paper.clone() }),
        (
            "flap-global, --align 256",
            PipelineConfig {
                allocation: AllocationKind::FlapGlobal,
                scorer: ScorerKind::Flap,
                recovery: RecoveryKind::FlapBias,
                align: 256,
                ..paper.clone()
            },
        ),
    ]
}

fn render() -> String {
    let mut out = String::new();
    for (name, cfg) in configs() {
        out.push_str(&format!("# {name}\n"));
        for d in documents(&cfg) {
            out.push_str(&format!("{} {}\n", d.key(), d.canonical_json()));
        }
        out.push('\n');
    }
    out
}

#[test]
fn golden_key_documents_are_pinned() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/golden/keys.txt");
    let got = render();
    if std::env::var_os("SLIMLLM_BLESS").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
        assert_eq!(g, w, "key document {i} of src/golden/keys.txt changed (SLIMLLM_BLESS=1 rewrites the file)");
    }
    assert_eq!(got.lines().count(), want.lines().count(), "src/golden/keys.txt has another number of documents");
}

/// A model's key is remembered in the cache and reused while its files are untouched; an
/// edited file (same size) gets a fresh hash, and a damaged memo is only a slower open.
#[test]
fn model_keys_are_remembered_until_a_file_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let (mdir, cache) = (tmp.path().join("m"), tmp.path().join("cache"));
    let (cfg, w) = slim_checkpoint::synthetic::SyntheticSpec::dense("llama", 2, 16, 4, 2, 4, 21, 31, 5).build();
    slim_checkpoint::save_model_dir(&mdir, &cfg, &w, &mdir).unwrap();
    std::fs::write(mdir.join("tokenizer.json"), "{\"a\": 1}").unwrap();
    let store = slim_artifact::Store::open(&cache).unwrap();
    let first = crate::ModelSource::open_in(&mdir, &store).unwrap();
    assert_eq!(first.key(), crate::model_key(&mdir).unwrap());
    let memo = std::fs::read_to_string(cache.join(crate::keys::HASHES_FILE)).unwrap();
    assert!(memo.contains(&first.key().to_string()), "{memo}");
    // Remembered: the memo's key is what comes back (a forged one proves it was not rehashed).
    let forged = memo.replace(&first.key().to_string(), "0123456789abcdef0123456789abcdef");
    std::fs::write(cache.join(crate::keys::HASHES_FILE), forged).unwrap();
    assert_eq!(
        crate::ModelSource::open_in(&mdir, &store).unwrap().key().to_string(),
        "0123456789abcdef0123456789abcdef"
    );
    // Same size, other bytes: hashed again.
    std::fs::write(mdir.join("tokenizer.json"), "{\"a\": 2}").unwrap();
    let edited = crate::ModelSource::open_in(&mdir, &store).unwrap();
    assert_eq!(edited.key(), crate::model_key(&mdir).unwrap());
    assert_ne!(edited.key(), first.key());
    std::fs::write(cache.join(crate::keys::HASHES_FILE), "not json").unwrap();
    assert_eq!(crate::ModelSource::open_in(&mdir, &store).unwrap().key(), edited.key());
}
