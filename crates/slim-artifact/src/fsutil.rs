//! Small filesystem helpers: durable writes, atomic replacement, unique temp names.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::error::{Result, StoreError};

/// Writes `value` as pretty JSON to `path` atomically: to a temp file in the same folder,
/// fsynced, then renamed over `path`. Readers see the old file or the new one, never a
/// partial one. Creates the parent folders. For `data/runs/<name>/run.json` and the like.
pub fn write_json_atomic<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| StoreError::Encode { path: path.to_owned(), reason: e.to_string() })?;
    bytes.push(b'\n');
    write_bytes_atomic(path, &bytes)
}

pub(crate) fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(|e| StoreError::io("create folder", &parent, e))?;
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = parent.join(format!(".{file_name}.tmp-{}", unique_suffix()));
    let result = write_file_synced(&tmp, bytes)
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| StoreError::io("rename into place", path, e)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(&parent)
}

/// Creates `path` (failing if it exists), writes `bytes` and fsyncs it.
pub(crate) fn write_file_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f =
        File::options().write(true).create_new(true).open(path).map_err(|e| StoreError::io("create", path, e))?;
    f.write_all(bytes).map_err(|e| StoreError::io("write", path, e))?;
    f.sync_all().map_err(|e| StoreError::io("fsync", path, e))
}

/// fsyncs a file that some other code wrote.
pub(crate) fn sync_file(path: &Path) -> Result<()> {
    let f = File::open(path).map_err(|e| StoreError::io("open", path, e))?;
    f.sync_all().map_err(|e| StoreError::io("fsync", path, e))
}

/// fsyncs a directory so that renames and creations inside it are durable.
pub(crate) fn sync_dir(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let f = File::open(path).map_err(|e| StoreError::io("open folder", path, e))?;
        f.sync_all().map_err(|e| StoreError::io("fsync folder", path, e))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// `<pid>-<nonce>`, unique among the temp names of all processes on the machine.
pub(crate) fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{}-{:x}{:08x}", std::process::id(), n, nanos)
}

pub(crate) fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    since.as_millis() as u64
}

/// Every regular file under `dir`, as `/`-separated paths relative to `dir`, sorted.
/// Symbolic links are rejected: an entry must hold its own bytes.
pub(crate) fn walk_files(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    walk(dir, "", &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<()> {
    let rd = fs::read_dir(dir).map_err(|e| StoreError::io("list", dir, e))?;
    for item in rd {
        let item = item.map_err(|e| StoreError::io("list", dir, e))?;
        let path = item.path();
        let name = item.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        let ft = item.file_type().map_err(|e| StoreError::io("stat", &path, e))?;
        if ft.is_dir() {
            walk(&path, &rel, out)?;
        } else if ft.is_file() {
            out.push(rel);
        } else {
            return Err(StoreError::corrupt(&path, "not a regular file or folder (symbolic link?)"));
        }
    }
    Ok(())
}

/// blake3 of a file and its size, reading large files in parallel.
pub(crate) fn hash_file(path: &Path) -> Result<(String, u64)> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_mmap_rayon(path).map_err(|e| StoreError::io("hash", path, e))?;
    Ok((hasher.finalize().to_hex().to_string(), hasher.count()))
}
