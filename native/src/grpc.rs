//! OTLP/gRPC over plain-text HTTP/2: tonic's client channel, driven by a current-thread tokio
//! runtime that belongs to the export thread alone (a forked child builds its own with its own
//! pipeline; the parent's is never touched there).

use std::time::Duration;

use http::uri::{PathAndQuery, Uri};
use prost::bytes::{Buf, BufMut, Bytes};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{AsciiMetadataValue, BinaryMetadataValue, MetadataKey, MetadataMap};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::transport::{Sent, Transport};

const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

pub struct Grpc {
    // Shut down in `drop` without waiting: a resolver thread stuck in getaddrinfo must not
    // hold the export thread.
    runtime: Option<tokio::runtime::Runtime>,
    client: tonic::client::Grpc<Channel>,
    metadata: MetadataMap,
    timeout: Duration,
}

impl Grpc {
    /// A lazy channel to `url`'s scheme and authority (its path, as the Python exporter's, is
    /// ignored); `headers` become metadata. None for a URL or header gRPC cannot carry.
    pub fn new(url: &str, headers: &[(String, String)], timeout: Duration) -> Option<Grpc> {
        let uri: Uri = url.parse().ok()?;
        let origin = format!("{}://{}", uri.scheme_str()?, uri.authority()?);
        let endpoint =
            Endpoint::from_shared(origin).ok()?.connect_timeout(timeout).tcp_nodelay(true);
        let metadata = metadata(headers)?;
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build().ok()?;
        // The channel's buffer task is spawned on the runtime; it runs while `send` drives it.
        let channel = {
            let _entered = runtime.enter();
            endpoint.connect_lazy()
        };
        Some(Grpc {
            runtime: Some(runtime),
            client: tonic::client::Grpc::new(channel),
            metadata,
            timeout,
        })
    }
}

/// gRPC metadata keys are lowercase; `-bin` keys carry bytes (base64 on the wire).
fn metadata(headers: &[(String, String)]) -> Option<MetadataMap> {
    let mut map = MetadataMap::new();
    for (k, v) in headers {
        let key = k.to_ascii_lowercase();
        if key.ends_with("-bin") {
            let name = MetadataKey::from_bytes(key.as_bytes()).ok()?;
            map.append_bin(name, BinaryMetadataValue::from_bytes(v.as_bytes()));
        } else {
            let name = MetadataKey::from_bytes(key.as_bytes()).ok()?;
            map.append(name, v.parse::<AsciiMetadataValue>().ok()?);
        }
    }
    Some(map)
}

impl Transport for Grpc {
    fn send(&mut self, body: Bytes) -> Sent {
        let Some(runtime) = &self.runtime else { return Sent::Failed };
        let client = &mut self.client;
        let mut request = tonic::Request::new(body);
        *request.metadata_mut() = self.metadata.clone();
        let call = async {
            client.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
            client.unary(request, PathAndQuery::from_static(EXPORT), Raw).await
        };
        match runtime.block_on(async { tokio::time::timeout(self.timeout, call).await }) {
            Ok(Ok(_)) => Sent::Ok,
            // As the HTTP path retries a refused connection, 429, 502, 503 and 504.
            Ok(Err(s)) if matches!(s.code(), Code::Unavailable | Code::ResourceExhausted) => {
                Sent::Retry
            }
            Ok(Err(_)) | Err(_) => Sent::Failed,
        }
    }
}

impl Drop for Grpc {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background(); // never waits for a resolver stuck in getaddrinfo
        }
    }
}

/// The request goes as the bytes batch.rs encoded (sized and chunked there); the response
/// (an optional partial-success note) is not read, as the HTTP path does not read its body.
#[derive(Clone, Copy)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = ();
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = ();
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, Status> {
        src.advance(src.remaining());
        Ok(Some(()))
    }
}
