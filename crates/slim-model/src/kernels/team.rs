//! A team of threads that spin between the parallel regions of a forward pass, for the CPU kernels' own regions
//! (the products of half-precision weights, prefill and decode; the f32 products, as blocks of columns of a
//! single-threaded gemm; the elementwise steps; attention).
//!
//! Why not rayon alone: rayon's idle workers look for work for a few dozen microseconds and then sleep on a futex,
//! and a forward pass has about ten regions a layer with serial work between them, so many regions began with a
//! sleeping worker and ran on one thread until it woke. Measured on SmolLM2-135M, f16 weights, 128-token prompts
//! (2-core EPYC): one thread ran at 342–351 tokens/s against llama.cpp's 314–323, two at 512–564 (median)
//! against its 543–628: our threads scaled by 1.5–1.6, llama.cpp's, whose threads spin between operations, by
//! 1.8–1.9. Here a region's tasks are claimed from one atomic word by the caller and by workers that spin for
//! [`SPIN`] after their last task (yielding the core after [`PAUSE_SPIN`]) before they park.
//!
//! A region is run on the team by its first caller only: a region started while another runs (tests on several
//! threads) goes to rayon, and one started inside a team task runs on its own thread.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Mutex, OnceLock, TryLockError};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long a worker looks for the next region after its last task before it parks.
const SPIN: Duration = Duration::from_millis(2);
/// How long of that it spins on the CPU's pause instruction before it yields the core to other threads at each
/// look (rayon's workers, in the regions that still go through rayon: burn-flex's own ops, LoRA's backward pass).
const PAUSE_SPIN: Duration = Duration::from_micros(50);

/// The region word: generation (upper 24 bits), task count (middle 20) and next unclaimed task (lower 20). A task
/// is claimed by a compare-and-swap of the whole word, so a worker that read an older region's word claims
/// nothing of a newer one (unless exactly 2^24 regions began while it waited between its load and its swap).
const IDX_BITS: u32 = 20;
const IDX_MASK: u64 = (1 << IDX_BITS) - 1;
/// The most tasks a region may have on the team; larger regions go to rayon.
const MAX_TASKS: usize = IDX_MASK as usize;

fn pack(gen: u64, n: usize, next: usize) -> u64 {
    (gen << (2 * IDX_BITS)) | ((n as u64) << IDX_BITS) | next as u64
}
fn generation(word: u64) -> u64 {
    word >> (2 * IDX_BITS)
}

/// A region's tasks, their lifetime erased: valid while the region's word is current and a task of it unfinished.
type Job = *const (dyn Fn(usize) + Sync);

struct Team {
    /// Held by the thread that runs a region (one region at a time).
    caller: Mutex<u64>,
    word: AtomicU64,
    /// Written by the caller before it publishes a region's word, read by a thread that claimed one of its tasks.
    job: std::cell::UnsafeCell<Job>,
    /// Tasks of the current region finished.
    done: AtomicUsize,
    panicked: AtomicBool,
    workers: Vec<Worker>,
}

struct Worker {
    sleeping: AtomicBool,
    thread: OnceLock<Thread>,
}

// SAFETY: `job` is written only by the thread holding `caller`, while no task of the current region is unfinished
// (so no thread reads it: a thread reads it only after claiming an unfinished task), and read only under that claim.
unsafe impl Sync for Team {}

thread_local! {
    /// Set on the team's workers, and on a caller while its region runs: a region started there runs serially.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// The team: as many threads as rayon's global pool has, the caller included; none when it has one.
fn team() -> &'static Team {
    static TEAM: OnceLock<&'static Team> = OnceLock::new();
    TEAM.get_or_init(|| {
        let workers = (1..rayon::current_num_threads().max(1))
            .map(|_| Worker { sleeping: AtomicBool::new(false), thread: OnceLock::new() })
            .collect();
        let team: &'static Team = Box::leak(Box::new(Team {
            caller: Mutex::new(0),
            word: AtomicU64::new(0),
            job: std::cell::UnsafeCell::new(std::ptr::null::<fn(usize)>() as Job),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            workers,
        }));
        for i in 0..team.workers.len() {
            let handle = thread::Builder::new()
                .name(format!("slim-team-{i}"))
                .spawn(move || work(team, i))
                .expect("starting a thread of the kernels' team");
            team.workers[i].thread.set(handle.thread().clone()).expect("set once");
        }
        team
    })
}

/// Runs `f(0)`, …, `f(n - 1)`, in parallel on the team when it is free (each task on one thread, in no set order),
/// and returns when all have run. A panic in a task is raised here after every task has finished.
pub(crate) fn run(n: usize, f: impl Fn(usize) + Sync) {
    if n <= 1 || INSIDE.get() {
        return (0..n).for_each(f);
    }
    let team = team();
    if team.workers.is_empty() {
        return (0..n).for_each(f);
    }
    if n > MAX_TASKS {
        return rayon_run(n, &f);
    }
    match team.caller.try_lock() {
        Ok(guard) => region(team, guard, n, &f),
        Err(TryLockError::Poisoned(p)) => region(team, p.into_inner(), n, &f),
        Err(TryLockError::WouldBlock) => rayon_run(n, &f),
    }
}

fn rayon_run(n: usize, f: &(dyn Fn(usize) + Sync)) {
    use rayon::prelude::*;
    (0..n).into_par_iter().for_each(f);
}

/// Splits `data` into chunks of `len` (the last may be shorter) and runs `f(i, chunk i)` for each with [`run`].
pub(crate) fn chunks<T: Send>(data: &mut [T], len: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    assert!(len > 0, "team::chunks: chunks of 0");
    let (ptr, total) = (Disjoint(data.as_mut_ptr()), data.len());
    run(total.div_ceil(len), |i| {
        let (a, b) = (i * len, ((i + 1) * len).min(total));
        // SAFETY: the chunks i·len..(i + 1)·len are disjoint and inside `data`, which outlives `run`, and task i is
        // the only one given chunk i.
        f(i, unsafe { std::slice::from_raw_parts_mut(ptr.at(a), b - a) })
    });
}

/// A pointer to a buffer whose disjoint parts parallel tasks write (and none reads).
pub(crate) struct Disjoint<T>(pub(crate) *mut T);
impl<T> Clone for Disjoint<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Disjoint<T> {}
// SAFETY: the tasks that share it access disjoint elements only, and the buffer outlives them (`chunks`, and the
// callers in `cpu`, which vouch for it where they use the pointer).
unsafe impl<T: Send> Send for Disjoint<T> {}
// SAFETY: as for Send.
unsafe impl<T: Send> Sync for Disjoint<T> {}
impl<T> Disjoint<T> {
    /// The pointer `i` elements on (a method, so that closures capture the whole `Disjoint`, not its raw field).
    ///
    /// # Safety
    /// As for `pointer::add`: `i` elements on is inside the buffer.
    pub(crate) unsafe fn at(self, i: usize) -> *mut T {
        // SAFETY: the caller vouches.
        unsafe { self.0.add(i) }
    }
}

/// Publishes a region, takes tasks of it beside the workers, and waits until every task has finished.
fn region(team: &Team, mut gen: std::sync::MutexGuard<'_, u64>, n: usize, f: &(dyn Fn(usize) + Sync)) {
    *gen = (*gen + 1) & ((1 << (64 - 2 * IDX_BITS)) - 1);
    // SAFETY: only the lifetime is erased; the pointer is read only while a task of this region is unfinished,
    // and this function returns only after every task has finished.
    let job: Job = unsafe { std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), Job>(f) };
    // SAFETY: we hold `caller`, and every task of the previous region has finished, so nothing reads `job`.
    unsafe { *team.job.get() = job };
    team.done.store(0, Relaxed);
    team.panicked.store(false, Relaxed);
    // SeqCst: pairs with a worker's store of `sleeping` and its load of the word before it parks.
    team.word.store(pack(*gen, n, 0), SeqCst);
    for w in &team.workers {
        if w.sleeping.swap(false, SeqCst) {
            w.thread.get().expect("set at start").unpark();
        }
    }
    INSIDE.set(true);
    claim(team, *gen);
    INSIDE.set(false);
    // The tasks left are running on workers. Spin, then yield the core: with more threads than cores (or a worker
    // preempted) the worker may need this one.
    let start = Instant::now();
    let mut spins = 0u32;
    while team.done.load(Acquire) < n {
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(64) && start.elapsed() >= PAUSE_SPIN {
            thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    if team.panicked.load(Relaxed) {
        drop(gen);
        panic!("a task of a parallel region panicked (its message is above)");
    }
}

/// Claims and runs tasks of region `gen` until none is left.
fn claim(team: &Team, gen: u64) {
    let mut word = team.word.load(Acquire);
    loop {
        let (n, next) = (((word >> IDX_BITS) & IDX_MASK) as usize, (word & IDX_MASK) as usize);
        if generation(word) != gen || next >= n {
            return;
        }
        match team.word.compare_exchange_weak(word, word + 1, AcqRel, Acquire) {
            Ok(_) => {
                // SAFETY: task `next` of region `gen` is claimed and unfinished, so the job is this region's and
                // alive (see `Team`).
                let f = unsafe { &**team.job.get() };
                if catch_unwind(AssertUnwindSafe(|| f(next))).is_err() {
                    team.panicked.store(true, Relaxed);
                }
                team.done.fetch_add(1, Release);
                word = team.word.load(Acquire);
            }
            Err(now) => word = now,
        }
    }
}

/// A worker's loop: take the tasks of each new region, then spin for the next, then park.
fn work(team: &'static Team, i: usize) {
    INSIDE.set(true);
    let me = &team.workers[i];
    let mut seen = generation(team.word.load(Acquire));
    loop {
        let start = Instant::now();
        let mut spins = 0u32;
        while generation(team.word.load(Acquire)) == seen {
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(64) {
                std::hint::spin_loop();
                continue;
            }
            let waited = start.elapsed();
            if waited < PAUSE_SPIN {
                continue;
            }
            if waited < SPIN {
                thread::yield_now();
                continue;
            }
            me.sleeping.store(true, SeqCst);
            while generation(team.word.load(SeqCst)) == seen {
                thread::park();
            }
            me.sleeping.store(false, SeqCst);
        }
        seen = generation(team.word.load(Acquire));
        claim(team, seen);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every task runs exactly once, for region sizes around the team's size and larger.
    #[test]
    fn each_task_runs_once() {
        for n in [0, 1, 2, 3, 7, 64, 1001] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            run(n, |i| _ = hits[i].fetch_add(1, Relaxed));
            assert!(hits.iter().all(|h| h.load(Relaxed) == 1), "{n} tasks");
        }
    }

    /// Chunks tile the slice in order, the last one shorter.
    #[test]
    fn chunks_tile_the_slice() {
        let mut v = vec![0usize; 103];
        chunks(&mut v, 10, |i, c| {
            assert!(c.len() == 10 || (i == 10 && c.len() == 3), "chunk {i} of {}", c.len());
            c.iter_mut().enumerate().for_each(|(j, x)| *x = i * 10 + j);
        });
        assert_eq!(v, (0..103).collect::<Vec<_>>());
    }

    /// A region inside a task (run on that task's thread), and regions started from many threads at once (the
    /// team takes one, rayon the others), all complete with every task run once.
    #[test]
    fn nested_and_concurrent_regions() {
        let total = AtomicUsize::new(0);
        thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50 {
                        run(6, |_| run(5, |_| _ = total.fetch_add(1, Relaxed)));
                    }
                });
            }
        });
        assert_eq!(total.load(Relaxed), 4 * 50 * 6 * 5);
    }

    /// A panicking task is raised in the caller (on the team after every task has finished; another test may hold the
    /// team, and then rayon runs the region), and the next region runs.
    #[test]
    fn a_panic_reaches_the_caller() {
        let ran = AtomicUsize::new(0);
        let caught = catch_unwind(AssertUnwindSafe(|| {
            run(16, |i| {
                ran.fetch_add(1, Relaxed);
                assert!(i != 5, "task five");
            })
        }));
        assert!(caught.is_err() && ran.load(Relaxed) >= 1);
        let after = AtomicUsize::new(0);
        run(16, |_| _ = after.fetch_add(1, Relaxed));
        assert_eq!(after.load(Relaxed), 16);
    }
}
