//! JSON text exactly as the Python store writes it (`json.JSONEncoder(ensure_ascii=False)`):
//! `", "` and `": "` separators, Python's float repr, NaN and Infinity as Python spells them.

use std::fmt::Write;

/// A value copied out of Python at hand-off, encoded later without the GIL.
pub enum J {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
    /// JSON text Python made for a value this module does not model (its own repair applied).
    Raw(String),
}

pub fn encode(value: &J, out: &mut String) {
    match value {
        J::Null => out.push_str("null"),
        J::Bool(true) => out.push_str("true"),
        J::Bool(false) => out.push_str("false"),
        J::Int(i) => {
            let _ = write!(out, "{i}");
        }
        J::Float(f) => float(*f, out),
        J::Str(s) => string(s, out),
        J::Arr(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                encode(item, out);
            }
            out.push(']');
        }
        J::Obj(items) => {
            out.push('{');
            for (i, (key, item)) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                string(key, out);
                out.push_str(": ");
                encode(item, out);
            }
            out.push('}');
        }
        J::Raw(text) => out.push_str(text),
    }
}

/// A string literal: only `"`, `\` and control characters escaped (ensure_ascii=False).
pub fn string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `repr(f)` as CPython writes it (shortest round-trip digits; exponent form when the decimal
/// point falls before the 4th leading zero or past the 16th digit), and json's NaN/Infinity.
pub fn float(f: f64, out: &mut String) {
    if f.is_nan() {
        out.push_str("NaN");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    // Rust's `{:e}` gives shortest round-trip digits: "-1.2345e-7". Where two such strings
    // are equally near (562949953421312.25), CPython takes the even last digit and Rust may
    // not: the same count of digits, correctly rounded (ties to even), is CPython's, unless it
    // no longer round-trips (next to a power of two), where both keep the one that does.
    let shortest = format!("{f:e}");
    let mantissa = shortest.split('e').next().unwrap_or("");
    let count = mantissa.chars().filter(char::is_ascii_digit).count();
    let nearest = format!("{f:.prec$e}", prec = count.saturating_sub(1));
    let sci = if nearest.parse::<f64>() == Ok(f) { nearest } else { shortest };
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let decpt = exp + 1; // digits before the decimal point
    if negative {
        out.push('-');
    }
    if decpt <= -4 || decpt > 16 {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let e = decpt - 1;
        let _ = write!(out, "e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
    } else if decpt <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-decpt) as usize));
        out.push_str(&digits);
    } else {
        let decpt = decpt as usize;
        if decpt >= digits.len() {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', decpt - digits.len()));
            out.push_str(".0");
        } else {
            out.push_str(&digits[..decpt]);
            out.push('.');
            out.push_str(&digits[decpt..]);
        }
    }
}
