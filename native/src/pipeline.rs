//! The bounded queue and the export thread: batches, encodes and sends without the GIL.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prost::bytes::Bytes;
use prost::Message;

use crate::batch::{self, Registry};
use crate::convert::Queued;
use crate::grpc::Grpc;
use crate::transport::{Broken, Http, Sent, Transport};

#[derive(Clone, Copy)]
pub enum Protocol {
    Http,
    Grpc,
}

pub struct Config {
    pub protocol: Protocol,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub max_queue: usize,
    pub batch_size: usize,
    pub delay: Duration,
    pub max_request_bytes: usize,
}

#[derive(Default)]
pub struct Counters {
    pub exported: AtomicU64,
    pub dropped: AtomicU64,
    pub truncated: AtomicU64,
    pub panics: AtomicU64,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    accepted: u64,  // spans ever queued
    settled: u64,   // spans exported or dropped by the thread
    in_flight: u64, // spans taken off the queue, not settled yet
    flush_wanted: bool,
    stopping: bool,
    abandoned: bool, // shutdown's deadline passed: what is left was counted dropped
}

pub struct Shared {
    pub config: Config,
    pub counters: Counters,
    pub registry: Mutex<Registry>,
    state: Mutex<State>,
    wake: Condvar,    // the thread: work, flush or stop
    settled: Condvar, // flush and shutdown waiters
}

/// A lock that survives a panic elsewhere: the data it guards stays consistent per operation.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub fn start(config: Config) -> Arc<Shared> {
        let shared = Arc::new(Shared {
            config,
            counters: Counters::default(),
            registry: Mutex::new(Registry::default()),
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            settled: Condvar::new(),
        });
        let worker = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("glmtrace-native-export".into())
            .spawn(move || worker.run());
        if spawned.is_err() {
            lock(&shared.state).stopping = true; // no thread: submit drops and counts
        }
        shared
    }

    /// Queues one span; never blocks beyond the queue's short lock. False when dropped.
    pub fn submit(&self, item: Queued) -> bool {
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
        while st.settled < target && !st.abandoned {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self.settled.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        st.settled >= target
    }

    /// Stops taking spans, sends what is queued within `timeout`; what is left is counted dropped.
    pub fn shutdown(&self, timeout: Duration) -> bool {
        lock(&self.state).stopping = true;
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
        self.wake.notify_one();
        ok
    }

    fn next_batch(&self) -> Option<Vec<Queued>> {
        let mut st = lock(&self.state);
        let deadline = Instant::now() + self.config.delay;
        loop {
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

    /// The transport, built on the export thread that alone uses it.
    fn transport(&self) -> Box<dyn Transport> {
        let c = &self.config;
        match c.protocol {
            Protocol::Http => Box::new(Http::new(&c.url, &c.headers, c.timeout)),
            // A URL or header gRPC cannot carry: every span is counted dropped.
            Protocol::Grpc => match Grpc::new(&c.url, &c.headers, c.timeout) {
                Some(grpc) => Box::new(grpc),
                None => Box::new(Broken),
            },
        }
    }

    fn run(self: Arc<Self>) {
        let mut transport = match catch_unwind(AssertUnwindSafe(|| self.transport())) {
            Ok(t) => t,
            Err(_) => {
                self.counters.panics.fetch_add(1, Relaxed);
                Box::new(Broken)
            }
        };
        while let Some(spans) = self.next_batch() {
            let n = spans.len() as u64;
            let lost =
                match catch_unwind(AssertUnwindSafe(|| self.export(transport.as_mut(), spans))) {
                    Ok(lost) => lost,
                    Err(_) => {
                        self.counters.panics.fetch_add(1, Relaxed);
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
        let _ = catch_unwind(AssertUnwindSafe(|| self.settled.notify_all()));
    }

    /// Sends `spans` in size-bounded requests; the number that did not arrive.
    fn export(&self, transport: &mut dyn Transport, mut spans: Vec<Queued>) -> u64 {
        let max = self.config.max_request_bytes;
        for q in spans.iter_mut() {
            if batch::shrink(&mut q.span, max) {
                self.counters.truncated.fetch_add(1, Relaxed);
            }
        }
        let registry = lock(&self.registry).clone();
        let mut lost = 0;
        for chunk in batch::chunks(spans, max) {
            let n = chunk.len() as u64;
            let body = Bytes::from(batch::request(chunk, &registry).encode_to_vec());
            if !self.post(transport, body) {
                lost += n;
            }
        }
        lost
    }

    /// One request, retried briefly on a refused connection or a retryable status.
    fn post(&self, transport: &mut dyn Transport, body: Bytes) -> bool {
        let deadline = Instant::now() + self.config.timeout;
        let mut backoff = Duration::from_millis(50);
        loop {
            let retry = match transport.send(body.clone()) {
                Sent::Ok => return true,
                Sent::Retry => true,
                Sent::Failed => false,
            };
            let stopping = lock(&self.state).abandoned;
            if !retry || stopping || Instant::now() + backoff >= deadline {
                return false;
            }
            std::thread::sleep(backoff);
            backoff *= 4;
        }
    }
}
