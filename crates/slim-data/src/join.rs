//! The perplexity protocol's text preparation (LLM-Pruner's `process_data`, used by SlimLLM):
//! lines stripped, the non-empty ones joined with `"\n\n"`.

/// Prepares text for perplexity: split on `'\n'`, strip each line, drop the empty ones, join the rest with `"\n\n"`.
///
/// Stripping removes what Python's `str.strip()` removes (Unicode white space plus the separators `\x1c`..`\x1f`),
/// so that `tools/reference/ppl.py --join` produces the same string.
/// There is no trailing separator.
pub fn join_for_ppl(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for line in text.split('\n') {
        let line = line.trim_matches(is_python_space);
        if line.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(line);
    }
    out
}

/// Python's `str.isspace()` for one character.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}
