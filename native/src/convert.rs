//! Python values -> OTLP messages, mirroring OpenTelemetry's reference encoder
//! (opentelemetry.exporter.otlp.proto.common), run with the GIL held at hand-off time.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::proto::{
    AnyValue, ArrayValue, Event, InstrumentationScope, KeyValue, KeyValueList, Link, Resource,
    Span, Status, Value,
};

/// Span flags as the reference encoder sets them: "has is_remote", plus "is remote".
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

/// A finished span waiting in the queue, with the indices of its registered resource and scope.
pub struct Queued {
    pub resource: u32,
    pub scope: u32,
    pub span: Span,
}

/// Text with each lone surrogate replaced by U+FFFD, as glmtrace's `repair.text` does.
pub fn text(value: &Bound<'_, PyAny>) -> PyResult<String> {
    let s = value.cast::<PyString>()?;
    match s.to_str() {
        Ok(ok) => Ok(ok.to_owned()),
        Err(_) => {
            let raw = s.call_method1("encode", ("utf-16-le", "surrogatepass"))?;
            let bytes = raw.cast::<PyBytes>()?.as_bytes();
            let units: Vec<u16> =
                bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
            Ok(String::from_utf16_lossy(&units))
        }
    }
}

fn opt_text(value: &Bound<'_, PyAny>) -> PyResult<String> {
    if value.is_none() {
        Ok(String::new())
    } else {
        text(value)
    }
}

/// One attribute value; None when the reference encoder would skip it (an unknown type).
fn any_value(value: &Bound<'_, PyAny>, depth: u32) -> PyResult<Option<AnyValue>> {
    let v = if value.is_none() {
        None
    } else if let Ok(b) = value.cast::<PyBool>() {
        Some(Value::BoolValue(b.is_true()))
    } else if value.is_instance_of::<PyString>() {
        Some(Value::StringValue(text(value)?))
    } else if value.is_instance_of::<PyInt>() {
        match value.extract::<i64>() {
            Ok(i) => Some(Value::IntValue(i)),
            // Past 64 bits OTLP has no integer: its decimal text, as the Python path repairs it.
            Err(_) => Some(Value::StringValue(
                value.str().map(|s| s.to_string()).unwrap_or_else(|_| "<integer>".into()),
            )),
        }
    } else if let Ok(f) = value.cast::<PyFloat>() {
        Some(Value::DoubleValue(f.value()))
    } else if let Ok(b) = value.cast::<PyBytes>() {
        Some(Value::BytesValue(b.as_bytes().to_vec()))
    } else if depth < 32 && (value.is_instance_of::<PyTuple>() || value.is_instance_of::<PyList>())
    {
        let mut values = Vec::new();
        for item in value.try_iter()? {
            match any_value(&item?, depth + 1)? {
                Some(v) => values.push(v),
                None => return Ok(None),
            }
        }
        Some(Value::ArrayValue(ArrayValue { values }))
    } else if depth < 32 && value.is_instance_of::<PyDict>() {
        Some(Value::KvlistValue(KeyValueList { values: attributes(value, depth + 1)? }))
    } else {
        return Ok(None);
    };
    Ok(Some(AnyValue { value: v }))
}

fn attributes_at(mapping: &Bound<'_, PyAny>, depth: u32) -> PyResult<Vec<KeyValue>> {
    let mut out = Vec::new();
    if mapping.is_none() {
        return Ok(out);
    }
    let mut push = |k: Bound<'_, PyAny>, v: Bound<'_, PyAny>| -> PyResult<()> {
        let key = if k.is_instance_of::<PyString>() { text(&k)? } else { k.str()?.to_string() };
        if let Some(value) = any_value(&v, depth)? {
            out.push(KeyValue { key, value: Some(value) });
        }
        Ok(())
    };
    if let Ok(dict) = mapping.cast::<PyDict>() {
        for (k, v) in dict.iter() {
            push(k, v)?;
        }
    } else {
        for item in mapping.call_method0("items")?.try_iter()? {
            let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item?.extract()?;
            push(k, v)?;
        }
    }
    Ok(out)
}

/// A mapping of attributes (a dict, or anything with ``items()``), in its own order.
pub fn attributes(mapping: &Bound<'_, PyAny>, depth: u32) -> PyResult<Vec<KeyValue>> {
    attributes_at(mapping, depth)
}

/// An id as its N big-endian bytes; an error when it does not fit in N bytes.
fn id_bytes<const N: usize>(value: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let id: u128 = value.extract()?;
    if N < 16 && id >> (8 * N) != 0 {
        return Err(pyo3::exceptions::PyValueError::new_err("id wider than its field"));
    }
    Ok(id.to_be_bytes()[16 - N..].to_vec())
}

/// A timestamp as OTLP carries it, whatever the program passed through the OpenTelemetry API
/// (`add_event(timestamp=time.time())`, a negative or too large one): whole nanoseconds,
/// clamped to 0..=u64::MAX, as the Python path repairs it (`repair.nanos`). Never fails the span.
pub fn nanos(value: &Bound<'_, PyAny>) -> u64 {
    if let Ok(n) = value.extract::<u64>() {
        return n;
    }
    // A float, or an int out of range: `as` saturates (NaN and negatives to 0).
    value.extract::<f64>().map(|f| f as u64).unwrap_or(0)
}

fn flags(remote: bool) -> u32 {
    if remote {
        HAS_IS_REMOTE | IS_REMOTE
    } else {
        HAS_IS_REMOTE
    }
}

/// `(attributes, schema_url)` -> a resource and its schema URL.
pub fn resource(attrs: &Bound<'_, PyAny>) -> PyResult<Resource> {
    Ok(Resource { attributes: attributes(attrs, 0)?, dropped_attributes_count: 0 })
}

/// `(name, version, attributes)` of an instrumentation scope.
pub fn scope(
    name: &Bound<'_, PyAny>,
    version: &Bound<'_, PyAny>,
    attrs: &Bound<'_, PyAny>,
) -> PyResult<InstrumentationScope> {
    Ok(InstrumentationScope {
        name: opt_text(name)?,
        version: opt_text(version)?,
        attributes: attributes(attrs, 0)?,
        dropped_attributes_count: 0,
    })
}

/// The span tuple built by glmtrace/_internal/native_export.py (`_span_tuple`), field by field:
/// resource, scope, trace_id, span_id, parent_id|None, parent_remote, trace_state, name, kind,
/// start, end, attributes, dropped_attributes, events, dropped_events, links, dropped_links,
/// status_code, status_message|None.
pub fn span(t: &Bound<'_, PyTuple>) -> PyResult<Queued> {
    let at = |i: usize| t.get_item(i);
    let parent = at(4)?;
    let parent_span_id = if parent.is_none() { Vec::new() } else { id_bytes::<8>(&parent)? };
    let mut events = Vec::new();
    for event in at(13)?.try_iter()? {
        let e = event?;
        let e = e.cast::<PyTuple>()?; // (name, timestamp, attributes, dropped)
        events.push(Event {
            name: opt_text(&e.get_item(0)?)?,
            time_unix_nano: nanos(&e.get_item(1)?),
            attributes: attributes(&e.get_item(2)?, 0)?,
            dropped_attributes_count: e.get_item(3)?.extract()?,
        });
    }
    let mut links = Vec::new();
    for link in at(15)?.try_iter()? {
        let l = link?;
        // (trace_id, span_id, remote, attributes, dropped)
        let l = l.cast::<PyTuple>()?;
        // A link to ids no trace can have is left out, as the Python path leaves it out.
        let (Ok(trace_id), Ok(span_id)) =
            (id_bytes::<16>(&l.get_item(0)?), id_bytes::<8>(&l.get_item(1)?))
        else {
            continue;
        };
        links.push(Link {
            trace_id,
            span_id,
            trace_state: String::new(), // the reference encoder leaves it out
            attributes: attributes(&l.get_item(3)?, 0)?,
            dropped_attributes_count: l.get_item(4)?.extract()?,
            flags: flags(l.get_item(2)?.is_truthy()?),
        });
    }
    let kind: i32 = at(8)?.extract()?;
    Ok(Queued {
        resource: at(0)?.extract()?,
        scope: at(1)?.extract()?,
        span: Span {
            trace_id: id_bytes::<16>(&at(2)?)?,
            span_id: id_bytes::<8>(&at(3)?)?,
            trace_state: opt_text(&at(6)?)?,
            parent_span_id,
            flags: flags(at(5)?.is_truthy()?),
            name: opt_text(&at(7)?)?,
            kind: kind + 1, // SpanKind.INTERNAL is 0 in Python, 1 in OTLP
            start_time_unix_nano: nanos(&at(9)?),
            end_time_unix_nano: nanos(&at(10)?),
            attributes: attributes(&at(11)?, 0)?,
            dropped_attributes_count: at(12)?.extract()?,
            events,
            dropped_events_count: at(14)?.extract()?,
            links,
            dropped_links_count: at(16)?.extract()?,
            status: Some(Status { code: at(17)?.extract()?, message: opt_text(&at(18)?)? }),
        },
    })
}
