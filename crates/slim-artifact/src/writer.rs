//! Writing one entry: payloads go into a private temp folder, `commit` seals it with the
//! manifest and renames it into place.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::entry::{self, Manifest, Payload, Producer, CODEC_BYTES, CODEC_FILE, CODEC_JSON};
use crate::error::{Result, StoreError};
use crate::fsutil;
use crate::key::{check_name, Key, KeyDoc};
use crate::{codec, MANIFEST_FILE, MANIFEST_SCHEMA, MANIFEST_VERSION};

/// An entry being written, made by `Store::begin`.
///
/// Nothing is visible to readers until [`EntryWriter::commit`]. Dropping the writer
/// without committing removes its temp folder.
#[derive(Debug)]
pub struct EntryWriter {
    doc: KeyDoc,
    key: Key,
    /// `<root>/<stage>/`.
    stage_dir: PathBuf,
    /// `<root>/<stage>/.tmp-<key>-<pid>-<nonce>/`.
    tmp: PathBuf,
    /// Codec of each file written by `put_*`, with its digest and size.
    written: BTreeMap<String, Payload>,
    dirs: BTreeSet<String>,
    producer: Producer,
    /// Set once the temp folder has been renamed away or removed.
    done: bool,
}

impl EntryWriter {
    pub(crate) fn create(stage_dir: PathBuf, doc: &KeyDoc) -> Result<EntryWriter> {
        let key = doc.key();
        fs::create_dir_all(&stage_dir).map_err(|e| StoreError::io("create folder", &stage_dir, e))?;
        let tmp = stage_dir.join(format!(".tmp-{key}-{}", fsutil::unique_suffix()));
        fs::create_dir(&tmp).map_err(|e| StoreError::io("create folder", &tmp, e))?;
        Ok(EntryWriter {
            doc: doc.clone(),
            key,
            stage_dir,
            tmp,
            written: BTreeMap::new(),
            dirs: BTreeSet::new(),
            producer: Producer {
                name: env!("CARGO_PKG_NAME").into(),
                version: env!("CARGO_PKG_VERSION").into(),
                git_revision: None,
            },
            done: false,
        })
    }

    /// The key the entry will be committed under.
    pub fn key(&self) -> Key {
        self.key
    }

    /// Records the producing crate in the manifest; by default it is `slim-artifact`.
    /// Call with `env!("CARGO_PKG_NAME")`, `env!("CARGO_PKG_VERSION")`.
    pub fn set_producer(&mut self, name: &str, version: &str, git_revision: Option<&str>) {
        self.producer =
            Producer { name: name.into(), version: version.into(), git_revision: git_revision.map(Into::into) };
    }

    /// Writes `value` as pretty JSON to payload `name`.
    pub fn put_json<T: Serialize + ?Sized>(&mut self, name: &str, value: &T) -> Result<()> {
        let path = self.payload_path(name)?;
        let mut bytes = serde_json::to_vec_pretty(value)
            .map_err(|e| StoreError::Encode { path: path.clone(), reason: e.to_string() })?;
        bytes.push(b'\n');
        self.write(name, &path, &bytes, CODEC_JSON)
    }

    /// Writes `value` in the binary [`codec`] to payload `name`; for large numeric
    /// structs such as `MlpStats`.
    ///
    /// The encoding streams into the file and its hash: a LLaMA-7B layer's MLP statistics are
    /// never also held as a 485 MB byte buffer.
    pub fn put_bin<T: Serialize + ?Sized>(&mut self, name: &str, value: &T) -> Result<()> {
        let path = self.payload_path(name)?;
        let out = fsutil::new_file(&path)?;
        let mut w = HashingWriter { out, hash: blake3::Hasher::new(), err: None };
        // On an error `w` is dropped unfinished, which removes the partial file.
        let size = match (codec::encode_into(value, &mut w), w.err.take()) {
            (Ok(size), None) => size,
            (_, Some(e)) => return Err(StoreError::io("write", &path, e)),
            (Err(e), None) => return Err(StoreError::Encode { path, reason: e.to_string() }),
        };
        let HashingWriter { out, hash, .. } = w;
        fsutil::finish_file(out)?;
        let payload = Payload {
            name: name.into(),
            size: size as u64,
            blake3: hash.finalize().to_hex().to_string(),
            codec: codec::NAME.into(),
        };
        self.written.insert(name.into(), payload);
        Ok(())
    }

    /// Writes raw bytes (a safetensors file, say) to payload `name`.
    pub fn put_bytes(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.payload_path(name)?;
        self.write(name, &path, bytes, CODEC_BYTES)
    }

    /// Creates the folder payload `name` inside the temp folder and returns its path, for
    /// the caller to fill (an HF model directory). At commit every file under it is
    /// fsynced, hashed and listed in the manifest.
    pub fn dir_path(&mut self, name: &str) -> Result<PathBuf> {
        let path = self.payload_path(name)?;
        fs::create_dir_all(&path).map_err(|e| StoreError::io("create folder", &path, e))?;
        self.dirs.insert(name.to_owned());
        Ok(path)
    }

    /// Seals the entry: fsyncs every payload, writes `manifest.json` last, and renames
    /// the temp folder to `<root>/<stage>/<key>/`.
    ///
    /// If a complete entry for the key is already there (another writer won the race),
    /// this writer's temp folder is dropped and the key returned: entries are
    /// content-addressed, so both are equivalent. An incomplete folder in the way (no
    /// usable manifest) is moved aside and replaced.
    pub fn commit(mut self) -> Result<Key> {
        let manifest = self.seal()?;
        let dest = self.stage_dir.join(self.key.to_hex());
        let stage = self.doc.stage().to_owned();
        // A few rounds suffice: each round either places the entry, finds a complete one,
        // or removes one incomplete folder that was in the way.
        for _ in 0..8 {
            match entry::read_entry(&dest, &stage, self.key) {
                Ok(_) => {
                    self.discard();
                    return Ok(self.key);
                }
                Err(entry::ManifestError::Missing | entry::ManifestError::Unusable(_)) if dest.exists() => {
                    let aside = self.stage_dir.join(format!(".tmp-{}-broken-{}", self.key, fsutil::unique_suffix()));
                    // Another writer may move it first; either way it is gone from `dest`.
                    if fs::rename(&dest, &aside).is_ok() {
                        let _ = fs::remove_dir_all(&aside);
                    }
                    continue;
                }
                Err(_) => {}
            }
            match fs::rename(&self.tmp, &dest) {
                Ok(()) => {
                    self.done = true;
                    fsutil::sync_dir(&self.stage_dir)?;
                    debug_assert_eq!(manifest.key, self.key);
                    return Ok(self.key);
                }
                // The destination appeared meanwhile: check it on the next round.
                Err(_) if dest.exists() => continue,
                Err(e) => return Err(StoreError::io("rename into place", &dest, e)),
            }
        }
        Err(StoreError::corrupt(&dest, "cannot place the entry: the folder keeps changing"))
    }

    /// Hashes everything, writes the manifest, fsyncs the temp folder.
    fn seal(&mut self) -> Result<Manifest> {
        let mut payloads = Vec::new();
        for name in fsutil::walk_files(&self.tmp)? {
            let path = self.tmp.join(&name);
            if let Some(p) = self.written.get(&name) {
                payloads.push(p.clone());
                continue;
            }
            if !self.dirs.iter().any(|d| name.starts_with(&format!("{d}/"))) {
                let reason = "file in the temp folder that no put_* or dir_path made";
                return Err(StoreError::corrupt(path, reason));
            }
            fsutil::sync_file(&path)?;
            let (blake3, size) = fsutil::hash_file(&path)?;
            payloads.push(Payload { name, size, blake3, codec: CODEC_FILE.into() });
        }
        for p in self.written.values() {
            if !payloads.iter().any(|q| q.name == p.name) {
                return Err(StoreError::NotFound {
                    what: format!("payload {:?} written earlier", p.name),
                    path: self.tmp.join(&p.name),
                });
            }
        }
        for dir in &self.dirs {
            let path = self.tmp.join(dir);
            fsutil::sync_dir(&path)?;
        }
        let manifest = Manifest {
            schema: MANIFEST_SCHEMA.into(),
            schema_version: MANIFEST_VERSION,
            stage: self.doc.stage().into(),
            stage_version: self.doc.stage_version(),
            key: self.key,
            key_doc: self.doc.clone(),
            payloads,
            dirs: self.dirs.iter().cloned().collect(),
            producer: self.producer.clone(),
            written_at_ms: fsutil::now_ms(),
        };
        let path = self.tmp.join(MANIFEST_FILE);
        let mut bytes = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| StoreError::Encode { path: path.clone(), reason: e.to_string() })?;
        bytes.push(b'\n');
        fsutil::write_file_synced(&path, &bytes)?;
        fsutil::sync_dir(&self.tmp)?;
        Ok(manifest)
    }

    /// Validates a payload name and returns its path in the temp folder, creating
    /// parent folders. Names are `/`-separated components of `[A-Za-z0-9._-]`.
    fn payload_path(&self, name: &str) -> Result<PathBuf> {
        for part in name.split('/') {
            check_name("payload name", part)?;
        }
        if name == MANIFEST_FILE {
            return Err(StoreError::InvalidName {
                what: "payload name",
                value: name.into(),
                reason: "manifest.json is the commit marker",
            });
        }
        let taken = self.written.contains_key(name)
            || self.dirs.iter().any(|d| d == name || name.starts_with(&format!("{d}/")));
        if taken {
            return Err(StoreError::InvalidName {
                what: "payload name",
                value: name.into(),
                reason: "already written in this entry",
            });
        }
        let path = self.tmp.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| StoreError::io("create folder", parent, e))?;
        }
        Ok(path)
    }

    fn write(&mut self, name: &str, path: &Path, bytes: &[u8], codec: &str) -> Result<()> {
        fsutil::write_file_synced(path, bytes)?;
        let payload = Payload {
            name: name.into(),
            size: bytes.len() as u64,
            blake3: blake3::hash(bytes).to_hex().to_string(),
            codec: codec.into(),
        };
        self.written.insert(name.into(), payload);
        Ok(())
    }

    fn discard(&mut self) {
        if !self.done {
            let _ = fs::remove_dir_all(&self.tmp);
            self.done = true;
        }
    }
}

/// Bytes on their way to a payload file, hashed as they pass; the first I/O error is kept so that
/// it is reported as one (the encoder would wrap it in its own message).
struct HashingWriter {
    out: slim_fs::NewFile,
    hash: blake3::Hasher,
    err: Option<io::Error>,
}

impl io::Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.out.write(buf) {
            Ok(n) => {
                self.hash.update(&buf[..n]);
                Ok(n)
            }
            Err(e) => {
                let kind = e.kind();
                self.err.get_or_insert(e);
                Err(io::Error::from(kind))
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl Drop for EntryWriter {
    fn drop(&mut self) {
        self.discard();
    }
}
