//! Tidy rules of the source tree, run as tests (as rust-analyzer's `xtask/src/tidy.rs`):
//! what rustfmt cannot enforce on its own. rustfmt breaks code at 120 columns
//! (`rustfmt.toml`) but leaves long string literals and comments alone; this keeps them
//! inside the limit too.

/// The longest line allowed in a Rust file of the workspace, in characters.
pub const MAX_LINE: usize = 120;

/// Every line over [`MAX_LINE`] characters in the `.rs` files under `dirs` (relative to
/// `root`), as `path:line (N characters)`.
pub fn long_lines(root: &std::path::Path, dirs: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    for d in dirs {
        collect(&root.join(d), &mut files);
    }
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else { continue };
        for (i, line) in text.lines().enumerate() {
            let n = line.chars().count();
            if n > MAX_LINE {
                let rel = f.strip_prefix(root).unwrap_or(&f);
                out.push(format!("{}:{} ({n} characters)", rel.display(), i + 1));
            }
        }
    }
    out
}

fn collect(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name();
        if p.is_dir() && name != "target" && !name.to_string_lossy().starts_with('.') {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_line_is_longer_than_the_limit() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let long = long_lines(&root, &["crates", "xtask", "fuzz/fuzz_targets"]);
        assert!(long.is_empty(), "{} lines over {MAX_LINE} characters:\n{}", long.len(), long.join("\n"));
    }

    #[test]
    fn the_rule_sees_long_lines() {
        let tmp = std::env::temp_dir().join(format!("tidy-{}", std::process::id()));
        std::fs::create_dir_all(tmp.join("src")).unwrap();
        std::fs::write(tmp.join("src/a.rs"), format!("ok\n{}\n", "é".repeat(MAX_LINE + 1))).unwrap();
        std::fs::write(tmp.join("src/b.rs"), "é".repeat(MAX_LINE)).unwrap();
        let long = long_lines(&tmp, &["src"]);
        std::fs::remove_dir_all(&tmp).unwrap();
        assert_eq!(long, [format!("src/a.rs:2 ({} characters)", MAX_LINE + 1)]);
    }
}
