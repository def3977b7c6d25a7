//! `reconcile verify`: post-deploy probes of a stack that was applied.
//!
//! What to probe comes from the state (the REST APIs, stages, functions and web ACL associations the
//! last apply recorded, with their physical ids) and what to expect from the manifest (the routes of
//! each REST API, the web ACL's rate-based rule). Three probes:
//!
//! * [`smoke`]: one GET per GET route of each stage; status, headers and a JSON body.
//! * [`concurrency`]: rounds of N concurrent direct invocations of each function.
//! * [`rate_limit`]: N requests over C connections to the stage the web ACL protects, and where 403s
//!   began compared with the rule's limit.
//!
//! Traffic goes only to the stack's own invoke URLs (built from the recorded API ids, stage names and
//! region, never taken as free text from the state) or to the `--target-url` given. Every probe is
//! bounded in count and time.

pub mod concurrency;
pub mod http;
pub mod rate_limit;
pub mod smoke;

use std::io::{IsTerminal, Write};

use serde::Serialize;
use serde_json::Value;

use crate::manifest::Manifest;
use crate::providers::apigateway::rest_api::Route;
use crate::providers::wafv2::web_acl::{Action, AggregateKey, RuleStatement, WafRule};
use crate::providers::{Kind, ProviderError};
use crate::state::{ResourceState, StackState};

/// Why a probe could not be started (what it found while probing is a result, not an error).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("stack `{stack}` has no resources in the state file {state}: apply it first (verify probes what the state records)")]
    NotApplied { stack: String, state: String },
    #[error("{0}")]
    Inconsistent(String),
    #[error(
        "the AWS endpoint is overridden ({endpoint}): invoke URLs (https://<api-id>.execute-api.<region>.amazonaws.com) do not \
         exist for an emulator, so the HTTP probes need --target-url (a server that stands in for the stages); nothing was sent"
    )]
    CustomEndpoint { endpoint: String },
    #[error("--target-url `{url}`: {why}")]
    TargetUrl { url: String, why: String },
    #[error("--stage `{0}` names no stage of this stack in the state")]
    UnknownStage(String),
    #[error("--function `{0}` names no function of this stack in the state")]
    UnknownFunction(String),
    #[error("rate-limit: {0}")]
    RateLimit(String),
    #[error("--payload: {0}")]
    Payload(String),
    #[error("cannot start the HTTP client: {0}")]
    Http(String),
    #[error(transparent)]
    Aws(#[from] ProviderError),
}

/// A probe's verdict. Ordered: the worst of several is their maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every expectation held.
    Passed,
    /// Nothing failed, but the probe could not tell (functions cannot run at this endpoint, the
    /// rate-limit probe could not reach the rate that crosses the limit, a time limit was hit).
    Inconclusive,
    /// An expectation failed.
    Failed,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Inconclusive => "INCONCLUSIVE",
            Outcome::Failed => "FAILED",
        }
    }

    /// The worst outcome of all (passed when there are none).
    pub fn worst(outcomes: impl IntoIterator<Item = Outcome>) -> Outcome {
        outcomes.into_iter().max().unwrap_or(Outcome::Passed)
    }
}

/// One stage of a REST API, as the state records it, with the GET routes the manifest gives its API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageTarget {
    /// The stage's resource name (e.g. `dev_stage`).
    pub resource: String,
    /// The REST API's resource name (e.g. `hello_api`).
    pub api_resource: String,
    pub api_id: String,
    pub stage: String,
    pub region: String,
    /// The stage's ARN (what a web ACL association names).
    #[serde(skip)]
    pub arn: String,
    /// `https://<api-id>.execute-api.<region>.<dns suffix>/<stage>`, built from the ids above.
    pub invoke_url: String,
    /// Paths of the GET (and ANY) routes that can be requested as they are.
    pub get_paths: Vec<String>,
    /// GET routes left out, with why (a path parameter has no value to send).
    pub skipped: Vec<String>,
}

/// `IP`, `FORWARDED_IP`…: the key as the manifest writes it.
pub fn key_label(key: AggregateKey) -> String {
    serde_json::to_value(key).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_else(|| format!("{key:?}"))
}

impl StageTarget {
    /// `hello_api/dev`: how reports name the stage.
    pub fn label(&self) -> String {
        format!("{}/{}", self.api_resource, self.stage)
    }
}

/// A Lambda function of the stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FunctionTarget {
    pub resource: String,
    /// The function name (its physical id).
    pub name: String,
}

/// The rate-based rule of a web ACL that protects a stage of the stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RateRule {
    pub acl_resource: String,
    pub rule: String,
    /// Requests per evaluation window and aggregation key (per IP for `IP`).
    pub limit: u64,
    pub window_s: u64,
    pub aggregate_key: AggregateKey,
}

/// A web ACL association of the stack: the stage it protects and the rule that limits its rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WafTarget {
    pub association: String,
    /// Index into [`Targets::stages`]; `None` when the protected resource is no stage of the stack.
    pub stage: Option<usize>,
    /// The blocking rate-based rule with the lowest limit, or why there is none.
    pub rule: Result<RateRule, String>,
}

/// Everything the probes may touch, from the state and the manifest.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    pub stages: Vec<StageTarget>,
    pub functions: Vec<FunctionTarget>,
    pub waf: Vec<WafTarget>,
}

fn attr<'a>(r: &'a ResourceState, key: &str) -> Option<&'a str> {
    r.attributes.get(key).and_then(Value::as_str)
}

/// An id that can be put in a host name or a path as it is.
fn plain_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The DNS suffix of execute-api endpoints in a region's partition.
fn dns_suffix(region: &str) -> &'static str {
    if region.starts_with("cn-") { "amazonaws.com.cn" } else { "amazonaws.com" }
}

/// The routes the manifest gives the REST API `name`, else those the state recorded for it.
fn routes_of(manifest: &Manifest, api: &ResourceState) -> Result<Vec<Route>, VerifyError> {
    let from_manifest = manifest.resource(&api.name).filter(|r| r.kind == Kind::RestApi).and_then(|r| r.attrs.get("routes"));
    let value = from_manifest.or_else(|| api.attributes.get("routes")).cloned().unwrap_or(Value::Array(vec![]));
    serde_json::from_value(value)
        .map_err(|e| VerifyError::Inconsistent(format!("the routes of REST API `{}` cannot be read: {e}", api.name)))
}

/// The rules of web ACL `acl` as the manifest gives them, else as the state recorded them.
fn rules_of(manifest: &Manifest, acl: &ResourceState) -> Result<Vec<WafRule>, String> {
    let from_manifest = manifest.resource(&acl.name).filter(|r| r.kind == Kind::WebAcl).and_then(|r| r.attrs.get("rules"));
    let value = from_manifest.or_else(|| acl.attributes.get("rules")).cloned().unwrap_or(Value::Array(vec![]));
    serde_json::from_value(value).map_err(|e| format!("the rules of web ACL `{}` cannot be read: {e}", acl.name))
}

/// The blocking rate-based rule with the lowest limit, or why there is none.
pub fn rate_rule(acl_resource: &str, rules: &[WafRule]) -> Result<RateRule, String> {
    let mut found: Vec<RateRule> = Vec::new();
    let mut counting = Vec::new();
    for r in rules {
        if let RuleStatement::RateBased { limit, aggregate_key_type, evaluation_window_sec } = &r.statement {
            if r.action != Some(Action::Block) {
                counting.push(r.name.clone());
                continue;
            }
            found.push(RateRule {
                acl_resource: acl_resource.to_string(),
                rule: r.name.clone(),
                limit: u64::try_from(*limit).unwrap_or(0),
                // A window read as 0 (moto) is the default, 300 s.
                window_s: u64::try_from(*evaluation_window_sec).ok().filter(|w| *w > 0).unwrap_or(300),
                aggregate_key: *aggregate_key_type,
            });
        }
    }
    found.sort_by_key(|r| r.limit);
    found.into_iter().next().ok_or_else(|| {
        if counting.is_empty() {
            format!("web ACL `{acl_resource}` has no rate-based rule")
        } else {
            format!("the rate-based rules of web ACL `{acl_resource}` ({}) do not block, so no 403 is expected", counting.join(", "))
        }
    })
}

/// What the probes may touch: the stages, functions and associations the state records for the stack.
pub fn targets(manifest: &Manifest, state: &StackState) -> Result<Targets, VerifyError> {
    let mut t = Targets::default();
    for r in state.resources.values() {
        match r.kind {
            Kind::Stage => t.stages.push(stage_target(manifest, state, r)?),
            Kind::LambdaFunction => t.functions.push(FunctionTarget { resource: r.name.clone(), name: r.physical_id.clone() }),
            _ => {}
        }
    }
    for r in state.resources.values().filter(|r| r.kind == Kind::WebAclAssociation) {
        let protected = attr(r, "resource_arn").unwrap_or(&r.physical_id);
        let stage = t.stages.iter().position(|s| s.arn == protected);
        let acl_arn = attr(r, "web_acl_arn").unwrap_or_default();
        let acl = state.resources.values().find(|a| a.kind == Kind::WebAcl && a.outputs.get("arn").map(String::as_str) == Some(acl_arn));
        let rule = match acl {
            Some(acl) => rules_of(manifest, acl).and_then(|rules| rate_rule(&acl.name, &rules)),
            None => Err(format!("association `{}` names web ACL {acl_arn}, which is not a resource of this stack", r.name)),
        };
        t.waf.push(WafTarget { association: r.name.clone(), stage, rule });
    }
    Ok(t)
}

fn stage_target(manifest: &Manifest, state: &StackState, r: &ResourceState) -> Result<StageTarget, VerifyError> {
    let inconsistent = |what: &str| VerifyError::Inconsistent(format!("stage `{}` in the state: {what}", r.name));
    let api_id = attr(r, "rest_api_id").filter(|s| plain_id(s)).ok_or_else(|| inconsistent("no usable `rest_api_id`"))?;
    let stage = attr(r, "stage_name").filter(|s| plain_id(s)).ok_or_else(|| inconsistent("no usable `stage_name`"))?;
    let arn = r.outputs.get("arn").cloned().unwrap_or_default();
    // arn:<partition>:apigateway:<region>::/restapis/<id>/stages/<name>
    let region = arn.split(':').nth(3).filter(|s| crate::providers::is_region_name(s)).ok_or_else(|| inconsistent("no usable `arn`"))?;
    let api = state.resources.values().find(|a| a.kind == Kind::RestApi && a.physical_id == api_id);
    let (api_resource, routes) = match api {
        Some(api) => (api.name.clone(), routes_of(manifest, api)?),
        None => (api_id.to_string(), Vec::new()),
    };
    let mut get_paths = Vec::new();
    let mut skipped = Vec::new();
    for route in routes.iter().filter(|r| r.method == "GET" || r.method == "ANY") {
        if route.path.contains('{') {
            skipped.push(format!("{} {}: a path parameter has no value to send", route.method, route.path));
        } else if !get_paths.contains(&route.path) {
            get_paths.push(route.path.clone());
        }
    }
    Ok(StageTarget {
        resource: r.name.clone(),
        api_resource,
        api_id: api_id.to_string(),
        stage: stage.to_string(),
        region: region.to_string(),
        invoke_url: format!("https://{api_id}.execute-api.{region}.{}/{stage}", dns_suffix(region)),
        arn,
        get_paths,
        skipped,
    })
}

/// Where the HTTP probes send a stage's requests: its invoke URL, or the `--target-url` template.
#[derive(Debug, Clone)]
pub enum Destination {
    InvokeUrls,
    /// `{api_id}`, `{stage}` and `{region}` are replaced by the stage's.
    Template(String),
}

impl Destination {
    /// Checks a `--target-url`: http or https, a host, no query or fragment (the route's path is
    /// appended), only the known placeholders.
    pub fn target(url: &str) -> Result<Destination, VerifyError> {
        let bad = |why: &str| VerifyError::TargetUrl { url: url.to_string(), why: why.to_string() };
        let probe = url.replace("{api_id}", "x").replace("{stage}", "x").replace("{region}", "x");
        if probe.contains('{') || probe.contains('}') {
            return Err(bad("only {api_id}, {stage} and {region} can be replaced"));
        }
        let uri: ::http::Uri = probe.parse().map_err(|e| bad(&format!("not a URL ({e})")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(bad("must start with http:// or https://"));
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("has no host"));
        }
        if uri.query().is_some() || probe.contains('#') {
            return Err(bad("must have no query or fragment (the route's path is appended to it)"));
        }
        Ok(Destination::Template(url.trim_end_matches('/').to_string()))
    }

    /// The URL of `path` (a route path such as `/book`) on `stage`.
    pub fn url(&self, stage: &StageTarget, path: &str) -> String {
        let base = match self {
            Destination::InvokeUrls => stage.invoke_url.clone(),
            Destination::Template(t) => {
                t.replace("{api_id}", &stage.api_id).replace("{stage}", &stage.stage).replace("{region}", &stage.region)
            }
        };
        if path == "/" { format!("{base}/") } else { format!("{base}{path}") }
    }
}

/// The endpoint every API Gateway call goes to instead of AWS, if one is configured
/// (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_API_GATEWAY`, or `endpoint_url` in the profile). Reads the
/// environment and the config files only: no network, no credentials.
pub async fn custom_endpoint(region: Option<String>) -> Option<String> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(r) = region {
        loader = loader.region(aws_config::Region::new(r));
    }
    let config = loader.load().await;
    let key = aws_types::service_config::ServiceConfigKey::builder()
        .service_id("API Gateway")
        .env("AWS_ENDPOINT_URL")
        .profile("endpoint_url")
        .build()
        .ok()?;
    config.service_config().and_then(|c| c.load_config(key)).or_else(|| config.endpoint_url().map(str::to_string))
}

/// Progress of a running probe on stderr: one line rewritten in place on a terminal; on anything
/// else only notes, one per line; nothing with --quiet or --json.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    live: bool,
    notes: bool,
}

impl Progress {
    pub fn new(enabled: bool) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        Progress { live: enabled && terminal, notes: enabled }
    }

    pub fn silent() -> Progress {
        Progress { live: false, notes: false }
    }

    /// Replaces the status line (terminal only).
    pub fn status(&self, text: &str) {
        if self.live {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K{text}");
            let _ = err.flush();
        }
    }

    /// A line that stays.
    pub fn note(&self, text: &str) {
        self.clear();
        if self.notes {
            eprintln!("{text}");
        }
    }

    pub fn clear(&self) {
        if self.live {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

/// Latency percentiles in milliseconds (nearest rank), of a set of measurements.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    pub count: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(samples: &[std::time::Duration]) -> Option<Latency> {
        if samples.is_empty() {
            return None;
        }
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let i = ((p / 100.0) * ms.len() as f64).ceil() as usize;
            round1(ms[i.clamp(1, ms.len()) - 1])
        };
        Some(Latency { count: ms.len(), p50_ms: rank(50.0), p95_ms: rank(95.0), p99_ms: rank(99.0), max_ms: round1(ms[ms.len() - 1]) })
    }

    pub fn describe(&self) -> String {
        format!("p50 {} p95 {} p99 {}", ms_text(self.p50_ms), ms_text(self.p95_ms), ms_text(self.p99_ms))
    }
}

pub(crate) fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// `850ms`, `2.04s`.
pub fn ms_text(ms: f64) -> String {
    if ms < 1000.0 { format!("{ms:.0}ms") } else { format!("{:.2}s", ms / 1000.0) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let l = Latency::of(&samples).unwrap();
        assert_eq!((l.count, l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms), (100, 50.0, 95.0, 99.0, 100.0));
        let one = Latency::of(&[Duration::from_millis(7)]).unwrap();
        assert_eq!((one.p50_ms, one.p99_ms), (7.0, 7.0));
        assert_eq!(Latency::of(&[]), None);
    }

    #[test]
    fn the_worst_outcome_wins() {
        assert_eq!(Outcome::worst([Outcome::Passed, Outcome::Inconclusive]), Outcome::Inconclusive);
        assert_eq!(Outcome::worst([Outcome::Failed, Outcome::Inconclusive, Outcome::Passed]), Outcome::Failed);
        assert_eq!(Outcome::worst([]), Outcome::Passed);
    }

    fn rule(v: Value) -> WafRule {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_blocking_rate_rule_with_the_lowest_limit_is_the_expectation() {
        let vis = json!({"metric_name": "m", "sampled_requests": true, "cloudwatch_metrics": true});
        let rules = vec![
            rule(json!({"name": "geo", "priority": 2, "action": "block", "override_action": "",
                        "statement": {"geo_match": {"country_codes": ["SG"]}}, "visibility": vis})),
            rule(json!({"name": "count-only", "priority": 3, "action": "count", "override_action": "",
                        "statement": {"rate_based": {"limit": 50, "aggregate_key_type": "IP", "evaluation_window_sec": 60}}, "visibility": vis})),
            rule(json!({"name": "big", "priority": 4, "action": "block", "override_action": "",
                        "statement": {"rate_based": {"limit": 5000, "aggregate_key_type": "IP", "evaluation_window_sec": 300}}, "visibility": vis})),
            rule(json!({"name": "small", "priority": 1, "action": "block", "override_action": "",
                        "statement": {"rate_based": {"limit": 2000, "aggregate_key_type": "IP", "evaluation_window_sec": 0}}, "visibility": vis})),
        ];
        let r = rate_rule("acl", &rules).unwrap();
        assert_eq!((r.rule.as_str(), r.limit, r.window_s), ("small", 2000, 300), "a window read as 0 is the default 300 s");
        assert_eq!(
            rate_rule("acl", &rules[..2]).unwrap_err(),
            "the rate-based rules of web ACL `acl` (count-only) do not block, so no 403 is expected"
        );
        assert_eq!(rate_rule("acl", &rules[..1]).unwrap_err(), "web ACL `acl` has no rate-based rule");
    }

    fn record(name: &str, kind: Kind, id: &str, attributes: Value, outputs: &[(&str, &str)]) -> (String, ResourceState) {
        let outputs = outputs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        (name.to_string(), ResourceState { name: name.into(), kind, physical_id: id.into(), attributes, outputs, depends_on: vec![] })
    }

    /// The seed manifest with a state as its apply records it in `region`.
    fn seed_state(region: &str, hello_id: &str) -> (Manifest, StackState) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/apigw-lambda-basic.toml");
        let manifest = crate::manifest::load(&path).unwrap();
        let p = if region.starts_with("cn-") { "aws-cn" } else { "aws" };
        let stage_arn = |api: &str, stage: &str| format!("arn:{p}:apigateway:{region}::/restapis/{api}/stages/{stage}");
        let acl_arn = format!("arn:{p}:wafv2:{region}:123456789012:regional/webacl/ApiGwWebAcl/x");
        let stage = |api: &str, name: &str| json!({"rest_api_id": api, "stage_name": name});
        let resources = [
            record("hello_api", Kind::RestApi, hello_id, json!({"name": "HelloApiGw"}), &[]),
            record("api_demo", Kind::RestApi, "demo1", json!({"name": "ApiGwDemo"}), &[]),
            record("dev_stage", Kind::Stage, &format!("{hello_id}/dev"), stage(hello_id, "dev"), &[("arn", &stage_arn(hello_id, "dev"))]),
            record(
                "prod_stage",
                Kind::Stage,
                &format!("{hello_id}/prod"),
                stage(hello_id, "prod"),
                &[("arn", &stage_arn(hello_id, "prod"))],
            ),
            record("api_demo_prod", Kind::Stage, "demo1/prod", stage("demo1", "prod"), &[("arn", &stage_arn("demo1", "prod"))]),
            record("hello_function", Kind::LambdaFunction, "HelloLambdaTest", json!({}), &[]),
            record("waf_acl", Kind::WebAcl, "REGIONAL/ApiGwWebAcl/x", json!({}), &[("arn", &acl_arn)]),
            record(
                "waf_prod_association",
                Kind::WebAclAssociation,
                &stage_arn(hello_id, "prod"),
                json!({"web_acl_arn": acl_arn, "resource_arn": stage_arn(hello_id, "prod")}),
                &[],
            ),
        ];
        (manifest, StackState { resources: resources.into_iter().collect(), ..Default::default() })
    }

    #[test]
    fn targets_come_from_the_state_and_expectations_from_the_manifest() {
        let (manifest, state) = seed_state("eu-west-1", "hello1");
        let t = targets(&manifest, &state).unwrap();
        let stages: Vec<(String, String, Vec<String>)> =
            t.stages.iter().map(|s| (s.label(), s.invoke_url.clone(), s.get_paths.clone())).collect();
        assert_eq!(
            stages,
            vec![
                ("api_demo/prod".into(), "https://demo1.execute-api.eu-west-1.amazonaws.com/prod".into(), vec!["/order".into()]),
                ("hello_api/dev".into(), "https://hello1.execute-api.eu-west-1.amazonaws.com/dev".into(), vec!["/book".into()]),
                ("hello_api/prod".into(), "https://hello1.execute-api.eu-west-1.amazonaws.com/prod".into(), vec!["/book".into()]),
            ]
        );
        assert_eq!(t.functions, vec![FunctionTarget { resource: "hello_function".into(), name: "HelloLambdaTest".into() }]);
        assert_eq!(t.waf.len(), 1);
        assert_eq!(t.waf[0].stage.map(|i| t.stages[i].resource.as_str()), Some("prod_stage"));
        let rule = t.waf[0].rule.clone().unwrap();
        assert_eq!((rule.rule.as_str(), rule.limit, rule.window_s), ("LimiteRequestsThreshold", 2000, 300), "the manifest's rule");

        let (manifest, state) = seed_state("cn-north-1", "hello1");
        let t = targets(&manifest, &state).unwrap();
        assert_eq!(t.stages[1].invoke_url, "https://hello1.execute-api.cn-north-1.amazonaws.com.cn/dev");
    }

    #[test]
    fn an_id_that_is_not_a_plain_id_never_becomes_a_host() {
        let (manifest, state) = seed_state("eu-west-1", "evil.example.com/x?");
        let e = targets(&manifest, &state).unwrap_err().to_string();
        assert_eq!(e, "stage `dev_stage` in the state: no usable `rest_api_id`");
    }

    #[test]
    fn target_urls_are_templates_of_a_base_url() {
        let stage = StageTarget {
            resource: "dev_stage".into(),
            api_resource: "hello_api".into(),
            api_id: "abc123".into(),
            stage: "dev".into(),
            region: "eu-west-1".into(),
            arn: String::new(),
            invoke_url: "https://abc123.execute-api.eu-west-1.amazonaws.com/dev".into(),
            get_paths: vec![],
            skipped: vec![],
        };
        assert_eq!(Destination::InvokeUrls.url(&stage, "/book"), "https://abc123.execute-api.eu-west-1.amazonaws.com/dev/book");
        let t = Destination::target("http://127.0.0.1:8080/{api_id}/{stage}/").unwrap();
        assert_eq!(t.url(&stage, "/book"), "http://127.0.0.1:8080/abc123/dev/book");
        assert_eq!(t.url(&stage, "/"), "http://127.0.0.1:8080/abc123/dev/");
        let plain = Destination::target("http://localhost:5000").unwrap();
        assert_eq!(plain.url(&stage, "/book"), "http://localhost:5000/book");
        for (bad, why) in [
            ("ftp://x/", "must start with http:// or https://"),
            ("http://x/{api}", "only {api_id}, {stage} and {region} can be replaced"),
            ("http://x/a?b=1", "must have no query or fragment"),
            ("/relative", "must start with http:// or https://"),
        ] {
            let e = Destination::target(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
