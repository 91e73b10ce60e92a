//! What a run did: for every stage, how long it took and whether its entries were computed
//! or reused from the cache. Tests assert cache behaviour from this, never from timings.

use crate::summary::CacheRef;
use serde::{Deserialize, Serialize};
use slim_artifact::Key;
use std::collections::{BTreeMap, BTreeSet};

/// One stage's account.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StageReport {
    /// Stage name (`capture`, `score`, `alloc`, `recover`, `surgery`, `eval`, ...).
    pub name: String,
    /// Wall time spent computing (cache hits cost only their load).
    pub seconds: f64,
    /// Entries computed.
    pub ran: usize,
    /// Entries reused from the cache.
    pub reused: usize,
    /// True when every entry of this stage was reused.
    pub cached: bool,
    /// The most heap the process held while an entry of this stage was computed (the whole
    /// heap, the runner's layer and activations included; `slim_mem`), when the binary counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_bytes: Option<u64>,
}

/// Accumulates stage accounts in first-seen order.
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    order: Vec<String>,
    stages: BTreeMap<String, StageReport>,
    entries: BTreeSet<CacheRef>,
}

impl RunReport {
    /// Records one entry of `stage`: `hit` when reused, with the seconds it took.
    pub fn record(&mut self, stage: &str, hit: bool, seconds: f64) {
        self.stage(stage, hit, seconds);
    }

    /// Records one entry of `stage` that was computed, with the seconds it took and the highest
    /// the heap reached meanwhile (`None` where the binary does not count it; the stage keeps
    /// the highest of its entries).
    pub fn record_ran(&mut self, stage: &str, seconds: f64, peak_bytes: Option<u64>) {
        let s = self.stage(stage, false, seconds);
        if let Some(b) = peak_bytes {
            s.peak_bytes = Some(s.peak_bytes.map_or(b, |p| p.max(b)));
        }
    }

    fn stage(&mut self, stage: &str, hit: bool, seconds: f64) -> &mut StageReport {
        if !self.stages.contains_key(stage) {
            self.order.push(stage.to_string());
        }
        let s = self
            .stages
            .entry(stage.to_string())
            .or_insert_with(|| StageReport { name: stage.to_string(), ..Default::default() });
        s.seconds += seconds;
        if hit {
            s.reused += 1;
        } else {
            s.ran += 1;
        }
        s.cached = s.ran == 0;
        s
    }

    /// Notes that the run read or wrote the entry `key` of stage folder `stage`.
    pub fn used(&mut self, stage: &str, key: Key) {
        self.entries.insert(CacheRef { stage: stage.to_string(), key });
    }

    /// Every entry the run read or wrote, sorted by stage folder and key.
    pub fn entries(&self) -> Vec<CacheRef> {
        self.entries.iter().cloned().collect()
    }

    /// Adds every stage account of `other` (entries computed inside another entry's
    /// computation, such as the dense captures of the global allocation's scores).
    pub fn merge(&mut self, other: &RunReport) {
        for st in other.stages() {
            if !self.stages.contains_key(&st.name) {
                self.order.push(st.name.clone());
            }
            let s = self
                .stages
                .entry(st.name.clone())
                .or_insert_with(|| StageReport { name: st.name.clone(), ..Default::default() });
            s.seconds += st.seconds;
            s.ran += st.ran;
            s.reused += st.reused;
            s.cached = s.ran == 0;
            s.peak_bytes = s.peak_bytes.max(st.peak_bytes);
        }
        self.entries.extend(other.entries.iter().cloned());
    }

    /// Stages in the order they first ran.
    pub fn stages(&self) -> Vec<StageReport> {
        self.order.iter().map(|n| self.stages[n].clone()).collect()
    }

    /// Entries of `stage` that were computed (0 when the stage never ran).
    pub fn ran(&self, stage: &str) -> usize {
        self.stages.get(stage).map_or(0, |s| s.ran)
    }

    /// Entries of `stage` that were reused.
    pub fn reused(&self, stage: &str) -> usize {
        self.stages.get(stage).map_or(0, |s| s.reused)
    }

    /// A one-line-per-stage table for the log.
    pub fn table(&self) -> String {
        stage_table(&self.stages())
    }
}

/// A one-line-per-stage table of `stages` for the log.
/// The peak-heap column appears when some stage has a figure.
pub fn stage_table(stages: &[StageReport]) -> String {
    let mem = stages.iter().any(|s| s.peak_bytes.is_some());
    let mut s = format!("{:<10} {:>9} {:>5} {:>7}", "stage", "seconds", "ran", "reused");
    s += if mem { "  peak heap\n" } else { "\n" };
    for st in stages {
        s += &format!("{:<10} {:>9.2} {:>5} {:>7}", st.name, st.seconds, st.ran, st.reused);
        match st.peak_bytes {
            Some(b) if mem => s += &format!("  {:>9}\n", slim_mem::human(b)),
            _ => s += "\n",
        }
    }
    s
}
