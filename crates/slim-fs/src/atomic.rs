//! One atomic file write: a unique temporary name in the destination's folder, write, fsync,
//! rename over the destination, fsync the folder. On any error the temporary file is removed.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically (see [`AtomicFile`]), creating missing parent folders.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(path)?;
    f.write_all(bytes)?;
    f.commit()
}

/// Writes `value` as pretty-printed JSON and a final newline to `path`, atomically.
pub fn write_json_atomic<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| Error::Json { path: path.to_owned(), source })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Creates `path` (failing if anything is there), writes `bytes` and fsyncs it; on an error the
/// partial file is removed. For folders nobody reads until they are renamed into place.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = NewFile::create(path)?;
    f.write_all(bytes).map_err(|e| Error::io("write", path, e))?;
    f.finish()
}

/// A file created where nothing was, written as a stream: what [`write_new`] does, for
/// content too large to hold as one buffer (a cache entry's statistics, encoded as they are
/// written). [`NewFile::finish`] flushes and fsyncs it; dropped unfinished (an error on the
/// way, a panic) it is removed. For folders nobody reads until they are renamed into place.
#[derive(Debug)]
pub struct NewFile {
    path: PathBuf,
    /// `None` once finished.
    file: Option<BufWriter<File>>,
}

impl NewFile {
    /// Creates `path`, failing if anything is there.
    pub fn create(path: &Path) -> Result<NewFile> {
        let file = File::options().write(true).create_new(true).open(path).map_err(|e| Error::io("create", path, e))?;
        Ok(NewFile { path: path.to_owned(), file: Some(BufWriter::with_capacity(1 << 20, file)) })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes and fsyncs the file and closes it; on an error it is removed.
    pub fn finish(mut self) -> Result<()> {
        let Some(w) = self.file.take() else { return Ok(()) };
        let done = w
            .into_inner()
            .map_err(|e| Error::io("write", &self.path, e.into_error()))
            .and_then(|f| f.sync_all().map_err(|e| Error::io("fsync", &self.path, e)));
        if done.is_err() {
            let _ = fs::remove_file(&self.path);
        }
        done
    }

    fn open(&mut self) -> io::Result<&mut BufWriter<File>> {
        self.file.as_mut().ok_or_else(|| io::Error::other("the file was already finished"))
    }
}

impl Write for NewFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.open()?.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.open()?.flush()
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        if let Some(w) = self.file.take() {
            // Close without flushing what is buffered: the file is thrown away.
            drop(w.into_parts());
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A file being written under a temporary name beside its destination.
///
/// [`AtomicFile::commit`] flushes and fsyncs it, renames it over the destination and fsyncs the
/// folder, so that after a crash the destination holds either its old content or the complete new
/// one. Dropping it without a commit (an error on the way, a panic) removes the temporary file.
/// The temporary name is `.<name>.tmp-<pid>-<nonce>`, unique per process and call.
#[derive(Debug)]
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    folder: PathBuf,
    /// `None` once the data is flushed and fsynced ([`AtomicFile::finish_writing`]).
    file: Option<BufWriter<File>>,
    renamed: bool,
}

impl AtomicFile {
    /// Starts writing `path`, creating missing parent folders.
    pub fn create(path: &Path) -> Result<AtomicFile> {
        let folder = folder_of(path);
        fs::create_dir_all(&folder).map_err(|e| Error::io("create folder", &folder, e))?;
        let name = path.file_name().ok_or_else(|| {
            Error::io("write", path, io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))
        })?;
        let tmp = folder.join(format!(".{}.tmp-{}", name.to_string_lossy(), unique_suffix()));
        let file = File::options().write(true).create_new(true).open(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        Ok(AtomicFile {
            path: path.to_owned(),
            tmp,
            folder,
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            renamed: false,
        })
    }

    /// The destination.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `bytes`.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        let Some(file) = self.file.as_mut() else {
            let closed = io::Error::other("the file was already flushed and closed");
            return Err(Error::io("write", &self.tmp, closed));
        };
        file.write_all(bytes).map_err(|e| Error::io("write", &self.tmp, e))
    }

    /// Flushes and fsyncs the data and closes the file, keeping the temporary name; a later
    /// [`AtomicFile::commit`] only renames. Lets a writer of several files close each as it is done
    /// and rename them all at the end.
    pub fn finish_writing(&mut self) -> Result<()> {
        let Some(w) = self.file.take() else { return Ok(()) };
        let f = w.into_inner().map_err(|e| Error::io("write", &self.tmp, e.into_error()))?;
        f.sync_all().map_err(|e| Error::io("fsync", &self.tmp, e))
    }

    /// Makes the new content the destination's: flush, fsync, rename, fsync the folder.
    pub fn commit(mut self) -> Result<()> {
        self.finish_writing()?;
        fs::rename(&self.tmp, &self.path).map_err(|e| Error::io("rename into place", &self.path, e))?;
        self.renamed = true;
        sync_dir(&self.folder)
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.renamed {
            // Close without flushing what is buffered: the file is thrown away.
            if let Some(w) = self.file.take() {
                drop(w.into_parts());
            }
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// fsyncs a file that some other code wrote.
pub fn sync_file(path: &Path) -> Result<()> {
    let f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    f.sync_all().map_err(|e| Error::io("fsync", path, e))
}

/// fsyncs a folder, so that renames and creations inside it survive a crash (a no-op where folders
/// cannot be opened, on Windows).
pub fn sync_dir(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let f = File::open(path).map_err(|e| Error::io("open folder", path, e))?;
        f.sync_all().map_err(|e| Error::io("fsync folder", path, e))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// `<pid>-<counter><nanos>`, unique among the temporary names of all processes on the machine.
pub fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{}-{:x}{:08x}", std::process::id(), n, nanos)
}

/// The folder `path` lives in (`.` for a bare file name).
pub(crate) fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}
