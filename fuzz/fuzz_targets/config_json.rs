//! config.json text → `ModelConfig` (LLaMA / Qwen2 fields, per-layer pruned shapes), and
//! back: a config that loads must serialize and reload to the same shapes and counts.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(cfg) = slim_checkpoint::ModelConfig::from_json_str(text) {
        let _ = cfg.num_params();
        let again =
            slim_checkpoint::ModelConfig::from_json_str(&cfg.to_json().to_string()).expect("a loaded config reloads");
        assert_eq!(again.layers, cfg.layers);
        assert_eq!(again.num_params(), cfg.num_params());
        let _ = slim_checkpoint::layout::expected_shapes(&cfg);
    }
});
