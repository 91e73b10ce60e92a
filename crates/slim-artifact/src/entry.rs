//! Committed entries and their manifests.
//!
//! An entry is a directory `<root>/<stage>/<key>/` holding payload files and
//! `manifest.json`, which is written last and is the commit marker: a directory without
//! a manifest that parses is not an entry.

use std::fs;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::key::{Key, KeyDoc};
use crate::{codec, MANIFEST_FILE, MANIFEST_SCHEMA, MANIFEST_VERSION};

/// Codec tag of payloads written by `put_json`.
pub const CODEC_JSON: &str = "json";
/// Codec tag of payloads written by `put_bytes`.
pub const CODEC_BYTES: &str = "bytes";
/// Codec tag of files written by the caller inside an `EntryWriter::dir_path` folder.
pub const CODEC_FILE: &str = "file";

/// The `manifest.json` of an entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`MANIFEST_SCHEMA`].
    pub schema: String,
    /// [`MANIFEST_VERSION`] of the writer.
    pub schema_version: u32,
    /// Stage that produced the entry.
    pub stage: String,
    /// Version of that stage.
    pub stage_version: u32,
    /// The entry's key, equal to `key_doc.key()`.
    pub key: Key,
    /// The full key document.
    pub key_doc: KeyDoc,
    /// Every payload file, sorted by name (relative path with `/` separators).
    pub payloads: Vec<Payload>,
    /// Folders made with `EntryWriter::dir_path`, sorted.
    pub dirs: Vec<String>,
    /// Who wrote the entry.
    pub producer: Producer,
    /// When the manifest was written, in milliseconds since the Unix epoch; orders entries
    /// for `Store::explain` (file mtimes are never used).
    pub written_at_ms: u64,
}

/// One payload file of an entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// Relative path inside the entry, `/`-separated.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// blake3 of the contents, 64 hex digits.
    pub blake3: String,
    /// How it was written: [`CODEC_JSON`], [`CODEC_BYTES`], [`CODEC_FILE`] or [`codec::NAME`].
    pub codec: String,
}

/// The crate (and optionally git revision) that produced an entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Producer {
    /// Crate name, e.g. `slim-capture`.
    pub name: String,
    /// Crate version.
    pub version: String,
    /// Git revision of the producing build, when known.
    pub git_revision: Option<String>,
}

/// A committed entry found by `Store::lookup`.
#[derive(Clone, Debug)]
pub struct Entry {
    dir: PathBuf,
    manifest: Manifest,
}

impl Entry {
    /// The entry's key.
    pub fn key(&self) -> Key {
        self.manifest.key
    }

    /// The stage that produced it.
    pub fn stage(&self) -> &str {
        &self.manifest.stage
    }

    /// The key document it was made for, to explain later why something reruns.
    pub fn key_doc(&self) -> &KeyDoc {
        &self.manifest.key_doc
    }

    /// The whole manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Reads a payload written by `put_json`.
    pub fn get_json<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        let bytes = self.read_checked(name, Some(CODEC_JSON))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::corrupt(self.dir.join(name), format!("invalid JSON: {e}")))
    }

    /// Reads a payload written by `put_bin`.
    pub fn get_bin<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        let bytes = self.read_checked(name, Some(codec::NAME))?;
        codec::decode(&bytes).map_err(|e| StoreError::corrupt(self.dir.join(name), e.to_string()))
    }

    /// Reads any payload file as bytes.
    pub fn get_bytes(&self, name: &str) -> Result<Vec<u8>> {
        self.read_checked(name, None)
    }

    /// The path of a payload file or of a `dir_path` folder, for code that loads from
    /// disk (an HF model directory). Contents are not re-hashed here; `Store::verify` does.
    pub fn path_of(&self, name: &str) -> Result<PathBuf> {
        let known =
            self.manifest.payloads.iter().any(|p| p.name == name) || self.manifest.dirs.iter().any(|d| d == name);
        if !known {
            return Err(self.missing(name));
        }
        Ok(self.dir.join(name))
    }

    /// Checks, before a `dir_path` folder is reused, that its files are the ones the manifest
    /// recorded: every file is there with its recorded size and no other file is; a file
    /// modified after the manifest was written (mtime later than `written_at_ms`) is
    /// re-hashed, and with `rehash` every file is. Sizes and mtimes cost one `stat` per file,
    /// so a model edited in place (even to the same size) is caught without reading it.
    pub fn check_dir(&self, name: &str, rehash: bool) -> Result<()> {
        let root = self.path_of(name)?;
        let prefix = format!("{name}/");
        let recorded: Vec<&Payload> = self.manifest.payloads.iter().filter(|p| p.name.starts_with(&prefix)).collect();
        let present = crate::fsutil::walk_files(&root)?;
        for rel in &present {
            if !recorded.iter().any(|p| p.name[prefix.len()..] == **rel) {
                return Err(StoreError::corrupt(root.join(rel), "a file the manifest does not record"));
            }
        }
        for p in recorded {
            let path = self.dir.join(&p.name);
            let meta = fs::metadata(&path).map_err(|e| StoreError::io("stat", &path, e))?;
            if meta.len() != p.size {
                let reason = format!("{} bytes, manifest says {}", meta.len(), p.size);
                return Err(StoreError::corrupt(path, reason));
            }
            let modified_ms = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(u64::MAX, |d| d.as_millis() as u64);
            if rehash || modified_ms > self.manifest.written_at_ms {
                let (digest, _) = crate::fsutil::hash_file(&path)?;
                if digest != p.blake3 {
                    return Err(StoreError::corrupt(
                        path,
                        "blake3 digest differs from the manifest (edited in place?)",
                    ));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads `name`, checking the codec, the size and the blake3 digest of the manifest.
    fn read_checked(&self, name: &str, codec: Option<&str>) -> Result<Vec<u8>> {
        let payload = self.manifest.payloads.iter().find(|p| p.name == name);
        let payload = payload.ok_or_else(|| self.missing(name))?;
        let path = self.dir.join(name);
        if let Some(expected) = codec {
            if payload.codec != expected {
                return Err(StoreError::Incompatible {
                    what: "payload codec".into(),
                    path,
                    expected: expected.into(),
                    found: payload.codec.clone(),
                });
            }
        }
        let bytes = fs::read(&path).map_err(|e| StoreError::io("read", &path, e))?;
        if bytes.len() as u64 != payload.size {
            let reason = format!("{} bytes, manifest says {}", bytes.len(), payload.size);
            return Err(StoreError::corrupt(path, reason));
        }
        let digest = blake3::hash(&bytes).to_hex().to_string();
        if digest != payload.blake3 {
            return Err(StoreError::corrupt(path, "blake3 digest differs from the manifest"));
        }
        Ok(bytes)
    }

    fn missing(&self, name: &str) -> StoreError {
        StoreError::NotFound {
            what: format!("payload {name:?} in the manifest of entry {}", self.manifest.key),
            path: self.dir.join(name),
        }
    }
}

/// Why a manifest is not usable, split so that lookup can treat both as a miss while
/// verify reports them.
pub(crate) enum ManifestError {
    Missing,
    Unusable(StoreError),
}

/// Reads and checks the manifest of the entry directory `dir` expected to hold
/// `stage`/`key`.
pub(crate) fn read_entry(dir: &Path, stage: &str, key: Key) -> Result<Entry, ManifestError> {
    let path = dir.join(MANIFEST_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ManifestError::Missing),
        Err(e) => return Err(ManifestError::Unusable(StoreError::io("read", &path, e))),
    };
    let manifest = parse_manifest(&path, &bytes, stage, key).map_err(ManifestError::Unusable)?;
    Ok(Entry { dir: dir.to_owned(), manifest })
}

/// Parses and checks the bytes of a manifest found at `path` under `stage`/`key`: the schema
/// tag, the stage and key it names, and that every payload name stays inside the entry.
/// (Public for the fuzz harness; the store calls it on every lookup.)
pub fn parse_manifest(path: &Path, bytes: &[u8], stage: &str, key: Key) -> Result<Manifest> {
    // Check the schema tag before the full parse, so that a manifest of a newer schema is
    // reported as incompatible rather than as corrupt.
    #[derive(Deserialize)]
    struct Head {
        schema: String,
        schema_version: u32,
    }
    let head: Head = serde_json::from_slice(bytes)
        .map_err(|e| StoreError::corrupt(path, format!("manifest does not parse: {e}")))?;
    if head.schema != MANIFEST_SCHEMA || head.schema_version != MANIFEST_VERSION {
        return Err(StoreError::Incompatible {
            what: "manifest schema".into(),
            path: path.to_owned(),
            expected: format!("{MANIFEST_SCHEMA} v{MANIFEST_VERSION}"),
            found: format!("{} v{}", head.schema, head.schema_version),
        });
    }
    let m: Manifest = serde_json::from_slice(bytes)
        .map_err(|e| StoreError::corrupt(path, format!("manifest does not parse: {e}")))?;
    let bad = |reason: String| Err(StoreError::corrupt(path, reason));
    if m.stage != stage || m.key_doc.stage() != stage {
        return bad(format!("manifest is for stage {:?}, found under stage {stage:?}", m.stage));
    }
    if m.stage_version != m.key_doc.stage_version() {
        return bad(format!("stage version {} differs from the key document's", m.stage_version));
    }
    if m.key != key {
        return bad(format!("manifest is for key {}, found under key {key}", m.key));
    }
    // The key document is not re-hashed here: serde_json's default float parser may
    // misread a 17-digit float by one ulp, and that must not turn a hit into a miss.
    // `Store::verify` re-hashes it and reports a difference.
    for name in m.payloads.iter().map(|p| &p.name).chain(&m.dirs) {
        if !is_relative_name(name) {
            return bad(format!("payload name {name:?} is not a relative path inside the entry"));
        }
    }
    Ok(m)
}

/// True for `a/b/c` with no empty, `.` or `..` component and nothing absolute.
pub(crate) fn is_relative_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('\\') && name.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}
