//! YAML output that every Kubernetes tool reads back as it was meant: a string is written
//! plain only when no YAML 1.1 reader (kubectl's sigs.k8s.io/yaml, PyYAML) could take it
//! for anything else (`off`, `yes`, `1e3`, `12:30`, ...), else double-quoted with JSON's
//! escapes. Block style, two-space indents, keys in the document's order.

use std::fmt::Write as _;

use serde_json::Value;

/// `v` as a YAML document (no `---`), ending with a newline.
pub fn to_string(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => map(m, 0, &mut out),
        Value::Array(a) if !a.is_empty() => seq(a, 0, &mut out),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

fn pad(n: usize, out: &mut String) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn map(m: &serde_json::Map<String, Value>, indent: usize, out: &mut String) {
    for (k, v) in m {
        pad(indent, out);
        out.push_str(&string(k));
        out.push(':');
        match v {
            Value::Object(inner) if !inner.is_empty() => {
                out.push('\n');
                map(inner, indent + 2, out);
            }
            Value::Array(items) if !items.is_empty() => {
                out.push('\n');
                seq(items, indent, out);
            }
            other => {
                out.push(' ');
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
    }
}

fn seq(items: &[Value], indent: usize, out: &mut String) {
    for item in items {
        match item {
            Value::Object(m) if !m.is_empty() => {
                // The map at indent + 2, its first indent replaced by the dash.
                let mut inner = String::new();
                map(m, indent + 2, &mut inner);
                pad(indent, out);
                out.push_str("- ");
                out.push_str(&inner[indent + 2..]);
            }
            Value::Array(a) if !a.is_empty() => {
                pad(indent, out);
                out.push_str("-\n");
                seq(a, indent + 2, out);
            }
            other => {
                pad(indent, out);
                out.push_str("- ");
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s),
        Value::Array(_) => "[]".to_string(),
        Value::Object(_) => "{}".to_string(),
    }
}

/// Words a YAML 1.1 reader takes for booleans or null.
const RESERVED: [&str; 12] = [
    "y", "yes", "n", "no", "on", "off", "true", "false", "null", "nan", "inf", "none",
];

fn plain_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let Some(&first) = b.first() else {
        return false;
    };
    if !(first.is_ascii_alphabetic() || first == b'/') {
        return false;
    }
    if RESERVED.contains(&s.to_ascii_lowercase().as_str()) {
        return false;
    }
    b.iter().enumerate().all(|(i, &c)| {
        c.is_ascii_alphanumeric()
            || b"_./-=+@".contains(&c)
            || (c == b':' && b.get(i + 1).is_some_and(|n| *n != b' '))
    })
}

fn string(s: &str) -> String {
    if plain_ok(s) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_and_quotes_what_yaml_1_1_would_misread() {
        let v = json!({
            "apiVersion": "v1",
            "metadata": {"annotations": {"a/b": "off", "n": "yes", "x": "1e3", "t": "12:30",
                          "j": "{repo: r, path: /d}", "e": "", "m": "two\nlines \"q\" \\"}},
            "spec": {"containers": [{"name": "c", "command": ["sh", "-c", "echo: hi # no"],
                                      "env": [], "ports": [{"containerPort": 80}]}],
                     "nested": [[1, 2], []], "empty": {}, "null": null, "image": "busybox:1.0"}
        });
        let text = to_string(&v);
        assert!(text.contains("a/b: \"off\""), "{text}");
        assert!(text.contains("image: busybox:1.0"), "{text}");
        let back: Value = serde_norway::from_str(&text).unwrap();
        assert_eq!(back, v, "{text}");
    }
}
