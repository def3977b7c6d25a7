//! What each resource kind accepts: pure data, shared by validation, planning and the manifest reference.

use serde_json::{Value, json};

use super::rules;

/// A resource kind the engine knows how to manage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    #[serde(rename = "aws_iam_role")]
    IamRole,
    #[serde(rename = "aws_cloudwatch_log_group")]
    LogGroup,
    #[serde(rename = "aws_lambda_function")]
    LambdaFunction,
    #[serde(rename = "aws_lambda_permission")]
    LambdaPermission,
    #[serde(rename = "aws_api_gateway_rest_api")]
    RestApi,
    #[serde(rename = "aws_api_gateway_deployment")]
    Deployment,
    #[serde(rename = "aws_api_gateway_stage")]
    Stage,
    #[serde(rename = "aws_api_gateway_account")]
    ApiGatewayAccount,
    #[serde(rename = "aws_wafv2_web_acl")]
    WebAcl,
    #[serde(rename = "aws_wafv2_web_acl_association")]
    WebAclAssociation,
}

impl Kind {
    pub const ALL: &'static [Kind] = &[
        Kind::IamRole,
        Kind::LogGroup,
        Kind::LambdaFunction,
        Kind::LambdaPermission,
        Kind::RestApi,
        Kind::Deployment,
        Kind::Stage,
        Kind::ApiGatewayAccount,
        Kind::WebAcl,
        Kind::WebAclAssociation,
    ];

    pub fn type_name(self) -> &'static str {
        self.schema().type_name
    }

    pub fn from_type_name(name: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.type_name() == name)
    }

    /// A region-wide setting there is one of per account and region: one stack owns it.
    pub fn is_singleton(self) -> bool {
        matches!(self, Kind::ApiGatewayAccount)
    }

    pub fn schema(self) -> &'static KindSchema {
        match self {
            Kind::IamRole => &IAM_ROLE,
            Kind::LogGroup => &LOG_GROUP,
            Kind::LambdaFunction => &LAMBDA_FUNCTION,
            Kind::LambdaPermission => &LAMBDA_PERMISSION,
            Kind::RestApi => &REST_API,
            Kind::Deployment => &DEPLOYMENT,
            Kind::Stage => &STAGE,
            Kind::ApiGatewayAccount => &APIGW_ACCOUNT,
            Kind::WebAcl => &WEB_ACL,
            Kind::WebAclAssociation => &WEB_ACL_ASSOCIATION,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.type_name())
    }
}

/// The shape a field's value must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    String,
    /// An integer within an inclusive range.
    Integer {
        min: i64,
        max: i64,
    },
    Boolean,
    StringList,
    /// A table of string values (tags, environment variables).
    StringMap,
    /// Any TOML table, kept as a JSON document (IAM policy documents).
    Json,
    /// A table whose values are JSON documents (inline policies by name).
    JsonMap,
    /// An array of tables (API routes, WAF rules); compared as a set.
    JsonList,
    /// A path relative to the manifest file (Lambda code: a file or a folder).
    Path,
}

impl FieldType {
    pub fn describe(self) -> &'static str {
        match self {
            FieldType::String => "a string",
            FieldType::Integer { .. } => "an integer",
            FieldType::Boolean => "a boolean",
            FieldType::StringList => "an array of strings",
            FieldType::StringMap => "a table of strings",
            FieldType::Json => "a table (JSON document)",
            FieldType::JsonMap => "a table of tables (JSON documents by name)",
            FieldType::JsonList => "an array of tables",
            FieldType::Path => "a path (string) relative to the manifest",
        }
    }
}

/// A field's default when the manifest leaves it out.
#[derive(Debug, Clone, Copy)]
pub enum Default {
    Int(i64),
    Str(&'static str),
    Bool(bool),
    EmptyMap,
    EmptyList,
}

impl Default {
    pub fn value(self) -> Value {
        match self {
            Default::Int(i) => json!(i),
            Default::Str(s) => json!(s),
            Default::Bool(b) => json!(b),
            Default::EmptyMap => json!({}),
            Default::EmptyList => json!([]),
        }
    }
}

#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub ty: FieldType,
    pub required: bool,
    /// Changing it means the resource must be replaced.
    pub force_new: bool,
    pub default: Option<Default>,
    /// One of these values, if set.
    pub one_of: &'static [&'static str],
    /// Values never shown (plan, JSON, logs) nor stored (the state keeps a hash).
    pub secret: bool,
    /// The rule AWS holds a literal string value to (names, lengths, characters), checked at validate
    /// time; a value holding a `${...}` reference is only known at apply, and AWS checks it then.
    pub check: Option<Check>,
    pub doc: &'static str,
}

/// Checks one literal string; the error says what AWS accepts, without repeating the value.
pub type Check = fn(&str) -> Result<(), String>;

impl Field {
    const fn new(name: &'static str, ty: FieldType, doc: &'static str) -> Field {
        Field { name, ty, required: false, force_new: false, default: None, one_of: &[], secret: false, check: None, doc }
    }
    const fn required(mut self) -> Field {
        self.required = true;
        self
    }
    const fn force_new(mut self) -> Field {
        self.force_new = true;
        self
    }
    const fn default(mut self, d: Default) -> Field {
        self.default = Some(d);
        self
    }
    const fn secret(mut self) -> Field {
        self.secret = true;
        self
    }
    const fn one_of(mut self, values: &'static [&'static str]) -> Field {
        self.one_of = values;
        self
    }
    const fn check(mut self, check: Check) -> Field {
        self.check = Some(check);
        self
    }
}

#[derive(Debug)]
pub struct KindSchema {
    pub type_name: &'static str,
    pub doc: &'static str,
    pub fields: &'static [Field],
    /// The field that holds the resource's physical name (unique per kind and account); "" if none.
    pub physical_name: &'static str,
    /// Replacement creates the new one first, moves dependents, then deletes the old one.
    pub create_before_destroy: bool,
    /// A setting, not a resource: delete leaves it in place.
    pub retain_on_delete: bool,
    /// What other resources may reference as `${name.output}`.
    pub outputs: &'static [(&'static str, &'static str)],
    /// Whether the kind carries tags (ownership tags are added to every taggable resource).
    pub taggable: bool,
}

impl KindSchema {
    pub fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.name == name)
    }
    pub fn has_output(&self, name: &str) -> bool {
        self.outputs.iter().any(|(o, _)| *o == name)
    }
}

use FieldType as T;

const TAGS: Field = Field::new(
    "tags",
    T::StringMap,
    "Tags; the ownership tags `reconcile:stack`, `reconcile:managed-by` and `reconcile:resource` are added",
)
.default(Default::EmptyMap);

/// Log group retention values CloudWatch Logs accepts.
pub const LOG_RETENTION_DAYS: &[i64] =
    &[1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];

pub const LAMBDA_RUNTIMES: &[&str] = &[
    "python3.9",
    "python3.10",
    "python3.11",
    "python3.12",
    "python3.13",
    "python3.14",
    "nodejs18.x",
    "nodejs20.x",
    "nodejs22.x",
    "nodejs24.x",
    "java11",
    "java17",
    "java21",
    "java25",
    "dotnet8",
    "ruby3.2",
    "ruby3.3",
    "ruby3.4",
    "provided.al2",
    "provided.al2023",
];

static IAM_ROLE: KindSchema = KindSchema {
    type_name: "aws_iam_role",
    doc: "An IAM role with its trust policy, inline policies and managed policy attachments.",
    fields: &[
        Field::new("name", T::String, "Role name").required().force_new().check(rules::iam_role_name),
        Field::new("assume_role_policy", T::Json, "Trust policy document").required(),
        Field::new("description", T::String, "Description").default(Default::Str("")).check(rules::iam_description),
        Field::new("path", T::String, "Path").default(Default::Str("/")).force_new().check(rules::iam_path),
        Field::new("max_session_duration", T::Integer { min: 3600, max: 43200 }, "Maximum session duration in seconds")
            .default(Default::Int(3600)),
        Field::new("inline_policies", T::JsonMap, "Inline policies: policy name → policy document").default(Default::EmptyMap),
        Field::new("managed_policy_arns", T::StringList, "ARNs of managed policies to attach").default(Default::EmptyList),
        TAGS,
    ],
    physical_name: "name",
    create_before_destroy: false,
    retain_on_delete: false,
    outputs: &[("arn", "Role ARN"), ("name", "Role name"), ("id", "Role id")],
    taggable: true,
};

static LOG_GROUP: KindSchema = KindSchema {
    type_name: "aws_cloudwatch_log_group",
    doc: "A CloudWatch Logs log group.",
    fields: &[
        Field::new("name", T::String, "Log group name").required().force_new().check(rules::log_group_name),
        Field::new(
            "retention_in_days",
            T::Integer { min: 0, max: 3653 },
            "Retention in days (one of the values CloudWatch accepts; 0 = never expire)",
        )
        .default(Default::Int(0)),
        TAGS,
    ],
    physical_name: "name",
    create_before_destroy: false,
    retain_on_delete: false,
    outputs: &[("arn", "Log group ARN (without the trailing `:*`)"), ("name", "Log group name")],
    taggable: true,
};

static LAMBDA_FUNCTION: KindSchema = KindSchema {
    type_name: "aws_lambda_function",
    doc: "A Lambda function whose code is a file or folder next to the manifest, zipped in-process.",
    fields: &[
        Field::new("function_name", T::String, "Function name").required().force_new().check(rules::lambda_function_name),
        Field::new("runtime", T::String, "Runtime identifier").required().one_of(LAMBDA_RUNTIMES),
        Field::new("handler", T::String, "Handler, e.g. `index.handler`").required().check(rules::lambda_handler),
        Field::new("role", T::String, "Execution role ARN, usually `${role.arn}`").required(),
        Field::new("code", T::Path, "File or folder with the code, relative to the manifest").required(),
        Field::new("memory_size", T::Integer { min: 128, max: 10240 }, "Memory in MB").default(Default::Int(128)),
        Field::new("timeout", T::Integer { min: 1, max: 900 }, "Timeout in seconds").default(Default::Int(3)),
        Field::new("description", T::String, "Description").default(Default::Str("")).check(rules::lambda_description),
        Field::new("architecture", T::String, "Instruction set").default(Default::Str("x86_64")).one_of(&["x86_64", "arm64"]),
        Field::new("environment", T::StringMap, "Environment variables").default(Default::EmptyMap),
        Field::new(
            "secret_environment",
            T::StringMap,
            "Environment variables whose values are never shown nor stored in the state (only a hash)",
        )
        .default(Default::EmptyMap)
        .secret(),
        TAGS,
    ],
    physical_name: "function_name",
    create_before_destroy: false,
    retain_on_delete: false,
    outputs: &[
        ("arn", "Function ARN"),
        ("name", "Function name"),
        ("invoke_arn", "ARN API Gateway uses to invoke the function"),
        ("code_sha256", "Base64 SHA-256 of the deployed zip"),
    ],
    taggable: true,
};

static LAMBDA_PERMISSION: KindSchema = KindSchema {
    type_name: "aws_lambda_permission",
    doc: "A statement in a Lambda function's resource-based policy (e.g. letting API Gateway invoke it).",
    fields: &[
        Field::new("function_name", T::String, "Function name or ARN, usually `${function.name}`")
            .required()
            .force_new()
            .check(rules::lambda_function_ref),
        Field::new("statement_id", T::String, "Statement id, unique within the function's policy")
            .required()
            .force_new()
            .check(rules::lambda_statement_id),
        Field::new("action", T::String, "Action allowed")
            .default(Default::Str("lambda:InvokeFunction"))
            .force_new()
            .check(rules::lambda_permission_action),
        Field::new("principal", T::String, "Service or account allowed, e.g. `apigateway.amazonaws.com`")
            .required()
            .force_new()
            .check(rules::lambda_principal),
        Field::new("source_arn", T::String, "Only calls from this ARN (pattern) are allowed")
            .default(Default::Str(""))
            .force_new()
            .check(rules::optional_arn),
    ],
    physical_name: "",
    create_before_destroy: false,
    retain_on_delete: false,
    outputs: &[("id", "`<function>/<statement id>`")],
    taggable: false,
};

static REST_API: KindSchema = KindSchema {
    type_name: "aws_api_gateway_rest_api",
    doc: "An API Gateway REST API with its resource tree, methods and integrations (`routes`).",
    fields: &[
        Field::new("name", T::String, "API name").required().check(rules::rest_api_name),
        Field::new("description", T::String, "Description").default(Default::Str("")),
        Field::new("endpoint_type", T::String, "Endpoint type")
            .default(Default::Str("REGIONAL"))
            .one_of(&["REGIONAL", "EDGE", "PRIVATE"])
            .force_new(),
        Field::new("routes", T::JsonList, "Methods by path, each with its integration; see the manifest reference")
            .default(Default::EmptyList),
        TAGS,
    ],
    physical_name: "name",
    create_before_destroy: false,
    retain_on_delete: false,
    outputs: &[
        ("id", "REST API id"),
        ("root_resource_id", "Id of the `/` resource"),
        ("arn", "`arn:aws:apigateway:<region>::/restapis/<id>`"),
        ("execution_arn", "`arn:aws:execute-api:<region>:<account>:<id>`, for Lambda permissions"),
        ("model_hash", "Hash of the routes: a deployment trigger that changes when any method or integration changes"),
    ],
    taggable: true,
};

static DEPLOYMENT: KindSchema = KindSchema {
    type_name: "aws_api_gateway_deployment",
    doc: "A snapshot of a REST API's routes that stages serve. Any change to `triggers` makes a new deployment; stages move to it, then the old one is deleted.",
    fields: &[
        Field::new("rest_api_id", T::String, "The API, usually `${api.id}`").required().force_new(),
        Field::new("description", T::String, "Description").default(Default::Str("")).force_new(),
        Field::new("triggers", T::StringMap, "Values whose change makes a new deployment, usually `{ model = \"${api.model_hash}\" }`")
            .default(Default::EmptyMap)
            .force_new(),
    ],
    physical_name: "",
    create_before_destroy: true,
    retain_on_delete: false,
    outputs: &[("id", "Deployment id")],
    taggable: false,
};

static STAGE: KindSchema = KindSchema {
    type_name: "aws_api_gateway_stage",
    doc: "A named stage of a REST API serving one deployment, with access logging and method settings for all methods (`*/*`).",
    fields: &[
        Field::new("rest_api_id", T::String, "The API, usually `${api.id}`").required().force_new(),
        Field::new("stage_name", T::String, "Stage name (the first path segment of the invoke URL)")
            .required()
            .force_new()
            .check(rules::stage_name),
        Field::new("deployment_id", T::String, "Deployment served, usually `${deployment.id}`").required(),
        Field::new("description", T::String, "Description").default(Default::Str("")),
        Field::new("access_log_destination_arn", T::String, "Log group ARN for access logs (`${log_group.arn}`); empty = off")
            .default(Default::Str(""))
            .check(rules::optional_arn),
        Field::new("access_log_format", T::String, "Access log line format, e.g. JSON with `$context.requestId`").default(Default::Str("")),
        Field::new("data_trace_enabled", T::Boolean, "Log full requests and responses (all methods)").default(Default::Bool(false)),
        Field::new("logging_level", T::String, "Execution logging level (all methods)")
            .default(Default::Str("OFF"))
            .one_of(&["OFF", "ERROR", "INFO"]),
        Field::new("metrics_enabled", T::Boolean, "Detailed CloudWatch metrics (all methods)").default(Default::Bool(false)),
        TAGS,
    ],
    physical_name: "",
    create_before_destroy: false,
    retain_on_delete: false,
    outputs: &[
        ("arn", "`arn:aws:apigateway:<region>::/restapis/<id>/stages/<name>` (for WAF associations)"),
        ("invoke_url", "`https://<id>.execute-api.<region>.amazonaws.com/<stage>`"),
        ("name", "Stage name"),
    ],
    taggable: true,
};

static APIGW_ACCOUNT: KindSchema = KindSchema {
    type_name: "aws_api_gateway_account",
    doc: "The region-wide API Gateway setting naming the role API Gateway uses to write CloudWatch logs (needed before stages can log). Adopted if already set; never reset on destroy.",
    fields: &[Field::new("cloudwatch_role_arn", T::String, "Role API Gateway assumes to push logs").required()],
    physical_name: "",
    create_before_destroy: false,
    retain_on_delete: true,
    outputs: &[("cloudwatch_role_arn", "The role in effect")],
    taggable: false,
};

static WEB_ACL: KindSchema = KindSchema {
    type_name: "aws_wafv2_web_acl",
    doc: "A WAFv2 web ACL with its rules (managed rule groups, geo match, rate-based).",
    fields: &[
        Field::new("name", T::String, "Web ACL name").required().force_new().check(rules::waf_name),
        Field::new("scope", T::String, "`REGIONAL` (API Gateway, ALB) or `CLOUDFRONT`")
            .default(Default::Str("REGIONAL"))
            .one_of(&["REGIONAL", "CLOUDFRONT"])
            .force_new(),
        Field::new("description", T::String, "Description").default(Default::Str("")).check(rules::waf_description),
        Field::new("default_action", T::String, "Action for requests no rule matches")
            .default(Default::Str("allow"))
            .one_of(&["allow", "block"]),
        Field::new("visibility", T::Json, "`{ metric_name, sampled_requests, cloudwatch_metrics }` for the ACL").required(),
        Field::new("rules", T::JsonList, "Rules; see the manifest reference").default(Default::EmptyList),
        TAGS,
    ],
    physical_name: "name",
    create_before_destroy: false,
    retain_on_delete: false,
    outputs: &[("arn", "Web ACL ARN"), ("id", "Web ACL id"), ("name", "Web ACL name")],
    taggable: true,
};

static WEB_ACL_ASSOCIATION: KindSchema = KindSchema {
    type_name: "aws_wafv2_web_acl_association",
    doc: "Associates a web ACL with a resource such as an API Gateway stage.",
    fields: &[
        Field::new("web_acl_arn", T::String, "Web ACL ARN, usually `${acl.arn}`").required().force_new(),
        Field::new("resource_arn", T::String, "Protected resource ARN, e.g. `${prod_stage.arn}`").required().force_new(),
    ],
    physical_name: "",
    create_before_destroy: false,
    retain_on_delete: false,
    outputs: &[("id", "The protected resource's ARN")],
    taggable: false,
};

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

/// Fields computed from the manifest rather than written in it.
pub const CODE_SHA256: &str = "code_sha256";

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_its_type_name() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_type_name(k.type_name()), Some(*k));
            let s = k.schema();
            assert!(
                s.physical_name.is_empty() || s.field(s.physical_name).is_some_and(|f| f.required),
                "{k}: physical name must be required"
            );
            assert_eq!(s.taggable, s.field("tags").is_some(), "{k}: taggable kinds have `tags`");
        }
    }
}
