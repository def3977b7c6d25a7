//! What each resource kind accepts. The schemas live with their kinds (`crate::providers`); this
//! module adds what the manifest layer does with them: secrets and structured values.

use serde_json::{Value, json};

pub use crate::providers::Kind;
pub use crate::providers::lambda_function::LAMBDA_RUNTIMES;
pub use crate::providers::log_group::LOG_RETENTION_DAYS;
pub use crate::providers::schema::{CODE_SHA256, Check, DefaultValue, Field, FieldType, KindSchema};

use super::rules;

/// What a secret value is shown as.
pub const SENSITIVE: &str = "(sensitive)";

/// Replaces the values of secret fields by a hash (`sha256:<hex>`), for storing.
pub fn hash_secrets(kind: Kind, attrs: &mut serde_json::Map<String, Value>) {
    use sha2::Digest;
    for field in kind.schema().fields.iter().filter(|f| f.secret) {
        if let Some(Value::Object(map)) = attrs.get_mut(field.name) {
            for v in map.values_mut() {
                if let Value::String(s) = v
                    && !s.starts_with("sha256:")
                {
                    let digest = sha2::Sha256::digest(s.as_bytes());
                    *s = format!("sha256:{}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>());
                }
            }
        }
    }
}

/// Moves the live values of keys the manifest declares secret from the plain map (`environment`)
/// to the secret one (`secret_environment`), so both compare like for like.
pub fn split_secrets(kind: Kind, live: &mut serde_json::Map<String, Value>, desired: &serde_json::Map<String, Value>) {
    split_secrets_known(kind, live, desired, None);
}

/// Like [`split_secrets`], also for the keys `recorded` (the state's last applied attributes) holds as
/// secret: a key that was secret stays secret when it leaves the manifest or moves to the plain map,
/// so its live value is only ever compared (and shown) as a secret.
pub fn split_secrets_known(
    kind: Kind,
    live: &mut serde_json::Map<String, Value>,
    desired: &serde_json::Map<String, Value>,
    recorded: Option<&serde_json::Map<String, Value>>,
) {
    for field in kind.schema().fields.iter().filter(|f| f.secret) {
        let Some(plain) = field.name.strip_prefix("secret_") else { continue };
        let keys_of = |m: Option<&serde_json::Map<String, Value>>| -> Vec<String> {
            m.and_then(|m| m.get(field.name)).and_then(Value::as_object).map(|m| m.keys().cloned().collect()).unwrap_or_default()
        };
        let mut keys = keys_of(Some(desired));
        keys.extend(keys_of(recorded));
        let mut secret = serde_json::Map::new();
        if let Some(Value::Object(map)) = live.get_mut(plain) {
            for k in keys {
                if let Some(v) = map.remove(&k) {
                    secret.insert(k, v);
                }
            }
        }
        live.insert(field.name.to_string(), Value::Object(secret));
    }
}


/// Validates one structured value (an element of `routes`, a WAF rule, a visibility config) and
/// fills in its defaults, so that it has the canonical shape the providers read back.
pub fn structured(kind: Kind, field: &str, value: Value) -> Result<Value, String> {
    match (kind, field) {
        (Kind::RestApi, "routes") => route(value),
        (Kind::WebAcl, "rules") => waf_rule(value),
        (Kind::WebAcl, "visibility") => visibility(value, None),
        _ => Ok(value),
    }
}

type Obj = serde_json::Map<String, Value>;

fn object(value: Value, allowed: &[&str]) -> Result<Obj, String> {
    let Value::Object(map) = value else { return Err("expected a table".into()) };
    if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("unknown key `{k}`; expected one of: {}", allowed.join(", ")));
    }
    Ok(map)
}

fn req_str(map: &Obj, key: &str) -> Result<String, String> {
    match map.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("`{key}` must be a string")),
        None => Err(format!("missing `{key}`")),
    }
}

fn opt_str(map: &Obj, key: &str, default: &str) -> Result<String, String> {
    if map.contains_key(key) { req_str(map, key) } else { Ok(default.to_string()) }
}

fn opt_bool(map: &Obj, key: &str, default: bool) -> Result<bool, String> {
    match map.get(key) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(format!("`{key}` must be a boolean")),
    }
}

fn req_int(map: &Obj, key: &str) -> Result<i64, String> {
    match map.get(key) {
        Some(v) => v.as_i64().ok_or_else(|| format!("`{key}` must be an integer")),
        None => Err(format!("missing `{key}`")),
    }
}

/// A list of strings, sorted (status codes, country codes).
fn str_list(map: &Obj, key: &str) -> Result<Vec<String>, String> {
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
fn literal(value: &str, key: &str, check: Check) -> Result<(), String> {
    if value.contains("${") {
        return Ok(());
    }
    check(value).map_err(|e| format!("`{key}` {e}"))
}

fn one_of(value: String, key: &str, allowed: &[&str]) -> Result<String, String> {
    if allowed.contains(&value.as_str()) { Ok(value) } else { Err(format!("`{key}` = \"{value}\" is not one of: {}", allowed.join(", "))) }
}

const HTTP_METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "ANY"];

fn route(value: Value) -> Result<Value, String> {
    let map = object(value, &["path", "method", "authorization", "method_responses", "integration"])?;
    let path = req_str(&map, "path")?;
    if !path.starts_with('/') || (path.len() > 1 && path.ends_with('/')) || path.contains("//") {
        return Err(format!("`path` = \"{path}\" must start with `/` and have no empty segments"));
    }
    let method = one_of(req_str(&map, "method")?.to_uppercase(), "method", HTTP_METHODS)?;
    let authorization =
        one_of(opt_str(&map, "authorization", "NONE")?, "authorization", &["NONE", "AWS_IAM", "CUSTOM", "COGNITO_USER_POOLS"])?;
    let Some(integration) = map.get("integration").cloned() else { return Err("missing `integration`".into()) };
    let i = object(integration, &["type", "uri", "http_method", "credentials", "integration_responses"])
        .map_err(|e| format!("`integration`: {e}"))?;
    let kind = one_of(req_str(&i, "type")?, "integration.type", &["AWS_PROXY", "AWS", "HTTP", "HTTP_PROXY", "MOCK"])?;
    let uri = opt_str(&i, "uri", "")?;
    if kind != "MOCK" && uri.is_empty() {
        return Err(format!("`integration.uri` is required for a {kind} integration"));
    }
    Ok(json!({
        "path": path,
        "method": method,
        "authorization": authorization,
        "method_responses": str_list(&map, "method_responses")?,
        "integration": {
            "type": kind,
            "uri": uri,
            "http_method": one_of(opt_str(&i, "http_method", "POST")?.to_uppercase(), "integration.http_method", HTTP_METHODS)?,
            "credentials": opt_str(&i, "credentials", "")?,
            "integration_responses": str_list(&i, "integration_responses")?,
        }
    }))
}

fn visibility(value: Value, default_metric: Option<&str>) -> Result<Value, String> {
    let map = object(value, &["metric_name", "sampled_requests", "cloudwatch_metrics"])?;
    let metric = match default_metric {
        Some(d) => opt_str(&map, "metric_name", d)?,
        None => req_str(&map, "metric_name")?,
    };
    literal(&metric, "metric_name", rules::waf_metric_name)?;
    Ok(json!({
        "metric_name": metric,
        "sampled_requests": opt_bool(&map, "sampled_requests", true)?,
        "cloudwatch_metrics": opt_bool(&map, "cloudwatch_metrics", true)?,
    }))
}

fn waf_rule(value: Value) -> Result<Value, String> {
    let map = object(value, &["name", "priority", "action", "override_action", "statement", "visibility"])?;
    let name = req_str(&map, "name")?;
    literal(&name, "name", rules::waf_name)?;
    let priority = req_int(&map, "priority")?;
    if priority < 0 {
        return Err(format!("`priority` = {priority} must be 0 or more"));
    }
    let Some(statement) = map.get("statement").cloned() else { return Err("missing `statement`".into()) };
    let s = object(statement, &["managed_rule_group", "geo_match", "rate_based"]).map_err(|e| format!("`statement`: {e}"))?;
    if s.len() != 1 {
        return Err("`statement` must hold exactly one of `managed_rule_group`, `geo_match`, `rate_based`".into());
    }
    let (stype, body) = s.into_iter().next().ok_or("empty `statement`")?;
    let statement = match stype.as_str() {
        "managed_rule_group" => {
            let b = object(body, &["vendor", "name"]).map_err(|e| format!("`managed_rule_group`: {e}"))?;
            let (vendor, group) = (opt_str(&b, "vendor", "AWS")?, req_str(&b, "name")?);
            literal(&vendor, "managed_rule_group.vendor", rules::waf_vendor_name)?;
            literal(&group, "managed_rule_group.name", rules::waf_name)?;
            json!({"managed_rule_group": {"vendor": vendor, "name": group}})
        }
        "geo_match" => {
            let b = object(body, &["country_codes"]).map_err(|e| format!("`geo_match`: {e}"))?;
            let codes = str_list(&b, "country_codes")?;
            if codes.is_empty() {
                return Err("`geo_match.country_codes` needs at least one country code".into());
            }
            for code in &codes {
                literal(code, "geo_match.country_codes", rules::waf_country_code)?;
            }
            json!({"geo_match": {"country_codes": codes}})
        }
        _ => {
            let b = object(body, &["limit", "aggregate_key_type", "evaluation_window_sec"]).map_err(|e| format!("`rate_based`: {e}"))?;
            let limit = req_int(&b, "limit")?;
            if !(10..=2_000_000_000).contains(&limit) {
                return Err(format!("`rate_based.limit` = {limit} is out of range 10..=2000000000"));
            }
            let window = if b.contains_key("evaluation_window_sec") { req_int(&b, "evaluation_window_sec")? } else { 300 };
            if ![60, 120, 300, 600].contains(&window) {
                return Err(format!("`rate_based.evaluation_window_sec` = {window} is not one of: 60, 120, 300, 600"));
            }
            let key =
                one_of(opt_str(&b, "aggregate_key_type", "IP")?, "aggregate_key_type", &["IP", "FORWARDED_IP", "CONSTANT", "CUSTOM_KEYS"])?;
            json!({"rate_based": {"limit": limit, "aggregate_key_type": key, "evaluation_window_sec": window}})
        }
    };
    let managed = stype == "managed_rule_group";
    let action = opt_str(&map, "action", "")?;
    let override_action = opt_str(&map, "override_action", "")?;
    if managed && (!action.is_empty() || override_action.is_empty()) {
        return Err("a `managed_rule_group` rule takes `override_action` (\"none\" or \"count\"), not `action`".into());
    }
    if !managed && (action.is_empty() || !override_action.is_empty()) {
        return Err("this rule takes `action` (\"block\", \"allow\" or \"count\"), not `override_action`".into());
    }
    if !action.is_empty() {
        one_of(action.clone(), "action", &["block", "allow", "count"])?;
    }
    if !override_action.is_empty() {
        one_of(override_action.clone(), "override_action", &["none", "count"])?;
    }
    let vis = visibility(map.get("visibility").cloned().unwrap_or_else(|| json!({})), Some(&name))?;
    Ok(json!({
        "name": name,
        "priority": priority,
        "action": action,
        "override_action": override_action,
        "statement": statement,
        "visibility": vis,
    }))
}

