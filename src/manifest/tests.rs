use std::path::Path;

use serde_json::json;

use super::*;

fn parse_in(dir: &Path, text: &str) -> Result<Manifest, ManifestError> {
    parse(&dir.join("stack.toml"), text.to_string())
}

fn errors(text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.py"), "def handler(e, c): pass\n").unwrap();
    match parse_in(dir.path(), text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.diagnostics().iter().map(|d| format!("{}:{}: {}", d.location.line, d.location.column, d.message)).collect(),
    }
}

const HEAD: &str = "[stack]\nname = \"s\"\n\n";

#[test]
fn parses_a_valid_manifest_with_defaults_references_and_tags() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.py"), "def handler(e, c): pass\n").unwrap();
    let text = format!(
        "{HEAD}[resources.role]\ntype = \"aws_iam_role\"\nname = \"r\"\nassume_role_policy = {{ Version = \"2012-10-17\" }}\n\n\
         [resources.fn]\ntype = \"aws_lambda_function\"\nfunction_name = \"f\"\nruntime = \"python3.13\"\nhandler = \"index.handler\"\n\
         role = \"${{role.arn}}\"\ncode = \"index.py\"\n\n[outputs]\narn = \"${{fn.arn}}\"\n"
    );
    let m = parse_in(dir.path(), &text).unwrap();
    assert_eq!(m.stack, "s");
    let names: Vec<_> = m.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["role", "fn"]);
    let f = m.resource("fn").unwrap();
    assert_eq!(f.deps.iter().collect::<Vec<_>>(), vec!["role"]);
    assert_eq!(f.attrs["memory_size"], json!(128));
    assert_eq!(f.attrs["role"], json!("${role.arn}"));
    assert_eq!(f.attrs["tags"][TAG_STACK], json!("s"));
    assert_eq!(f.attrs["tags"][TAG_RESOURCE], json!("fn"));
    assert!(f.attrs[schema::CODE_SHA256].as_str().is_some_and(|s| s.len() == 44));
    assert!(f.artifact.is_some());
    assert_eq!(f.location.line, 9);
    assert_eq!(m.outputs["arn"], "${fn.arn}");
}

#[test]
fn seed_manifest_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/apigw-lambda-basic.toml");
    let m = load(&path).unwrap();
    let f = m.resource("hello_function").unwrap();
    assert_eq!(f.attrs["memory_size"], json!(512));
    assert_eq!(f.attrs["timeout"], json!(10));
}

#[test]
fn unknown_type_points_at_the_type_value() {
    let e = errors(&format!("{HEAD}[resources.x]\ntype = \"aws_nope\"\n"));
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("5:8: unknown resource type `aws_nope`"), "{e:?}");
}

#[test]
fn unknown_field_and_missing_required_field() {
    let e = errors(&format!("{HEAD}[resources.lg]\ntype = \"aws_cloudwatch_log_group\"\nretention = 7\n"));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e[0].starts_with("4:12: resource `lg` (aws_cloudwatch_log_group) is missing required field `name`"), "{e:?}");
    assert!(e[1].starts_with("6:1: unknown field `retention`"), "{e:?}");
}

#[test]
fn wrong_value_types_and_ranges() {
    let e = errors(&format!(
        "{HEAD}[resources.lg]\ntype = \"aws_cloudwatch_log_group\"\nname = 3\nretention_in_days = 13\ntags = {{ a = 1 }}\n"
    ));
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(e[0].starts_with("6:8: `name` must be a string, found integer"), "{e:?}");
    assert!(e[1].starts_with("7:21: `retention_in_days` = 13 is not a value CloudWatch Logs accepts"), "{e:?}");
    assert!(e[2].starts_with("8:14: `tags.a` must be a string"), "{e:?}");
}

#[test]
fn dangling_reference_points_inside_the_string() {
    let e = errors(&format!(
        "{HEAD}[resources.fn]\ntype = \"aws_lambda_function\"\nfunction_name = \"f\"\nruntime = \"python3.13\"\nhandler = \"h\"\ncode = \"index.py\"\nrole = \"x ${{missing.arn}}\"\n"
    ));
    assert_eq!(e, vec!["10:11: reference `${missing.arn}` names no resource `missing` in this manifest".to_string()]);
}

#[test]
fn unknown_output_in_reference() {
    let e = errors(&format!(
        "{HEAD}[resources.lg]\ntype = \"aws_cloudwatch_log_group\"\nname = \"a\"\n\n[resources.lg2]\ntype = \"aws_cloudwatch_log_group\"\nname = \"${{lg.nope}}\"\n"
    ));
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("10:9: reference `${lg.nope}`: aws_cloudwatch_log_group has no output `nope`; outputs: arn, name"), "{e:?}");
}

#[test]
fn reference_cycle_is_reported_once() {
    let e = errors(&format!(
        "{HEAD}[resources.a]\ntype = \"aws_cloudwatch_log_group\"\nname = \"${{b.name}}\"\n\n[resources.b]\ntype = \"aws_cloudwatch_log_group\"\nname = \"${{a.name}}\"\n"
    ));
    assert_eq!(e, vec!["4:12: reference cycle: a → b → a".to_string()]);
}

#[test]
fn duplicate_physical_names() {
    let e = errors(&format!(
        "{HEAD}[resources.a]\ntype = \"aws_cloudwatch_log_group\"\nname = \"same\"\n\n[resources.b]\ntype = \"aws_cloudwatch_log_group\"\nname = \"same\"\n"
    ));
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("10:8: duplicate aws_cloudwatch_log_group `name` = \"same\": already used by the resource at line 6"),
        "{e:?}"
    );
}

#[test]
fn invalid_toml_and_missing_code_and_reserved_tags() {
    let e = errors("[stack\nname = 1");
    assert!(e[0].starts_with("1:") && e[0].contains("invalid TOML"), "{e:?}");
    let e = errors(&format!(
        "{HEAD}[resources.fn]\ntype = \"aws_lambda_function\"\nfunction_name = \"f\"\nruntime = \"python3.13\"\nhandler = \"h\"\nrole = \"r\"\ncode = \"nowhere\"\ntags = {{ \"reconcile:stack\" = \"x\" }}\n"
    ));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e[0].starts_with("10:8: `code`: code path") && e[0].contains("does not exist"), "{e:?}");
    assert!(e[1].starts_with("11:10: tag key `reconcile:stack` is reserved"), "{e:?}");
}

#[test]
fn error_display_names_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let err = parse_in(dir.path(), &format!("{HEAD}[resources.x]\ntype = \"aws_nope\"\n")).unwrap_err();
    let text = err.to_string();
    let file = dir.path().join("stack.toml");
    assert!(text.starts_with(&format!("{}:5:8: error: unknown resource type", file.display())), "{text}");
    assert!(text.contains("5 | type = \"aws_nope\""), "{text}");
}

#[test]
fn missing_stack_and_resources() {
    let e = errors("[resources]\n");
    assert!(e.iter().any(|m| m.contains("missing `[stack]`")), "{e:?}");
    let e = errors("[stack]\nname = \"bad name!\"\n[resources.a]\ntype = \"aws_cloudwatch_log_group\"\nname = \"x\"\n");
    assert!(e[0].starts_with("2:8: stack name must be"), "{e:?}");
}

#[test]
fn routes_and_waf_rules_get_defaults_and_structural_errors_point_at_the_element() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{HEAD}[resources.api]\ntype = \"aws_api_gateway_rest_api\"\nname = \"a\"\nroutes = [\n  {{ path = \"/order\", method = \"get\", integration = {{ type = \"AWS_PROXY\", uri = \"u\" }} }},\n]\n"
    );
    let m = parse_in(dir.path(), &text).unwrap();
    assert_eq!(
        m.resource("api").unwrap().attrs["routes"][0],
        json!({"path": "/order", "method": "GET", "authorization": "NONE", "method_responses": [],
               "integration": {"type": "AWS_PROXY", "uri": "u", "http_method": "POST", "credentials": "", "integration_responses": []}})
    );
    let e = errors(&format!(
        "{HEAD}[resources.api]\ntype = \"aws_api_gateway_rest_api\"\nname = \"a\"\nroutes = [\n  {{ path = \"order\", method = \"GET\", integration = {{ type = \"AWS_PROXY\", uri = \"u\" }} }},\n]\n"
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("8:3: `routes[0]`: `path` = \"order\" must start with `/`"), "{e:?}");

    let waf = format!(
        "{HEAD}[resources.acl]\ntype = \"aws_wafv2_web_acl\"\nname = \"w\"\nvisibility = {{ metric_name = \"m\" }}\n\n\
         [[resources.acl.rules]]\nname = \"rate\"\npriority = 1\naction = \"block\"\nstatement = {{ rate_based = {{ limit = 2000 }} }}\n"
    );
    let m = parse_in(dir.path(), &waf).unwrap();
    let acl = m.resource("acl").unwrap();
    assert_eq!(acl.attrs["visibility"], json!({"metric_name": "m", "sampled_requests": true, "cloudwatch_metrics": true}));
    assert_eq!(
        acl.attrs["rules"][0]["statement"],
        json!({"rate_based": {"limit": 2000, "aggregate_key_type": "IP", "evaluation_window_sec": 300}})
    );
    assert_eq!(acl.attrs["rules"][0]["visibility"]["metric_name"], json!("rate"));
    let e = errors(&waf.replace("action = \"block\"", "override_action = \"none\""));
    assert!(e[0].contains("`rules[0]`: this rule takes `action`"), "{e:?}");
}

#[test]
fn stack_remediate_is_an_optional_boolean_and_unknown_stack_keys_stay_errors() {
    let body = "[resources.a]\ntype = \"aws_cloudwatch_log_group\"\nname = \"x\"\n";
    let dir = tempfile::tempdir().unwrap();
    assert!(!parse_in(dir.path(), &format!("{HEAD}{body}")).unwrap().remediate);
    let m = parse_in(dir.path(), &format!("[stack]\nname = \"s\"\nremediate = true\n\n{body}")).unwrap();
    assert!(m.remediate);
    let e = errors(&format!("[stack]\nname = \"s\"\nremediate = \"yes\"\n\n{body}"));
    assert!(e[0].starts_with("3:13: `stack.remediate` must be a boolean, found string"), "{e:?}");
    let e = errors(&format!("[stack]\nname = \"s\"\nremediat = true\n\n{body}"));
    assert!(e[0].starts_with("3:1: unknown key `remediat` in `[stack]`"), "{e:?}");
}

#[test]
fn a_stage_that_logs_depends_on_the_account_setting_without_depends_on() {
    let dir = tempfile::tempdir().unwrap();
    let stage = |name: &str, extra: &str| {
        format!(
            "[resources.{name}]\ntype = \"aws_api_gateway_stage\"\nrest_api_id = \"abc\"\nstage_name = \"{name}\"\ndeployment_id = \"d1\"\n{extra}\n\n"
        )
    };
    let text = format!(
        "{HEAD}[resources.account]\ntype = \"aws_api_gateway_account\"\ncloudwatch_role_arn = \"arn:aws:iam::1:role/cw\"\n\n{}{}{}{}",
        stage("access", "access_log_destination_arn = \"arn:aws:logs:us-east-1:1:log-group:g\""),
        stage("execution", "logging_level = \"ERROR\""),
        stage("trace", "data_trace_enabled = true"),
        stage("quiet", "metrics_enabled = true"),
    );
    let m = parse_in(dir.path(), &text).unwrap();
    for logging in ["access", "execution", "trace"] {
        assert_eq!(m.resource(logging).unwrap().deps.iter().collect::<Vec<_>>(), vec!["account"], "{logging}");
    }
    assert!(m.resource("quiet").unwrap().deps.is_empty());
}
