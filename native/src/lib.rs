//! glmtrace's native export pipeline: finished spans leave Python's heap at hand-off, and a
//! Rust thread batches, encodes (OTLP protobuf) and sends them (OTLP/HTTP or OTLP/gRPC), or
//! writes them into the local SQLite store, without holding the GIL.

mod batch;
mod convert;
mod grpc;
mod json;
mod otlp;
mod pipeline;
mod proto;
mod row;
mod sqlite;
mod store;
mod transport;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use otlp::{Otlp, Protocol};
use pipeline::{lock, Counters, QueueConfig, Shared, Sink};

/// One exporter's queue and thread. After a fork the child builds a new one (the parent's
/// thread does not exist there); the old object is never touched again.
#[pyclass(frozen)]
struct Pipeline {
    shared: Arc<Shared<Otlp>>,
    last: std::sync::Mutex<[u64; 4]>, // counters already handed to Python
}

/// `(exported, dropped, truncated, panics)` since the previous call.
fn take_counts(counters: &Counters, last: &std::sync::Mutex<[u64; 4]>) -> (u64, u64, u64, u64) {
    let now = counters.now();
    let mut last = lock(last);
    let delta = std::array::from_fn::<u64, 4, _>(|i| now[i] - last[i]);
    *last = now;
    (delta[0], delta[1], delta[2], delta[3])
}

fn submitted<S: Sink>(shared: &Shared<S>, item: std::thread::Result<PyResult<S::Item>>) -> bool {
    match item {
        Ok(Ok(item)) => shared.submit(item),
        Ok(Err(_)) => {
            shared.counters.dropped.fetch_add(1, Relaxed);
            false
        }
        Err(_) => {
            shared.counters.panics.fetch_add(1, Relaxed);
            shared.counters.dropped.fetch_add(1, Relaxed);
            false
        }
    }
}

fn duration(seconds: f64) -> Duration {
    Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or(Duration::from_secs(3600))
}

#[pymethods]
impl Pipeline {
    #[new]
    /// `protocol` is `"http/protobuf"` (`url` ends in /v1/traces) or `"grpc"` (plain text).
    #[pyo3(signature = (url, headers, timeout, max_queue, batch_size, delay, max_request_bytes,
                        protocol = "http/protobuf"))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        url: String,
        headers: Vec<(String, String)>,
        timeout: f64,
        max_queue: usize,
        batch_size: usize,
        delay: f64,
        max_request_bytes: usize,
        protocol: &str,
    ) -> PyResult<Self> {
        let protocol = match protocol {
            "http/protobuf" => Protocol::Http,
            "grpc" => Protocol::Grpc,
            other => return Err(PyValueError::new_err(format!("unknown protocol {other:?}"))),
        };
        let queue =
            QueueConfig { max_queue, batch_size: batch_size.max(1), delay: duration(delay) };
        let sink = Otlp {
            protocol,
            url,
            headers,
            timeout: duration(timeout),
            max_request_bytes,
            registry: Default::default(),
        };
        let shared = Shared::start(queue, sink, "glmtrace-native-export");
        Ok(Pipeline { shared, last: Default::default() })
    }

    /// Registers a resource `(attributes, schema_url)`; its index for `submit`.
    fn resource(&self, attributes: &Bound<'_, PyAny>, schema_url: Option<String>) -> PyResult<u32> {
        let r = convert::resource(attributes)?;
        let mut reg = lock(&self.shared.sink.registry);
        reg.resources.push((r, schema_url.unwrap_or_default()));
        Ok(reg.resources.len() as u32 - 1)
    }

    /// Registers an instrumentation scope; its index for `submit`.
    fn scope(
        &self,
        name: &Bound<'_, PyAny>,
        version: &Bound<'_, PyAny>,
        schema_url: Option<String>,
        attributes: &Bound<'_, PyAny>,
    ) -> PyResult<u32> {
        let s = convert::scope(name, version, attributes)?;
        let mut reg = lock(&self.shared.sink.registry);
        reg.scopes.push((s, schema_url.unwrap_or_default()));
        Ok(reg.scopes.len() as u32 - 1)
    }

    /// Hands one span tuple over; never raises, never blocks. False when it was dropped.
    fn submit(&self, span: &Bound<'_, PyTuple>) -> bool {
        submitted(&self.shared, catch_unwind(AssertUnwindSafe(|| convert::span(span))))
    }

    /// Spans handed over and not yet exported or dropped.
    fn pending(&self) -> u64 {
        self.shared.pending()
    }

    /// Waits (GIL released) until what was submitted before is sent, at most `timeout` s.
    fn flush(&self, py: Python<'_>, timeout: f64) -> bool {
        let shared = Arc::clone(&self.shared);
        py.detach(move || shared.flush(duration(timeout)))
    }

    /// Stops accepting spans and sends the rest within `timeout` s; the remainder is dropped.
    fn shutdown(&self, py: Python<'_>, timeout: f64) -> bool {
        let shared = Arc::clone(&self.shared);
        py.detach(move || shared.shutdown(duration(timeout)))
    }

    /// `(exported, dropped, truncated, panics)` since the previous call.
    fn take_counts(&self) -> (u64, u64, u64, u64) {
        take_counts(&self.shared.counters, &self.last)
    }
}

/// The local store's writer: the same queue, and a thread inserting rows into the `spans`
/// table of the SQLite file at `path` (created, with its tables, by the Python store first).
#[pyclass(frozen)]
struct StoreWriter {
    shared: Arc<Shared<store::Store>>,
    last: std::sync::Mutex<[u64; 4]>,
    /// Python's JSON text for a value the row reader does not model (store/rows.py repairs it).
    fallback: Py<PyAny>,
}

#[pymethods]
impl StoreWriter {
    #[new]
    fn new(
        path: Vec<u8>,
        wait: f64,
        max_queue: usize,
        batch_size: usize,
        delay: f64,
        fallback: Py<PyAny>,
    ) -> PyResult<Self> {
        let path =
            std::ffi::CString::new(path).map_err(|_| PyValueError::new_err("NUL in path"))?;
        let queue =
            QueueConfig { max_queue, batch_size: batch_size.max(1), delay: duration(delay) };
        let sink = store::Store { path, wait: duration(wait), resources: Default::default() };
        let shared = Shared::start(queue, sink, "glmtrace-native-store");
        Ok(StoreWriter { shared, last: Default::default(), fallback })
    }

    /// Registers a resource: its service name and JSON text; its index for `submit`.
    fn resource(&self, service_name: Option<String>, resource_json: String) -> u32 {
        let mut resources = lock(&self.shared.sink.resources);
        resources.push(Arc::new((service_name, resource_json)));
        resources.len() as u32 - 1
    }

    /// Hands one span tuple over (as `Pipeline.submit`); never raises, never blocks.
    fn submit(&self, py: Python<'_>, span: &Bound<'_, PyTuple>) -> bool {
        let fallback = self.fallback.bind(py);
        let reader = row::Reader { fallback };
        submitted(&self.shared, catch_unwind(AssertUnwindSafe(|| reader.row(span))))
    }

    fn pending(&self) -> u64 {
        self.shared.pending()
    }

    fn flush(&self, py: Python<'_>, timeout: f64) -> bool {
        let shared = Arc::clone(&self.shared);
        py.detach(move || shared.flush(duration(timeout)))
    }

    fn shutdown(&self, py: Python<'_>, timeout: f64) -> bool {
        let shared = Arc::clone(&self.shared);
        py.detach(move || shared.shutdown(duration(timeout)))
    }

    /// Before a fork: waits (GIL released) until the thread is between transactions with its
    /// connection closed, at most `timeout` s; False if it did not get there.
    fn pause(&self, py: Python<'_>, timeout: f64) -> bool {
        let shared = Arc::clone(&self.shared);
        py.detach(move || shared.pause(duration(timeout)))
    }

    /// After a fork, in the parent: the thread goes on.
    fn resume(&self) {
        self.shared.resume();
    }

    fn take_counts(&self) -> (u64, u64, u64, u64) {
        take_counts(&self.shared.counters, &self.last)
    }
}

/// `(address of sqlite3_libversion, version)` as this extension resolved them.
#[pyfunction]
fn sqlite_library() -> (usize, String) {
    (sqlite::library_address(), sqlite::library_version())
}

/// The ExportTraceServiceRequest bytes for `spans` (tuples as for `Pipeline.submit`), with
/// `resources` [(attributes, schema_url)] and `scopes` [(name, version, schema_url, attributes)]
/// as registered: the encoder alone, for the equivalence tests.
#[pyfunction]
fn encode<'py>(
    py: Python<'py>,
    spans: Vec<Bound<'py, PyTuple>>,
    resources: Vec<(Bound<'py, PyAny>, Option<String>)>,
    scopes: Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>, Option<String>, Bound<'py, PyAny>)>,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut registry = batch::Registry::default();
    for (attrs, schema) in &resources {
        registry.resources.push((convert::resource(attrs)?, schema.clone().unwrap_or_default()));
    }
    for (name, version, schema, attrs) in &scopes {
        registry
            .scopes
            .push((convert::scope(name, version, attrs)?, schema.clone().unwrap_or_default()));
    }
    let queued = spans.iter().map(convert::span).collect::<PyResult<Vec<_>>>()?;
    let body = batch::request(queued, &registry).encode_to_vec();
    Ok(PyBytes::new(py, &body))
}

#[pymodule]
fn glmtrace_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Pipeline>()?;
    m.add_class::<StoreWriter>()?;
    m.add_function(wrap_pyfunction!(sqlite_library, m)?)?;
    m.add_function(wrap_pyfunction!(encode, m)?)?;
    Ok(())
}
