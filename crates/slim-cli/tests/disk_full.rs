//! A disk that fills up mid-run: `slimllm pipeline run` with its cache and run folder on a
//! size-limited tmpfs must fail with a clear error that names the file, leave a cache that
//! `slimllm cache verify` finds consistent, and, once space is back, the next run must complete
//! with exactly the artifacts of an uninterrupted run. The limits are fractions of the space
//! a full run takes, so the disk fills in different stages.
//!
//! Mounting needs root (as on the developers' and CI's machines). Without it, the test limits
//! the size of any one file instead (`ulimit -f`, with SIGXFSZ ignored so writes fail with
//! EFBIG), which exercises the same failing-write paths (`SLIMLLM_TEST_NO_MOUNT=1` forces it).

#![cfg(unix)]

mod common;

use common::{model, pipeline, snapshot};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where the limited space lives and how the limit is applied.
enum Limit {
    /// A tmpfs mounted at the path, resized with `mount -o remount,size=…`.
    Tmpfs(PathBuf),
    /// No mount allowed: each file may hold at most this many bytes.
    FileSize(PathBuf, u64),
}

impl Limit {
    fn new(dir: &Path) -> Limit {
        std::fs::create_dir_all(dir).unwrap();
        // SLIMLLM_TEST_NO_MOUNT=1 takes the fallback even where mounting works (to test it).
        let ok = std::env::var_os("SLIMLLM_TEST_NO_MOUNT").is_none()
            && Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
                .arg(dir)
                .output()
                .is_ok_and(|o| o.status.success());
        if ok {
            Limit::Tmpfs(dir.to_path_buf())
        } else {
            eprintln!("cannot mount a tmpfs here: limiting the size of each file instead");
            Limit::FileSize(dir.to_path_buf(), u64::MAX)
        }
    }

    fn root(&self) -> &Path {
        match self {
            Limit::Tmpfs(p) | Limit::FileSize(p, _) => p,
        }
    }

    /// Empties the space and limits it to `bytes`.
    fn set(&mut self, bytes: u64) {
        for e in std::fs::read_dir(self.root()).unwrap().flatten() {
            let _ = std::fs::remove_dir_all(e.path()).or_else(|_| std::fs::remove_file(e.path()));
        }
        self.resize(Some(bytes));
    }

    /// Limits the space to `bytes` (None: plenty), keeping what it holds.
    fn resize(&mut self, bytes: Option<u64>) {
        match self {
            Limit::Tmpfs(p) => {
                let size = format!("remount,size={}k", bytes.map_or(64 * 1024, |b| b.div_ceil(1024).max(4)));
                let out = Command::new("mount").args(["-o", &size]).arg(&*p).output().unwrap();
                assert!(out.status.success(), "remount: {}", String::from_utf8_lossy(&out.stderr));
            }
            Limit::FileSize(_, b) => *b = bytes.unwrap_or(u64::MAX),
        }
    }

    /// Runs `cmd` under the limit.
    fn run(&self, mut cmd: Command) -> Output {
        match self {
            Limit::Tmpfs(_) | Limit::FileSize(_, u64::MAX) => cmd.output().unwrap(),
            Limit::FileSize(_, b) => {
                let mut sh = Command::new("sh");
                sh.arg("-c").arg(format!("trap '' XFSZ; ulimit -f {}; exec \"$0\" \"$@\"", b.div_ceil(512).max(1)));
                sh.arg(cmd.get_program()).args(cmd.get_args());
                sh.output().unwrap()
            }
        }
    }
}

impl Drop for Limit {
    fn drop(&mut self) {
        if let Limit::Tmpfs(p) = self {
            let _ = Command::new("umount").arg(&*p).status();
        }
    }
}

/// Bytes taken (whole pages, each hard-linked file once) and the largest file under `dir`.
fn du(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut total, mut largest) = (0, 0);
    let mut seen = std::collections::BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else if seen.insert(m.ino()) {
                // Whole pages, as tmpfs counts them.
                total += m.len().div_ceil(4096) * 4096;
                largest = largest.max(m.len());
            }
        }
    }
    (total, largest)
}

#[test]
fn a_full_disk_fails_clearly_and_the_next_run_completes_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("model");
    model(&m);
    let reference = tmp.path().join("ref");
    let out = pipeline(&m, &reference.join("cache"), &reference.join("data")).output().unwrap();
    assert!(out.status.success(), "reference run failed: {}", String::from_utf8_lossy(&out.stderr));
    let want = snapshot(&reference.join("cache"));
    let (total, largest) = du(&reference);

    let mut limit = Limit::new(&tmp.path().join("small"));
    let (cache, data) = (limit.root().join("cache"), limit.root().join("data"));
    let mut failures = Vec::new();
    for frac in [0.02, 0.2, 0.4, 0.6, 0.8] {
        let bytes = match limit {
            Limit::Tmpfs(_) => (total as f64 * frac) as u64,
            Limit::FileSize(..) => (largest as f64 * frac) as u64,
        };
        limit.set(bytes);
        let out = limit.run(pipeline(&m, &cache, &data));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "the run succeeded with {bytes} bytes of space");
        assert!(!err.contains("panicked"), "a panic instead of an error: {err}");
        let reason = ["No space left on device", "File too large"].iter().any(|r| err.contains(r));
        assert!(
            reason && err.contains(limit.root().to_str().unwrap()),
            "the error names neither the reason nor the file: {err}"
        );
        // Whatever was written is consistent: no entry is half there.
        let mut verify = Command::new(env!("CARGO_BIN_EXE_slimllm"));
        verify.args(["cache", "verify", "--cache"]).arg(&cache);
        let v = verify.output().unwrap();
        assert!(
            v.status.success(),
            "verify after a full disk ({bytes} bytes): {}{}",
            String::from_utf8_lossy(&v.stdout),
            String::from_utf8_lossy(&v.stderr)
        );
        failures.push((
            frac,
            err.lines().filter(|l| !l.trim().is_empty() && !l.contains(" INFO ")).collect::<Vec<_>>().join(" / "),
        ));
        // Space comes back (the folder keeps what the failed run left): the next run completes
        // and its cache is the reference's, byte for byte.
        limit.resize(None);
        let out = limit.run(pipeline(&m, &cache, &data));
        assert!(out.status.success(), "the run after freeing space failed: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(snapshot(&cache), want, "the completed cache differs from the reference ({frac} of the space)");
    }
    for (frac, err) in failures {
        eprintln!("{:>4.0} % of the space: {err}", 100.0 * frac);
    }
}
