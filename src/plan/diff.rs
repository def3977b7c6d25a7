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

/// One line of a nested diff: what happens at one path inside a field's value (`routes[GET /book].path`).
/// `before` only: removed; `after` only: added; both: changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Nested {
    pub path: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// What changed inside a field's value, element by element: tables key by key, arrays of tables
/// element by element matched by `identity` (the field's [`crate::providers::schema::Field::identity`]
/// members; elements without them by position), down to the values that differ. A list of scalars
/// that differs is one changed line. Values IAM treats as the same (`"x"` and `["x"]`) are equal.
///
/// An element that lost its identity (a route whose path changed) is matched with the added element
/// most like it when most of their members are equal, so it shows as one changed member rather than a
/// removed and an added element.
pub fn nested(identity: &[&str], path: &str, before: &Value, after: &Value) -> Vec<Nested> {
    let mut out = Vec::new();
    nested_into(identity, path, before, after, &mut out);
    out
}

fn same(a: &Value, b: &Value) -> bool {
    canonical_document(a) == canonical_document(b)
}

fn nested_into(identity: &[&str], path: &str, before: &Value, after: &Value, out: &mut Vec<Nested>) {
    if same(before, after) {
        return;
    }
    let line =
        |before: Option<&Value>, after: Option<&Value>| Nested { path: path.to_string(), before: before.cloned(), after: after.cloned() };
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            for (k, bv) in b {
                let p = format!("{path}.{k}");
                match a.get(k) {
                    Some(av) => nested_into(identity, &p, bv, av, out),
                    None => out.push(Nested { path: p, before: Some(bv.clone()), after: None }),
                }
            }
            for (k, av) in a.iter().filter(|(k, _)| !b.contains_key(*k)) {
                out.push(Nested { path: format!("{path}.{k}"), before: None, after: Some(av.clone()) });
            }
        }
        (Value::Array(b), Value::Array(a)) => {
            if b.iter().chain(a).any(Value::is_object) {
                elements(identity, path, b, a, out);
            } else {
                out.push(line(Some(before), Some(after)));
            }
        }
        // `"x"` and `["x"]`, a statement and a list of statements: compared as lists.
        (Value::Array(b), other) if other.is_object() => elements(identity, path, b, std::slice::from_ref(other), out),
        (other, Value::Array(a)) if other.is_object() => elements(identity, path, std::slice::from_ref(other), a, out),
        _ => out.push(line(Some(before), Some(after))),
    }
}

/// How an element of a list is named in a nested path: its identity members' values (`GET /book`), or
/// its position.
fn element_label(identity: &[&str], item: &Value, index: usize) -> (bool, String) {
    let members: Option<Vec<String>> = match item {
        Value::Object(m) if !identity.is_empty() => identity
            .iter()
            .map(|k| match m.get(*k) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Null) | None => None,
                Some(other) => Some(other.to_string()),
            })
            .collect(),
        _ => None,
    };
    match members {
        Some(values) => (true, values.join(" ")),
        None => (false, index.to_string()),
    }
}

fn elements(identity: &[&str], path: &str, before: &[Value], after: &[Value], out: &mut Vec<Nested>) {
    let label = |items: &[Value]| -> Vec<(bool, String)> { items.iter().enumerate().map(|(i, v)| element_label(identity, v, i)).collect() };
    let (b_labels, a_labels) = (label(before), label(after));
    let mut a_used = vec![false; after.len()];
    let mut unmatched = Vec::new();
    let mut pairs = Vec::new();
    for (i, bl) in b_labels.iter().enumerate() {
        match a_labels.iter().enumerate().position(|(j, al)| !a_used[j] && al == bl) {
            Some(j) => {
                a_used[j] = true;
                pairs.push((i, j));
            }
            None => unmatched.push(i),
        }
    }
    // Elements whose identity changed: paired with the most similar added element, if most members agree.
    let mut removed = Vec::new();
    for i in unmatched {
        let best = (0..after.len())
            .filter(|j| !a_used[*j])
            .filter_map(|j| similarity(&before[i], &after[j]).map(|(equal, differ)| (j, equal, differ)))
            .filter(|(_, equal, differ)| equal > differ)
            .max_by_key(|(j, equal, differ)| (*equal as isize - *differ as isize, std::cmp::Reverse(*j)));
        match best {
            Some((j, _, _)) => {
                a_used[j] = true;
                pairs.push((i, j));
            }
            None => removed.push(i),
        }
    }
    pairs.sort();
    let mut removed = removed.into_iter().peekable();
    for (i, j) in pairs {
        while let Some(r) = removed.next_if(|r| *r < i) {
            out.push(Nested { path: format!("{path}[{}]", b_labels[r].1), before: Some(before[r].clone()), after: None });
        }
        nested_into(identity, &format!("{path}[{}]", b_labels[i].1), &before[i], &after[j], out);
    }
    for r in removed {
        out.push(Nested { path: format!("{path}[{}]", b_labels[r].1), before: Some(before[r].clone()), after: None });
    }
    for (j, a) in after.iter().enumerate().filter(|(j, _)| !a_used[*j]) {
        out.push(Nested { path: format!("{path}[{}]", a_labels[j].1), before: None, after: Some(a.clone()) });
    }
}

/// The items of `before` not in `after`, the items of `after` not in `before` (each counted as often
/// as it appears), and how many are in both.
pub fn list_items<'a>(before: &'a [Value], after: &'a [Value]) -> (Vec<&'a Value>, Vec<&'a Value>, usize) {
    let mut unmatched: Vec<&Value> = after.iter().collect();
    let mut removed = Vec::new();
    for b in before {
        match unmatched.iter().position(|a| same(a, b)) {
            Some(i) => {
                unmatched.remove(i);
            }
            None => removed.push(b),
        }
    }
    let kept = before.len() - removed.len();
    (removed, unmatched, kept)
}

/// For two tables: how many of their members are equal and how many differ (one side only counts as
/// differing). `None` for anything else.
fn similarity(a: &Value, b: &Value) -> Option<(usize, usize)> {
    let (Value::Object(a), Value::Object(b)) = (a, b) else { return None };
    let equal = a.iter().filter(|(k, v)| b.get(*k).is_some_and(|w| same(v, w))).count();
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    Some((equal, keys.len() - equal))
}

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

    fn lines(n: &[Nested]) -> Vec<(String, Option<Value>, Option<Value>)> {
        n.iter().map(|n| (n.path.clone(), n.before.clone(), n.after.clone())).collect()
    }

    #[test]
    fn a_route_path_change_is_one_changed_member() {
        let route = |p: &str| json!({"path": p, "method": "GET", "integration": {"type": "AWS_PROXY", "uri": "arn:fn"}});
        let before = json!([route("/order"), route("/book")]);
        let after = json!([route("/order"), route("/books")]);
        let n = nested(&["method", "path"], "routes", &before, &after);
        assert_eq!(lines(&n), vec![("routes[GET /book].path".to_string(), Some(json!("/book")), Some(json!("/books")))]);
        // An integration change inside a route keeps the route's identity.
        let mut changed = route("/order");
        changed["integration"]["uri"] = json!("arn:other");
        let n = nested(&["method", "path"], "routes", &json!([route("/order")]), &json!([changed]));
        assert_eq!(lines(&n), vec![("routes[GET /order].integration.uri".to_string(), Some(json!("arn:fn")), Some(json!("arn:other")))]);
    }

    #[test]
    fn routes_added_and_removed_are_whole_elements() {
        let get = json!({"path": "/book", "method": "GET", "integration": {"type": "MOCK"}});
        let post =
            json!({"path": "/order", "method": "POST", "integration": {"type": "AWS_PROXY", "uri": "arn:x"}, "authorization": "NONE"});
        let n = nested(&["method", "path"], "routes", &json!([get]), &json!([get, post]));
        assert_eq!(lines(&n), vec![("routes[POST /order]".to_string(), None, Some(post.clone()))]);
        let n = nested(&["method", "path"], "routes", &json!([post, get]), &json!([get]));
        assert_eq!(lines(&n), vec![("routes[POST /order]".to_string(), Some(post), None)]);
    }

    #[test]
    fn waf_rules_are_matched_by_name() {
        let rate = |limit: u64, priority: u64| json!({"name": "rate-limit", "priority": priority, "action": "block", "rate_based": {"limit": limit}});
        let geo = json!({"name": "block-sg", "priority": 1, "action": "block", "geo_match": {"country_codes": ["SG"]}});
        // Reordered, and one rule's limit changed: one line.
        let n = nested(&["name"], "rules", &json!([rate(2000, 0), geo]), &json!([geo, rate(1000, 0)]));
        assert_eq!(lines(&n), vec![("rules[rate-limit].rate_based.limit".to_string(), Some(json!(2000)), Some(json!(1000)))]);
        // A list of scalars inside a rule is one changed line.
        let mut geo2 = geo.clone();
        geo2["geo_match"]["country_codes"] = json!(["SG", "KP"]);
        let n = nested(&["name"], "rules", &json!([geo]), &json!([geo2]));
        assert_eq!(
            lines(&n),
            vec![("rules[block-sg].geo_match.country_codes".to_string(), Some(json!(["SG"])), Some(json!(["SG", "KP"])))]
        );
        // A rule replaced by an unrelated one: removed and added.
        let n = nested(&["name"], "rules", &json!([geo]), &json!([rate(5, 2)]));
        assert_eq!(n.len(), 2, "{n:?}");
        assert_eq!((n[0].path.as_str(), n[0].after.is_none()), ("rules[block-sg]", true));
        assert_eq!((n[1].path.as_str(), n[1].before.is_none()), ("rules[rate-limit]", true));
    }

    #[test]
    fn policy_statements_are_matched_by_sid_or_position() {
        let s = |sid: &str, action: &str| json!({"Sid": sid, "Effect": "Allow", "Action": action, "Resource": "*"});
        let before = json!({"Version": "2012-10-17", "Statement": [s("Logs", "logs:PutLogEvents"), s("Invoke", "lambda:InvokeFunction")]});
        let after = json!({"Version": "2012-10-17", "Statement": [s("Invoke", "lambda:InvokeFunction"), s("Logs", "logs:*")]});
        let n = nested(&["Sid"], "inline_policies.p", &before, &after);
        assert_eq!(
            lines(&n),
            vec![("inline_policies.p.Statement[Logs].Action".to_string(), Some(json!("logs:PutLogEvents")), Some(json!("logs:*")))]
        );
        // Without Sid: by position; a single statement written as a table or a one-element list is the same.
        let plain = |effect: &str| json!({"Effect": effect, "Action": "sts:AssumeRole", "Principal": {"Service": "lambda.amazonaws.com"}});
        assert!(nested(&["Sid"], "p", &json!({"Statement": plain("Allow")}), &json!({"Statement": [plain("Allow")]})).is_empty());
        let n = nested(&["Sid"], "p", &json!({"Statement": [plain("Allow")]}), &json!({"Statement": [plain("Allow"), plain("Deny")]}));
        assert_eq!(lines(&n), vec![("p.Statement[1]".to_string(), None, Some(plain("Deny")))]);
        let n = nested(&["Sid"], "p", &json!({"Statement": [plain("Allow")]}), &json!({"Statement": [plain("Deny")]}));
        assert_eq!(lines(&n), vec![("p.Statement[0].Effect".to_string(), Some(json!("Allow")), Some(json!("Deny")))]);
    }

    #[test]
    fn tables_are_diffed_key_by_key() {
        let n = nested(&[], "visibility", &json!({"metric_name": "a", "sampled": true}), &json!({"metric_name": "b", "extra": 1}));
        assert_eq!(
            lines(&n),
            vec![
                ("visibility.metric_name".to_string(), Some(json!("a")), Some(json!("b"))),
                ("visibility.sampled".to_string(), Some(json!(true)), None),
                ("visibility.extra".to_string(), None, Some(json!(1))),
            ]
        );
    }
}
