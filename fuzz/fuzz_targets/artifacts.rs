//! Every artifact format of the cache: the first byte picks the format, the rest is the file.
//! 0: manifest.json (checked as a lookup checks it, against its own stage and key);
//! 1–9: the binary `value` payloads the pipeline stores (calibration ids, layer importance,
//! allocation, attention and MLP statistics, kept heads or channels, the Taylor capture, the
//! attention and MLP refits, the global allocation's scores), each validated as its reader does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slim_artifact::codec::decode;
use slim_artifact::schema::{AttnStats, LayerImportance, MlpStats, TaylorStats};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else { return };
    match kind % 10 {
        0 => {
            // Take the stage and key the manifest claims, so that the checks past them run.
            let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
            let stage = v["stage"].as_str().unwrap_or("capture").to_string();
            let key = v["key"]
                .as_str()
                .and_then(|k| k.parse::<slim_artifact::Key>().ok())
                .unwrap_or_else(|| slim_artifact::Key::parse(&"0".repeat(32)).expect("a valid key"));
            let _ = slim_artifact::parse_manifest(std::path::Path::new("manifest.json"), bytes, &stage, key);
        }
        1 => {
            let _ = decode::<Vec<u32>>(bytes);
        }
        2 => {
            let _ = decode::<LayerImportance>(bytes);
        }
        3 => {
            let _ = decode::<slim_alloc::Allocation>(bytes);
        }
        4 => {
            if let Ok(s) = decode::<AttnStats>(bytes) {
                let _ = s.validate();
            }
        }
        5 => {
            if let Ok(s) = decode::<MlpStats>(bytes) {
                let _ = s.validate();
            }
        }
        6 => {
            // Kept channels (`score-mlp`), and kept query and KV heads (`score-attn`, a struct of
            // two lists, which bincode encodes as the pair).
            let _ = decode::<Vec<usize>>(bytes);
            let _ = decode::<(Vec<usize>, Vec<usize>)>(bytes);
        }
        7 => {
            if let Ok(s) = decode::<TaylorStats>(bytes) {
                let _ = s.validate();
            }
        }
        8 => {
            let _ = decode::<slim_recover::Refit>(bytes);
        }
        _ => {
            let _ = decode::<Vec<slim_alloc::LayerScores>>(bytes);
        }
    }
});
