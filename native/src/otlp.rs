//! The OTLP sink: batches encoded as ExportTraceServiceRequests of bounded size, sent over
//! OTLP/HTTP protobuf or OTLP/gRPC, retried briefly.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prost::bytes::Bytes;
use prost::Message;

use crate::batch::{self, Registry};
use crate::convert::Queued;
use crate::grpc::Grpc;
use crate::pipeline::{lock, Control, Sink};
use crate::transport::{Broken, Http, Sent, Transport};

#[derive(Clone, Copy)]
pub enum Protocol {
    Http,
    Grpc,
}

pub struct Otlp {
    pub protocol: Protocol,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub max_request_bytes: usize,
    pub registry: Mutex<Registry>,
}

impl Sink for Otlp {
    type Item = Queued;
    type Writer = Box<dyn Transport>;

    /// The transport, built on the export thread that alone uses it.
    fn writer(&self) -> Box<dyn Transport> {
        match self.protocol {
            Protocol::Http => Box::new(Http::new(&self.url, &self.headers, self.timeout)),
            // A URL or header gRPC cannot carry: every span is counted dropped.
            Protocol::Grpc => match Grpc::new(&self.url, &self.headers, self.timeout) {
                Some(grpc) => Box::new(grpc),
                None => Box::new(Broken),
            },
        }
    }

    /// Sends `spans` in size-bounded requests; the number that did not arrive.
    fn write(
        &self,
        transport: &mut Self::Writer,
        mut spans: Vec<Queued>,
        ctl: &dyn Control,
    ) -> u64 {
        let max = self.max_request_bytes;
        for q in spans.iter_mut() {
            if batch::shrink(&mut q.span, max) {
                ctl.counters().truncated.fetch_add(1, Relaxed);
            }
        }
        let registry = lock(&self.registry).clone();
        let mut lost = 0;
        for chunk in batch::chunks(spans, max) {
            let n = chunk.len() as u64;
            let body = Bytes::from(batch::request(chunk, &registry).encode_to_vec());
            if !self.post(transport.as_mut(), body, ctl) {
                lost += n;
            }
        }
        lost
    }
}

impl Otlp {
    /// One request, retried briefly on a refused connection or a retryable status.
    fn post(&self, transport: &mut dyn Transport, body: Bytes, ctl: &dyn Control) -> bool {
        let deadline = Instant::now() + self.timeout;
        let mut backoff = Duration::from_millis(50);
        loop {
            let retry = match transport.send(body.clone()) {
                Sent::Ok => return true,
                Sent::Retry => true,
                Sent::Failed => false,
            };
            if !retry || ctl.abandoned() || Instant::now() + backoff >= deadline {
                return false;
            }
            std::thread::sleep(backoff);
            backoff *= 4;
        }
    }
}
