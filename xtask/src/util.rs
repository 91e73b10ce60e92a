//! Small helpers shared by the xtask commands: running programs, hashing files, atomic writes and `.done` markers.
//!
//! Everything here is plain `std`; xtask must keep building in seconds.

use std::{
    ffi::OsStr,
    fs,
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, format_err, Context};
use md5::Md5;
use sha2::{Digest, Sha256};

/// The repository root (the parent of the xtask crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the repository root")
        .to_path_buf()
}

/// The cargo that runs us (`$CARGO`), or `cargo` from `PATH`.
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// Prints a command line, runs it in `dir` and fails unless it exits with status 0.
pub fn run(cmd: &mut Command, dir: &Path) -> anyhow::Result<()> {
    cmd.current_dir(dir);
    let shown = show(cmd);
    eprintln!("$ {shown}");
    let status = cmd.status().with_context(|| format!("cannot start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed: {status}");
    }
    Ok(())
}

/// Like [`run`], but captures and returns stdout (stderr still goes to the terminal); stdout is echoed too.
pub fn run_capture(cmd: &mut Command, dir: &Path) -> anyhow::Result<String> {
    cmd.current_dir(dir).stdout(Stdio::piped());
    let shown = show(cmd);
    eprintln!("$ {shown}");
    let out = cmd.output().with_context(|| format!("cannot start `{shown}`"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{stdout}");
    if !out.status.success() {
        bail!("`{shown}` failed: {}", out.status);
    }
    Ok(stdout)
}

/// Whether a program can be found on `PATH`.
pub fn have_program(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false)
}

fn show(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a: &OsStr| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Lower-case hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    hash_file::<Sha256>(path)
}

/// Lower-case hex md5 of a file, streamed.
pub fn md5_file(path: &Path) -> anyhow::Result<String> {
    hash_file::<Md5>(path)
}

fn hash_file<D: Digest>(path: &Path) -> anyhow::Result<String> {
    let mut file = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = D::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Which hash a [`verify`] call checks.
#[derive(Clone, Copy)]
pub enum HashKind {
    /// SHA-256.
    Sha256,
    /// MD5 (only where the reference publishes md5, as for PTB).
    Md5,
}

/// Checks a file's hash and fails with a message naming the file, the expected and the actual hash.
pub fn verify(path: &Path, kind: HashKind, expected: &str) -> anyhow::Result<()> {
    let (name, actual) = match kind {
        HashKind::Sha256 => ("sha256", sha256_file(path)?),
        HashKind::Md5 => ("md5", md5_file(path)?),
    };
    if actual != expected {
        bail!("checksum mismatch for {}: expected {name} {expected}, actual {name} {actual}", path.display());
    }
    eprintln!("  verified {name} {actual}  {}", path.display());
    Ok(())
}

/// Checks a file's size in bytes.
pub fn verify_size(path: &Path, expected: u64) -> anyhow::Result<()> {
    let actual = fs::metadata(path).with_context(|| format!("cannot stat {}", path.display()))?.len();
    if actual != expected {
        bail!("size mismatch for {}: expected {expected} bytes, actual {actual} bytes", path.display());
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically, with the workspace's one implementation
/// ([`slim_fs::write_atomic`]: a unique temporary file beside it, fsync, rename, fsync the folder; the
/// temporary file is removed on any error).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    Ok(slim_fs::write_atomic(path, bytes)?)
}

/// `path` with `.tmp-<pid>` appended to its file name.
pub fn tmp_sibling(path: &Path) -> PathBuf {
    let mut name = path.file_name().expect("a path with a file name").to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// `fs::rename` with the paths in the error.
pub fn rename(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::rename(from, to).with_context(|| format!("cannot rename {} to {}", from.display(), to.display()))
}

/// Creates a directory and its parents.
pub fn mkdir(path: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))
}

/// Removes a file or a directory tree if it exists.
pub fn remove(path: &Path) -> anyhow::Result<()> {
    match fs::symlink_metadata(path) {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).with_context(|| format!("cannot remove {}", path.display())),
        Ok(_) => fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display())),
    }
}

/// A fresh, empty scratch directory `<parent>/.tmp-<label>-<pid>`.
///
/// Leftovers of earlier, interrupted runs (`.tmp-<label>-*`) are removed first, so two fetches of the same thing must
/// not run at the same time.
pub fn scratch_dir(parent: &Path, label: &str) -> anyhow::Result<PathBuf> {
    let prefix = format!(".tmp-{label}-");
    if let Ok(entries) = fs::read_dir(parent) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                remove(&entry.path())?;
            }
        }
    }
    let dir = parent.join(format!("{prefix}{}", std::process::id()));
    mkdir(&dir)?;
    Ok(dir)
}

/// Replaces directory `to` by directory `from` (removing the old one first).
pub fn replace_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    remove(to)?;
    if let Some(parent) = to.parent() {
        mkdir(parent)?;
    }
    rename(from, to)
}

/// The `.done` marker of an output directory: written last, holding the verified hash(es).
///
/// A second fetch finds the marker with the expected content and does nothing.
pub struct Marker {
    path: PathBuf,
    content: String,
}

impl Marker {
    /// The marker `<dir>/.done` expected to hold `content`.
    pub fn new(dir: &Path, content: String) -> Marker {
        Marker { path: dir.join(".done"), content }
    }

    /// Whether the marker exists with the expected content.
    pub fn is_done(&self) -> bool {
        fs::read_to_string(&self.path).map(|s| s.trim() == self.content.trim()).unwrap_or(false)
    }

    /// Writes the marker (atomically).
    pub fn write(&self) -> anyhow::Result<()> {
        write_atomic(&self.path, format!("{}\n", self.content.trim()).as_bytes())
    }
}

/// Extracts one member of a zip archive (a wheel) to `dest`, through a temporary file.
///
/// Uses the `unzip` program when present and Python's `zipfile` module otherwise.
pub fn unzip_member(archive: &Path, member: &str, dest: &Path) -> anyhow::Result<()> {
    let tmp = tmp_sibling(dest);
    let out = fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut cmd = if have_program("unzip") {
        let mut c = Command::new("unzip");
        c.arg("-p").arg(archive).arg(member);
        c
    } else {
        let mut c = Command::new("python3");
        c.arg("-c")
            .arg(concat!(
                "import shutil, sys, zipfile; ",
                "shutil.copyfileobj(zipfile.ZipFile(sys.argv[1]).open(sys.argv[2]), sys.stdout.buffer)"
            ))
            .arg(archive)
            .arg(member);
        c
    };
    cmd.stdout(out);
    eprintln!("  extracting {member} from {}", archive.display());
    let status = cmd.status().context("cannot start unzip / python3")?;
    if !status.success() {
        remove(&tmp)?;
        bail!("cannot extract {member} from {}: {status}", archive.display());
    }
    rename(&tmp, dest)
}

/// The single file in `dir` whose name starts with `prefix` and ends with `suffix`.
pub fn find_one(dir: &Path, prefix: &str, suffix: &str) -> anyhow::Result<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) && name.ends_with(suffix) {
            found.push(entry.path());
        }
    }
    match found.len() {
        1 => Ok(found.pop().unwrap()),
        0 => Err(format_err!("no {prefix}*{suffix} in {}", dir.display())),
        _ => Err(format_err!("more than one {prefix}*{suffix} in {}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_mismatch_names_file_expected_and_actual() {
        let dir = scratch_dir(&std::env::temp_dir(), "xtask-util-test").unwrap();
        let file = dir.join("f.bin");
        write_atomic(&file, b"abc").unwrap();
        let sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        verify(&file, HashKind::Sha256, sha).unwrap();
        verify(&file, HashKind::Md5, "900150983cd24fb0d6963f7d28e17f72").unwrap();
        let err = verify(&file, HashKind::Sha256, "00").unwrap_err().to_string();
        assert!(err.contains("f.bin") && err.contains("expected sha256 00") && err.contains(sha), "{err}");
        let marker = Marker::new(&dir, "sha256 x".to_owned());
        assert!(!marker.is_done());
        marker.write().unwrap();
        assert!(marker.is_done());
        assert!(!Marker::new(&dir, "sha256 y".to_owned()).is_done());
        remove(&dir).unwrap();
    }
}
