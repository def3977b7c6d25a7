//! `${resource.output}` references inside string values.

use serde_json::Value;

/// Shown for a value that depends on an output not known until apply.
pub const UNKNOWN: &str = "(known after apply)";

/// One reference found in a string: `${resource.output}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    pub resource: String,
    pub output: String,
    /// Byte offset of `${` inside the string.
    pub offset: usize,
    /// The whole `${...}` text.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefError {
    Unterminated { offset: usize },
    Malformed { offset: usize, text: String },
}

/// Finds the references in one string. `$${` is a literal `${`.
pub fn scan(s: &str) -> Result<Vec<Ref>, RefError> {
    let mut refs = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'$') && bytes.get(i + 2) == Some(&b'{') {
            i += 3;
            continue;
        }
        if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'{') {
            let Some(end) = s[i..].find('}') else {
                return Err(RefError::Unterminated { offset: i });
            };
            let text = &s[i..i + end + 1];
            let inner = &text[2..text.len() - 1];
            let parsed = inner.split_once('.').filter(|(r, o)| is_ident(r) && is_ident(o));
            let Some((resource, output)) = parsed else {
                return Err(RefError::Malformed { offset: i, text: text.to_string() });
            };
            refs.push(Ref { resource: resource.into(), output: output.into(), offset: i, text: text.into() });
            i += end + 1;
            continue;
        }
        i += 1;
    }
    Ok(refs)
}

pub fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Every reference anywhere in a JSON value (strings inside arrays and objects included).
pub fn collect(value: &Value, out: &mut Vec<Ref>) {
    match value {
        Value::String(s) => out.extend(scan(s).unwrap_or_default()),
        Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect(v, out)),
        _ => {}
    }
}

/// Substitutes references with the values `lookup` knows. A string whose references are not all
/// known becomes [`UNKNOWN`]; the second result says whether that happened anywhere.
pub fn resolve(value: &Value, lookup: &dyn Fn(&str, &str) -> Option<String>) -> (Value, bool) {
    match value {
        Value::String(s) => match resolve_str(s, lookup) {
            Some(v) => (Value::String(v), false),
            None => (Value::String(UNKNOWN.into()), true),
        },
        Value::Array(items) => {
            let mut unknown = false;
            let items = items
                .iter()
                .map(|v| {
                    let (v, u) = resolve(v, lookup);
                    unknown |= u;
                    v
                })
                .collect();
            (Value::Array(items), unknown)
        }
        Value::Object(map) => {
            let mut unknown = false;
            let map = map
                .iter()
                .map(|(k, v)| {
                    let (v, u) = resolve(v, lookup);
                    unknown |= u;
                    (k.clone(), v)
                })
                .collect();
            (Value::Object(map), unknown)
        }
        other => (other.clone(), false),
    }
}

fn resolve_str(s: &str, lookup: &dyn Fn(&str, &str) -> Option<String>) -> Option<String> {
    if !s.contains('$') {
        return Some(s.to_string());
    }
    let refs = scan(s).unwrap_or_default();
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    for r in &refs {
        out.push_str(&unescape(&s[last..r.offset]));
        out.push_str(&lookup(&r.resource, &r.output)?);
        last = r.offset + r.text.len();
    }
    out.push_str(&unescape(&s[last..]));
    Some(out)
}

fn unescape(s: &str) -> String {
    s.replace("$${", "${")
}

/// Whether a value contains the unknown marker anywhere.
pub fn contains_unknown(value: &Value) -> bool {
    match value {
        Value::String(s) => s == UNKNOWN,
        Value::Array(items) => items.iter().any(contains_unknown),
        Value::Object(map) => map.values().any(contains_unknown),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scans_references_and_escapes() {
        let refs = scan("arn:${fn.arn}/x/${role.name}$${literal.x}").unwrap();
        let names: Vec<_> = refs.iter().map(|r| (r.resource.as_str(), r.output.as_str(), r.offset)).collect();
        assert_eq!(names, vec![("fn", "arn", 4), ("role", "name", 16)]);
        assert_eq!(scan("${oops"), Err(RefError::Unterminated { offset: 0 }));
        assert!(matches!(scan("x ${a}"), Err(RefError::Malformed { offset: 2, .. })));
        assert!(matches!(scan("${a.b.c}"), Err(RefError::Malformed { .. })));
    }

    #[test]
    fn resolves_known_and_marks_unknown() {
        let lookup = |r: &str, o: &str| (r == "fn" && o == "arn").then(|| "arn:aws:lambda:x".to_string());
        let v = json!({"a": "${fn.arn}/invocations", "b": ["${role.arn}"], "c": 3, "d": "$${fn.arn}"});
        let (out, unknown) = resolve(&v, &lookup);
        assert!(unknown);
        assert_eq!(out, json!({"a": "arn:aws:lambda:x/invocations", "b": [UNKNOWN], "c": 3, "d": "${fn.arn}"}));
        assert!(contains_unknown(&out));
    }
}
