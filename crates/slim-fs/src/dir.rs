//! Atomic folder installs: build a folder under a temporary name beside its destination, then
//! rename it into place.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::atomic::{folder_of, sync_dir, unique_suffix};
use crate::error::{Error, Result};

/// What [`DirInstall`] does when its destination already holds something (an empty folder does
/// not count: it is replaced in both cases).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Fail with [`Error::Occupied`], touching nothing.
    Refuse,
    /// Replace it, but only once the new folder is complete.
    Replace,
}

/// A folder being built under `.<name>.tmp-<pid>-<nonce>` beside its destination.
///
/// Write everything into [`DirInstall::path`], then [`DirInstall::commit`]. Until the commit the
/// destination is untouched; dropping the install without a commit (an error on the way, a panic)
/// removes the temporary folder. The only things ever removed are that temporary folder and, under
/// [`Existing::Replace`], what was at the destination, after the new folder is complete.
///
/// A process killed before the commit leaves its temporary folder behind; nothing reads it, and
/// nothing here removes it, because another process may be using a folder of the same pattern.
#[derive(Debug)]
pub struct DirInstall {
    dest: PathBuf,
    tmp: PathBuf,
    folder: PathBuf,
    existing: Existing,
    committed: bool,
}

impl DirInstall {
    /// Checks the destination (under [`Existing::Refuse`], something there is an error right away),
    /// creates missing parent folders and the temporary folder.
    pub fn begin(dest: &Path, existing: Existing) -> Result<DirInstall> {
        if let (Some(what), Existing::Refuse) = (occupant(dest)?, existing) {
            return Err(Error::Occupied { path: dest.to_owned(), what });
        }
        let name = dest.file_name().ok_or_else(|| {
            Error::io("create", dest, io::Error::new(io::ErrorKind::InvalidInput, "the path names no folder"))
        })?;
        let folder = folder_of(dest);
        fs::create_dir_all(&folder).map_err(|e| Error::io("create folder", &folder, e))?;
        let tmp = folder.join(format!(".{}.tmp-{}", name.to_string_lossy(), unique_suffix()));
        fs::create_dir(&tmp).map_err(|e| Error::io("create folder", &tmp, e))?;
        Ok(DirInstall { dest: dest.to_owned(), tmp, folder, existing, committed: false })
    }

    /// The temporary folder to write into.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// The destination.
    pub fn destination(&self) -> &Path {
        &self.dest
    }

    /// fsyncs everything in the temporary folder and renames it to the destination.
    ///
    /// Under [`Existing::Replace`] an occupied destination is first renamed aside to
    /// `.<name>.old-<pid>-<nonce>`, then the new folder takes its place and the old one is removed.
    /// If the second rename fails, the old folder is renamed back. A crash between the two renames
    /// leaves the old folder complete under its aside name, never deleted.
    pub fn commit(mut self) -> Result<()> {
        sync_tree(&self.tmp)?;
        let replaced = match occupant(&self.dest)? {
            None => {
                // An empty folder is replaced by the rename itself on unix; elsewhere it must go first.
                #[cfg(not(unix))]
                let _ = fs::remove_dir(&self.dest);
                fs::rename(&self.tmp, &self.dest).map_err(|e| Error::io("rename into place", &self.dest, e))?;
                None
            }
            Some(what) if self.existing == Existing::Refuse => {
                return Err(Error::Occupied { path: self.dest.clone(), what });
            }
            Some(_) => {
                let name = self.dest.file_name().expect("checked in begin").to_string_lossy().into_owned();
                let aside = self.folder.join(format!(".{name}.old-{}", unique_suffix()));
                fs::rename(&self.dest, &aside).map_err(|e| Error::io("move aside", &self.dest, e))?;
                if let Err(e) = fs::rename(&self.tmp, &self.dest) {
                    let _ = fs::rename(&aside, &self.dest);
                    return Err(Error::io("rename into place", &self.dest, e));
                }
                Some(aside)
            }
        };
        self.committed = true;
        sync_dir(&self.folder)?;
        if let Some(aside) = replaced {
            let is_dir = fs::symlink_metadata(&aside).map(|m| m.is_dir()).unwrap_or(false);
            let removed = if is_dir { fs::remove_dir_all(&aside) } else { fs::remove_file(&aside) };
            removed.map_err(|e| Error::io("remove the replaced copy (the new folder is in place)", &aside, e))?;
        }
        Ok(())
    }
}

impl Drop for DirInstall {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

/// What occupies `dest`, if anything: `None` when nothing is there or an empty folder is.
fn occupant(dest: &Path) -> Result<Option<&'static str>> {
    let meta = match fs::symlink_metadata(dest) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("inspect", dest, e)),
    };
    if meta.file_type().is_symlink() {
        return Ok(Some("is a symbolic link"));
    }
    if !meta.is_dir() {
        return Ok(Some("exists and is not a folder"));
    }
    let mut entries = fs::read_dir(dest).map_err(|e| Error::io("list", dest, e))?;
    Ok(entries.next().is_some().then_some("is a folder that is not empty"))
}

/// fsyncs every file and folder under `dir`, `dir` included.
fn sync_tree(dir: &Path) -> Result<()> {
    for item in fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
        let item = item.map_err(|e| Error::io("list", dir, e))?;
        let path = item.path();
        let ft = item.file_type().map_err(|e| Error::io("inspect", &path, e))?;
        if ft.is_dir() {
            sync_tree(&path)?;
        } else if ft.is_file() {
            crate::atomic::sync_file(&path)?;
        }
    }
    sync_dir(dir)
}
