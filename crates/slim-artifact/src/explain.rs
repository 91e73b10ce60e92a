//! Why a stage reruns: the difference between two key documents, in the spirit of
//! cargo's `DirtyReason`.

use std::fmt;

use serde_json::Value;

use crate::key::{write_canonical, Key, KeyDoc};

/// Result of `Store::explain`.
#[derive(Clone, Debug, PartialEq)]
pub enum Explanation {
    /// An entry for the key exists.
    Hit {
        /// The key.
        key: Key,
    },
    /// No entry of the stage exists at all.
    NoPrevious {
        /// The key that would be written.
        key: Key,
    },
    /// A miss; `changes` say how the key document differs from the most recent entry of
    /// the same stage.
    Changed {
        /// The key that would be written.
        key: Key,
        /// The key of the most recent entry of the stage.
        previous: Key,
        /// What changed, in document order.
        changes: Vec<Change>,
    },
}

/// One difference between a stored key document and the current one.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// The cache format changed.
    CacheFormat {
        /// Stored.
        old: u32,
        /// Current.
        new: u32,
    },
    /// `STAGE_VERSION` changed.
    StageVersion {
        /// Stored.
        old: u32,
        /// Current.
        new: u32,
    },
    /// A config field changed, appeared (`old` is `None`) or disappeared (`new` is `None`).
    Config {
        /// Dotted path of the field, `[i]` for array items; empty for the whole config.
        field: String,
        /// Stored value.
        old: Option<Value>,
        /// Current value.
        new: Option<Value>,
    },
    /// An input's key changed, or an input role appeared or disappeared.
    Input {
        /// The role.
        role: String,
        /// Stored key.
        old: Option<Key>,
        /// Current key.
        new: Option<Key>,
    },
}

/// Differences from `old` to `new`.
pub(crate) fn diff(old: &KeyDoc, new: &KeyDoc) -> Vec<Change> {
    let mut out = Vec::new();
    if old.cache_format() != new.cache_format() {
        out.push(Change::CacheFormat { old: old.cache_format(), new: new.cache_format() });
    }
    if old.stage_version() != new.stage_version() {
        out.push(Change::StageVersion { old: old.stage_version(), new: new.stage_version() });
    }
    diff_value("", Some(old.config()), Some(new.config()), &mut out);
    let roles = old.inputs().keys().chain(new.inputs().keys());
    let roles: std::collections::BTreeSet<&String> = roles.collect();
    for role in roles {
        let (o, n) = (old.inputs().get(role).copied(), new.inputs().get(role).copied());
        if o != n {
            out.push(Change::Input { role: role.clone(), old: o, new: n });
        }
    }
    out
}

fn diff_value(field: &str, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<Change>) {
    match (old, new) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let sub = if field.is_empty() { k.clone() } else { format!("{field}.{k}") };
                diff_value(&sub, a.get(k), b.get(k), out);
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff_value(&format!("{field}[{i}]"), Some(x), Some(y), out);
            }
        }
        (a, b) => {
            if a != b {
                out.push(Change::Config { field: field.into(), old: a.cloned(), new: b.cloned() });
            }
        }
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Explanation::Hit { key } => write!(f, "fresh: entry {key} exists"),
            Explanation::NoPrevious { key } => {
                write!(f, "dirty: no previous entry of this stage (new key {key})")
            }
            Explanation::Changed { key, previous, changes } => {
                write!(f, "dirty: key {key} differs from the latest entry {previous}")?;
                if changes.is_empty() {
                    write!(f, "\n  - no field differs (the key hashing changed?)")?;
                }
                for c in changes {
                    write!(f, "\n  - {c}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::CacheFormat { old, new } => write!(f, "cache format changed: {old} -> {new}"),
            Change::StageVersion { old, new } => {
                write!(f, "stage version changed: {old} -> {new}")
            }
            Change::Config { field, old, new } => {
                let field = if field.is_empty() { "config".to_owned() } else { format!("config.{field}") };
                match (old, new) {
                    (Some(o), Some(n)) => {
                        write!(f, "{field} changed: {} -> {}", short(o), short(n))
                    }
                    (None, Some(n)) => write!(f, "{field} added: {}", short(n)),
                    (Some(o), None) => write!(f, "{field} removed (was {})", short(o)),
                    (None, None) => write!(f, "{field} changed"),
                }
            }
            Change::Input { role, old, new } => match (old, new) {
                (Some(o), Some(n)) => write!(f, "input {role} changed: {o} -> {n}"),
                (None, Some(n)) => write!(f, "input {role} added: {n}"),
                (Some(o), None) => write!(f, "input {role} removed (was {o})"),
                (None, None) => write!(f, "input {role} changed"),
            },
        }
    }
}

/// Canonical JSON of a value, cut to 80 characters.
fn short(v: &Value) -> String {
    let mut s = String::new();
    write_canonical(v, &mut s);
    if s.chars().count() > 80 {
        let cut: String = s.chars().take(77).collect();
        format!("{cut}...")
    } else {
        s
    }
}
