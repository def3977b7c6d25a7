//! `aws_wafv2_web_acl`: a WAFv2 web ACL and its rules.
//!
//! Physical id: `<scope>/<name>/<id>` (GetWebACL needs all three; names and ids contain no `/`).
//!
//! Rules and visibility configs are typed ([`WafRule`], [`Visibility`]): manifest validation builds
//! them (the kind's `structured` hook), create and update convert them to the SDK's types, and `read`
//! builds them from the SDK's, so a rule is parsed once and reads back in the same shape.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use aws_sdk_wafv2::error::ProvideErrorMetadata as _;
use aws_sdk_wafv2::operation::create_web_acl::CreateWebACLError;
use aws_sdk_wafv2::operation::delete_web_acl::DeleteWebACLError;
use aws_sdk_wafv2::operation::get_web_acl::GetWebACLError;
use aws_sdk_wafv2::operation::list_tags_for_resource::ListTagsForResourceError;
use aws_sdk_wafv2::types as waf;
use aws_sdk_wafv2::types::{CountryCode, RateBasedStatementAggregateKeyType as SdkAggregateKey, Scope};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::artifact::Artifact;
use crate::providers::resource::{NameCheck, Observed, Placement, Resource};
use crate::providers::retry::{Backoff, with_backoff};
use crate::providers::schema::{DefaultValue, Field, FieldType as T, KindSchema, TAGS};
use crate::providers::tags::TagChanges;
use crate::providers::{Applied, Aws, ErrorClass, Kind, NotFoundOk, ProviderError, Result, rules};

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
            .unique(&["name", "priority"])
            .identity(&["name"]),
        TAGS,
    ],
    physical_name: "name",
    create_before_destroy: false,
    retain_on_delete: false,
    outputs: &[("arn", "Web ACL ARN"), ("id", "Web ACL id"), ("name", "Web ACL name")],
    taggable: true,
    singleton: false,
    identity: crate::providers::schema::Identity::Fields(&["scope", "name"]),
};

/// AWS reads back 300 s for a rate-based rule created without a window; moto reads back 0.
const DEFAULT_EVALUATION_WINDOW: i64 = 300;

/// Someone else changed the ACL between our GetWebACL and our write: fetch a fresh token, try again.
const LOCK_RETRY: Backoff =
    Backoff { initial: Duration::from_millis(200), max_delay: Duration::from_secs(2), budget: Duration::from_secs(30) };

/// The retry helper's predicate sees the converted error: this is the code of the SDK's
/// `WafOptimisticLockException` variant (UpdateWebACL, DeleteWebACL).
fn is_stale_lock(e: &ProviderError) -> bool {
    e.code() == Some("WAFOptimisticLockException")
}

fn invalid(msg: impl std::fmt::Display) -> ProviderError {
    ProviderError::Other(format!("aws_wafv2_web_acl: {msg}"))
}

fn build_err(e: aws_smithy_types::error::operation::BuildError) -> ProviderError {
    invalid(e)
}

// ---- the typed spec ----

/// A web ACL as the manifest gives it and as `read` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebAclSpec {
    pub name: String,
    pub scope: AclScope,
    pub description: String,
    /// `""` when AWS reports neither allow nor block.
    #[serde(with = "empty_is_none")]
    pub default_action: Option<Verdict>,
    /// Always there in a manifest; `null` only if AWS reports none.
    pub visibility: Option<Visibility>,
    pub rules: Vec<WafRule>,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AclScope {
    #[serde(rename = "REGIONAL")]
    Regional,
    #[serde(rename = "CLOUDFRONT")]
    Cloudfront,
}

impl AclScope {
    fn as_str(self) -> &'static str {
        match self {
            AclScope::Regional => "REGIONAL",
            AclScope::Cloudfront => "CLOUDFRONT",
        }
    }

    fn sdk(self) -> Scope {
        match self {
            AclScope::Regional => Scope::Regional,
            AclScope::Cloudfront => Scope::Cloudfront,
        }
    }
}

/// The ACL's default action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Block,
}

/// `{ metric_name, sampled_requests, cloudwatch_metrics }`, of the ACL or of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Visibility {
    pub metric_name: String,
    pub sampled_requests: bool,
    pub cloudwatch_metrics: bool,
}

/// One rule. A managed rule group takes `override_action`, every other statement `action`; the other
/// one is `""` (`None`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WafRule {
    pub name: String,
    pub priority: i64,
    #[serde(with = "empty_is_none")]
    pub action: Option<Action>,
    #[serde(with = "empty_is_none")]
    pub override_action: Option<Override>,
    pub statement: RuleStatement,
    /// Always there in a manifest; `null` only if AWS reports none.
    pub visibility: Option<Visibility>,
}

/// A rule's action. Only `block`, `allow` and `count` can be written; the others are what `read` may
/// find on an ACL changed outside reconcile (and show as drift).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Block,
    Allow,
    Count,
    Captcha,
    Challenge,
    Unsupported,
}

/// A managed rule group rule's override: `none` keeps the group's own actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Override {
    None,
    Count,
    Unsupported,
}

/// The statement kinds the manifest models; anything else `read` finds is `Unsupported` (with the
/// SDK's description), so that it shows as drift.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RuleStatement {
    ManagedRuleGroup {
        vendor: String,
        name: String,
    },
    /// Sorted, without duplicates.
    GeoMatch {
        country_codes: Vec<String>,
    },
    RateBased {
        limit: i64,
        aggregate_key_type: AggregateKey,
        evaluation_window_sec: i64,
    },
    Unsupported(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AggregateKey {
    Ip,
    ForwardedIp,
    Constant,
    CustomKeys,
}

impl AggregateKey {
    fn sdk(self) -> SdkAggregateKey {
        match self {
            AggregateKey::Ip => SdkAggregateKey::Ip,
            AggregateKey::ForwardedIp => SdkAggregateKey::ForwardedIp,
            AggregateKey::Constant => SdkAggregateKey::Constant,
            AggregateKey::CustomKeys => SdkAggregateKey::CustomKeys,
        }
    }

    fn from_sdk(key: &SdkAggregateKey) -> Option<AggregateKey> {
        match key {
            SdkAggregateKey::Ip => Some(AggregateKey::Ip),
            SdkAggregateKey::ForwardedIp => Some(AggregateKey::ForwardedIp),
            SdkAggregateKey::Constant => Some(AggregateKey::Constant),
            SdkAggregateKey::CustomKeys => Some(AggregateKey::CustomKeys),
            _ => None,
        }
    }
}

/// An optional unit-variant enum written as `""` when absent (the manifest's and `read`'s shape).
mod empty_is_none {
    use serde::de::{Deserialize, DeserializeOwned, Deserializer, IntoDeserializer};
    use serde::ser::{Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(value: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => v.serialize(s),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() {
            return Ok(None);
        }
        T::deserialize(text.as_str().into_deserializer()).map(Some)
    }
}

// ---- typed values → SDK types ----

impl Visibility {
    fn sdk(&self) -> Result<waf::VisibilityConfig> {
        waf::VisibilityConfig::builder()
            .metric_name(&self.metric_name)
            .sampled_requests_enabled(self.sampled_requests)
            .cloud_watch_metrics_enabled(self.cloudwatch_metrics)
            .build()
            .map_err(build_err)
    }

    fn from_sdk(v: &waf::VisibilityConfig) -> Visibility {
        Visibility {
            metric_name: v.metric_name().to_string(),
            sampled_requests: v.sampled_requests_enabled(),
            cloudwatch_metrics: v.cloud_watch_metrics_enabled(),
        }
    }
}

fn visibility_sdk(v: Option<&Visibility>, what: &str) -> Result<waf::VisibilityConfig> {
    v.ok_or_else(|| invalid(format!("`{what}` is missing")))?.sdk()
}

fn default_action_sdk(action: Option<Verdict>) -> Result<waf::DefaultAction> {
    match action {
        Some(Verdict::Allow) => Ok(waf::DefaultAction::builder().allow(waf::AllowAction::builder().build()).build()),
        Some(Verdict::Block) => Ok(waf::DefaultAction::builder().block(waf::BlockAction::builder().build()).build()),
        None => Err(invalid("default_action \"\" is not one of: allow, block")),
    }
}

fn default_action_from_sdk(a: Option<&waf::DefaultAction>) -> Option<Verdict> {
    match a {
        Some(a) if a.allow().is_some() => Some(Verdict::Allow),
        Some(a) if a.block().is_some() => Some(Verdict::Block),
        _ => None,
    }
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Block => "block",
            Action::Allow => "allow",
            Action::Count => "count",
            Action::Captcha => "captcha",
            Action::Challenge => "challenge",
            Action::Unsupported => "unsupported",
        }
    }

    fn sdk(self) -> Result<waf::RuleAction> {
        let b = waf::RuleAction::builder();
        Ok(match self {
            Action::Block => b.block(waf::BlockAction::builder().build()).build(),
            Action::Allow => b.allow(waf::AllowAction::builder().build()).build(),
            Action::Count => b.count(waf::CountAction::builder().build()).build(),
            other => return Err(invalid(format!("rule action \"{}\" is not one of: block, allow, count", other.as_str()))),
        })
    }

    fn from_sdk(a: &waf::RuleAction) -> Action {
        match a {
            a if a.block().is_some() => Action::Block,
            a if a.allow().is_some() => Action::Allow,
            a if a.count().is_some() => Action::Count,
            a if a.captcha().is_some() => Action::Captcha,
            a if a.challenge().is_some() => Action::Challenge,
            _ => Action::Unsupported,
        }
    }
}

impl Override {
    fn sdk(self) -> Result<waf::OverrideAction> {
        let b = waf::OverrideAction::builder();
        Ok(match self {
            Override::None => b.none(waf::NoneAction::builder().build()).build(),
            Override::Count => b.count(waf::CountAction::builder().build()).build(),
            Override::Unsupported => return Err(invalid("rule override_action \"unsupported\" is not one of: none, count")),
        })
    }

    fn from_sdk(a: &waf::OverrideAction) -> Override {
        match a {
            a if a.none().is_some() => Override::None,
            a if a.count().is_some() => Override::Count,
            _ => Override::Unsupported,
        }
    }
}

impl RuleStatement {
    fn sdk(&self, rule: &str) -> Result<waf::Statement> {
        let b = waf::Statement::builder();
        Ok(match self {
            RuleStatement::ManagedRuleGroup { vendor, name } => b
                .managed_rule_group_statement(
                    waf::ManagedRuleGroupStatement::builder().vendor_name(vendor).name(name).build().map_err(build_err)?,
                )
                .build(),
            RuleStatement::GeoMatch { country_codes } => b
                .geo_match_statement(
                    waf::GeoMatchStatement::builder()
                        .set_country_codes(Some(country_codes.iter().map(|c| CountryCode::from(c.as_str())).collect()))
                        .build(),
                )
                .build(),
            RuleStatement::RateBased { limit, aggregate_key_type, evaluation_window_sec } => b
                .rate_based_statement(
                    waf::RateBasedStatement::builder()
                        .limit(*limit)
                        .aggregate_key_type(aggregate_key_type.sdk())
                        .evaluation_window_sec(*evaluation_window_sec)
                        .build()
                        .map_err(build_err)?,
                )
                .build(),
            RuleStatement::Unsupported(_) => {
                return Err(invalid(format!("`rules[{rule}].statement` must hold one of managed_rule_group, geo_match, rate_based")));
            }
        })
    }

    /// The statement in the manifest's shape, or `Unsupported` for anything the tool does not model
    /// (other statement types, or settings such as scope-down statements).
    fn from_sdk(s: Option<&waf::Statement>) -> RuleStatement {
        let Some(s) = s else {
            return RuleStatement::Unsupported("no statement".into());
        };
        let only = |single: waf::Statement| &single == s;
        if let Some(m) = &s.managed_rule_group_statement
            && only(waf::Statement::builder().managed_rule_group_statement(m.clone()).build())
            && m.scope_down_statement().is_none()
            && m.excluded_rules().is_empty()
            && m.managed_rule_group_configs().is_empty()
            && m.rule_action_overrides().is_empty()
        {
            return RuleStatement::ManagedRuleGroup { vendor: m.vendor_name().to_string(), name: m.name().to_string() };
        }
        if let Some(g) = &s.geo_match_statement
            && only(waf::Statement::builder().geo_match_statement(g.clone()).build())
            && g.forwarded_ip_config().is_none()
        {
            let mut country_codes: Vec<String> = g.country_codes().iter().map(|c| c.as_str().to_string()).collect();
            country_codes.sort_unstable();
            country_codes.dedup();
            return RuleStatement::GeoMatch { country_codes };
        }
        if let Some(r) = &s.rate_based_statement
            && only(waf::Statement::builder().rate_based_statement(r.clone()).build())
            && r.scope_down_statement().is_none()
            && r.forwarded_ip_config().is_none()
            && r.custom_keys().is_empty()
            && let Some(aggregate_key_type) = AggregateKey::from_sdk(r.aggregate_key_type())
        {
            let evaluation_window_sec = match r.evaluation_window_sec() {
                0 => DEFAULT_EVALUATION_WINDOW,
                w => w,
            };
            return RuleStatement::RateBased { limit: r.limit(), aggregate_key_type, evaluation_window_sec };
        }
        RuleStatement::Unsupported(format!("{s:?}"))
    }
}

impl WafRule {
    fn sdk(&self) -> Result<waf::Rule> {
        let what = format!("rules[{}]", self.name);
        let priority =
            i32::try_from(self.priority).map_err(|_| invalid(format!("`{what}.priority` = {} is out of range", self.priority)))?;
        waf::Rule::builder()
            .name(&self.name)
            .priority(priority)
            .statement(self.statement.sdk(&self.name)?)
            .set_action(self.action.map(Action::sdk).transpose()?)
            .set_override_action(self.override_action.map(Override::sdk).transpose()?)
            .visibility_config(visibility_sdk(self.visibility.as_ref(), &format!("{what}.visibility"))?)
            .build()
            .map_err(build_err)
    }

    fn from_sdk(r: &waf::Rule) -> WafRule {
        WafRule {
            name: r.name().to_string(),
            priority: i64::from(r.priority()),
            action: r.action().map(Action::from_sdk),
            override_action: r.override_action().map(Override::from_sdk),
            statement: RuleStatement::from_sdk(r.statement()),
            visibility: r.visibility_config().map(Visibility::from_sdk),
        }
    }
}

fn rules_sdk(rules: &[WafRule]) -> Result<Vec<waf::Rule>> {
    rules.iter().map(WafRule::sdk).collect()
}

fn tag_list(tags: &BTreeMap<String, String>) -> Result<Vec<waf::Tag>> {
    tags.iter().map(|(k, v)| waf::Tag::builder().key(k).value(v).build().map_err(build_err)).collect()
}

// ---- rules as the manifest writes them (the `structured` hook) ----

mod manifest_shape {
    use serde_json::{Value, json};

    use super::{Action, AggregateKey, Override, RuleStatement, Visibility, WafRule};
    use crate::providers::rules;
    use crate::providers::structured::{literal, object, one_of, opt_bool, opt_str, req_int, req_str, str_list};

    /// A visibility config; a rule's metric name defaults to the rule's name (`default_metric`).
    pub(super) fn visibility(value: Value, default_metric: Option<&str>) -> Result<Visibility, String> {
        let map = object(value, &["metric_name", "sampled_requests", "cloudwatch_metrics"])?;
        let metric = match default_metric {
            Some(d) => opt_str(&map, "metric_name", d)?,
            None => req_str(&map, "metric_name")?,
        };
        literal(&metric, "metric_name", rules::waf_metric_name)?;
        Ok(Visibility {
            metric_name: metric,
            sampled_requests: opt_bool(&map, "sampled_requests", true)?,
            cloudwatch_metrics: opt_bool(&map, "cloudwatch_metrics", true)?,
        })
    }

    pub(super) fn waf_rule(value: Value) -> Result<WafRule, String> {
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
                RuleStatement::ManagedRuleGroup { vendor, name: group }
            }
            "geo_match" => {
                let b = object(body, &["country_codes"]).map_err(|e| format!("`geo_match`: {e}"))?;
                let country_codes = str_list(&b, "country_codes")?;
                if country_codes.is_empty() {
                    return Err("`geo_match.country_codes` needs at least one country code".into());
                }
                for code in &country_codes {
                    literal(code, "geo_match.country_codes", rules::waf_country_code)?;
                }
                RuleStatement::GeoMatch { country_codes }
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
                let aggregate_key_type = serde_json::from_value::<AggregateKey>(json!(key)).map_err(|e| e.to_string())?;
                RuleStatement::RateBased { limit, aggregate_key_type, evaluation_window_sec: window }
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
        let action = match action.as_str() {
            "" => None,
            _ => Some(match one_of(action.clone(), "action", &["block", "allow", "count"])?.as_str() {
                "block" => Action::Block,
                "allow" => Action::Allow,
                _ => Action::Count,
            }),
        };
        let override_action = match override_action.as_str() {
            "" => None,
            _ => Some(match one_of(override_action.clone(), "override_action", &["none", "count"])?.as_str() {
                "none" => Override::None,
                _ => Override::Count,
            }),
        };
        let visibility = visibility(map.get("visibility").cloned().unwrap_or_else(|| json!({})), Some(&name))?;
        Ok(WafRule { name, priority, action, override_action, statement, visibility: Some(visibility) })
    }
}

/// A typed value back as the canonical JSON the manifest stores.
fn canonical<T: Serialize>(value: &T) -> std::result::Result<Value, String> {
    serde_json::to_value(value).map_err(|e| e.to_string())
}

// ---- API calls ----

struct AclId<'a> {
    scope: AclScope,
    name: &'a str,
    id: &'a str,
}

fn parse_id(id: &str) -> Result<AclId<'_>> {
    let mut parts = id.splitn(3, '/');
    let scope = |s: &str| match s {
        "REGIONAL" => Some(AclScope::Regional),
        "CLOUDFRONT" => Some(AclScope::Cloudfront),
        _ => None,
    };
    match (parts.next().and_then(scope), parts.next(), parts.next()) {
        (Some(scope), Some(name), Some(acl_id)) if !name.is_empty() && !acl_id.is_empty() => Ok(AclId { scope, name, id: acl_id }),
        _ => Err(invalid(format!("malformed web ACL id `{id}`: expected `<scope>/<name>/<id>` with scope REGIONAL or CLOUDFRONT"))),
    }
}

fn outputs(acl: &waf::WebAcl) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("arn".to_string(), acl.arn().to_string()),
        ("id".to_string(), acl.id().to_string()),
        ("name".to_string(), acl.name().to_string()),
    ])
}

/// GetWebACL: the ACL and its lock token; `None` if it does not exist.
async fn get(aws: &Aws, id: &AclId<'_>) -> Result<Option<(waf::WebAcl, String)>> {
    let out = aws
        .wafv2
        .get_web_acl()
        .name(id.name)
        .scope(id.scope.sdk())
        .id(id.id)
        .send()
        .await
        .map_err(|e| {
            ProviderError::sdk_classified("wafv2:GetWebACL", e, |e| match e {
                GetWebACLError::WafNonexistentItemException(_) => ErrorClass::NotFound,
                _ => ErrorClass::Other,
            })
        })
        .or_gone()?;
    Ok(out.and_then(|out| {
        let token = out.lock_token().unwrap_or_default().to_string();
        out.web_acl.map(|acl| (acl, token))
    }))
}

async fn list_tags(aws: &Aws, arn: &str) -> Result<BTreeMap<String, String>> {
    let mut tags = BTreeMap::new();
    let mut marker: Option<String> = None;
    loop {
        let out = aws.wafv2.list_tags_for_resource().resource_arn(arn).set_next_marker(marker.clone()).send().await.map_err(|e| {
            ProviderError::sdk_classified("wafv2:ListTagsForResource", e, |e| match e {
                ListTagsForResourceError::WafNonexistentItemException(_) => ErrorClass::NotFound,
                _ => ErrorClass::Other,
            })
        })?;
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

async fn read_acl(aws: &Aws, id: &str) -> Result<Option<Observed<WebAclSpec>>> {
    let acl_id = parse_id(id)?;
    let Some((acl, _)) = get(aws, &acl_id).await? else {
        return Ok(None);
    };
    // `None`: deleted between the two calls.
    let Some(tags) = list_tags(aws, acl.arn()).await.or_gone()? else {
        return Ok(None);
    };
    let spec = WebAclSpec {
        name: acl.name().to_string(),
        scope: acl_id.scope,
        description: acl.description().unwrap_or_default().to_string(),
        default_action: default_action_from_sdk(acl.default_action()),
        visibility: acl.visibility_config().map(Visibility::from_sdk),
        rules: acl.rules().iter().map(WafRule::from_sdk).collect(),
        tags,
    };
    Ok(Some(Observed { outputs: outputs(&acl), spec }))
}

/// The web ACL named `name` in `scope` (names are unique per scope), with its physical id.
async fn find_acl(aws: &Aws, scope: &str, name: &str) -> Result<Option<(String, Observed<WebAclSpec>)>> {
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
            return Ok(read_acl(aws, &physical).await?.map(|o| (physical, o)));
        }
        match out.next_marker {
            Some(m) if !out.web_acls().is_empty() => marker = Some(m),
            _ => return Ok(None),
        }
    }
}

/// What a CreateWebACL error means: a taken name is `AlreadyExists`.
fn create_error_class(e: &CreateWebACLError) -> ErrorClass {
    match e {
        CreateWebACLError::WafDuplicateItemException(_) => ErrorClass::AlreadyExists,
        // moto answers a taken name with code `WafV2DuplicateItem`, which the SDK has no variant for.
        e if e.code() == Some("WafV2DuplicateItem") => ErrorClass::AlreadyExists,
        _ => ErrorClass::Other,
    }
}

// ---- the kind ----

/// `aws_wafv2_web_acl`: A WAFv2 web ACL with its rules (managed rule groups, geo match, rate-based).
pub struct WebAcl;

impl Resource for WebAcl {
    type Spec = WebAclSpec;
    const KIND: Kind = Kind::WebAcl;

    fn schema() -> &'static KindSchema {
        &SCHEMA
    }

    /// AWS assigns the id part at create.
    fn physical_id(_spec: &WebAclSpec) -> Option<String> {
        None
    }

    fn name_check(_spec: &WebAclSpec) -> NameCheck {
        NameCheck::Find
    }

    fn placement(id: &str) -> Placement {
        // A CloudFront web ACL is global (its ARN says us-east-1 whatever the region in use).
        if id.starts_with("CLOUDFRONT/") { Placement::Anywhere } else { Placement::RegionalArn }
    }

    fn parent(_id: &str) -> Option<(Kind, String)> {
        None
    }

    fn canonical_id(id: &str) -> String {
        id.to_string()
    }

    /// The web ACL id (also in the physical id).
    fn assigned_id(outputs: &BTreeMap<String, String>) -> Option<String> {
        outputs.get("id").cloned()
    }

    fn derived_outputs(_spec: &WebAclSpec) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    fn finishes_incomplete() -> bool {
        true
    }

    async fn read(aws: &Aws, id: &str) -> Result<Option<Observed<WebAclSpec>>> {
        read_acl(aws, id).await
    }

    async fn find(aws: &Aws, spec: &WebAclSpec, _taken: &HashSet<String>) -> Result<Option<(String, Observed<WebAclSpec>)>> {
        find_acl(aws, spec.scope.as_str(), &spec.name).await
    }

    async fn create(aws: &Aws, spec: &WebAclSpec, _artifact: Option<&Artifact>) -> Result<Applied> {
        let name = spec.name.as_str();
        let tags = tag_list(&spec.tags)?;
        let out = aws
            .wafv2
            .create_web_acl()
            .name(name)
            .scope(spec.scope.sdk())
            .default_action(default_action_sdk(spec.default_action)?)
            .visibility_config(visibility_sdk(spec.visibility.as_ref(), "visibility")?)
            .set_rules(Some(rules_sdk(&spec.rules)?))
            .set_description((!spec.description.is_empty()).then(|| spec.description.clone()))
            .set_tags((!tags.is_empty()).then_some(tags))
            .send()
            .await
            .map_err(|e| ProviderError::sdk_classified("wafv2:CreateWebACL", e, create_error_class))?;
        let summary = out.summary().ok_or_else(|| ProviderError::Other("wafv2:CreateWebACL returned no summary".into()))?;
        let (Some(acl_id), Some(arn)) = (summary.id(), summary.arn()) else {
            return Err(ProviderError::Other("wafv2:CreateWebACL returned no id or ARN".into()));
        };
        Ok(Applied {
            physical_id: format!("{}/{name}/{acl_id}", spec.scope.as_str()),
            outputs: BTreeMap::from([
                ("arn".to_string(), arn.to_string()),
                ("id".to_string(), acl_id.to_string()),
                ("name".to_string(), summary.name().unwrap_or(name).to_string()),
            ]),
        })
    }

    async fn update(aws: &Aws, id: &str, current: &WebAclSpec, desired: &WebAclSpec, _artifact: Option<&Artifact>) -> Result<Applied> {
        let acl_id = parse_id(id)?;
        let gone = || ProviderError::Other(format!("web ACL {id} vanished during update"));
        let body_changed = current.description != desired.description
            || current.default_action != desired.default_action
            || current.visibility != desired.visibility
            || current.rules != desired.rules;
        let acl = if body_changed {
            let request = aws
                .wafv2
                .update_web_acl()
                .name(acl_id.name)
                .scope(acl_id.scope.sdk())
                .id(acl_id.id)
                .default_action(default_action_sdk(desired.default_action)?)
                .visibility_config(visibility_sdk(desired.visibility.as_ref(), "visibility")?)
                .set_rules(Some(rules_sdk(&desired.rules)?))
                .set_description((!desired.description.is_empty()).then(|| desired.description.clone()));
            // UpdateWebACL replaces the whole ACL under the lock token of the version it read: a
            // retried step is a GetWebACL (fresh token) and the update.
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
        let arn = acl.arn();
        TagChanges::between(&current.tags, &desired.tags)
            .apply(
                |set| async move {
                    aws.wafv2
                        .tag_resource()
                        .resource_arn(arn)
                        .set_tags(Some(tag_list(&set)?))
                        .send()
                        .await
                        .map(drop)
                        .map_err(|e| ProviderError::sdk("wafv2:TagResource", e))
                },
                |keys| async move {
                    aws.wafv2
                        .untag_resource()
                        .resource_arn(arn)
                        .set_tag_keys(Some(keys))
                        .send()
                        .await
                        .map(drop)
                        .map_err(|e| ProviderError::sdk("wafv2:UntagResource", e))
                },
            )
            .await?;
        Ok(Applied { physical_id: id.to_string(), outputs: outputs(&acl) })
    }

    /// DeleteWebACL under the lock token of a fresh GetWebACL, retried while someone else edits it.
    async fn delete(aws: &Aws, id: &str) -> Result<()> {
        let acl_id = parse_id(id)?;
        with_backoff("wafv2:DeleteWebACL", LOCK_RETRY, is_stale_lock, || {
            let acl_id = &acl_id;
            async move {
                let Some((_, token)) = get(aws, acl_id).await? else {
                    return Ok(());
                };
                aws.wafv2
                    .delete_web_acl()
                    .name(acl_id.name)
                    .scope(acl_id.scope.sdk())
                    .id(acl_id.id)
                    .lock_token(token)
                    .send()
                    .await
                    .map_err(|e| {
                        ProviderError::sdk_classified("wafv2:DeleteWebACL", e, |e| match e {
                            DeleteWebACLError::WafNonexistentItemException(_) => ErrorClass::NotFound,
                            _ => ErrorClass::Other,
                        })
                    })
                    .or_gone()
                    .map(drop)
            }
        })
        .await
    }

    fn structured(field: &str, value: Value) -> std::result::Result<Value, String> {
        match field {
            "rules" => canonical(&manifest_shape::waf_rule(value)?),
            "visibility" => canonical(&manifest_shape::visibility(value, None)?),
            _ => Ok(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    fn typed(rule: &Value) -> WafRule {
        serde_json::from_value(rule.clone()).unwrap()
    }

    #[test]
    fn spec_round_trip() {
        let attrs = json!({
            "name": "api-acl",
            "scope": "REGIONAL",
            "description": "protects the API",
            "default_action": "allow",
            "visibility": {"metric_name": "api-acl", "sampled_requests": true, "cloudwatch_metrics": true},
            "rules": seed_rules(),
            "tags": {"reconcile:stack": "s", "team": "x"},
        });
        let attrs = attrs.as_object().unwrap();
        let provider = Kind::WebAcl.provider();
        assert_eq!(&provider.normalize(attrs).unwrap(), attrs, "manifest attributes -> spec -> live attributes");
        assert_eq!(provider.physical_id(attrs).unwrap(), None, "AWS assigns the id");
        let mut wrong = attrs.clone();
        wrong.insert("default_action".into(), json!("maybe"));
        assert!(matches!(provider.normalize(&wrong), Err(ProviderError::Spec { .. })), "no silent default");
        let mut wrong = attrs.clone();
        wrong["rules"][0]["statement"] = json!({"geo_match": {"country_codes": ["SG"], "forwarded": true}});
        assert!(matches!(provider.normalize(&wrong), Err(ProviderError::Spec { .. })), "a nested unknown field is refused");
        let mut unknown = attrs.clone();
        unknown.insert("rule".into(), json!([]));
        assert!(provider.normalize(&unknown).is_err(), "an unknown field is refused, not dropped");
    }

    #[test]
    fn rules_round_trip_through_sdk_types() {
        let rules = seed_rules();
        for r in rules.as_array().unwrap() {
            let sdk = typed(r).sdk().unwrap();
            assert_eq!(&canonical(&WafRule::from_sdk(&sdk)).unwrap(), r);
        }
    }

    #[test]
    fn structured_rules_are_typed_once_with_defaults_filled_in() {
        let written = json!({"name": "rate", "priority": 1, "action": "block", "statement": {"rate_based": {"limit": 2000}}});
        let canonical_rule = WebAcl::structured("rules", written).unwrap();
        assert_eq!(
            canonical_rule,
            json!({"name": "rate", "priority": 1, "action": "block", "override_action": "",
                   "statement": {"rate_based": {"limit": 2000, "aggregate_key_type": "IP", "evaluation_window_sec": 300}},
                   "visibility": {"metric_name": "rate", "sampled_requests": true, "cloudwatch_metrics": true}})
        );
        let rule = typed(&canonical_rule);
        assert_eq!(rule.action, Some(Action::Block));
        assert_eq!(
            rule.statement,
            RuleStatement::RateBased { limit: 2000, aggregate_key_type: AggregateKey::Ip, evaluation_window_sec: 300 }
        );
        let geo = WebAcl::structured(
            "rules",
            json!({"name": "geo", "priority": 0, "override_action": "count",
                   "statement": {"managed_rule_group": {"name": "AWSManagedRulesCommonRuleSet"}}}),
        )
        .unwrap();
        assert_eq!(geo["statement"], json!({"managed_rule_group": {"vendor": "AWS", "name": "AWSManagedRulesCommonRuleSet"}}));
        assert_eq!((geo["action"].clone(), geo["override_action"].clone()), (json!(""), json!("count")));
        assert_eq!(
            WebAcl::structured("visibility", json!({"metric_name": "m", "cloudwatch_metrics": false})).unwrap(),
            json!({"metric_name": "m", "sampled_requests": true, "cloudwatch_metrics": false})
        );
        // Refused with the messages validation always gave.
        let bad = |field: &str, v: Value| WebAcl::structured(field, v).unwrap_err();
        assert_eq!(bad("visibility", json!({"sampled_requests": true})), "missing `metric_name`");
        assert_eq!(
            bad("rules", json!({"name": "r", "priority": 1, "override_action": "none", "statement": {"rate_based": {"limit": 2000}}})),
            "this rule takes `action` (\"block\", \"allow\" or \"count\"), not `override_action`"
        );
        assert_eq!(
            bad("rules", json!({"name": "r", "priority": 1, "action": "deny", "statement": {"geo_match": {"country_codes": ["SG"]}}})),
            "`action` = \"deny\" is not one of: block, allow, count"
        );
        assert_eq!(
            bad(
                "rules",
                json!({"name": "r", "priority": 1, "action": "block", "statement": {"rate_based": {"limit": 100, "aggregate_key_type": "ip"}}})
            ),
            "`aggregate_key_type` = \"ip\" is not one of: IP, FORWARDED_IP, CONSTANT, CUSTOM_KEYS"
        );
        assert_eq!(
            bad("rules", json!({"name": "r", "priority": -1, "action": "block", "statement": {"geo_match": {"country_codes": ["SG"]}}})),
            "`priority` = -1 must be 0 or more"
        );
    }

    #[test]
    fn zero_window_reads_as_default_and_unmodelled_statements_show() {
        let s = waf::Statement::builder()
            .rate_based_statement(waf::RateBasedStatement::builder().limit(100).aggregate_key_type(SdkAggregateKey::Ip).build().unwrap())
            .build();
        assert_eq!(
            canonical(&RuleStatement::from_sdk(Some(&s))).unwrap(),
            json!({"rate_based": {"limit": 100, "aggregate_key_type": "IP", "evaluation_window_sec": 300}})
        );
        let two = waf::Statement::builder()
            .geo_match_statement(waf::GeoMatchStatement::builder().country_codes(CountryCode::Sg).build())
            .rate_based_statement(s.rate_based_statement.clone().unwrap())
            .build();
        assert!(canonical(&RuleStatement::from_sdk(Some(&two))).unwrap().get("unsupported").is_some());
        assert_eq!(canonical(&RuleStatement::from_sdk(None)).unwrap(), json!({"unsupported": "no statement"}));
    }

    #[test]
    fn a_taken_name_is_already_exists_whichever_code_says_so() {
        use aws_sdk_wafv2::error::ErrorMetadata;
        use aws_sdk_wafv2::types::error::{WafDuplicateItemException, WafInvalidParameterException};
        let typed = CreateWebACLError::WafDuplicateItemException(WafDuplicateItemException::builder().build());
        assert_eq!(create_error_class(&typed), ErrorClass::AlreadyExists);
        let moto = CreateWebACLError::generic(ErrorMetadata::builder().code("WafV2DuplicateItem").build());
        assert_eq!(create_error_class(&moto), ErrorClass::AlreadyExists);
        let other = CreateWebACLError::WafInvalidParameterException(WafInvalidParameterException::builder().build());
        assert_eq!(create_error_class(&other), ErrorClass::Other);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(serde_json::from_value::<WafRule>(json!({"name": "x"})).is_err());
        assert!(Action::Captcha.sdk().is_err());
        assert!(default_action_sdk(None).is_err());
        let unsupported = WafRule { statement: RuleStatement::Unsupported("x".into()), ..typed(&seed_rules()[1]) };
        assert!(unsupported.sdk().is_err());
        assert!(parse_id("REGIONAL/name").is_err());
        assert!(parse_id("regional/name/abc").is_err());
        let id = parse_id("REGIONAL/acl/abc-123").unwrap();
        assert_eq!((id.scope, id.name, id.id), (AclScope::Regional, "acl", "abc-123"));
    }
}
