//! WAFv2 web ACLs and their rules.
//!
//! Physical id: `<scope>/<name>/<id>` (GetWebACL needs all three; names and ids contain no `/`).

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_wafv2::types::{
    AllowAction, BlockAction, CountAction, CountryCode, DefaultAction, GeoMatchStatement, ManagedRuleGroupStatement, NoneAction,
    OverrideAction, RateBasedStatement, RateBasedStatementAggregateKeyType, Rule, RuleAction, Scope, Statement, Tag, VisibilityConfig,
    WebAcl as AclData,
};
use serde_json::{Map, Value, json};

use crate::providers::retry::{Backoff, with_backoff};
use crate::providers::{Applied, Aws, Desired, Live, ProviderError, Result, changed, str_attr, string_map, tag_changes, tags_value};

/// AWS reads back 300 s for a rate-based rule created without a window; moto reads back 0.
const DEFAULT_EVALUATION_WINDOW: i64 = 300;

/// Someone else changed the ACL between our GetWebACL and our write: fetch a fresh token, try again.
const LOCK_RETRY: Backoff =
    Backoff { initial: Duration::from_millis(200), max_delay: Duration::from_secs(2), budget: Duration::from_secs(30) };

fn is_stale_lock(e: &ProviderError) -> bool {
    e.code() == Some("WAFOptimisticLockException")
}

fn invalid(msg: impl std::fmt::Display) -> ProviderError {
    ProviderError::Other(format!("aws_wafv2_web_acl: {msg}"))
}

fn build_err(e: aws_smithy_types::error::operation::BuildError) -> ProviderError {
    invalid(e)
}

struct AclId<'a> {
    scope: Scope,
    name: &'a str,
    id: &'a str,
}

fn parse_id(id: &str) -> Result<AclId<'_>> {
    let mut parts = id.splitn(3, '/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(scope), Some(name), Some(acl_id)) if !scope.is_empty() && !name.is_empty() && !acl_id.is_empty() => {
            Ok(AclId { scope: Scope::from(scope), name, id: acl_id })
        }
        _ => Err(invalid(format!("malformed web ACL id `{id}`: expected `<scope>/<name>/<id>`"))),
    }
}

fn outputs(arn: &str, id: &str, name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("arn".to_string(), arn.to_string()), ("id".to_string(), id.to_string()), ("name".to_string(), name.to_string())])
}

// ---- manifest JSON → SDK types ----

fn obj<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>> {
    v.as_object().ok_or_else(|| invalid(format!("`{what}` must be a table")))
}

fn req_str<'a>(m: &'a Map<String, Value>, key: &str, what: &str) -> Result<&'a str> {
    m.get(key).and_then(Value::as_str).ok_or_else(|| invalid(format!("`{what}.{key}` must be a string")))
}

fn req_int(m: &Map<String, Value>, key: &str, what: &str) -> Result<i64> {
    m.get(key).and_then(Value::as_i64).ok_or_else(|| invalid(format!("`{what}.{key}` must be an integer")))
}

fn req_bool(m: &Map<String, Value>, key: &str, what: &str) -> Result<bool> {
    m.get(key).and_then(Value::as_bool).ok_or_else(|| invalid(format!("`{what}.{key}` must be a boolean")))
}

fn visibility_config(v: &Value, what: &str) -> Result<VisibilityConfig> {
    let m = obj(v, what)?;
    VisibilityConfig::builder()
        .metric_name(req_str(m, "metric_name", what)?)
        .sampled_requests_enabled(req_bool(m, "sampled_requests", what)?)
        .cloud_watch_metrics_enabled(req_bool(m, "cloudwatch_metrics", what)?)
        .build()
        .map_err(build_err)
}

fn default_action(action: &str) -> Result<DefaultAction> {
    match action {
        "allow" => Ok(DefaultAction::builder().allow(AllowAction::builder().build()).build()),
        "block" => Ok(DefaultAction::builder().block(BlockAction::builder().build()).build()),
        other => Err(invalid(format!("default_action \"{other}\" is not one of: allow, block"))),
    }
}

fn rule_action(action: &str) -> Result<Option<RuleAction>> {
    let b = RuleAction::builder();
    Ok(Some(match action {
        "" => return Ok(None),
        "block" => b.block(BlockAction::builder().build()).build(),
        "allow" => b.allow(AllowAction::builder().build()).build(),
        "count" => b.count(CountAction::builder().build()).build(),
        other => {
            return Err(invalid(format!("rule action \"{other}\" is not one of: block, allow, count")));
        }
    }))
}

fn override_action(action: &str) -> Result<Option<OverrideAction>> {
    let b = OverrideAction::builder();
    Ok(Some(match action {
        "" => return Ok(None),
        "none" => b.none(NoneAction::builder().build()).build(),
        "count" => b.count(CountAction::builder().build()).build(),
        other => {
            return Err(invalid(format!("rule override_action \"{other}\" is not one of: none, count")));
        }
    }))
}

fn statement(v: &Value, rule: &str) -> Result<Statement> {
    let what = format!("rules[{rule}].statement");
    let m = obj(v, &what)?;
    if m.len() != 1 {
        return Err(invalid(format!("`{what}` must hold exactly one of managed_rule_group, geo_match, rate_based")));
    }
    let b = Statement::builder();
    if let Some(g) = m.get("managed_rule_group") {
        let what = format!("{what}.managed_rule_group");
        let g = obj(g, &what)?;
        let s = ManagedRuleGroupStatement::builder()
            .vendor_name(req_str(g, "vendor", &what)?)
            .name(req_str(g, "name", &what)?)
            .build()
            .map_err(build_err)?;
        Ok(b.managed_rule_group_statement(s).build())
    } else if let Some(g) = m.get("geo_match") {
        let what = format!("{what}.geo_match");
        let codes = obj(g, &what)?
            .get("country_codes")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid(format!("`{what}.country_codes` must be an array")))?
            .iter()
            .map(|c| c.as_str().map(CountryCode::from).ok_or_else(|| invalid(format!("`{what}.country_codes` must hold strings"))))
            .collect::<Result<Vec<_>>>()?;
        let s = GeoMatchStatement::builder().set_country_codes(Some(codes)).build();
        Ok(b.geo_match_statement(s).build())
    } else if let Some(r) = m.get("rate_based") {
        let what = format!("{what}.rate_based");
        let r = obj(r, &what)?;
        let window = r.get("evaluation_window_sec").and_then(Value::as_i64).unwrap_or(DEFAULT_EVALUATION_WINDOW);
        let s = RateBasedStatement::builder()
            .limit(req_int(r, "limit", &what)?)
            .aggregate_key_type(RateBasedStatementAggregateKeyType::from(req_str(r, "aggregate_key_type", &what)?))
            .evaluation_window_sec(window)
            .build()
            .map_err(build_err)?;
        Ok(b.rate_based_statement(s).build())
    } else {
        Err(invalid(format!("`{what}` must hold one of managed_rule_group, geo_match, rate_based")))
    }
}

fn rule(v: &Value) -> Result<Rule> {
    let m = obj(v, "rules[]")?;
    let name = req_str(m, "name", "rules[]")?;
    let what = format!("rules[{name}]");
    let priority = req_int(m, "priority", &what)?;
    let priority = i32::try_from(priority).map_err(|_| invalid(format!("`{what}.priority` = {priority} is out of range")))?;
    let statement = statement(m.get("statement").ok_or_else(|| invalid(format!("`{what}.statement` is missing")))?, name)?;
    let visibility = visibility_config(
        m.get("visibility").ok_or_else(|| invalid(format!("`{what}.visibility` is missing")))?,
        &format!("{what}.visibility"),
    )?;
    let action = m.get("action").and_then(Value::as_str).unwrap_or_default();
    let override_ = m.get("override_action").and_then(Value::as_str).unwrap_or_default();
    Rule::builder()
        .name(name)
        .priority(priority)
        .statement(statement)
        .set_action(rule_action(action)?)
        .set_override_action(override_action(override_)?)
        .visibility_config(visibility)
        .build()
        .map_err(build_err)
}

fn rules(d: &Map<String, Value>) -> Result<Vec<Rule>> {
    match d.get("rules") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(rule).collect(),
        Some(_) => Err(invalid("`rules` must be an array of tables")),
    }
}

fn tag_list(tags: BTreeMap<String, String>) -> Result<Vec<Tag>> {
    tags.into_iter().map(|(k, v)| Tag::builder().key(k).value(v).build().map_err(build_err)).collect()
}

// ---- SDK types → manifest JSON ----

fn visibility_json(v: Option<&VisibilityConfig>) -> Value {
    match v {
        Some(v) => json!({
            "metric_name": v.metric_name(),
            "sampled_requests": v.sampled_requests_enabled(),
            "cloudwatch_metrics": v.cloud_watch_metrics_enabled(),
        }),
        None => Value::Null,
    }
}

fn default_action_json(a: Option<&DefaultAction>) -> &'static str {
    match a {
        Some(a) if a.allow().is_some() => "allow",
        Some(a) if a.block().is_some() => "block",
        _ => "",
    }
}

fn rule_action_json(a: Option<&RuleAction>) -> &'static str {
    match a {
        None => "",
        Some(a) if a.block().is_some() => "block",
        Some(a) if a.allow().is_some() => "allow",
        Some(a) if a.count().is_some() => "count",
        Some(a) if a.captcha().is_some() => "captcha",
        Some(a) if a.challenge().is_some() => "challenge",
        Some(_) => "unsupported",
    }
}

fn override_action_json(a: Option<&OverrideAction>) -> &'static str {
    match a {
        None => "",
        Some(a) if a.none().is_some() => "none",
        Some(a) if a.count().is_some() => "count",
        Some(_) => "unsupported",
    }
}

/// The statement in the manifest's shape, or `{"unsupported": ...}` for anything the tool does not
/// model (other statement types, or settings such as scope-down statements) so that it shows as drift.
fn statement_json(s: Option<&Statement>) -> Value {
    let Some(s) = s else {
        return json!({"unsupported": "no statement"});
    };
    let only = |single: Statement| &single == s;
    if let Some(m) = &s.managed_rule_group_statement
        && only(Statement::builder().managed_rule_group_statement(m.clone()).build())
        && m.scope_down_statement().is_none()
        && m.excluded_rules().is_empty()
        && m.managed_rule_group_configs().is_empty()
        && m.rule_action_overrides().is_empty()
    {
        return json!({"managed_rule_group": {"vendor": m.vendor_name(), "name": m.name()}});
    }
    if let Some(g) = &s.geo_match_statement
        && only(Statement::builder().geo_match_statement(g.clone()).build())
        && g.forwarded_ip_config().is_none()
    {
        let mut codes: Vec<&str> = g.country_codes().iter().map(CountryCode::as_str).collect();
        codes.sort_unstable();
        codes.dedup();
        return json!({"geo_match": {"country_codes": codes}});
    }
    if let Some(r) = &s.rate_based_statement
        && only(Statement::builder().rate_based_statement(r.clone()).build())
        && r.scope_down_statement().is_none()
        && r.forwarded_ip_config().is_none()
        && r.custom_keys().is_empty()
    {
        let window = match r.evaluation_window_sec() {
            0 => DEFAULT_EVALUATION_WINDOW,
            w => w,
        };
        return json!({"rate_based": {
            "limit": r.limit(),
            "aggregate_key_type": r.aggregate_key_type().as_str(),
            "evaluation_window_sec": window,
        }});
    }
    json!({"unsupported": format!("{s:?}")})
}

fn rule_json(r: &Rule) -> Value {
    json!({
        "name": r.name(),
        "priority": r.priority(),
        "action": rule_action_json(r.action()),
        "override_action": override_action_json(r.override_action()),
        "statement": statement_json(r.statement()),
        "visibility": visibility_json(r.visibility_config()),
    })
}

fn acl_attrs(acl: &AclData, scope: &Scope, tags: &BTreeMap<String, String>) -> Map<String, Value> {
    let mut attrs = Map::new();
    attrs.insert("name".into(), json!(acl.name()));
    attrs.insert("scope".into(), json!(scope.as_str()));
    attrs.insert("description".into(), json!(acl.description().unwrap_or_default()));
    attrs.insert("default_action".into(), json!(default_action_json(acl.default_action())));
    attrs.insert("visibility".into(), visibility_json(acl.visibility_config()));
    attrs.insert("rules".into(), Value::Array(acl.rules().iter().map(rule_json).collect()));
    attrs.insert("tags".into(), tags_value(tags));
    attrs
}

// ---- API calls ----

/// GetWebACL: the ACL and its lock token; `None` if it does not exist.
async fn get(aws: &Aws, id: &AclId<'_>) -> Result<Option<(AclData, String)>> {
    let out = match aws.wafv2.get_web_acl().name(id.name).scope(id.scope.clone()).id(id.id).send().await {
        Ok(out) => out,
        Err(e) if e.as_service_error().is_some_and(|e| e.is_waf_nonexistent_item_exception()) => {
            return Ok(None);
        }
        Err(e) => return Err(ProviderError::sdk("wafv2:GetWebACL", e)),
    };
    let token = out.lock_token().unwrap_or_default().to_string();
    Ok(out.web_acl.map(|acl| (acl, token)))
}

async fn list_tags(aws: &Aws, arn: &str) -> Result<BTreeMap<String, String>> {
    let mut tags = BTreeMap::new();
    let mut marker: Option<String> = None;
    loop {
        let out = aws
            .wafv2
            .list_tags_for_resource()
            .resource_arn(arn)
            .set_next_marker(marker.clone())
            .send()
            .await
            .map_err(|e| ProviderError::sdk("wafv2:ListTagsForResource", e))?;
        if let Some(info) = out.tag_info_for_resource() {
            for t in info.tag_list() {
                tags.insert(t.key().to_string(), t.value().to_string());
            }
        }
        match out.next_marker() {
            Some(next) if !next.is_empty() && marker.as_deref() != Some(next) => {
                marker = Some(next.to_string());
            }
            _ => return Ok(tags),
        }
    }
}

pub async fn read(aws: &Aws, id: &str) -> Result<Option<Live>> {
    let acl_id = parse_id(id)?;
    let Some((acl, _)) = get(aws, &acl_id).await? else {
        return Ok(None);
    };
    let tags = match list_tags(aws, acl.arn()).await {
        Ok(tags) => tags,
        // Deleted between the two calls.
        Err(e) if e.code() == Some("WAFNonexistentItemException") => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(Some(Live { attrs: acl_attrs(&acl, &acl_id.scope, &tags), outputs: outputs(acl.arn(), acl.id(), acl.name()) }))
}

pub async fn create(aws: &Aws, desired: Desired<'_>) -> Result<Applied> {
    let d = desired.attrs;
    let name = str_attr(d, "name");
    let scope = Scope::from(str_attr(d, "scope"));
    let description = str_attr(d, "description");
    let visibility = visibility_config(d.get("visibility").unwrap_or(&Value::Null), "visibility")?;
    let tags = tag_list(string_map(d, "tags"))?;
    let out = aws
        .wafv2
        .create_web_acl()
        .name(name)
        .scope(scope.clone())
        .default_action(default_action(str_attr(d, "default_action"))?)
        .visibility_config(visibility)
        .set_rules(Some(rules(d)?))
        .set_description((!description.is_empty()).then(|| description.to_string()))
        .set_tags((!tags.is_empty()).then_some(tags))
        .send()
        .await
        .map_err(|e| ProviderError::sdk("wafv2:CreateWebACL", e))?;
    let summary = out.summary().ok_or_else(|| ProviderError::Other("wafv2:CreateWebACL returned no summary".into()))?;
    let (Some(acl_id), Some(arn)) = (summary.id(), summary.arn()) else {
        return Err(ProviderError::Other("wafv2:CreateWebACL returned no id or ARN".into()));
    };
    Ok(Applied {
        physical_id: format!("{}/{name}/{acl_id}", scope.as_str()),
        outputs: outputs(arn, acl_id, summary.name().unwrap_or(name)),
    })
}

pub async fn update(aws: &Aws, id: &str, current: &Map<String, Value>, desired: Desired<'_>) -> Result<Applied> {
    let d = desired.attrs;
    let acl_id = parse_id(id)?;
    let gone = || ProviderError::Other(format!("web ACL {id} vanished during update"));
    let body_changed = ["description", "default_action", "visibility", "rules"].iter().any(|f| changed(current, d, f));
    let acl = if body_changed {
        let description = str_attr(d, "description");
        let visibility = visibility_config(d.get("visibility").unwrap_or(&Value::Null), "visibility")?;
        let request = aws
            .wafv2
            .update_web_acl()
            .name(acl_id.name)
            .scope(acl_id.scope.clone())
            .id(acl_id.id)
            .default_action(default_action(str_attr(d, "default_action"))?)
            .visibility_config(visibility)
            .set_rules(Some(rules(d)?))
            .set_description((!description.is_empty()).then(|| description.to_string()));
        // UpdateWebACL replaces the whole ACL under the lock token of the version it read.
        with_backoff("wafv2:UpdateWebACL", LOCK_RETRY, is_stale_lock, || {
            let request = request.clone();
            let acl_id = &acl_id;
            async move {
                let (acl, token) = get(aws, acl_id).await?.ok_or_else(gone)?;
                request.lock_token(token).send().await.map_err(|e| ProviderError::sdk("wafv2:UpdateWebACL", e))?;
                Ok(acl)
            }
        })
        .await?
    } else {
        get(aws, &acl_id).await?.ok_or_else(gone)?.0
    };
    let (set, remove) = tag_changes(current, d);
    if !set.is_empty() {
        aws.wafv2
            .tag_resource()
            .resource_arn(acl.arn())
            .set_tags(Some(tag_list(set)?))
            .send()
            .await
            .map_err(|e| ProviderError::sdk("wafv2:TagResource", e))?;
    }
    if !remove.is_empty() {
        aws.wafv2
            .untag_resource()
            .resource_arn(acl.arn())
            .set_tag_keys(Some(remove))
            .send()
            .await
            .map_err(|e| ProviderError::sdk("wafv2:UntagResource", e))?;
    }
    Ok(Applied { physical_id: id.to_string(), outputs: outputs(acl.arn(), acl.id(), acl.name()) })
}

pub async fn delete(aws: &Aws, id: &str) -> Result<()> {
    let acl_id = parse_id(id)?;
    with_backoff("wafv2:DeleteWebACL", LOCK_RETRY, is_stale_lock, || {
        let acl_id = &acl_id;
        async move {
            let Some((_, token)) = get(aws, acl_id).await? else {
                return Ok(());
            };
            match aws.wafv2.delete_web_acl().name(acl_id.name).scope(acl_id.scope.clone()).id(acl_id.id).lock_token(token).send().await {
                Ok(_) => Ok(()),
                Err(e) if e.as_service_error().is_some_and(|e| e.is_waf_nonexistent_item_exception()) => Ok(()),
                Err(e) => Err(ProviderError::sdk("wafv2:DeleteWebACL", e)),
            }
        }
    })
    .await
}

/// Finds a web ACL by scope and name (names are unique per scope): for recovering an interrupted create.
pub async fn find(aws: &Aws, scope: &str, name: &str) -> Result<Option<(String, Live)>> {
    let mut marker = None;
    loop {
        let out = aws
            .wafv2
            .list_web_acls()
            .scope(Scope::from(scope))
            .set_next_marker(marker)
            .send()
            .await
            .map_err(|e| ProviderError::sdk("wafv2:ListWebACLs", e))?;
        if let Some(id) = out.web_acls().iter().find(|a| a.name() == Some(name)).and_then(|a| a.id()) {
            let physical = format!("{scope}/{name}/{id}");
            return Ok(read(aws, &physical).await?.map(|l| (physical, l)));
        }
        match out.next_marker {
            Some(m) if !out.web_acls().is_empty() => marker = Some(m),
            _ => return Ok(None),
        }
    }
}

// ---- rules as the manifest writes them ----

mod manifest_shape {
    use crate::providers::rules;

    use crate::providers::structured::{literal, object, one_of, opt_bool, opt_str, req_int, req_str, str_list};
    use serde_json::{Value, json};

    pub(super) fn visibility(value: Value, default_metric: Option<&str>) -> Result<Value, String> {
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

    pub(super) fn waf_rule(value: Value) -> Result<Value, String> {
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
                let b =
                    object(body, &["limit", "aggregate_key_type", "evaluation_window_sec"]).map_err(|e| format!("`rate_based`: {e}"))?;
                let limit = req_int(&b, "limit")?;
                if !(10..=2_000_000_000).contains(&limit) {
                    return Err(format!("`rate_based.limit` = {limit} is out of range 10..=2000000000"));
                }
                let window = if b.contains_key("evaluation_window_sec") { req_int(&b, "evaluation_window_sec")? } else { 300 };
                if ![60, 120, 300, 600].contains(&window) {
                    return Err(format!("`rate_based.evaluation_window_sec` = {window} is not one of: 60, 120, 300, 600"));
                }
                let key = one_of(
                    opt_str(&b, "aggregate_key_type", "IP")?,
                    "aggregate_key_type",
                    &["IP", "FORWARDED_IP", "CONSTANT", "CUSTOM_KEYS"],
                )?;
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
}

use manifest_shape::{visibility, waf_rule};

// ---- the kind: schema and the registry's entry ----

use crate::providers::resource::{Observed, Resource};
use crate::providers::schema::{DefaultValue, Field, FieldType as T, KindSchema, TAGS};
use crate::providers::{Kind, rules};

pub static SCHEMA: KindSchema = KindSchema {
    type_name: "aws_wafv2_web_acl",
    doc: "A WAFv2 web ACL with its rules (managed rule groups, geo match, rate-based).",
    fields: &[
        Field::new("name", T::String, "Web ACL name").required().force_new().check(rules::waf_name),
        Field::new("scope", T::String, "`REGIONAL` (API Gateway, ALB) or `CLOUDFRONT`")
            .default(DefaultValue::Str("REGIONAL"))
            .one_of(&["REGIONAL", "CLOUDFRONT"])
            .force_new(),
        Field::new("description", T::String, "Description").default(DefaultValue::Str("")).check(rules::waf_description),
        Field::new("default_action", T::String, "Action for requests no rule matches")
            .default(DefaultValue::Str("allow"))
            .one_of(&["allow", "block"]),
        Field::new("visibility", T::Json, "`{ metric_name, sampled_requests, cloudwatch_metrics }` for the ACL").required(),
        Field::new("rules", T::JsonList, "Rules; see the manifest reference")
            .default(DefaultValue::EmptyList)
            // WAF rejects a web ACL whose rules repeat a name or a priority (WAFInvalidParameterException).
            .unique(&["name", "priority"]),
        TAGS,
    ],
    physical_name: "name",
    create_before_destroy: false,
    retain_on_delete: false,
    outputs: &[("arn", "Web ACL ARN"), ("id", "Web ACL id"), ("name", "Web ACL name")],
    taggable: true,
    singleton: false,
};

/// `aws_wafv2_web_acl`: A WAFv2 web ACL with its rules (managed rule groups, geo match, rate-based).
pub struct WebAcl;

impl Resource for WebAcl {
    type Spec = Map<String, Value>;
    const KIND: Kind = Kind::WebAcl;

    fn schema() -> &'static KindSchema {
        &SCHEMA
    }

    fn physical_id(_spec: &Self::Spec) -> Option<String> {
        None
    }

    fn parent(_id: &str) -> Option<(Kind, String)> {
        None
    }

    fn canonical_id(id: &str) -> String {
        id.to_string()
    }

    fn derived_outputs(_spec: &Self::Spec) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    fn finishes_incomplete() -> bool {
        true
    }

    async fn read(aws: &Aws, id: &str) -> Result<Option<Observed<Self::Spec>>> {
        Ok(read(aws, id).await?.map(|l| Observed { spec: l.attrs, outputs: l.outputs }))
    }

    async fn find(
        aws: &Aws,
        spec: &Self::Spec,
        _taken: &std::collections::HashSet<String>,
    ) -> Result<Option<(String, Observed<Self::Spec>)>> {
        Ok(find(aws, super::super::str_attr(spec, "scope"), super::super::str_attr(spec, "name"))
            .await?
            .map(|(id, l)| (id, Observed { spec: l.attrs, outputs: l.outputs })))
    }

    async fn create(aws: &Aws, spec: &Self::Spec, artifact: Option<&crate::artifact::Artifact>) -> Result<Applied> {
        create(aws, Desired { attrs: spec, artifact }).await
    }

    async fn update(
        aws: &Aws,
        id: &str,
        current: &Self::Spec,
        desired: &Self::Spec,
        artifact: Option<&crate::artifact::Artifact>,
    ) -> Result<Applied> {
        update(aws, id, current, Desired { attrs: desired, artifact }).await
    }

    async fn delete(aws: &Aws, id: &str) -> Result<()> {
        delete(aws, id).await
    }

    fn structured(field: &str, value: Value) -> std::result::Result<Value, String> {
        match field {
            "rules" => waf_rule(value),
            "visibility" => visibility(value, None),
            _ => Ok(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed_rules() -> Value {
        json!([
            {"name": "AWSManagedRulesCommonRuleSet", "priority": 10, "action": "", "override_action": "none",
             "statement": {"managed_rule_group": {"vendor": "AWS", "name": "AWSManagedRulesCommonRuleSet"}},
             "visibility": {"metric_name": "AWSIPReputationList", "sampled_requests": true, "cloudwatch_metrics": true}},
            {"name": "GeoBlock", "priority": 2, "action": "block", "override_action": "",
             "statement": {"geo_match": {"country_codes": ["SG"]}},
             "visibility": {"metric_name": "GeoMatch", "sampled_requests": true, "cloudwatch_metrics": false}},
            {"name": "RateLimit", "priority": 1, "action": "block", "override_action": "",
             "statement": {"rate_based": {"limit": 2000, "aggregate_key_type": "IP", "evaluation_window_sec": 300}},
             "visibility": {"metric_name": "LimitRequestsThreshold", "sampled_requests": false, "cloudwatch_metrics": true}}
        ])
    }

    #[test]
    fn rules_round_trip_through_sdk_types() {
        let rules = seed_rules();
        for r in rules.as_array().unwrap() {
            let sdk = rule(r).unwrap();
            assert_eq!(&rule_json(&sdk), r);
        }
    }

    #[test]
    fn zero_window_reads_as_default_and_unmodelled_statements_show() {
        let s = Statement::builder()
            .rate_based_statement(
                RateBasedStatement::builder().limit(100).aggregate_key_type(RateBasedStatementAggregateKeyType::Ip).build().unwrap(),
            )
            .build();
        assert_eq!(
            statement_json(Some(&s)),
            json!({"rate_based": {"limit": 100, "aggregate_key_type": "IP", "evaluation_window_sec": 300}})
        );
        let two = Statement::builder()
            .geo_match_statement(GeoMatchStatement::builder().country_codes(CountryCode::Sg).build())
            .rate_based_statement(s.rate_based_statement.clone().unwrap())
            .build();
        assert!(statement_json(Some(&two)).get("unsupported").is_some());
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(rule(&json!({"name": "x"})).is_err());
        assert!(rule_action("captcha").is_err());
        assert!(default_action("maybe").is_err());
        assert!(parse_id("REGIONAL/name").is_err());
        let id = parse_id("REGIONAL/acl/abc-123").unwrap();
        assert_eq!((id.scope, id.name, id.id), (Scope::Regional, "acl", "abc-123"));
    }
}
