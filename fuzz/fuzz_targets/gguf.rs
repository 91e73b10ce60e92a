//! GGUF bytes → header, metadata, tensor infos; then what the importer reads from them: the
//! model config, the tokenizer files, and every tensor's bytes dequantized (block sizes).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(g) = slim_gguf::GgufFile::from_bytes(data.to_vec(), "fuzz.gguf") else { return };
    let _ = slim_gguf::build_config_json(&g);
    let _ = slim_gguf::build_tokenizer_json(&g);
    let _ = slim_gguf::build_tokenizer_config_json(&g);
    for t in g.tensors().to_vec() {
        if let Ok(bytes) = g.tensor_bytes(&t.name) {
            // Keep each execution small: the dequantized size is bounded by the input anyway.
            if t.n_elements <= 1 << 20 {
                if let Ok(v) = slim_gguf::dequantize(t.ggml_type, bytes, t.n_elements as usize) {
                    assert_eq!(v.len() as u64, t.n_elements);
                }
            }
        }
    }
});
