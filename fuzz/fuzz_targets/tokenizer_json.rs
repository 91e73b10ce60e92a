//! tokenizer.json bytes → the HF tokenizer that `slim_model::Tokenizer::load` builds (through
//! `slim_checkpoint::parse_tokenizer_json`), then an encode and decode round on a fixed text.
//! The loader turns the tokenizers crate's panics into errors; libfuzzer-sys installs a panic
//! hook that aborts at once, so the default hook is put back first (a panic that escapes the
//! loader still aborts: libfuzzer-sys aborts on any unwinding out of the target).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(init: { drop(std::panic::take_hook()); }, |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(tok) = slim_checkpoint::parse_tokenizer_json(text, std::path::Path::new("tokenizer.json")) {
        if let Ok(enc) = tok.encode("Hello world 2024, ça va?", true) {
            let _ = tok.decode(enc.get_ids(), true);
        }
        let _ = tok.get_vocab_size(true);
    }
});
