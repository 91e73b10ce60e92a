//! Small filesystem helpers of the store. The mechanics of durable, atomic writes live in
//! `slim_fs` (the workspace's one implementation); this module keeps the store's [`StoreError`] API
//! on top of them, and adds the walks and hashes the store needs.

use std::fs;
use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::error::{Result, StoreError};

/// Writes `value` as pretty JSON to `path` atomically: to a temp file in the same folder,
/// fsynced, then renamed over `path`. Readers see the old file or the new one, never a
/// partial one. Creates the parent folders. For `data/runs/<name>/run.json` and the like.
pub fn write_json_atomic<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    slim_fs::write_json_atomic(path, value).map_err(store_error)
}

/// Writes `bytes` to `path` atomically (see [`write_json_atomic`]).
pub(crate) fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    slim_fs::write_atomic(path, bytes).map_err(store_error)
}

/// Creates `path` (failing if it exists), writes `bytes` and fsyncs it.
pub(crate) fn write_file_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    slim_fs::write_new(path, bytes).map_err(store_error)
}

/// Creates `path` (failing if it exists) for a payload written as a stream; dropped before
/// [`finish_file`], the file is removed.
pub(crate) fn new_file(path: &Path) -> Result<slim_fs::NewFile> {
    slim_fs::NewFile::create(path).map_err(store_error)
}

/// Flushes and fsyncs a file made by [`new_file`].
pub(crate) fn finish_file(f: slim_fs::NewFile) -> Result<()> {
    f.finish().map_err(store_error)
}

/// fsyncs a file that some other code wrote.
pub(crate) fn sync_file(path: &Path) -> Result<()> {
    slim_fs::sync_file(path).map_err(store_error)
}

/// fsyncs a directory so that renames and creations inside it are durable.
pub(crate) fn sync_dir(path: &Path) -> Result<()> {
    slim_fs::sync_dir(path).map_err(store_error)
}

/// `<pid>-<nonce>`, unique among the temp names of all processes on the machine.
pub(crate) fn unique_suffix() -> String {
    slim_fs::unique_suffix()
}

/// The store's error for an error of `slim_fs`: the same operation and path.
fn store_error(e: slim_fs::Error) -> StoreError {
    match e {
        slim_fs::Error::Io { op, path, source } => StoreError::Io { op, path, source },
        slim_fs::Error::Json { path, source } => StoreError::Encode { path, reason: source.to_string() },
        other => {
            StoreError::Io { op: "write", path: other.path().to_owned(), source: io::Error::other(other.to_string()) }
        }
    }
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
    // Read in 64 MiB blocks, each hashed on every core: a memory map would be as fast, but the
    // pages it touches count as the process's resident memory (a 13 GB model entry would make a
    // streamed run look like a 13 GB process).
    use std::io::Read;
    let mut hasher = blake3::Hasher::new();
    let mut file = fs::File::open(path).map_err(|e| StoreError::io("hash", path, e))?;
    let mut buf = vec![0u8; 64 << 20];
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(StoreError::io("hash", path, e)),
            }
        }
        if filled == 0 {
            break;
        }
        hasher.update_rayon(&buf[..filled]);
    }
    Ok((hasher.finalize().to_hex().to_string(), hasher.count()))
}
