//! Grouping queued spans into OTLP requests of bounded size, as the reference encoder groups
//! them: by resource, then by scope, each in first-seen order.

use prost::Message;

use crate::convert::Queued;
use crate::proto::{
    AnyValue, ExportTraceServiceRequest, InstrumentationScope, KeyValue, Resource, ResourceSpans,
    ScopeSpans, Span, Value,
};

/// Resources and scopes registered once, referred to by index from each span.
#[derive(Default, Clone)]
pub struct Registry {
    pub resources: Vec<(Resource, String)>,
    pub scopes: Vec<(InstrumentationScope, String)>,
}

pub fn request(spans: Vec<Queued>, registry: &Registry) -> ExportTraceServiceRequest {
    let mut out: Vec<ResourceSpans> = Vec::new();
    let mut index: Vec<(u32, Vec<u32>)> = Vec::new(); // resource -> its scopes, in out's order
    for q in spans {
        let r = match index.iter().position(|(res, _)| *res == q.resource) {
            Some(r) => r,
            None => {
                let (resource, schema_url) =
                    registry.resources.get(q.resource as usize).cloned().unwrap_or_default();
                out.push(ResourceSpans {
                    resource: Some(resource),
                    scope_spans: Vec::new(),
                    schema_url,
                });
                index.push((q.resource, Vec::new()));
                out.len() - 1
            }
        };
        let scopes = &mut index[r].1;
        let s = match scopes.iter().position(|sc| *sc == q.scope) {
            Some(s) => s,
            None => {
                let (scope, schema_url) =
                    registry.scopes.get(q.scope as usize).cloned().unwrap_or_default();
                out[r].scope_spans.push(ScopeSpans {
                    scope: Some(scope),
                    spans: Vec::new(),
                    schema_url,
                });
                scopes.push(q.scope);
                scopes.len() - 1
            }
        };
        out[r].scope_spans[s].spans.push(q.span);
    }
    ExportTraceServiceRequest { resource_spans: out }
}

const TRUNCATED_VALUE: usize = 1024;
const TRUNCATED_ITEMS: usize = 256;
const MAX_EVENTS: usize = 32;

fn cut_text(s: &mut String) {
    if let Some((at, _)) = s.char_indices().nth(TRUNCATED_VALUE) {
        s.truncate(at);
    }
}

fn cut(value: &mut AnyValue) {
    match &mut value.value {
        Some(Value::StringValue(s)) => cut_text(s),
        Some(Value::ArrayValue(a)) => {
            a.values.truncate(TRUNCATED_ITEMS);
            a.values.iter_mut().for_each(cut);
        }
        _ => {}
    }
}

fn cut_all(attributes: &mut [KeyValue]) {
    attributes.iter_mut().filter_map(|kv| kv.value.as_mut()).for_each(cut);
}

/// Shrinks a span too big for one request the way the Python path (`span_export._shrink`) does;
/// true when it had to.
pub fn shrink(span: &mut Span, max_bytes: usize) -> bool {
    if span.encoded_len() <= max_bytes {
        return false;
    }
    cut_all(&mut span.attributes);
    cut_text(&mut span.name);
    if let Some(status) = span.status.as_mut() {
        cut_text(&mut status.message); // nothing bounds a description set from a huge message
    }
    span.attributes.push(KeyValue {
        key: "glmtrace.truncated".into(),
        value: Some(AnyValue { value: Some(Value::BoolValue(true)) }),
    });
    span.events.truncate(MAX_EVENTS);
    for event in &mut span.events {
        cut_all(&mut event.attributes);
    }
    true
}

/// Splits `spans` into chunks whose spans add up to at most `max_bytes`.
pub fn chunks(spans: Vec<Queued>, max_bytes: usize) -> Vec<Vec<Queued>> {
    let mut out = Vec::new();
    let mut chunk = Vec::new();
    let mut size = 0;
    for q in spans {
        let n = q.span.encoded_len() + 8;
        if !chunk.is_empty() && size + n > max_bytes {
            out.push(std::mem::take(&mut chunk));
            size = 0;
        }
        chunk.push(q);
        size += n;
    }
    if !chunk.is_empty() {
        out.push(chunk);
    }
    out
}
