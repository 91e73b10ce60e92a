//! Unit tests of keys, the store's commit protocol, verify, explain and the binary codec.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::schema::MlpStats;
use crate::{Change, Explanation, Key, KeyDoc, Store, StoreError, CACHE_FORMAT};

fn doc(stage: &str, config: serde_json::Value, inputs: &[(&str, Key)]) -> KeyDoc {
    let inputs = inputs.iter().map(|(r, k)| (r.to_string(), *k)).collect();
    KeyDoc::new(stage, 1, &config, inputs).unwrap()
}

fn key(hex: &str) -> Key {
    hex.parse().unwrap()
}

fn fixed_doc() -> KeyDoc {
    let config = json!({
        "scorer": { "kind": "slimllm", "greedy": true },
        "ratio": 0.2,
        "seq_len": 128,
        "layers": [4, 5, 6],
    });
    doc("score", config, &[("capture", key("0123456789abcdef0123456789abcdef"))])
}

fn tmp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("cache")).unwrap();
    (dir, store)
}

/// Names in `dir`, sorted.
fn ls(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn key_snapshot() {
    let d = fixed_doc();
    assert_eq!(
        d.canonical_json(),
        concat!(
            r#"{"cache_format":1,"config":{"layers":[4,5,6],"ratio":0.2,"scorer":{"greedy":true,"kind":"slimllm"},"#,
            r#""seq_len":128},"inputs":{"capture":"0123456789abcdef0123456789abcdef"},"#,
            r#""stage":"score","stage_version":1}"#
        )
    );
    // Changes here mean every cache entry is invalidated: bump CACHE_FORMAT deliberately.
    assert_eq!(d.key().to_hex(), "7942d36dae1d2ccc12e73e7eb9f5fa24");
    assert_eq!(CACHE_FORMAT, 1);
}

#[test]
fn key_ignores_object_order_and_follows_content() {
    let a = fixed_doc();
    let reordered = json!({
        "seq_len": 128,
        "layers": [4, 5, 6],
        "scorer": { "greedy": true, "kind": "slimllm" },
        "ratio": 0.2,
    });
    let b = doc("score", reordered, &[("capture", key("0123456789abcdef0123456789abcdef"))]);
    assert_eq!(a.key(), b.key());

    let mut config = a.config().clone();
    config["scorer"]["kind"] = json!("magnitude");
    let c = doc("score", config, &[("capture", key("0123456789abcdef0123456789abcdef"))]);
    assert_ne!(a.key(), c.key());

    let d = doc("score", a.config().clone(), &[("capture", key("fedcba9876543210fedcba9876543210"))]);
    assert_ne!(a.key(), d.key());

    let e = KeyDoc::new("score", 2, a.config(), a.inputs().clone()).unwrap();
    assert_ne!(a.key(), e.key());

    // Array order is content.
    let mut config = a.config().clone();
    config["layers"] = json!([6, 5, 4]);
    assert_ne!(a.key(), doc("score", config, &[("capture", key("0123456789abcdef0123456789abcdef"))]).key());
}

#[test]
fn key_parse_round_trip_and_rejects_garbage() {
    let k = fixed_doc().key();
    assert_eq!(k.to_hex().parse::<Key>().unwrap(), k);
    assert!(Key::parse("0123").is_none());
    assert!(Key::parse("0123456789ABCDEF0123456789ABCDEF").is_none());
    assert!(matches!("zz".parse::<Key>(), Err(StoreError::InvalidName { .. })));
}

#[test]
fn bad_names_are_rejected() {
    assert!(matches!(KeyDoc::new("../x", 1, &json!({}), BTreeMap::new()), Err(StoreError::InvalidName { .. })));
    let (_dir, store) = tmp_store();
    let mut w = store.begin(&fixed_doc()).unwrap();
    for bad in ["", "../a", "a/../b", "/abs", "manifest.json", ".hidden", "a//b"] {
        assert!(matches!(w.put_bytes(bad, b"x"), Err(StoreError::InvalidName { .. })), "{bad:?}");
    }
    w.put_bytes("a.bin", b"x").unwrap();
    assert!(matches!(w.put_bytes("a.bin", b"y"), Err(StoreError::InvalidName { .. })));
}

/// A value whose encoding fails part-way, after more bytes than the write buffer holds.
struct FailsLate(Vec<f64>);

impl serde::Serialize for FailsLate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeTuple};
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&self.0)?;
        t.end()?;
        Err(S::Error::custom("the encoder gave up"))
    }
}

#[test]
fn a_failed_binary_payload_leaves_no_file_and_the_entry_commits_without_it() {
    let (_dir, store) = tmp_store();
    let d = fixed_doc();
    let mut w = store.begin(&d).unwrap();
    let e = w.put_bin("stats.bin", &FailsLate(vec![0.25; 300_000])).unwrap_err();
    assert!(
        matches!(&e, StoreError::Encode { path, reason } if path.ends_with("stats.bin")
        && reason.contains("gave up")),
        "{e:?}"
    );
    // The partial file was removed: the same name can be written again, and only what was
    // written lands in the manifest.
    w.put_bin("stats.bin", &vec![1.0f64, 2.0]).unwrap();
    let k = w.commit().unwrap();
    let e = store.lookup("score", &k).unwrap().expect("hit");
    assert_eq!(e.get_bin::<Vec<f64>>("stats.bin").unwrap(), [1.0, 2.0]);
}

#[test]
fn commit_lookup_round_trip() {
    let (_dir, store) = tmp_store();
    let d = fixed_doc();
    assert!(store.lookup("score", &d.key()).unwrap().is_none());

    let mut w = store.begin(&d).unwrap();
    w.set_producer("slim-score", "9.9.9", Some("abc123"));
    w.put_json("plan.json", &json!({ "kept": [1, 2, 3] })).unwrap();
    w.put_bytes("raw.bin", b"hello").unwrap();
    w.put_bin("nums.bin", &vec![1.5f64, -0.0, f64::MAX]).unwrap();
    let model = w.dir_path("model").unwrap();
    fs::write(model.join("config.json"), b"{}").unwrap();
    fs::create_dir(model.join("sub")).unwrap();
    fs::write(model.join("sub/weights.safetensors"), vec![7u8; 1000]).unwrap();
    let k = w.commit().unwrap();
    assert_eq!(k, d.key());

    let stage_dir = store.root().join("score");
    assert_eq!(ls(&stage_dir), vec![k.to_hex()], "no temp folder left");

    let e = store.lookup("score", &k).unwrap().expect("hit");
    assert_eq!(e.key(), k);
    assert_eq!(e.stage(), "score");
    assert_eq!(e.key_doc(), &d);
    assert_eq!(e.get_json::<serde_json::Value>("plan.json").unwrap(), json!({ "kept": [1, 2, 3] }));
    assert_eq!(e.get_bytes("raw.bin").unwrap(), b"hello");
    let nums: Vec<f64> = e.get_bin("nums.bin").unwrap();
    assert_eq!(nums.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), [1.5f64, -0.0, f64::MAX].map(f64::to_bits));
    assert_eq!(e.get_bytes("model/sub/weights.safetensors").unwrap(), vec![7u8; 1000]);
    assert_eq!(fs::read(e.path_of("model").unwrap().join("config.json")).unwrap(), b"{}");
    assert!(matches!(e.get_bytes("nope"), Err(StoreError::NotFound { .. })));
    assert!(matches!(e.path_of("nope"), Err(StoreError::NotFound { .. })));
    // The codec is checked: a JSON payload is not decoded as binary.
    assert!(matches!(e.get_bin::<Vec<f64>>("plan.json"), Err(StoreError::Incompatible { .. })));

    let m = e.manifest();
    assert_eq!(m.producer.name, "slim-score");
    assert_eq!(m.producer.git_revision.as_deref(), Some("abc123"));
    let names: Vec<&str> = m.payloads.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["model/config.json", "model/sub/weights.safetensors", "nums.bin", "plan.json", "raw.bin"]);
    assert_eq!(m.dirs, ["model"]);
    assert_eq!(m.payloads[4].size, 5);
    assert_eq!(m.payloads[4].blake3, blake3::hash(b"hello").to_hex().to_string());
    assert_eq!(m.payloads[2].codec, crate::codec::NAME);

    assert_eq!(store.verify().unwrap(), vec![]);
    assert_eq!(store.entries().unwrap(), vec![("score".to_string(), k)]);

    // Reopening reads the same entry.
    let again = Store::open(store.root()).unwrap();
    assert!(again.lookup("score", &k).unwrap().is_some());
}

#[test]
fn dropped_writer_leaves_nothing() {
    let (_dir, store) = tmp_store();
    let d = fixed_doc();
    {
        let mut w = store.begin(&d).unwrap();
        w.put_bytes("a.bin", b"data").unwrap();
        let m = w.dir_path("model").unwrap();
        fs::write(m.join("x"), b"y").unwrap();
    }
    assert!(store.lookup("score", &d.key()).unwrap().is_none());
    assert_eq!(ls(&store.root().join("score")), Vec::<String>::new());
}

#[test]
fn folder_without_manifest_is_a_miss_and_is_replaced() {
    let (_dir, store) = tmp_store();
    let d = fixed_doc();
    let k = d.key();
    // A temp folder of a crashed writer, and a folder at the key without a manifest.
    let tmp = store.root().join("score").join(format!(".tmp-{k}-1-0"));
    fs::create_dir_all(&tmp).unwrap();
    fs::write(tmp.join("a.bin"), b"half").unwrap();
    let at_key = store.root().join("score").join(k.to_hex());
    fs::create_dir_all(&at_key).unwrap();
    fs::write(at_key.join("a.bin"), b"half").unwrap();
    assert!(store.lookup("score", &k).unwrap().is_none());
    assert!(matches!(store.explain(&d).unwrap(), Explanation::NoPrevious { .. }));
    let problems = store.verify().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].reason.contains("no manifest"), "{}", problems[0]);

    // A garbled manifest is a miss too.
    fs::write(at_key.join("manifest.json"), b"{ not json").unwrap();
    assert!(store.lookup("score", &k).unwrap().is_none());

    // Committing replaces the incomplete folder.
    let mut w = store.begin(&d).unwrap();
    w.put_bytes("a.bin", b"whole").unwrap();
    w.commit().unwrap();
    let e = store.lookup("score", &k).unwrap().expect("hit");
    assert_eq!(e.get_bytes("a.bin").unwrap(), b"whole");
    assert_eq!(store.verify().unwrap(), vec![]);

    // clean_tmp removes the crashed writer's folder, but only when old enough.
    assert_eq!(store.clean_tmp(Duration::from_secs(3600)).unwrap(), 0);
    assert_eq!(store.clean_tmp(Duration::ZERO).unwrap(), 1);
    assert_eq!(ls(&store.root().join("score")), vec![k.to_hex()]);
}

#[test]
fn verify_reports_corrupted_payload() {
    let (_dir, store) = tmp_store();
    let d = fixed_doc();
    let mut w = store.begin(&d).unwrap();
    w.put_bytes("a.bin", b"0123456789").unwrap();
    let m = w.dir_path("model").unwrap();
    fs::write(m.join("w.safetensors"), b"weights").unwrap();
    let k = w.commit().unwrap();
    let e = store.lookup("score", &k).unwrap().unwrap();

    // Same size, different bytes.
    fs::write(e.path_of("a.bin").unwrap(), b"0123456780").unwrap();
    // Truncated file inside a folder payload.
    fs::write(e.path_of("model").unwrap().join("w.safetensors"), b"weig").unwrap();
    // A stray file.
    fs::write(e.path_of("model").unwrap().join("stray"), b"").unwrap();

    let problems = store.verify().unwrap();
    let text: Vec<String> =
        problems.iter().map(|p| format!("{} {}", p.path.file_name().unwrap().to_string_lossy(), p.reason)).collect();
    assert_eq!(
        text,
        [
            "a.bin blake3 digest differs from the manifest",
            "w.safetensors 4 bytes, manifest says 7",
            "stray file not listed in the manifest",
        ]
    );
    assert!(problems.iter().all(|p| p.stage == "score" && p.key == k));
    // Reads check the digest too.
    assert!(matches!(e.get_bytes("a.bin"), Err(StoreError::Corrupt { .. })));
}

#[test]
fn concurrent_commits_of_one_key() {
    let (_dir, store) = tmp_store();
    let d = fixed_doc();
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let results: Vec<Key> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut w = store.begin(&d).unwrap();
                    w.put_bytes("big.bin", &payload).unwrap();
                    w.put_json("meta.json", &json!({ "n": 1 })).unwrap();
                    w.commit().unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(results.iter().all(|k| *k == d.key()));
    assert_eq!(ls(&store.root().join("score")), vec![d.key().to_hex()]);
    let e = store.lookup("score", &d.key()).unwrap().unwrap();
    assert_eq!(e.get_bytes("big.bin").unwrap(), payload);
    assert_eq!(store.verify().unwrap(), vec![]);
}

#[test]
fn explain_names_changed_fields() {
    let (_dir, store) = tmp_store();
    let first = fixed_doc();
    assert_eq!(store.explain(&first).unwrap(), Explanation::NoPrevious { key: first.key() });
    store.begin(&first).unwrap().commit().unwrap();
    assert_eq!(store.explain(&first).unwrap(), Explanation::Hit { key: first.key() });

    let mut config = first.config().clone();
    config["scorer"]["kind"] = json!("magnitude");
    config["seed"] = json!(7);
    config.as_object_mut().unwrap().remove("seq_len");
    let second =
        KeyDoc::new("score", 2, &config, BTreeMap::from([("capture".into(), key("fedcba9876543210fedcba9876543210"))]))
            .unwrap();
    let ex = store.explain(&second).unwrap();
    let Explanation::Changed { changes, previous, .. } = &ex else { panic!("expected Changed: {ex:?}") };
    assert_eq!(*previous, first.key());
    assert!(changes.contains(&Change::StageVersion { old: 1, new: 2 }));
    assert_eq!(
        ex.to_string(),
        format!(
            "dirty: key {} differs from the latest entry {}
  - stage version changed: 1 -> 2
  - config.scorer.kind changed: \"slimllm\" -> \"magnitude\"
  - config.seed added: 7
  - config.seq_len removed (was 128)
  - input capture changed: 0123456789abcdef0123456789abcdef -> fedcba9876543210fedcba9876543210",
            second.key(),
            first.key()
        )
    );

    // The most recent entry (by manifest time) is the one compared against.
    std::thread::sleep(Duration::from_millis(5));
    store.begin(&second).unwrap().commit().unwrap();
    let mut config3 = config.clone();
    config3["seed"] = json!(8);
    let third = KeyDoc::new("score", 2, &config3, second.inputs().clone()).unwrap();
    let ex = store.explain(&third).unwrap();
    let Explanation::Changed { changes, previous, .. } = &ex else { panic!("expected Changed: {ex:?}") };
    assert_eq!(*previous, second.key());
    assert_eq!(*changes, vec![Change::Config { field: "seed".into(), old: Some(json!(7)), new: Some(json!(8)) }]);
}

#[test]
fn incompatible_store_format_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    Store::open(&root).unwrap();
    assert_eq!(fs::read_to_string(root.join("FORMAT")).unwrap(), "slimllm-cache 1\n");
    fs::write(root.join("FORMAT"), "slimllm-cache 999\n").unwrap();
    let err = Store::open(&root).unwrap_err();
    let StoreError::Incompatible { expected, found, .. } = &err else { panic!("{err:?}") };
    assert_eq!((expected.as_str(), found.as_str()), ("slimllm-cache 1", "slimllm-cache 999"));
    assert!(err.to_string().contains(&root.join("FORMAT").display().to_string()), "{err}");
}

#[test]
fn newer_manifest_schema_is_a_miss() {
    let (_dir, store) = tmp_store();
    let d = fixed_doc();
    let k = store.begin(&d).unwrap().commit().unwrap();
    let path = store.root().join("score").join(k.to_hex()).join("manifest.json");
    let text = fs::read_to_string(&path).unwrap().replace("\"schema_version\": 1", "\"schema_version\": 2");
    fs::write(&path, text).unwrap();
    assert!(store.lookup("score", &k).unwrap().is_none());
    let problems = store.verify().unwrap();
    assert!(problems[0].reason.contains("incompatible manifest schema"), "{}", problems[0]);
}

#[test]
fn remove_and_gc() {
    let (_dir, store) = tmp_store();
    let a = fixed_doc();
    let b = KeyDoc::new("alloc", 1, &json!({ "alpha": 1.0 }), BTreeMap::new()).unwrap();
    let c = KeyDoc::new("alloc", 1, &json!({ "alpha": 2.0 }), BTreeMap::new()).unwrap();
    for d in [&a, &b, &c] {
        store.begin(d).unwrap().commit().unwrap();
    }
    store.remove("alloc", &c.key()).unwrap();
    assert!(store.lookup("alloc", &c.key()).unwrap().is_none());
    assert!(matches!(store.remove("alloc", &c.key()), Err(StoreError::NotFound { .. })));

    let keep = BTreeSet::from([("score".to_string(), a.key())]);
    assert_eq!(store.gc(&keep).unwrap(), vec![("alloc".to_string(), b.key())]);
    assert_eq!(store.entries().unwrap(), vec![("score".to_string(), a.key())]);
    assert!(store.root().join("FORMAT").is_file());
}

#[test]
fn write_json_atomic_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs/base/run.json");
    crate::write_json_atomic(&path, &json!({ "a": 1 })).unwrap();
    crate::write_json_atomic(&path, &json!({ "a": 2 })).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(v, json!({ "a": 2 }));
    assert_eq!(ls(&dir.path().join("runs/base")), ["run.json"]);
}

#[test]
fn mlp_stats_binary_round_trip() {
    let m = 1536;
    let stats = MlpStats {
        layer: 3,
        n_tokens: 4096,
        hidden: 512,
        intermediate: m,
        u_sq_mean: (0..512).map(|i| i as f64 * 0.5).collect(),
        // f32 values widened, as the capture makes them.
        g_mean: (0..m).map(|i| f64::from((i as f32).sin())).collect(),
        g_cov: (0..m * m).map(|i| (i as f32 * 1e-3).cos() / 3.0).collect(),
    };
    let (_dir, store) = tmp_store();
    let d = KeyDoc::new("capture", 1, &json!({ "layer": 3 }), BTreeMap::new()).unwrap();
    let t = Instant::now();
    let mut w = store.begin(&d).unwrap();
    w.put_bin("mlp.bin", &stats).unwrap();
    let k = w.commit().unwrap();
    let write = t.elapsed();
    let t = Instant::now();
    let back: MlpStats = store.lookup("capture", &k).unwrap().unwrap().get_bin("mlp.bin").unwrap();
    let read = t.elapsed();
    assert_eq!(back, stats);
    let size = store.lookup("capture", &k).unwrap().unwrap().manifest().payloads[0].size;
    // 4 bytes a value (stored as the f32s they are) plus a few bytes of lengths and integers.
    assert!(size < (512 + m + m * m) as u64 * 4 + 64, "{size}");
    eprintln!("MlpStats {m}x{m}: {size} bytes, write {write:?}, read {read:?}");
    assert!(write < Duration::from_secs(1) && read < Duration::from_secs(1), "write {write:?}, read {read:?}");
}

/// Statistics are stored as f32: a value an f32 does not hold exactly is refused by name, never
/// rounded in silence; NaN passes through (the capture refuses non-finite statistics itself).
#[test]
fn statistics_that_are_not_f32_values_are_refused_when_stored() {
    let stats = MlpStats {
        layer: 0,
        n_tokens: 1,
        hidden: 1,
        intermediate: 2,
        u_sq_mean: vec![0.5],
        g_mean: vec![0.25, 0.1],
        g_cov: vec![1.0; 4],
    };
    let e = crate::codec::encode(&stats).unwrap_err().to_string();
    assert!(e.contains("value 1 (1e-1) is not an f32"), "{e}");
    let ok = MlpStats { g_mean: vec![0.25, f64::from(0.1f32)], ..stats };
    let back: MlpStats = crate::codec::decode(&crate::codec::encode(&ok).unwrap()).unwrap();
    assert_eq!(back, ok);
}

/// The f32 statistics are encoded byte for byte as a `Vec<f32>`, and as the previous version wrote
/// them (g_cov held in f64, written through [`crate::schema::as_f32`]): capture entries written by
/// earlier versions stay readable under the same format, and the same inputs give the same bytes.
#[test]
fn statistics_stored_as_f32_encode_as_a_vec_of_f32() {
    #[derive(serde::Serialize)]
    struct Mirror {
        layer: usize,
        n_tokens: usize,
        hidden: usize,
        intermediate: usize,
        u_sq_mean: Vec<f32>,
        g_mean: Vec<f32>,
        g_cov: Vec<f32>,
    }
    let f = |n: usize, s: f32| -> Vec<f32> { (0..n).map(|i| (i as f32 * s).sin() * 1e3).collect() };
    let (u, g, c) = (f(5, 0.3), f(7, 0.7), f(49, 1.1));
    let wide = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
    let stats = MlpStats {
        layer: 2,
        n_tokens: 300,
        hidden: 5,
        intermediate: 7,
        u_sq_mean: wide(&u),
        g_mean: wide(&g),
        g_cov: c.clone(),
    };
    let mirror = Mirror { layer: 2, n_tokens: 300, hidden: 5, intermediate: 7, u_sq_mean: u, g_mean: g, g_cov: c };
    // And as the previous version, which held g_cov in f64 and wrote it through `as_f32`.
    #[derive(serde::Serialize)]
    struct Before<'a> {
        layer: usize,
        n_tokens: usize,
        hidden: usize,
        intermediate: usize,
        #[serde(with = "crate::schema::as_f32")]
        u_sq_mean: &'a [f64],
        #[serde(with = "crate::schema::as_f32")]
        g_mean: &'a [f64],
        #[serde(with = "crate::schema::as_f32")]
        g_cov: &'a [f64],
    }
    let wide_cov = wide(&stats.g_cov);
    let before = Before {
        layer: 2,
        n_tokens: 300,
        hidden: 5,
        intermediate: 7,
        u_sq_mean: &stats.u_sq_mean,
        g_mean: &stats.g_mean,
        g_cov: &wide_cov,
    };
    assert_eq!(crate::codec::encode(&stats).unwrap(), crate::codec::encode(&before).unwrap());
    assert_eq!(crate::codec::encode(&stats).unwrap(), crate::codec::encode(&mirror).unwrap());
}
