//! Crash safety: `slimllm pipeline run` is killed with SIGKILL at random moments, many times,
//! on one cache; after each kill a rerun must complete, and the cache must end up holding
//! exactly the entries of an uninterrupted run on a fresh cache, byte for byte (every payload
//! hash in every manifest, and the pruned model's files). `SLIMLLM_KILLS=N` sets the number
//! of kills (default 8 here, so that CI stays quick; docs/reliability.md reports a long run).

#![cfg(unix)]

mod common;

use common::{model, pipeline, snapshot};
use slim_checkpoint::synthetic::SplitMix;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The two tests time and kill processes: running them side by side would distort both.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Where a killed run was, from the last log line it wrote: before the allocation (calibration
/// windows, importance pass), in the per-layer pass (capture, score, recover, surgery of layer
/// k), or after the last layer (writing the pruned model).
fn phase(log: &str) -> String {
    let last = log.lines().rev().find(|l| l.contains("INFO"));
    match last {
        None => "calib/importance".into(),
        Some(l) if l.contains("allocation") => "layer 0 (capture/score/recover)".into(),
        Some(l) => {
            match l.split("layer").nth(1).and_then(|r| r.split(':').next()).and_then(|n| n.trim().parse::<usize>().ok())
            {
                Some(k) => format!("after layer {k}"),
                None => "other".into(),
            }
        }
    }
}

#[test]
fn killed_runs_leave_a_cache_that_completes_to_the_uninterrupted_result() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let (m, runs) = (tmp.path().join("model"), tmp.path().join("data"));
    model(&m);
    // The uninterrupted reference, and the duration of a full run (the faster of two: the
    // first also warms the file cache, and kill moments are fractions of this).
    let reference = tmp.path().join("ref-cache");
    let out = pipeline(&m, &reference, &runs).output().unwrap();
    assert!(out.status.success(), "reference run failed: {}", String::from_utf8_lossy(&out.stderr));
    let warm = tmp.path().join("warm-cache");
    let t = Instant::now();
    assert!(pipeline(&m, &warm, &runs).output().unwrap().status.success());
    let full = t.elapsed();
    let want = snapshot(&reference);
    assert!(want.len() > 20, "the reference cache is suspiciously small: {want:?}");

    let kills: usize = std::env::var("SLIMLLM_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    let cache = tmp.path().join("cache");
    let mut rng = SplitMix(2026);
    let mut landed = 0;
    let mut hit: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..kills {
        // A fresh cache each time, killed at a uniform moment of a full run, so that every
        // stage is hit in proportion to its duration; odd rounds also kill the first rerun,
        // which resumes from a partial cache.
        let _ = std::fs::remove_dir_all(&cache);
        for round in 0..1 + i % 2 {
            let mut child = pipeline(&m, &cache, &runs).spawn().unwrap();
            // Kill after a random number of the run's log lines (one per pruned layer, after
            // the allocation) plus a random fraction of a layer's time, so that the moment
            // follows the run's progress, not the machine's speed.
            let lines_before_kill = (rng.unit() * if round == 0 { 6.0 } else { 2.0 }) as usize;
            let stderr = child.stderr.take().unwrap();
            let mut log = String::new();
            let mut reader = std::io::BufReader::new(stderr);
            let mut seen = 0;
            while seen < lines_before_kill {
                let mut line = String::new();
                if std::io::BufRead::read_line(&mut reader, &mut line).unwrap() == 0 {
                    break;
                }
                seen += usize::from(line.contains("INFO"));
                log.push_str(&line);
            }
            std::thread::sleep(Duration::from_secs_f64(full.as_secs_f64() / 8.0 * rng.unit()));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap(); // SIGKILL
                landed += 1;
                let mut rest = String::new();
                let _ = std::io::Read::read_to_string(&mut reader, &mut rest);
                log.push_str(&rest);
                *hit.entry(phase(&log)).or_insert(0) += 1;
            }
            child.wait().unwrap();
        }
        // The next run completes from whatever the killed one left.
        let out = pipeline(&m, &cache, &runs).output().unwrap();
        assert!(out.status.success(), "rerun after kill {i} failed: {}", String::from_utf8_lossy(&out.stderr));
        let got = snapshot(&cache);
        let missing: Vec<_> = want.keys().filter(|k| got.get(*k) != want.get(*k)).collect();
        let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
        assert!(missing.is_empty() && extra.is_empty(), "after kill {i}: differing {missing:?}, extra {extra:?}");
    }
    assert!(landed >= kills, "only {landed} kills landed before the run finished ({kills} rounds)");
    eprintln!(
        "{landed} kills landed in {kills} rounds; every rerun reproduced the reference cache ({} files); \
         killed during: {hit:?}",
        want.len()
    );
}

#[test]
fn concurrent_runs_on_one_cache_both_finish_with_the_reference_result() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let (m, runs) = (tmp.path().join("model"), tmp.path().join("data"));
    model(&m);
    let reference = tmp.path().join("ref-cache");
    assert!(pipeline(&m, &reference, &runs).output().unwrap().status.success());
    let want = snapshot(&reference);
    for round in 0..3 {
        let cache = tmp.path().join(format!("cache-{round}"));
        let children: Vec<_> = (0..3).map(|_| pipeline(&m, &cache, &runs).spawn().unwrap()).collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "a concurrent run failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        assert_eq!(snapshot(&cache), want, "round {round}: the shared cache differs from the reference");
    }
}
