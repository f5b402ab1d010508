//! The bounded queue and the thread that drains it into a sink (OTLP or the local store) without
//! the GIL. The queue never blocks the caller: a full queue drops and counts.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub struct QueueConfig {
    pub max_queue: usize,
    pub batch_size: usize,
    pub delay: Duration,
}

#[derive(Default)]
pub struct Counters {
    pub exported: AtomicU64,
    pub dropped: AtomicU64,
    pub truncated: AtomicU64,
    pub panics: AtomicU64,
}

impl Counters {
    pub fn now(&self) -> [u64; 4] {
        [
            self.exported.load(Relaxed),
            self.dropped.load(Relaxed),
            self.truncated.load(Relaxed),
            self.panics.load(Relaxed),
        ]
    }
}

/// What the thread tells a sink while it writes: give up, or let go of files for a fork.
pub trait Control {
    /// Shutdown's deadline passed: the batch was already counted dropped.
    fn abandoned(&self) -> bool;
    /// A fork is waiting: release what is open, then call `hold`.
    fn pause_wanted(&self) -> bool;
    /// Blocks while a pause is wanted (the caller holds nothing open).
    fn hold(&self);
    fn counters(&self) -> &Counters;
}

/// Where a batch goes. The writer is built on the thread, which alone uses it: nothing of it is
/// shared with a forked child.
pub trait Sink: Send + Sync + 'static {
    type Item: Send + 'static;
    type Writer;
    fn writer(&self) -> Self::Writer;
    /// Writes `items`; the number that did not arrive.
    fn write(&self, writer: &mut Self::Writer, items: Vec<Self::Item>, ctl: &dyn Control) -> u64;
    /// Lets go of open files and connections (before a fork, after a panic).
    fn release(&self, _writer: &mut Self::Writer) {}
}

struct State<T> {
    queue: VecDeque<T>,
    accepted: u64,  // items ever queued
    settled: u64,   // items written or dropped by the thread
    in_flight: u64, // items taken off the queue, not settled yet
    flush_wanted: bool,
    stopping: bool,
    abandoned: bool, // shutdown's deadline passed: what is left was counted dropped
    pause_wanted: bool, // a fork is waiting for the thread to hold nothing open
    paused: bool,    // the thread holds nothing open and waits for `resume`
    finished: bool,  // no thread (never started, or returned)
}

impl<T> Default for State<T> {
    fn default() -> Self {
        State {
            queue: VecDeque::new(),
            accepted: 0,
            settled: 0,
            in_flight: 0,
            flush_wanted: false,
            stopping: false,
            abandoned: false,
            pause_wanted: false,
            paused: false,
            finished: false,
        }
    }
}

pub struct Shared<S: Sink> {
    pub config: QueueConfig,
    pub sink: S,
    pub counters: Counters,
    state: Mutex<State<S::Item>>,
    wake: Condvar,    // the thread: work, flush, stop or resume
    settled: Condvar, // flush, shutdown and pause waiters
}

/// A lock that survives a panic elsewhere: the data it guards stays consistent per operation.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<S: Sink> Shared<S> {
    pub fn start(config: QueueConfig, sink: S, name: &str) -> Arc<Self> {
        let shared = Arc::new(Shared {
            config,
            sink,
            counters: Counters::default(),
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            settled: Condvar::new(),
        });
        let worker = Arc::clone(&shared);
        let spawned = std::thread::Builder::new().name(name.into()).spawn(move || worker.run());
        if spawned.is_err() {
            let mut st = lock(&shared.state);
            st.stopping = true; // no thread: submit drops and counts
            st.finished = true;
        }
        shared
    }

    /// Queues one item; never blocks beyond the queue's short lock. False when dropped.
    pub fn submit(&self, item: S::Item) -> bool {
        let mut st = lock(&self.state);
        if st.stopping || st.queue.len() >= self.config.max_queue {
            drop(st);
            self.counters.dropped.fetch_add(1, Relaxed);
            return false;
        }
        st.queue.push_back(item);
        st.accepted += 1;
        let wake = st.queue.len() >= self.config.batch_size;
        drop(st);
        if wake {
            self.wake.notify_one();
        }
        true
    }

    pub fn pending(&self) -> u64 {
        let st = lock(&self.state);
        st.accepted - st.settled
    }

    /// Waits until everything queued before the call is settled, at most `timeout`.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.state);
        let target = st.accepted;
        st.flush_wanted = true;
        self.wake.notify_one();
        while st.settled < target && !st.abandoned && !st.finished {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self.settled.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        st.settled >= target
    }

    /// Stops taking items, writes what is queued within `timeout`; what is left is dropped.
    pub fn shutdown(&self, timeout: Duration) -> bool {
        lock(&self.state).stopping = true;
        self.wake.notify_all();
        let ok = self.flush(timeout);
        let mut st = lock(&self.state);
        if !ok && !st.abandoned {
            st.abandoned = true;
            let lost = st.queue.len() as u64 + st.in_flight;
            st.queue.clear();
            st.in_flight = 0;
            st.settled = st.accepted;
            self.counters.dropped.fetch_add(lost, Relaxed);
        }
        self.wake.notify_all();
        ok
    }

    /// Asks the thread to stop between batches with nothing open (before a fork); true once it
    /// has (or there is no thread), false after `timeout`. Undone by `resume`.
    pub fn pause(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.state);
        st.pause_wanted = true;
        self.wake.notify_all();
        while !st.paused && !st.finished {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self.settled.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        true
    }

    pub fn resume(&self) {
        lock(&self.state).pause_wanted = false;
        self.wake.notify_all();
    }

    fn hold_locked<'a>(
        &'a self,
        mut st: MutexGuard<'a, State<S::Item>>,
    ) -> MutexGuard<'a, State<S::Item>> {
        st.paused = true;
        self.settled.notify_all();
        while st.pause_wanted {
            st = self.wake.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.paused = false;
        st
    }

    fn next_batch(&self, writer: &mut S::Writer) -> Option<Vec<S::Item>> {
        let mut st = lock(&self.state);
        let deadline = Instant::now() + self.config.delay;
        loop {
            if st.pause_wanted {
                drop(st);
                self.sink.release(writer);
                st = self.hold_locked(lock(&self.state));
                continue;
            }
            if st.abandoned || (st.stopping && st.queue.is_empty()) {
                return None;
            }
            let full = st.queue.len() >= self.config.batch_size;
            let due = Instant::now() >= deadline;
            if !st.queue.is_empty() && (full || due || st.flush_wanted || st.stopping) {
                let n = st.queue.len().min(self.config.batch_size);
                st.in_flight = n as u64;
                return Some(st.queue.drain(..n).collect());
            }
            if st.queue.is_empty() && st.flush_wanted {
                st.flush_wanted = false;
                self.settled.notify_all();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let wait = if left.is_zero() { self.config.delay } else { left };
            st = self.wake.wait_timeout(st, wait).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    fn run(self: Arc<Self>) {
        let writer = catch_unwind(AssertUnwindSafe(|| self.sink.writer()));
        if let Ok(mut writer) = writer {
            self.drain(&mut writer);
            let _ = catch_unwind(AssertUnwindSafe(|| self.sink.release(&mut writer)));
        } else {
            self.counters.panics.fetch_add(1, Relaxed);
            let mut st = lock(&self.state);
            st.stopping = true; // every item queued from now on is dropped and counted
            let lost = st.queue.len() as u64;
            st.queue.clear();
            st.settled += lost;
            self.counters.dropped.fetch_add(lost, Relaxed);
        }
        lock(&self.state).finished = true;
        self.settled.notify_all();
    }

    fn drain(&self, writer: &mut S::Writer) {
        while let Some(items) = self.next_batch(writer) {
            let n = items.len() as u64;
            let lost = match catch_unwind(AssertUnwindSafe(|| self.sink.write(writer, items, self)))
            {
                Ok(lost) => lost,
                Err(_) => {
                    self.counters.panics.fetch_add(1, Relaxed);
                    // Whatever the panic left open (a transaction) is closed with it.
                    let _ = catch_unwind(AssertUnwindSafe(|| self.sink.release(writer)));
                    n
                }
            };
            let mut st = lock(&self.state);
            if st.abandoned {
                return; // shutdown already counted this batch as dropped
            }
            self.counters.exported.fetch_add(n - lost, Relaxed);
            self.counters.dropped.fetch_add(lost, Relaxed);
            st.settled += n;
            st.in_flight = 0;
            self.settled.notify_all();
        }
    }
}

impl<S: Sink> Control for Shared<S> {
    fn abandoned(&self) -> bool {
        lock(&self.state).abandoned
    }

    fn pause_wanted(&self) -> bool {
        lock(&self.state).pause_wanted
    }

    fn hold(&self) {
        let st = lock(&self.state);
        if st.pause_wanted {
            drop(self.hold_locked(st));
        }
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }
}
