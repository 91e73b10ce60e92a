//! safetensors bytes → `Weights` (header JSON, dtypes, offsets, shapes), then the checks a
//! model load runs on them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(w) = slim_checkpoint::Weights::from_safetensors_bytes(data, Path::new("fuzz.safetensors")) {
        for name in w.names().map(String::from).collect::<Vec<_>>() {
            let t = w.get(&name).unwrap();
            assert_eq!(t.numel(), t.data.len());
        }
        let _ = w.num_values();
    }
});
