//! What AWS accepts in names, descriptions, tags and other literal values, from the AWS API
//! references, so that `validate` refuses what an apply would fail on (or worse, fail on half-way).
//! Each check says what is allowed without repeating the value (it may be huge, or a secret).
//!
//! Sources (API reference, request parameters and data types):
//! - IAM: CreateRole (RoleName, Path, Description), PutRolePolicy (PolicyName), Tag
//!   <https://docs.aws.amazon.com/IAM/latest/APIReference/API_CreateRole.html>
//! - CloudWatch Logs: CreateLogGroup (logGroupName), TagResource
//!   <https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_CreateLogGroup.html>
//! - Lambda: CreateFunction (FunctionName, Handler, Description), Environment (variable names),
//!   AddPermission (StatementId, Action, Principal), quotas (environment variables: 4 KB in all),
//!   reserved environment variables
//!   <https://docs.aws.amazon.com/lambda/latest/api/API_CreateFunction.html>,
//!   <https://docs.aws.amazon.com/lambda/latest/api/API_Environment.html>,
//!   <https://docs.aws.amazon.com/lambda/latest/api/API_AddPermission.html>,
//!   <https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html>,
//!   <https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html#configuration-envvars-runtime>
//! - API Gateway: CreateStage (stageName: "Stage names can only contain alphanumeric characters,
//!   hyphens, and underscores. Maximum length is 128 characters."), tagging rules
//!   <https://docs.aws.amazon.com/apigateway/latest/api/API_CreateStage.html>
//! - WAFv2: CreateWebACL (Name, Description), VisibilityConfig (MetricName), Rule (Name, Priority),
//!   ManagedRuleGroupStatement (VendorName, Name), GeoMatchStatement (CountryCodes), Tag
//!   <https://docs.aws.amazon.com/waf/latest/APIReference/API_CreateWebACL.html>
//! - Tags, every service: key 1-128 and value 0-256 characters of `[\p{L}\p{Z}\p{N}_.:/=+\-@]`, at
//!   most 50 per resource, `aws:` reserved
//!   <https://docs.aws.amazon.com/tag-editor/latest/userguide/tagging.html>

/// Characters a check accepts, and how a message names them.
struct Chars {
    ok: fn(char) -> bool,
    names: &'static str,
}

/// `min..=max` characters, each accepted by `chars`.
fn text(s: &str, min: usize, max: usize, chars: &Chars) -> Result<(), String> {
    let n = s.chars().count();
    let bounds = if min == 0 { format!("at most {max} characters") } else { format!("{min}-{max} characters") };
    let bounds = if chars.names.is_empty() { bounds } else { format!("{bounds} of {}", chars.names) };
    if n < min || n > max {
        return Err(format!("must be {bounds}; it has {n}"));
    }
    if let Some((i, c)) = s.chars().enumerate().find(|(_, c)| !(chars.ok)(*c)) {
        return Err(format!("must be {bounds}; {c:?} (character {}) is not one of them", i + 1));
    }
    Ok(())
}

fn word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

const WORD_DASH: Chars = Chars { ok: |c| word(c) || c == '-', names: "letters, digits, `_` and `-`" };
const IAM_NAME: Chars = Chars { ok: |c| word(c) || "+=,.@-".contains(c), names: "letters, digits and `_+=,.@-`" };
const ANY: Chars = Chars { ok: |_| true, names: "" };
const NO_SPACE: Chars = Chars { ok: |c| !c.is_whitespace(), names: "characters other than white space" };

/// IAM `RoleName`: `[\w+=,.@-]+`, 1-64.
pub fn iam_role_name(s: &str) -> Result<(), String> {
    text(s, 1, 64, &IAM_NAME)
}

/// IAM `PolicyName` (inline policies): `[\w+=,.@-]+`, 1-128.
pub fn iam_policy_name(s: &str) -> Result<(), String> {
    text(s, 1, 128, &IAM_NAME)
}

/// IAM `Path`: `/`, or `/` + printable ASCII + `/`; 1-512.
pub fn iam_path(s: &str) -> Result<(), String> {
    text(s, 1, 512, &Chars { ok: |c| ('\u{21}'..='\u{7e}').contains(&c), names: "printable ASCII characters without spaces" })?;
    if s == "/" || (s.len() >= 3 && s.starts_with('/') && s.ends_with('/')) {
        Ok(())
    } else {
        Err("must be `/` or begin and end with `/` (e.g. `/service/`)".into())
    }
}

/// IAM role `Description`: at most 1000 of tab, newline, carriage return, printable ASCII and `\u00A1-\u00FF`.
pub fn iam_description(s: &str) -> Result<(), String> {
    text(
        s,
        0,
        1000,
        &Chars {
            ok: |c| matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{7e}' | '\u{a1}'..='\u{ff}'),
            names: "printable ASCII and Latin-1 characters, tabs and newlines",
        },
    )
}

/// CloudWatch Logs `logGroupName`: `[\.\-_/#A-Za-z0-9]+`, 1-512.
pub fn log_group_name(s: &str) -> Result<(), String> {
    text(s, 1, 512, &Chars { ok: |c| c.is_ascii_alphanumeric() || "._-/#".contains(c), names: "letters, digits and `._-/#`" })
}

/// Lambda `FunctionName` as a name (not an ARN): `[a-zA-Z0-9-_]+`, 1-64.
pub fn lambda_function_name(s: &str) -> Result<(), String> {
    text(s, 1, 64, &WORD_DASH)
}

/// Lambda `FunctionName` where a name or an ARN is accepted (AddPermission): 1-140, no white space; a
/// name may carry a qualifier (`Name:live`, `Name:3`), which names the alias's or version's policy.
pub fn lambda_function_ref(s: &str) -> Result<(), String> {
    if s.starts_with("arn:") {
        return text(s, 1, 140, &NO_SPACE);
    }
    match s.split_once(':') {
        Some((name, qualifier)) => {
            lambda_function_name(name)?;
            if qualifier == "$LATEST" || lambda_alias_name(qualifier).is_ok() || lambda_published_version(qualifier).is_ok() {
                Ok(())
            } else {
                Err(format!("has the qualifier `{qualifier}`, which is neither `$LATEST`, a version number nor an alias name"))
            }
        }
        None => lambda_function_name(s),
    }
}

/// Lambda alias `Name`: `(?!^[0-9]+$)([a-zA-Z0-9-_]+)`, 1-128.
pub fn lambda_alias_name(s: &str) -> Result<(), String> {
    text(s, 1, 128, &WORD_DASH)?;
    if s.chars().all(|c| c.is_ascii_digit()) {
        return Err("must not be only digits (that names a version)".into());
    }
    Ok(())
}

/// A published Lambda version: `[0-9]+`, 1-1024.
pub fn lambda_published_version(s: &str) -> Result<(), String> {
    if !s.is_empty() && s.len() <= 1024 && s.chars().all(|c| c.is_ascii_digit()) {
        Ok(())
    } else {
        Err("must be a published version number (digits, like `3`)".into())
    }
}

/// Lambda alias `FunctionVersion`: `(\$LATEST|[0-9]+)`.
pub fn lambda_function_version(s: &str) -> Result<(), String> {
    if s == "$LATEST" || lambda_published_version(s).is_ok() {
        Ok(())
    } else {
        Err("must be `$LATEST` or a published version number (digits, like `3`)".into())
    }
}

/// Lambda `Handler`: `[^\s]+`, at most 128.
pub fn lambda_handler(s: &str) -> Result<(), String> {
    text(s, 1, 128, &NO_SPACE)
}

/// Lambda `Description`: at most 256.
pub fn lambda_description(s: &str) -> Result<(), String> {
    text(s, 0, 256, &ANY)
}

/// Lambda `StatementId`: `([a-zA-Z0-9-_]+)`, 1-100.
pub fn lambda_statement_id(s: &str) -> Result<(), String> {
    text(s, 1, 100, &WORD_DASH)
}

/// Lambda AddPermission `Action`: `(lambda:[*]|lambda:[a-zA-Z]+|[*])`.
pub fn lambda_permission_action(s: &str) -> Result<(), String> {
    let ok =
        s == "*" || s.strip_prefix("lambda:").is_some_and(|a| a == "*" || (!a.is_empty() && a.chars().all(|c| c.is_ascii_alphabetic())));
    if ok { Ok(()) } else { Err("must be `lambda:<Action>` (e.g. `lambda:InvokeFunction`), `lambda:*` or `*`".into()) }
}

/// Lambda AddPermission `Principal`: `[^\s]+`.
pub fn lambda_principal(s: &str) -> Result<(), String> {
    text(s, 1, 256, &NO_SPACE)
}

/// An ARN field that may be left empty (off): when set, an `arn:` ARN without white space.
pub fn optional_arn(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    text(s, 1, 2048, &NO_SPACE)?;
    if s.starts_with("arn:") && s.split(':').count() >= 6 {
        Ok(())
    } else {
        Err("must be an ARN (`arn:<partition>:<service>:<region>:<account>:<resource>`) or empty".into())
    }
}

/// Lambda environment variable names: `[a-zA-Z]([a-zA-Z0-9_])+`, and not a name Lambda reserves.
pub fn lambda_env_name(s: &str) -> Result<(), String> {
    let mut chars = s.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic()) && s.len() >= 2 && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err("must start with a letter and hold at least 2 characters, only letters, digits and `_`".into());
    }
    if LAMBDA_RESERVED_ENV.contains(&s) {
        return Err("is reserved by Lambda (set by the runtime); choose another name".into());
    }
    Ok(())
}

/// Environment variables Lambda sets itself and refuses in a function's configuration.
pub const LAMBDA_RESERVED_ENV: &[&str] = &[
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
];

/// Lambda's quota on a function's environment variables, all of them together (names and values).
pub const LAMBDA_ENV_MAX_BYTES: usize = 4096;

/// API Gateway `name` of a REST API: required and non-blank (the API reference sets no length).
pub fn rest_api_name(s: &str) -> Result<(), String> {
    if s.trim().is_empty() { Err("must not be empty".into()) } else { Ok(()) }
}

/// API Gateway `stageName`: letters, digits, `-` and `_`, at most 128.
pub fn stage_name(s: &str) -> Result<(), String> {
    text(s, 1, 128, &WORD_DASH)
}

/// WAFv2 `Name` (web ACL, rule, managed rule group): `^[\w\-]+$`, 1-128.
pub fn waf_name(s: &str) -> Result<(), String> {
    text(s, 1, 128, &WORD_DASH)
}

fn waf_description_char(c: char) -> bool {
    word(c) || "+=:#@/-,.".contains(c)
}

/// WAFv2 `Description`: 1-256 matching `^[\w+=:#@/\-,\.][\w+=:#@/\-,\.\s]+[\w+=:#@/\-,\.]$`; empty = none.
pub fn waf_description(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    let chars = Chars { ok: |c| waf_description_char(c) || c.is_whitespace(), names: "letters, digits, spaces and `_+=:#@/-,.`" };
    text(s, 3, 256, &chars)?;
    let edges = [s.chars().next(), s.chars().last()];
    if edges.iter().all(|c| c.is_some_and(waf_description_char)) { Ok(()) } else { Err("must not begin or end with white space".into()) }
}

/// WAFv2 `MetricName`: `^[\w#:\.\-/]+$`, 1-255, and not a name WAF reserves (`All`, `Default_Action`).
pub fn waf_metric_name(s: &str) -> Result<(), String> {
    text(s, 1, 255, &Chars { ok: |c| word(c) || "#:.-/".contains(c), names: "letters, digits and `_#:.-/`" })?;
    if ["All", "Default_Action"].contains(&s) { Err(format!("`{s}` is reserved by WAF")) } else { Ok(()) }
}

/// WAFv2 `VendorName`: 1-128, not blank.
pub fn waf_vendor_name(s: &str) -> Result<(), String> {
    text(s, 1, 128, &ANY)?;
    if s.trim().is_empty() { Err("must not be blank".into()) } else { Ok(()) }
}

/// WAFv2 `CountryCodes`: ISO 3166-1 alpha-2 codes WAF knows (the `CountryCode` enum of the API).
pub fn waf_country_code(s: &str) -> Result<(), String> {
    if aws_sdk_wafv2::types::CountryCode::values().contains(&s) {
        Ok(())
    } else {
        Err(format!("`{s}` is not a country code WAF knows (ISO 3166-1 alpha-2, upper case, e.g. `US`, `DE`)"))
    }
}

/// Tags per resource AWS allows; the three ownership tags count.
pub const MAX_TAGS: usize = 50;

/// Tag keys the engine adds to every taggable resource.
pub const OWNERSHIP_TAGS: usize = 3;

const TAG_CHARS: Chars = Chars {
    ok: |c| {
        c.is_alphanumeric()
            || matches!(
                c,
                ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}'
            )
            || "_.:/=+-@".contains(c)
    },
    names: "letters, digits, spaces and `_.:/=+-@`",
};

/// A tag key: 1-128 of `[\p{L}\p{Z}\p{N}_.:/=+\-@]`, not beginning with `aws:` (reserved for AWS).
pub fn tag_key(s: &str) -> Result<(), String> {
    text(s, 1, 128, &TAG_CHARS)?;
    if s.to_ascii_lowercase().starts_with("aws:") { Err("must not begin with `aws:` (reserved for AWS)".into()) } else { Ok(()) }
}

/// A tag value: at most 256 of `[\p{L}\p{Z}\p{N}_.:/=+\-@]`.
pub fn tag_value(s: &str) -> Result<(), String> {
    text(s, 0, 256, &TAG_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_api_reference() {
        assert!(iam_role_name("my-role_1+=,.@").is_ok());
        assert!(iam_role_name(&"r".repeat(64)).is_ok());
        assert!(iam_role_name(&"r".repeat(65)).unwrap_err().contains("1-64 characters"));
        assert!(iam_role_name("a b").unwrap_err().contains("' ' (character 2)"));
        assert!(iam_path("/").is_ok() && iam_path("/svc/x/").is_ok());
        assert!(iam_path("svc/").is_err() && iam_path("/a b/").is_err());
        assert!(lambda_function_name("bad name!/x").is_err());
        assert!(lambda_function_name("Hello-Lambda_1").is_ok());
        assert!(log_group_name("Dev Log*Group").is_err());
        assert!(log_group_name("/aws/lambda/x#1").is_ok());
        assert!(stage_name("dev stage!").is_err() && stage_name("prod_v-2").is_ok());
        assert!(waf_name("acl-1").is_ok() && waf_name("acl 1").is_err());
        assert!(waf_description("").is_ok() && waf_description("Blocks bad bots, v2.").is_ok());
        assert!(waf_description("trailing ").is_err() && waf_description("semi;colon").is_err());
        assert!(waf_metric_name("All").is_err() && waf_metric_name("acl-metric").is_ok());
        assert!(waf_country_code("US").is_ok() && waf_country_code("XX").is_err() && waf_country_code("us").is_err());
        assert!(lambda_env_name("DB_PASS").is_ok());
        assert!(lambda_env_name("A").is_err() && lambda_env_name("1A").is_err() && lambda_env_name("A-B").is_err());
        assert!(lambda_env_name("AWS_REGION").unwrap_err().contains("reserved"));
        assert!(lambda_statement_id("AllowApiGw").is_ok() && lambda_statement_id("a b").is_err());
        assert!(lambda_permission_action("lambda:InvokeFunction").is_ok() && lambda_permission_action("invoke").is_err());
        assert!(optional_arn("").is_ok() && optional_arn("arn:aws:logs:us-east-1:123456789012:log-group:x").is_ok());
        assert!(optional_arn("my-log-group").is_err());
        assert!(tag_key("aws:x").is_err() && tag_key("AWS:x").is_err() && tag_key("team").is_ok() && tag_key("a*b").is_err());
        assert!(tag_value("").is_ok() && tag_value(&"v".repeat(257)).is_err());
    }

    #[test]
    fn messages_never_repeat_the_value() {
        let huge = "x".repeat(5_000_000);
        let e = lambda_description(&huge).unwrap_err();
        assert!(e.len() < 200, "{e}");
        assert!(e.contains("at most 256 characters") && e.contains("it has 5000000"), "{e}");
    }
}
