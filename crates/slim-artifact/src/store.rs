//! The content-addressed store: `<root>/<stage>/<key>/` entries under a versioned root.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::entry::{self, Entry, ManifestError};
use crate::error::{Result, StoreError};
use crate::explain::{self, Explanation};
use crate::fsutil;
use crate::key::{check_name, Key, KeyDoc};
use crate::writer::EntryWriter;
use crate::{CACHE_FORMAT, FORMAT_FILE, MANIFEST_FILE};

/// A cached entry the explanation may point to: (number of changes, newest first, its key, the changes).
type Candidate = (usize, std::cmp::Reverse<(u64, Key)>, Key, Vec<explain::Change>);

/// Environment variable that overrides [`Store::default_root`].
pub const CACHE_ENV: &str = "SLIMLLM_CACHE";

/// A store rooted at one folder. Cheap to clone; holds no open files.
///
/// Only the store builds paths inside the root; callers hold stage names and [`Key`]s.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// `$SLIMLLM_CACHE` if set and not empty, else `data/cache` (relative to the
    /// current directory).
    pub fn default_root() -> PathBuf {
        match std::env::var_os(CACHE_ENV) {
            Some(v) if !v.is_empty() => PathBuf::from(v),
            _ => PathBuf::from("data/cache"),
        }
    }

    /// Opens the store at `root`, creating it and its `FORMAT` file if needed.
    ///
    /// A root whose `FORMAT` names another cache format is rejected with
    /// [`StoreError::Incompatible`]; its entries are never misread.
    pub fn open(root: &Path) -> Result<Store> {
        fs::create_dir_all(root).map_err(|e| StoreError::io("create folder", root, e))?;
        let path = root.join(FORMAT_FILE);
        let expected = format_line(CACHE_FORMAT);
        match fs::read_to_string(&path) {
            Ok(found) => {
                let found = found.trim_end();
                if found != expected {
                    return Err(StoreError::Incompatible {
                        what: "cache format".into(),
                        path,
                        expected: expected.clone(),
                        found: found.into(),
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Atomic, so that concurrent openers agree; the content is the same for all.
                fsutil::write_bytes_atomic(&path, format!("{expected}\n").as_bytes())?;
            }
            Err(e) => return Err(StoreError::io("read", &path, e)),
        }
        Ok(Store { root: root.to_owned() })
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Starts writing the entry for `doc` in a temp folder
    /// `<root>/<stage>/.tmp-<key>-<pid>-<nonce>/`.
    pub fn begin(&self, doc: &KeyDoc) -> Result<EntryWriter> {
        if doc.cache_format() != CACHE_FORMAT {
            return Err(StoreError::Incompatible {
                what: "key document cache format".into(),
                path: self.root.clone(),
                expected: CACHE_FORMAT.to_string(),
                found: doc.cache_format().to_string(),
            });
        }
        EntryWriter::create(self.stage_dir(doc.stage())?, doc)
    }

    /// The committed entry of `stage` under `key`, or `None` on a miss.
    ///
    /// A folder without a manifest, or whose manifest does not parse, is of another
    /// schema or does not match its place, is incomplete and counts as a miss (a later
    /// commit replaces it). Payloads are checked against their digests when read.
    pub fn lookup(&self, stage: &str, key: &Key) -> Result<Option<Entry>> {
        let dir = self.stage_dir(stage)?.join(key.to_hex());
        match entry::read_entry(&dir, stage, *key) {
            Ok(e) => Ok(Some(e)),
            Err(ManifestError::Missing) => Ok(None),
            Err(ManifestError::Unusable(StoreError::Io { op, path, source })) => {
                Err(StoreError::Io { op, path, source })
            }
            Err(ManifestError::Unusable(_)) => Ok(None),
        }
    }

    /// Says whether `doc` is a hit, and if not, how it differs from the closest entry of
    /// the same stage: the one with the fewest differences, the most recently written
    /// (by manifest time) among equals.
    pub fn explain(&self, doc: &KeyDoc) -> Result<Explanation> {
        let key = doc.key();
        if self.lookup(doc.stage(), &key)?.is_some() {
            return Ok(Explanation::Hit { key });
        }
        let mut best: Option<Candidate> = None;
        for k in self.keys_of(doc.stage())? {
            if let Some(e) = self.lookup(doc.stage(), &k)? {
                let changes = explain::diff(e.key_doc(), doc);
                let rank = (changes.len(), std::cmp::Reverse((e.manifest().written_at_ms, e.key())));
                if best.as_ref().is_none_or(|b| rank < (b.0, b.1)) {
                    best = Some((rank.0, rank.1, e.key(), changes));
                }
            }
        }
        Ok(match best {
            None => Explanation::NoPrevious { key },
            Some((_, _, previous, changes)) => Explanation::Changed { key, previous, changes },
        })
    }

    /// Every committed-looking entry folder, as (stage, key), sorted. Folders whose names
    /// are not keys are skipped; whether each has a usable manifest is not checked.
    pub fn entries(&self) -> Result<Vec<(String, Key)>> {
        let mut out = Vec::new();
        for stage in self.stages()? {
            for key in self.keys_of(&stage)? {
                out.push((stage.clone(), key));
            }
        }
        Ok(out)
    }

    /// Re-hashes every entry against its manifest and lists what is wrong; an empty list
    /// means every entry is intact. Temp folders are not entries and are skipped.
    ///
    /// Symbolic links are problems wherever they sit: an entry folder that is a link (to a
    /// folder elsewhere, or dangling, which makes every later commit of its key fail) and a
    /// link inside an entry. The store writes neither, and bytes behind a link can change
    /// without the entry changing. [`Store::remove`] removes such an entry's link, never
    /// what it points to.
    pub fn verify(&self) -> Result<Vec<Problem>> {
        let mut problems = Vec::new();
        for stage in self.stages()? {
            for (name, path, _) in read_dir(&self.stage_dir(&stage)?)? {
                let Some(key) = Key::parse(&name) else { continue };
                if is_symlink(&path)? {
                    let reason = "a symbolic link where the store keeps entry folders (rerun with --repair to \
                                  remove the link; what it points to is left alone)";
                    problems.push(Problem { stage: stage.clone(), key, path, reason: reason.into() });
                }
            }
        }
        for (stage, key) in self.entries()? {
            let dir = self.stage_dir(&stage)?.join(key.to_hex());
            let mut report =
                |path: PathBuf, reason: String| problems.push(Problem { stage: stage.clone(), key, path, reason });
            let e = match entry::read_entry(&dir, &stage, key) {
                Ok(e) => e,
                Err(ManifestError::Missing) => {
                    report(dir.join(MANIFEST_FILE), "no manifest: incomplete entry".into());
                    continue;
                }
                Err(ManifestError::Unusable(err)) => {
                    report(dir.join(MANIFEST_FILE), err.to_string());
                    continue;
                }
            };
            let rehashed = e.key_doc().key();
            if rehashed != key {
                let reason = format!("key document hashes to {rehashed}, not {key}");
                report(dir.join(MANIFEST_FILE), reason);
            }
            let listed: BTreeSet<&str> = e.manifest().payloads.iter().map(|p| p.name.as_str()).collect();
            let (files, links) = entry_files(e.dir())?;
            for name in &links {
                report(e.dir().join(name), "a symbolic link or special file inside the entry".into());
            }
            for p in &e.manifest().payloads {
                let path = e.dir().join(&p.name);
                if links.contains(&p.name) {
                    continue;
                }
                if !files.contains(&p.name) {
                    report(path, format!("payload {:?} is missing", p.name));
                    continue;
                }
                let (digest, size) = fsutil::hash_file(&path)?;
                if size != p.size {
                    report(path, format!("{size} bytes, manifest says {}", p.size));
                } else if digest != p.blake3 {
                    report(path, "blake3 digest differs from the manifest".into());
                }
            }
            for name in &files {
                if name != MANIFEST_FILE && !listed.contains(name.as_str()) {
                    report(e.dir().join(name), "file not listed in the manifest".into());
                }
            }
        }
        Ok(problems)
    }

    /// Removes the entry of `stage` under `key`; [`StoreError::NotFound`] if there is
    /// none. The folder leaves its place atomically, so readers never see half of it. An
    /// entry that is a symbolic link loses the link only, never what it points to.
    pub fn remove(&self, stage: &str, key: &Key) -> Result<()> {
        let stage_dir = self.stage_dir(stage)?;
        let dir = stage_dir.join(key.to_hex());
        let aside = stage_dir.join(format!(".tmp-{key}-removed-{}", fsutil::unique_suffix()));
        match fs::rename(&dir, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound { what: format!("entry {stage}/{key}"), path: dir });
            }
            Err(e) => return Err(StoreError::io("move aside", &dir, e)),
        }
        if is_symlink(&aside)? {
            return fs::remove_file(&aside).map_err(|e| StoreError::io("remove", &aside, e));
        }
        fs::remove_dir_all(&aside).map_err(|e| StoreError::io("remove", &aside, e))
    }

    /// Removes every entry not in `keep` and returns what was removed. Temp folders are
    /// left to [`Store::clean_tmp`]; files at the root (`FORMAT`, `_hashes.json`) are kept.
    pub fn gc(&self, keep: &BTreeSet<(String, Key)>) -> Result<Vec<(String, Key)>> {
        let mut removed = Vec::new();
        for (stage, key) in self.entries()? {
            if keep.contains(&(stage.clone(), key)) {
                continue;
            }
            match self.remove(&stage, &key) {
                Ok(()) | Err(StoreError::NotFound { .. }) => removed.push((stage, key)),
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    /// Removes `.tmp-*` folders (left by crashed writers) last modified more than
    /// `older_than` ago; pass more than the longest stage run, so that live writers are
    /// spared. Returns how many were removed.
    pub fn clean_tmp(&self, older_than: Duration) -> Result<usize> {
        let now = SystemTime::now();
        let mut n = 0;
        for stage in self.stages()? {
            let stage_dir = self.root.join(&stage);
            for item in read_dir(&stage_dir)? {
                let (name, path, is_dir) = item;
                if !is_dir || !name.starts_with(".tmp-") {
                    continue;
                }
                let modified = fs::metadata(&path).and_then(|m| m.modified());
                let age = match modified {
                    Ok(t) => now.duration_since(t).unwrap_or_default(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(StoreError::io("stat", &path, e)),
                };
                if age > older_than {
                    match fs::remove_dir_all(&path) {
                        Ok(()) => n += 1,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(StoreError::io("remove", &path, e)),
                    }
                }
            }
        }
        Ok(n)
    }

    fn stage_dir(&self, stage: &str) -> Result<PathBuf> {
        check_name("stage name", stage)?;
        Ok(self.root.join(stage))
    }

    /// Stage folders: folders under the root with valid stage names.
    fn stages(&self) -> Result<Vec<String>> {
        let mut out: Vec<String> = read_dir(&self.root)?
            .into_iter()
            .filter(|(name, _, is_dir)| *is_dir && check_name("stage name", name).is_ok())
            .map(|(name, _, _)| name)
            .collect();
        out.sort();
        Ok(out)
    }

    /// Entry folders of a stage: folders named by a key.
    fn keys_of(&self, stage: &str) -> Result<Vec<Key>> {
        let dir = self.stage_dir(stage)?;
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut out: Vec<Key> = read_dir(&dir)?
            .into_iter()
            .filter(|(_, _, is_dir)| *is_dir)
            .filter_map(|(name, _, _)| Key::parse(&name))
            .collect();
        out.sort();
        Ok(out)
    }
}

/// One thing [`Store::verify`] found wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Stage of the entry.
    pub stage: String,
    /// Key of the entry.
    pub key: Key,
    /// The file at fault.
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}: {}: {}", self.stage, self.key, self.path.display(), self.reason)
    }
}

fn format_line(format: u32) -> String {
    format!("slimllm-cache {format}")
}

/// Whether `path` itself (not what it points to) is a symbolic link.
fn is_symlink(path: &Path) -> Result<bool> {
    fs::symlink_metadata(path).map(|m| m.file_type().is_symlink()).map_err(|e| StoreError::io("stat", path, e))
}

/// The regular files under an entry folder and, apart, everything else that is not a folder
/// (symbolic links, devices, sockets), as `/`-separated relative paths; links are not followed.
/// For [`Store::verify`], which reports the second kind where `fsutil::walk_files` would fail.
fn entry_files(dir: &Path) -> Result<(BTreeSet<String>, BTreeSet<String>)> {
    let (mut files, mut others) = (BTreeSet::new(), BTreeSet::new());
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        for (name, path, _) in read_dir(&d)? {
            let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            let ft = fs::symlink_metadata(&path).map_err(|e| StoreError::io("stat", &path, e))?.file_type();
            if ft.is_dir() {
                stack.push((path, rel));
            } else if ft.is_file() {
                files.insert(rel);
            } else {
                others.insert(rel);
            }
        }
    }
    Ok((files, others))
}

/// (name, path, is_dir) of each item of a folder.
fn read_dir(dir: &Path) -> Result<Vec<(String, PathBuf, bool)>> {
    let rd = fs::read_dir(dir).map_err(|e| StoreError::io("list", dir, e))?;
    let mut out = Vec::new();
    for item in rd {
        let item = item.map_err(|e| StoreError::io("list", dir, e))?;
        let is_dir = item.file_type().map(|t| t.is_dir()).unwrap_or(false);
        out.push((item.file_name().to_string_lossy().into_owned(), item.path(), is_dir));
    }
    Ok(out)
}
