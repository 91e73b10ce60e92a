//! Heap accounting for the pipeline's memory report.
//!
//! Resident-set samples say how much a process holds, not which stage holds it, and heap
//! profilers see nothing under mimalloc (the CLI's allocator). [`Counting`] wraps any global
//! allocator and keeps two counters, the bytes currently allocated and their highest value;
//! [`Scope`] reads the highest value reached between its start and its end, so a runner can say
//! "capture held at most 1.9 GB, score 2.4 GB" and "layer 7 peaked at 5.1 GB".
//!
//! A binary opts in with
//! `#[global_allocator] static A: slim_mem::Counting<mimalloc::MiMalloc> = slim_mem::Counting(mimalloc::MiMalloc);`;
//! without it (library tests, other binaries) every reading is `None`. Counting costs two relaxed
//! atomic operations per allocation and one per free.
//!
//! What is counted is the heap the program asked for: the allocator's own overhead, freed memory
//! it has not returned to the system yet, thread stacks, and file pages are not, so the resident
//! set is larger (docs/measurements.md compares the two).

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// A global allocator that forwards to `A` and counts the bytes it hands out.
pub struct Counting<A>(pub A);

fn grown(n: usize) {
    let live = LIVE.fetch_add(n, Relaxed).wrapping_add(n);
    PEAK.fetch_max(live, Relaxed);
}

fn shrunk(n: usize) {
    LIVE.fetch_sub(n, Relaxed);
}

// SAFETY: every call forwards to `A` with the caller's arguments unchanged; the counters are
// updated only after `A` succeeded and never influence what is returned.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is `A::alloc`'s.
        let p = unsafe { self.0.alloc(layout) };
        if !p.is_null() {
            grown(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { self.0.alloc_zeroed(layout) };
        if !p.is_null() {
            grown(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { self.0.dealloc(ptr, layout) };
        shrunk(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { self.0.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grown(new_size - layout.size());
            } else {
                shrunk(layout.size() - new_size);
            }
        }
        p
    }
}

/// Whether the running binary counts (some allocation went through [`Counting`]).
pub fn counting() -> bool {
    PEAK.load(Relaxed) > 0
}

/// Bytes allocated now, or `None` when the binary does not count.
pub fn live() -> Option<u64> {
    counting().then(|| LIVE.load(Relaxed) as u64)
}

/// The highest number of bytes allocated at once since the process started, or `None`.
pub fn peak() -> Option<u64> {
    counting().then(|| PEAK.load(Relaxed) as u64)
}

/// The peak of the heap between [`Scope::start`] and [`Scope::end`]. Scopes nest: an outer
/// scope's peak includes its inner scopes' peaks, and the process peak ([`peak`]) is kept.
/// (Allocations of other threads in the meantime count too: the heap is one.)
#[must_use = "a scope measures until `end` is called"]
pub struct Scope {
    outer: usize,
}

impl Scope {
    /// Starts measuring from the bytes allocated now.
    pub fn start() -> Self {
        let outer = PEAK.load(Relaxed);
        PEAK.store(LIVE.load(Relaxed), Relaxed);
        Scope { outer }
    }

    /// The highest number of bytes allocated at once since [`Scope::start`], or `None` when the
    /// binary does not count.
    pub fn end(self) -> Option<u64> {
        let inner = PEAK.fetch_max(self.outer, Relaxed);
        (self.outer > 0 || inner > 0).then_some(inner as u64)
    }
}

/// Runs `f` and returns its value with the heap's peak while it ran ([`Scope`]).
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, Option<u64>) {
    let s = Scope::start();
    let v = f();
    (v, s.end())
}

/// `bytes` for people: `"812 MB"`, `"5.21 GB"` (decimal units, as the docs use).
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.0} MB", b / 1e6)
    } else {
        format!("{:.0} kB", b / 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;

    #[global_allocator]
    static A: Counting<System> = Counting(System);

    // One test function: the counters are process-wide and the test harness runs tests on
    // several threads, so separate tests would see each other's allocations.
    #[test]
    fn scopes_see_the_peak_of_what_they_allocate_and_nest() {
        assert!(counting());
        let outer = Scope::start();
        let base = live().unwrap();
        let (_, p) = measure(|| {
            let v = vec![0u8; 64 << 20];
            std::hint::black_box(&v);
        });
        let p = p.unwrap();
        // 64 MiB held at once; other threads of the harness may add a little.
        assert!(p >= base + (64 << 20) && p < base + (65 << 20), "inner peak {p}, base {base}");
        let after = live().unwrap();
        assert!(after < base + (1 << 20), "the buffer was freed: live {after}, base {base}");
        let (_, q) = measure(|| {
            let v = vec![0u8; 8 << 20];
            std::hint::black_box(&v);
        });
        assert!(q.unwrap() < base + (9 << 20), "a later, smaller scope does not see the earlier peak");
        let o = outer.end().unwrap();
        assert!(o >= base + (64 << 20), "the outer scope includes its inner scopes' peaks: {o}");
        assert!(peak().unwrap() >= o);
        // Growing in place counts the difference, shrinking gives it back.
        let before = live().unwrap();
        let mut v: Vec<u8> = Vec::with_capacity(1 << 20);
        v.reserve_exact(4 << 20);
        assert!(live().unwrap() >= before + (4 << 20));
        v.shrink_to(0);
        drop(v);
        assert!(live().unwrap() < before + (1 << 20));
        assert_eq!(human(812_400_000), "812 MB");
        assert_eq!(human(5_214_000_000), "5.21 GB");
    }
}
