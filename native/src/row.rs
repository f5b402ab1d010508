//! A span tuple (the same one the OTLP path takes, see convert.rs) -> the store's `spans` row,
//! as the Python path builds it (`span_to_row`, store/rows.py `span_values`): values are copied
//! out of Python with the GIL held, the JSON columns are written later by the store thread.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::convert::{nanos, text};
use crate::json::{self, J};

const KINDS: [&str; 5] = ["INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"];
const STATUSES: [&str; 3] = ["UNSET", "OK", "ERROR"];

/// One finished span waiting in the store queue.
pub struct Row {
    pub resource: u32,
    trace_id: u128,
    span_id: u64,
    parent: Option<u64>,
    pub name: String,
    pub kind: &'static str,
    pub start: i64,
    pub end: i64,
    pub status: &'static str,
    pub status_message: Option<String>,
    attributes: J,
    events: Vec<(J, J, J)>,     // name, timestamp, attributes
    links: Vec<(u128, u64, J)>, // trace id, span id, attributes
}

/// Copies values out of Python; `fallback(value)` is Python's JSON text for anything else (an
/// integer past 64 bits, a dict with keys that are not text, an object JSON does not know).
pub struct Reader<'a, 'py> {
    pub fallback: &'a Bound<'py, PyAny>,
}

impl<'py> Reader<'_, 'py> {
    fn raw(&self, value: &Bound<'py, PyAny>) -> PyResult<J> {
        Ok(J::Raw(self.fallback.call1((value,))?.extract::<String>()?))
    }

    fn value(&self, v: &Bound<'py, PyAny>, depth: u32) -> PyResult<J> {
        if v.is_none() {
            Ok(J::Null)
        } else if let Ok(b) = v.cast::<PyBool>() {
            Ok(J::Bool(b.is_true()))
        } else if v.is_instance_of::<PyString>() {
            Ok(J::Str(text(v)?))
        } else if v.is_instance_of::<PyInt>() {
            match v.extract::<i64>() {
                Ok(i) => Ok(J::Int(i)),
                Err(_) => self.raw(v),
            }
        } else if let Ok(f) = v.cast::<PyFloat>() {
            Ok(J::Float(f.value()))
        } else if depth < 32 && (v.is_instance_of::<PyTuple>() || v.is_instance_of::<PyList>()) {
            let mut items = Vec::new();
            for item in v.try_iter()? {
                items.push(self.value(&item?, depth + 1)?);
            }
            Ok(J::Arr(items))
        } else if depth < 32 && v.is_instance_of::<PyDict>() {
            self.mapping(v, depth + 1)
        } else {
            self.raw(v)
        }
    }

    /// A dict, or anything with `items()` (as `dict(mapping or {})`); None is `{}`.
    fn mapping(&self, m: &Bound<'py, PyAny>, depth: u32) -> PyResult<J> {
        if m.is_none() {
            return Ok(J::Obj(Vec::new()));
        }
        let items: Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)> = match m.cast::<PyDict>() {
            Ok(dict) => dict.iter().collect(),
            Err(_) => {
                let mut items = Vec::new();
                for item in m.call_method0("items")?.try_iter()? {
                    items.push(item?.extract()?);
                }
                items
            }
        };
        let mut out = Vec::with_capacity(items.len());
        for (k, v) in items {
            if !k.is_instance_of::<PyString>() {
                return self.raw(&PyDict::from_sequence(&m.call_method0("items")?)?.into_any());
            }
            out.push((text(&k)?, self.value(&v, depth)?));
        }
        Ok(J::Obj(out))
    }

    /// The tuple of `Pipeline.submit` (field order in convert.rs) as a row.
    pub fn row(&self, t: &Bound<'py, PyTuple>) -> PyResult<Row> {
        let at = |i: usize| t.get_item(i);
        let parent = at(4)?;
        let mut events = Vec::new();
        for event in at(13)?.try_iter()? {
            let e = event?;
            let e = e.cast::<PyTuple>()?; // (name, timestamp, attributes, dropped)
            events.push((
                self.value(&e.get_item(0)?, 0)?,
                self.value(&e.get_item(1)?, 0)?,
                self.mapping(&e.get_item(2)?, 0)?,
            ));
        }
        let mut links = Vec::new();
        for link in at(15)?.try_iter()? {
            let l = link?;
            // (trace_id, span_id, remote, attributes, dropped)
            let l = l.cast::<PyTuple>()?;
            // A link to ids no trace can have is left out, as the OTLP encoders leave it out.
            let (Ok(trace_id), Ok(span_id)) =
                (l.get_item(0)?.extract::<u128>(), l.get_item(1)?.extract::<u64>())
            else {
                continue;
            };
            links.push((trace_id, span_id, self.mapping(&l.get_item(3)?, 0)?));
        }
        let name = at(7)?;
        let start = stored_nanos(&at(9)?);
        let kind: usize = at(8)?.extract()?;
        let status: usize = at(17)?.extract()?;
        let message = at(18)?;
        Ok(Row {
            resource: at(0)?.extract()?,
            trace_id: at(2)?.extract()?,
            span_id: at(3)?.extract()?,
            parent: if parent.is_none() { None } else { Some(parent.extract()?) },
            name: if name.is_instance_of::<PyString>() {
                text(&name)?
            } else if name.is_truthy()? {
                name.str()?.to_string()
            } else {
                String::new() // span(None) is still a span
            },
            kind: KINDS.get(kind).copied().unwrap_or("INTERNAL"),
            start,
            end: match stored_nanos(&at(10)?) {
                0 => start,
                end => end,
            },
            status: STATUSES.get(status).copied().unwrap_or("UNSET"),
            status_message: if message.is_none() { None } else { Some(text(&message)?) },
            attributes: self.mapping(&at(11)?, 0)?,
            events,
            links,
        })
    }
}

/// A span's start or end as the store's INTEGER column takes it (see convert::nanos).
fn stored_nanos(value: &Bound<'_, PyAny>) -> i64 {
    i64::try_from(nanos(value)).unwrap_or(i64::MAX)
}

fn to_json(value: &J) -> String {
    let mut out = String::new();
    json::encode(value, &mut out);
    out
}

impl Row {
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    pub fn span_id(&self) -> String {
        format!("{:016x}", self.span_id)
    }

    pub fn parent(&self) -> Option<String> {
        self.parent.map(|p| format!("{p:016x}"))
    }

    pub fn attributes(&self) -> String {
        to_json(&self.attributes)
    }

    pub fn events(&self) -> String {
        let mut out = String::from("[");
        for (i, (name, timestamp, attributes)) in self.events.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str("{\"name\": ");
            json::encode(name, &mut out);
            out.push_str(", \"timestamp_ns\": ");
            json::encode(timestamp, &mut out);
            out.push_str(", \"attributes\": ");
            json::encode(attributes, &mut out);
            out.push('}');
        }
        out.push(']');
        out
    }

    pub fn links(&self) -> String {
        let mut out = String::from("[");
        for (i, (trace_id, span_id, attributes)) in self.links.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&format!(
                "{{\"trace_id\": \"{trace_id:032x}\", \"span_id\": \"{span_id:016x}\", \"attributes\": "
            ));
            json::encode(attributes, &mut out);
            out.push('}');
        }
        out.push(']');
        out
    }
}
