//! Progress of a zero-shot run over all its calls to [`super::score_tasks`]: a bar (requests, rate, ETA)
//! when drawn, else a log line a minute, so that a background run's log shows how far it is.

use std::time::Instant;

/// Requests scored out of the run's total, across calls.
pub struct Progress {
    bar: indicatif::ProgressBar,
    draw: bool,
    total: usize,
    done: usize,
    start: Instant,
    logged: Instant,
}

impl Progress {
    /// A run of `total` requests; `draw` shows a bar, otherwise progress is logged every minute.
    pub fn new(total: usize, draw: bool) -> Self {
        let bar = if draw { indicatif::ProgressBar::new(total as u64) } else { indicatif::ProgressBar::hidden() };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg:>13} [{bar:30}] {pos}/{len} requests, {per_sec}, ETA {eta}")
                .expect("static template")
                .progress_chars("=> "),
        );
        let now = Instant::now();
        Self { bar, draw, total, done: 0, start: now, logged: now }
    }

    pub(super) fn task(&self, name: &str) {
        self.bar.set_message(name.to_string());
    }

    pub(super) fn advance(&mut self, name: &str, requests: usize) {
        self.bar.inc(requests as u64);
        self.done += requests;
        if !self.draw && self.logged.elapsed().as_secs() >= 60 {
            self.logged = Instant::now();
            let rate = self.done as f64 / self.start.elapsed().as_secs_f64();
            tracing::info!(
                "{}/{} requests of all tasks (now {name}), {rate:.1} requests/s, ETA {:.0} s",
                self.done,
                self.total,
                self.total.saturating_sub(self.done) as f64 / rate
            );
        }
    }

    /// Clears the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
