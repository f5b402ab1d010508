//! How one encoded ExportTraceServiceRequest leaves: OTLP/HTTP protobuf (ureq) or OTLP/gRPC
//! (grpc.rs). The export thread owns its transport, so nothing of it is shared across a fork.

use std::time::Duration;

use prost::bytes::Bytes;

/// What became of one request.
pub enum Sent {
    Ok,
    /// Refused, or a status the collector marks transient: worth another try.
    Retry,
    /// Rejected, or no answer within the timeout (black-holed: do not wait twice).
    Failed,
}

pub trait Transport {
    fn send(&mut self, body: Bytes) -> Sent;
}

/// POSTs to `/v1/traces`, one connection reused.
pub struct Http {
    agent: ureq::Agent,
    url: String,
    headers: Vec<(String, String)>,
}

impl Http {
    pub fn new(url: &str, headers: &[(String, String)], timeout: Duration) -> Http {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Http { agent, url: url.to_owned(), headers: headers.to_vec() }
    }
}

impl Transport for Http {
    fn send(&mut self, body: Bytes) -> Sent {
        let mut req = self.agent.post(&self.url).header("Content-Type", "application/x-protobuf");
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        match req.send(&body[..]) {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let _ = resp.body_mut().read_to_vec(); // lets the connection be reused
                match status {
                    200..=299 => Sent::Ok,
                    429 | 502 | 503 | 504 => Sent::Retry,
                    _ => Sent::Failed,
                }
            }
            Err(ureq::Error::Timeout(_)) => Sent::Failed,
            Err(_) => Sent::Retry,
        }
    }
}

/// Every request fails: a transport that could not be built (each span is counted dropped).
pub struct Broken;

impl Transport for Broken {
    fn send(&mut self, _body: Bytes) -> Sent {
        Sent::Failed
    }
}
