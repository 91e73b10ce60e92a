//! Cache keys: the hash of a canonical JSON key document.
//!
//! A key says everything that decides the bytes of a stage's output: the cache format,
//! the stage and its version, the resolved config and the keys of the inputs by role.
//! It never holds paths, mtimes, thread counts or device indices.
//! The canonical form sorts object keys recursively whatever the `serde_json` features
//! of the build, and writes numbers as `serde_json` does (integers as integers, floats
//! in shortest round-trip form), without whitespace.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::error::{Result, StoreError};
use crate::CACHE_FORMAT;

/// 128-bit cache key, written as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key([u8; 16]);

impl Key {
    /// The 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(32);
        for b in self.0 {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// Parses 32 lowercase hex digits.
    pub fn parse(s: &str) -> Option<Key> {
        let bytes = s.as_bytes();
        if bytes.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let hi = hex_digit(pair[0])?;
            let lo = hex_digit(pair[1])?;
            out[i] = hi << 4 | lo;
        }
        Some(Key(out))
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.to_hex())
    }
}

impl FromStr for Key {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Key> {
        Key::parse(s).ok_or_else(|| StoreError::InvalidName {
            what: "key",
            value: s.to_owned(),
            reason: "a key is 32 lowercase hex digits",
        })
    }
}

impl Serialize for Key {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Key, D::Error> {
        let s = String::deserialize(d)?;
        Key::parse(&s).ok_or_else(|| serde::de::Error::custom("a key is 32 lowercase hex digits"))
    }
}

/// The document a [`Key`] is the hash of; kept in the manifest to explain reruns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyDoc {
    cache_format: u32,
    stage: String,
    stage_version: u32,
    config: Value,
    inputs: BTreeMap<String, Key>,
}

impl KeyDoc {
    /// The key document of `stage` at `stage_version` with the resolved `config` and the
    /// keys of its inputs by role, under this build's [`CACHE_FORMAT`].
    ///
    /// `config` must be the resolved config, never raw CLI arguments, and must not hold
    /// paths, output locations, thread counts or device indices. Non-finite floats become
    /// `null` in JSON, so a config must not rely on them.
    pub fn new<T: Serialize + ?Sized>(
        stage: &str,
        stage_version: u32,
        config: &T,
        inputs: BTreeMap<String, Key>,
    ) -> Result<KeyDoc> {
        check_name("stage name", stage)?;
        for role in inputs.keys() {
            if role.is_empty() {
                return Err(StoreError::InvalidName {
                    what: "input role",
                    value: role.clone(),
                    reason: "a role must not be empty",
                });
            }
        }
        let config = serde_json::to_value(config).map_err(|e| StoreError::Encode {
            path: format!("<key document of stage {stage}>").into(),
            reason: e.to_string(),
        })?;
        Ok(KeyDoc { cache_format: CACHE_FORMAT, stage: stage.to_owned(), stage_version, config, inputs })
    }

    /// The key: blake3 of [`KeyDoc::canonical_json`], truncated to 128 bits.
    pub fn key(&self) -> Key {
        let hash = blake3::hash(self.canonical_json().as_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&hash.as_bytes()[..16]);
        Key(out)
    }

    /// The canonical JSON text that is hashed: object keys sorted at every depth, no
    /// whitespace.
    pub fn canonical_json(&self) -> String {
        let mut doc = serde_json::Map::new();
        doc.insert("cache_format".into(), Value::from(self.cache_format));
        doc.insert("config".into(), self.config.clone());
        let inputs = self.inputs.iter().map(|(r, k)| (r.clone(), Value::from(k.to_hex())));
        doc.insert("inputs".into(), Value::Object(inputs.collect()));
        doc.insert("stage".into(), Value::from(self.stage.clone()));
        doc.insert("stage_version".into(), Value::from(self.stage_version));
        let mut out = String::new();
        write_canonical(&Value::Object(doc), &mut out);
        out
    }

    /// The cache format the document was made under.
    pub fn cache_format(&self) -> u32 {
        self.cache_format
    }

    /// The stage name.
    pub fn stage(&self) -> &str {
        &self.stage
    }

    /// The stage version.
    pub fn stage_version(&self) -> u32 {
        self.stage_version
    }

    /// The resolved config as JSON.
    pub fn config(&self) -> &Value {
        &self.config
    }

    /// The input keys by role.
    pub fn inputs(&self) -> &BTreeMap<String, Key> {
        &self.inputs
    }
}

/// Writes `v` as compact JSON with object keys sorted at every depth.
pub(crate) fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        // Scalars: serde_json's own compact form (ryu for floats).
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Checks a stage or payload path component: `[A-Za-z0-9._-]+`, not starting with `.` or
/// `_` (reserved for temp dirs and store files).
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<()> {
    let bad = |reason| Err(StoreError::InvalidName { what, value: name.to_owned(), reason });
    if name.is_empty() {
        return bad("must not be empty");
    }
    if name.starts_with('.') || name.starts_with('_') {
        return bad("must not start with '.' or '_'");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
        return bad("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}
