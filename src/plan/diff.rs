//! Field-by-field comparison on normalised values.

use serde_json::{Map, Value};

use super::FieldChange;
use crate::manifest::Kind;
use crate::manifest::refs::contains_unknown;
use crate::manifest::schema::{CODE_SHA256, FieldType};

/// The changes that creating a resource makes: every desired field, from nothing.
pub fn creation(kind: Kind, desired: &Map<String, Value>) -> Vec<FieldChange> {
    let mut out: Vec<FieldChange> = kind
        .schema()
        .fields
        .iter()
        .filter_map(|f| {
            let v = desired.get(f.name)?;
            let v = if f.secret { redact_map(v) } else { v.clone() };
            Some(FieldChange { path: f.name.into(), before: None, after: Some(v), forces_replacement: false })
        })
        .collect();
    if let Some(sha) = desired.get(CODE_SHA256) {
        out.push(FieldChange { path: CODE_SHA256.into(), before: None, after: Some(sha.clone()), forces_replacement: false });
    }
    out
}

/// What differs between `current` (live, completed from state) and `desired`, for the fields the
/// manifest declares. Maps are compared key by key.
pub fn fields(kind: Kind, current: &Map<String, Value>, desired: &Map<String, Value>) -> Vec<FieldChange> {
    let mut out = Vec::new();
    for field in kind.schema().fields {
        // Code is compared by content hash (`code_sha256`), not by path.
        if field.ty == FieldType::Path {
            continue;
        }
        let Some(want) = desired.get(field.name) else {
            continue;
        };
        let have = current.get(field.name);
        match field.ty {
            FieldType::StringMap | FieldType::JsonMap => {
                let empty = Map::new();
                let want_map = want.as_object().unwrap_or(&empty);
                let have_map = have.and_then(Value::as_object).unwrap_or(&empty);
                for (k, w) in want_map {
                    let h = have_map.get(k);
                    if h.map(|h| normalize(field.ty, h)) != Some(normalize(field.ty, w)) {
                        let (h, w) = if field.secret { (h.map(|_| sensitive()), sensitive()) } else { (h.cloned(), w.clone()) };
                        out.push(change(format!("{}.{k}", field.name), h, Some(w), field.force_new));
                    }
                }
                for (k, h) in have_map {
                    if !want_map.contains_key(k) {
                        let h = if field.secret { sensitive() } else { h.clone() };
                        out.push(change(format!("{}.{k}", field.name), Some(h), None, field.force_new));
                    }
                }
            }
            _ => {
                if have.map(|h| normalize(field.ty, h)) != Some(normalize(field.ty, want)) {
                    out.push(change(field.name.to_string(), have.cloned(), Some(want.clone()), field.force_new));
                }
            }
        }
    }
    if let Some(want) = desired.get(CODE_SHA256)
        && current.get(CODE_SHA256) != Some(want)
    {
        out.push(change(CODE_SHA256.into(), current.get(CODE_SHA256).cloned(), Some(want.clone()), false));
    }
    out
}

fn sensitive() -> Value {
    Value::String(crate::manifest::schema::SENSITIVE.into())
}

/// A map with every value replaced by the sensitive marker.
pub(crate) fn redact_map(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.keys().map(|k| (k.clone(), sensitive())).collect()),
        _ => sensitive(),
    }
}

fn change(path: String, before: Option<Value>, after: Option<Value>, force_new: bool) -> FieldChange {
    FieldChange { path, before, after, forces_replacement: force_new }
}

/// Normalises a value for comparison: string lists are sets; JSON documents ignore the difference
/// between `"x"` and `["x"]` that IAM treats as the same; an unknown value never equals anything.
pub fn normalize(ty: FieldType, v: &Value) -> Value {
    if contains_unknown(v) {
        return Value::String("\u{0}unknown".into());
    }
    match ty {
        FieldType::StringList => {
            let mut items: Vec<Value> = v.as_array().cloned().unwrap_or_default();
            items.sort_by_key(|a| a.to_string());
            items.dedup();
            Value::Array(items)
        }
        FieldType::Json | FieldType::JsonMap => canonical_document(v),
        FieldType::JsonList => {
            let mut items: Vec<Value> = v.as_array().map(|a| a.iter().map(canonical_document).collect()).unwrap_or_default();
            items.sort_by_key(canonical_string);
            Value::Array(items)
        }
        _ => v.clone(),
    }
}

pub use crate::canonical::canonical_string;

fn canonical_document(v: &Value) -> Value {
    match v {
        Value::Array(items) if items.len() == 1 => canonical_document(&items[0]),
        Value::Array(items) => Value::Array(items.iter().map(canonical_document).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), canonical_document(v))).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn reports_only_what_differs_field_by_field() {
        let current = obj(json!({"function_name": "f", "memory_size": 256, "tags": {"a": "1", "x": "9"}, "code_sha256": "A"}));
        let desired = obj(json!({"function_name": "f", "memory_size": 512, "tags": {"a": "1"}, "code_sha256": "A", "code": "lambda"}));
        let changes = fields(Kind::LambdaFunction, &current, &desired);
        let paths: Vec<_> = changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, vec!["memory_size", "tags.x"]);
        assert_eq!(changes[0].before, Some(json!(256)));
        assert_eq!(changes[0].after, Some(json!(512)));
        assert_eq!(changes[1].after, None);
    }

    #[test]
    fn physical_name_change_forces_replacement() {
        let changes = fields(Kind::LogGroup, &obj(json!({"name": "a"})), &obj(json!({"name": "b"})));
        assert!(changes[0].forces_replacement);
    }

    #[test]
    fn policy_documents_compare_semantically() {
        let a = obj(json!({"assume_role_policy": {"Statement": [{"Action": ["sts:AssumeRole"], "Effect": "Allow"}]}}));
        let b = obj(json!({"assume_role_policy": {"Statement": {"Effect": "Allow", "Action": "sts:AssumeRole"}}}));
        assert!(fields(Kind::IamRole, &a, &b).is_empty());
        let c = obj(json!({"assume_role_policy": {"Statement": {"Effect": "Deny", "Action": "sts:AssumeRole"}}}));
        assert_eq!(fields(Kind::IamRole, &a, &c).len(), 1);
    }

    #[test]
    fn managed_policy_order_does_not_matter_and_unknown_always_differs() {
        let a = obj(json!({"managed_policy_arns": ["b", "a"], "name": "r"}));
        let b = obj(json!({"managed_policy_arns": ["a", "b"], "name": "r"}));
        assert!(fields(Kind::IamRole, &a, &b).is_empty());
        let c = obj(json!({"managed_policy_arns": ["(known after apply)"], "name": "r"}));
        assert_eq!(fields(Kind::IamRole, &a, &c).len(), 1);
    }
}
