//! Parsing structured manifest values (API routes, WAF rules): small helpers that say what is wrong
//! in words a manifest author can act on.

use serde_json::Value;

use super::schema::Check;

pub type Obj = serde_json::Map<String, Value>;

pub fn object(value: Value, allowed: &[&str]) -> Result<Obj, String> {
    let Value::Object(map) = value else { return Err("expected a table".into()) };
    if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        let hint = crate::manifest::suggest::did_you_mean(k, allowed.iter().copied(), str::to_string);
        return Err(format!("unknown key `{k}`; expected one of: {}{hint}", allowed.join(", ")));
    }
    Ok(map)
}

pub fn req_str(map: &Obj, key: &str) -> Result<String, String> {
    match map.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("`{key}` must be a string")),
        None => Err(format!("missing `{key}`")),
    }
}

pub fn opt_str(map: &Obj, key: &str, default: &str) -> Result<String, String> {
    if map.contains_key(key) { req_str(map, key) } else { Ok(default.to_string()) }
}

pub fn opt_bool(map: &Obj, key: &str, default: bool) -> Result<bool, String> {
    match map.get(key) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(format!("`{key}` must be a boolean")),
    }
}

pub fn req_int(map: &Obj, key: &str) -> Result<i64, String> {
    match map.get(key) {
        Some(v) => v.as_i64().ok_or_else(|| format!("`{key}` must be an integer")),
        None => Err(format!("missing `{key}`")),
    }
}

/// A list of strings, sorted (status codes, country codes).
pub fn str_list(map: &Obj, key: &str) -> Result<Vec<String>, String> {
    let Some(v) = map.get(key) else { return Ok(vec![]) };
    let mut items: Vec<String> = v
        .as_array()
        .and_then(|a| a.iter().map(|i| i.as_str().map(str::to_string)).collect::<Option<Vec<_>>>())
        .ok_or_else(|| format!("`{key}` must be an array of strings"))?;
    items.sort();
    items.dedup();
    Ok(items)
}

/// Applies `check` to a literal (a value with a `${...}` reference is checked by AWS at apply).
pub fn literal(value: &str, key: &str, check: Check) -> Result<(), String> {
    if value.contains("${") {
        return Ok(());
    }
    check(value).map_err(|e| format!("`{key}` {e}"))
}

pub fn one_of(value: String, key: &str, allowed: &[&str]) -> Result<String, String> {
    if allowed.contains(&value.as_str()) { Ok(value) } else { Err(format!("`{key}` = \"{value}\" is not one of: {}", allowed.join(", "))) }
}
