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
        e[0].starts_with("10:8: `b`: aws_cloudwatch_log_group with name = \"same\" is the same resource in AWS as `a` (")
            && e[0].contains("stack.toml:4:12)"),
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

const FN: &str = "[resources.fn]\ntype = \"aws_lambda_function\"\nfunction_name = \"f\"\nruntime = \"python3.13\"\nhandler = \"h\"\nrole = \"r\"\ncode = \"index.py\"\n";

#[test]
fn an_error_on_a_secret_line_never_shows_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.py"), "def handler(e, c): pass\n").unwrap();
    for text in [
        format!("{HEAD}{FN}environment = {{ DB_PASS = \"a\" }}\nsecret_environment = {{ OTHER = \"b\", DB_PASS = \"hunter2-s3cret\" }}\n"),
        format!("{HEAD}{FN}secret_environment = {{ DB_PASS = \"hunter2-s3cret\", 1BAD = \"x\" }}\n"),
        format!("{HEAD}{FN}secret_environment = {{ DB_PASS = \"hunter2-s3cret }}\n"),
    ] {
        let e = parse_in(dir.path(), &text).unwrap_err();
        let shown = format!("{e}\n{}", serde_json::to_string(e.diagnostics()).unwrap());
        assert!(shown.contains("secret_environment = (sensitive)"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}

#[test]
fn a_key_both_plain_and_secret_is_refused_at_the_secret_key() {
    let e = errors(&format!("{HEAD}{FN}environment = {{ DB_PASS = \"a\" }}\nsecret_environment = {{ OTHER = \"b\", DB_PASS = \"c\" }}\n"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("12:37: `DB_PASS` is in both `environment` and `secret_environment`"), "{e:?}");
}

#[test]
fn names_and_sizes_follow_aws_rules_at_file_line_column() {
    let e = errors(&format!(
        "{HEAD}[resources.role]\ntype = \"aws_iam_role\"\nname = \"{}\"\nassume_role_policy = {{ Version = \"2012-10-17\" }}\n\
         inline_policies = {{ \"bad policy\" = {{ Version = \"2012-10-17\" }} }}\ntags = {{ \"aws:x\" = \"1\", ok = \"a*b\" }}\n\n\
         [resources.lg]\ntype = \"aws_cloudwatch_log_group\"\nname = \"Dev Log*Group\"\n",
        "r".repeat(80)
    ));
    assert_eq!(e.len(), 5, "{e:?}");
    assert!(e[0].starts_with("6:8: `name` must be 1-64 characters of letters, digits and `_+=,.@-`; it has 80"), "{e:?}");
    assert!(e[1].starts_with("8:21: policy name `bad policy` must be 1-128 characters"), "{e:?}");
    assert!(e[2].starts_with("9:10: tag key `aws:x` must not begin with `aws:`"), "{e:?}");
    assert!(
        e[3].starts_with("9:30: the value of tag `ok` must be at most 256 characters of letters, digits, spaces and `_.:/=+-@`; '*'"),
        "{e:?}"
    );
    assert!(e[4].starts_with("13:8: `name` must be 1-512 characters of letters, digits and `._-/#`; ' ' (character 4)"), "{e:?}");

    let e = errors(&format!(
        "{HEAD}{}environment = {{ A = \"x\", AWS_REGION = \"y\" }}\n",
        FN.replace("function_name = \"f\"", "function_name = \"bad name!/x\"").replace("handler = \"h\"", "handler = \"index handler\"")
    ));
    assert_eq!(e.len(), 4, "{e:?}");
    assert!(e[0].starts_with("6:17: `function_name` must be 1-64 characters of letters, digits, `_` and `-`; ' ' (character 4)"), "{e:?}");
    assert!(e[1].starts_with("8:11: `handler` must be 1-128 characters of characters other than white space"), "{e:?}");
    assert!(e[2].starts_with("11:17: environment variable name `A` must start with a letter and hold at least 2 characters"), "{e:?}");
    assert!(e[3].starts_with("11:26: environment variable name `AWS_REGION` is reserved by Lambda"), "{e:?}");

    let e = errors(&format!(
        "{HEAD}[resources.stage]\ntype = \"aws_api_gateway_stage\"\nrest_api_id = \"${{api.id}}\"\nstage_name = \"dev stage!\"\ndeployment_id = \"d\"\n\n\
         [resources.api]\ntype = \"aws_api_gateway_rest_api\"\nname = \"a\"\n\n\
         [resources.acl]\ntype = \"aws_wafv2_web_acl\"\nname = \"acl 1\"\ndescription = \"ends with a space \"\nvisibility = {{ metric_name = \"All\" }}\n\
         rules = [{{ name = \"geo\", priority = 0, action = \"block\", statement = {{ geo_match = {{ country_codes = [\"XX\"] }} }} }}]\n"
    ));
    assert_eq!(e.len(), 5, "{e:?}");
    assert!(e[0].starts_with("7:14: `stage_name` must be 1-128 characters of letters, digits, `_` and `-`; ' ' (character 4)"), "{e:?}");
    assert!(e[1].starts_with("16:8: `name` must be 1-128 characters"), "{e:?}");
    assert!(e[2].starts_with("17:15: `description` must not begin or end with white space"), "{e:?}");
    assert!(e[3].starts_with("18:14: `visibility`: `metric_name` `All` is reserved by WAF"), "{e:?}");
    assert!(e[4].starts_with("19:10: `rules[0]`: `geo_match.country_codes` `XX` is not a country code"), "{e:?}");
}

#[test]
fn a_huge_description_is_refused_with_a_short_message() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.py"), "def handler(e, c): pass\n").unwrap();
    let text = format!("{HEAD}{FN}description = \"{}\"\n", "d".repeat(20 * 1024 * 1024));
    let err = parse_in(dir.path(), &text).unwrap_err();
    let shown = err.to_string();
    assert!(shown.len() < 1000, "{} bytes", shown.len());
    assert!(shown.contains(":11:15: error: `description` must be at most 256 characters; it has 20971520"), "{shown}");
    assert!(shown.contains("11 | description = \"ddd"), "{shown}");
}

#[test]
fn references_are_checked_by_aws_only_literals_here() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{HEAD}[resources.a]\ntype = \"aws_cloudwatch_log_group\"\nname = \"a\"\n\n[resources.b]\ntype = \"aws_cloudwatch_log_group\"\nname = \"${{a.arn}}\"\n"
    );
    assert!(parse_in(dir.path(), &text).is_ok());
}

#[test]
fn code_outside_the_manifest_folder_is_refused_unless_the_command_line_allows_it() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("stolen.py"), "secret\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.py"), "def handler(e, c): pass\n").unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("stolen.py"), dir.path().join("link.py")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("index.py"), dir.path().join("sub/inside.py")).unwrap();
    let with_code = |code: &str| format!("{HEAD}{}", FN.replace("code = \"index.py\"", &format!("code = \"{code}\"")));
    let abs = outside.path().join("stolen.py").display().to_string();
    let escape = format!("../{}/stolen.py", outside.path().file_name().unwrap().to_string_lossy());
    for (code, why) in [
        (abs.as_str(), "an absolute path".to_string()),
        ("/etc", "an absolute path".into()),
        (escape.as_str(), "resolved to".into()),
        ("link.py", "a symlink resolved to".into()),
    ] {
        let e = errors_in(dir.path(), &with_code(code));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with(&format!("10:8: `code`: code path `{code}` is {why}")), "{e:?}");
        assert!(e[0].contains("outside the manifest's folder") && e[0].contains("--allow-code-from"), "{e:?}");
    }
    // Inside the tree, symlinks included, is fine; so is `..` that stays inside.
    for code in ["index.py", "sub/inside.py", "sub/../index.py", "."] {
        assert!(parse_in(dir.path(), &with_code(code)).is_ok(), "{code}");
    }
    // The command line (never the manifest) can allow a folder outside.
    let options = Options { allow_code_from: vec![outside.path().to_path_buf()], ..Options::default() };
    for code in [abs.as_str(), escape.as_str(), "link.py"] {
        let m = parse_with(&dir.path().join("stack.toml"), with_code(code), &options).unwrap();
        assert!(m.resource("fn").unwrap().artifact.is_some());
    }
    assert!(parse_with(&dir.path().join("stack.toml"), with_code("/etc"), &options).is_err());
}

fn errors_in(dir: &Path, text: &str) -> Vec<String> {
    match parse_in(dir, text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.diagnostics().iter().map(|d| format!("{}:{}: {}", d.location.line, d.location.column, d.message)).collect(),
    }
}

#[test]
fn tag_count_environment_size_and_huge_keys_are_refused_briefly() {
    let many: Vec<String> = (0..48).map(|i| format!("t{i} = \"v\"")).collect();
    let e =
        errors(&format!("{HEAD}[resources.lg]\ntype = \"aws_cloudwatch_log_group\"\nname = \"lg\"\ntags = {{ {} }}\n", many.join(", ")));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("7:8: 48 tags: AWS allows 50 per resource and reconcile adds 3 ownership tags, so at most 47"), "{e:?}");

    let e = errors(&format!("{HEAD}{FN}environment = {{ BIG = \"{}\" }}\nsecret_environment = {{ MORE = \"x\" }}\n", "v".repeat(4090)));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("11:15: the environment variables take 4111 bytes as Lambda measures them"), "{e:?}");
    // Lambda measures the JSON text of the variables: 200 of them with 3600 bytes of names and values
    // take 4801 bytes there, and Lambda refuses them.
    let vars: Vec<String> = (0..200).map(|i| format!("K{i:03} = \"{}\"", "v".repeat(14))).collect();
    let e = errors(&format!("{HEAD}{FN}environment = {{ {} }}\n", vars.join(", ")));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("11:15: the environment variables take 4801 bytes as Lambda measures them"), "{e:?}");
    let fits: Vec<String> = (0..170).map(|i| format!("K{i:03} = \"{}\"", "v".repeat(14))).collect();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.py"), "def handler(e, c): pass\n").unwrap();
    parse_in(dir.path(), &format!("{HEAD}{FN}environment = {{ {} }}\n", fits.join(", "))).expect("4081 bytes fit");

    let huge_key = "k".repeat(1_000_000);
    let e = errors(&format!("{HEAD}[resources.lg]\ntype = \"aws_cloudwatch_log_group\"\nname = \"lg\"\ntags = {{ {huge_key} = \"v\" }}\n"));
    assert_eq!(e.len(), 1);
    assert!(e[0].len() < 300 && e[0].starts_with("7:10: tag key `kkk"), "{}", &e[0][..300.min(e[0].len())]);
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

#[test]
fn waf_rules_repeating_a_name_or_a_priority_are_refused_at_the_repeat() {
    let rule = |name: &str, priority: u32| {
        format!(
            "[[resources.acl.rules]]\nname = \"{name}\"\npriority = {priority}\naction = \"block\"\nstatement = {{ rate_based = {{ limit = 2000 }} }}\n\n"
        )
    };
    let acl = format!("{HEAD}[resources.acl]\ntype = \"aws_wafv2_web_acl\"\nname = \"w\"\nvisibility = {{ metric_name = \"m\" }}\n\n");
    let e = errors(&format!("{acl}{}{}", rule("a", 1), rule("b", 1)));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("15:1: `rules[1]`: priority 1 is already used by `rules[0]`"), "{e:?}");
    let e = errors(&format!("{acl}{}{}", rule("a", 1), rule("a", 2)));
    assert!(e[0].contains("`rules[1]`: name a is already used by `rules[0]`"), "{e:?}");
    let dir = tempfile::tempdir().unwrap();
    assert!(parse_in(dir.path(), &format!("{acl}{}{}", rule("a", 1), rule("b", 2))).is_ok());
}

#[test]
fn misspelt_names_get_a_did_you_mean_at_their_file_line_and_column() {
    let lg = "[resources.logs]\ntype = \"aws_cloudwatch_log_group\"\nname = \"a\"\n\n";
    // A reference to a misspelt resource, and to a misspelt output.
    let e = errors(&format!("{HEAD}{lg}[resources.b]\ntype = \"aws_cloudwatch_log_group\"\nname = \"x-${{lgos.name}}\"\n"));
    assert_eq!(
        e,
        vec!["10:11: reference `${lgos.name}` names no resource `lgos` in this manifest; did you mean `${logs.name}`?".to_string()]
    );
    let e = errors(&format!("{HEAD}{lg}[resources.b]\ntype = \"aws_cloudwatch_log_group\"\nname = \"${{logs.nmae}}\"\n"));
    assert_eq!(
        e,
        vec!["10:9: reference `${logs.nmae}`: aws_cloudwatch_log_group has no output `nmae`; outputs: arn, name, creation_time; did you mean `${logs.name}`?"
            .to_string()]
    );
    // In an output, in `depends_on`, a field, a type, a `[stack]` key, a top-level key.
    let e = errors(&format!("{HEAD}{lg}[outputs]\nx = \"${{log.arn}}\"\n"));
    assert_eq!(e, vec!["9:6: reference `${log.arn}` names no resource `log` in this manifest; did you mean `${logs.arn}`?".to_string()]);
    let e = errors(&format!("{HEAD}{lg}[resources.b]\ntype = \"aws_cloudwatch_log_group\"\nname = \"b\"\ndepends_on = [\"lgos\"]\n"));
    assert_eq!(e, vec!["11:15: `depends_on` names no resource `lgos` in this manifest; did you mean `logs`?".to_string()]);
    let e = errors(&format!("{HEAD}{lg}retenton_in_days = 7\n"));
    assert!(e[0].starts_with("8:1: unknown field `retenton_in_days` for aws_cloudwatch_log_group; known fields:"), "{e:?}");
    assert!(e[0].ends_with("; did you mean `retention_in_days`?"), "{e:?}");
    let e = errors(&format!("{HEAD}[resources.x]\ntype = \"aws_cloudwatch_loggroup\"\n"));
    assert!(e[0].starts_with("5:8: unknown resource type") && e[0].ends_with("did you mean `aws_cloudwatch_log_group`?"), "{e:?}");
    let e = errors(&format!("[stack]\nname = \"s\"\nremediat = true\n\n{lg}"));
    assert!(e[0].starts_with("3:1: unknown key `remediat` in `[stack]`") && e[0].ends_with("did you mean `remediate`?"), "{e:?}");
    let e = errors(&format!("{HEAD}[resource.x]\n"));
    assert!(e.iter().any(|e| e.starts_with("4:2: unknown top-level key `resource`") && e.ends_with("did you mean `resources`?")), "{e:?}");
    // Nothing close: no suggestion.
    let e = errors(&format!("{HEAD}{lg}[resources.b]\ntype = \"aws_cloudwatch_log_group\"\nname = \"${{completely_else.arn}}\"\n"));
    assert!(!e[0].contains("did you mean"), "{e:?}");
}

#[test]
fn a_missing_manifest_says_how_to_name_one() {
    let dir = tempfile::tempdir().unwrap();
    let err = load(&dir.path().join(DEFAULT_MANIFEST)).unwrap_err().to_string();
    assert!(err.starts_with(&format!("cannot read manifest {}", dir.path().join("reconcile.toml").display())), "{err}");
    assert!(
        err.contains("`-f PATH`") && err.contains("`RECONCILE_MANIFEST`") && err.contains("`reconcile.toml` in the current folder"),
        "{err}"
    );
    // Any other read error is reported as it is.
    let err = load(dir.path()).unwrap_err().to_string();
    assert!(!err.contains("RECONCILE_MANIFEST"), "{err}");
}

#[test]
fn lifecycle_meta_fields_parse() {
    let text = concat!(
        "[stack]\nname = \"s\"\ntags = { team = \"core\", env = \"dev\" }\n\n",
        "[resources.lg]\ntype = \"aws_cloudwatch_log_group\"\nname = \"lg\"\ntags = { env = \"prod\" }\n",
        "ignore_changes = [\"retention_in_days\", \"tags.owner\"]\nretain_on_delete = true\n\n",
        "[resources.all]\ntype = \"aws_cloudwatch_log_group\"\nname = \"all\"\nignore_changes = [\"*\"]\n\n",
        "[[moved]]\nfrom = \"old\"\nto = \"lg\"\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let m = parse_in(dir.path(), text).unwrap();
    let lg = m.resource("lg").unwrap();
    assert!(lg.retain_on_delete);
    assert!(lg.ignore_changes.covers("retention_in_days"));
    assert!(lg.ignore_changes.covers("tags.owner"));
    assert!(!lg.ignore_changes.covers("tags.env"));
    // Stack tags under the resource's own; ownership tags over both.
    assert_eq!(lg.attrs["tags"]["env"], json!("prod"));
    assert_eq!(lg.attrs["tags"]["team"], json!("core"));
    assert_eq!(lg.attrs["tags"][TAG_RESOURCE], json!("lg"));
    let all = m.resource("all").unwrap();
    assert!(all.ignore_changes.covers("retention_in_days") && all.ignore_changes.covers("tags.x"));
    assert!(!all.ignore_changes.covers("tags.reconcile:stack"), "ownership tags are never ignored");
    assert!(!all.retain_on_delete);
    assert_eq!(all.attrs["tags"]["env"], json!("dev"));
    assert_eq!(m.moved.len(), 1);
    assert_eq!((m.moved[0].from.as_str(), m.moved[0].to.as_str(), m.moved[0].location.line), ("old", "lg", 17));
    assert_eq!(m.stack_tags.len(), 2);
}

#[test]
fn ignore_changes_names_known_fields_only() {
    let e = errors(&format!(
        "{HEAD}[resources.lg]\ntype = \"aws_cloudwatch_log_group\"\nname = \"lg\"\n\
         ignore_changes = [\"retention\", \"name.x\", \"tags.reconcile:stack\", \"tags\"]\n"
    ));
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(e[0].starts_with("7:20: `ignore_changes`: aws_cloudwatch_log_group has no field `retention`"), "{e:?}");
    assert!(e[1].starts_with("7:33: `ignore_changes`: `name` is a string, not a table"), "{e:?}");
    assert!(e[2].starts_with("7:43: `ignore_changes`: the ownership tag `reconcile:stack` is always kept"), "{e:?}");
    let e = errors(&format!("{HEAD}[resources.lg]\ntype = \"aws_cloudwatch_log_group\"\nname = \"lg\"\nignore_changes = \"name\"\n"));
    assert!(e[0].starts_with("7:18: `ignore_changes` must be an array"), "{e:?}");
    let e = errors(&format!("{HEAD}[resources.lg]\ntype = \"aws_cloudwatch_log_group\"\nname = \"lg\"\nretain_on_delete = 1\n"));
    assert!(e[0].starts_with("7:20: `retain_on_delete` must be a boolean"), "{e:?}");
}

#[test]
fn moved_entries_that_conflict_are_errors_at_their_line() {
    let lg = |key: &str| format!("[resources.{key}]\ntype = \"aws_cloudwatch_log_group\"\nname = \"{key}\"\n\n");
    let moved = |from: &str, to: &str| format!("[[moved]]\nfrom = \"{from}\"\nto = \"{to}\"\n\n");
    // `to` not in the manifest.
    let e = errors(&format!("{HEAD}{}{}", lg("a"), moved("old", "b")));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("10:6: `[[moved]]` to `b`: the manifest declares no resource `b`"), "{e:?}");
    // Two from the same key.
    let e = errors(&format!("{HEAD}{}{}{}{}", lg("a"), lg("b"), moved("old", "a"), moved("old", "b")));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("17:8: `[[moved]]` from `old` again: the entry at line 12 already moves it"), "{e:?}");
    // A chain.
    let e = errors(&format!("{HEAD}{}{}{}", lg("c"), moved("a", "b"), moved("b", "c")));
    assert!(e.iter().any(|m| m.starts_with("9:8: `[[moved]]` entries form a chain")), "{e:?}");
    // From a key the manifest still declares.
    let e = errors(&format!("{HEAD}{}{}{}", lg("a"), lg("b"), moved("a", "b")));
    assert!(e[0].starts_with("13:8: `[[moved]]` from `a`: the manifest still declares `a`"), "{e:?}");
    // Missing `to`, unknown key.
    let e = errors(&format!("{HEAD}{}[[moved]]\nfrom = \"x\"\nwhere = \"y\"\n", lg("a")));
    assert!(e.iter().any(|m| m.starts_with("10:1: unknown key `where` in `[[moved]]`")), "{e:?}");
}

#[test]
fn stack_tags_are_checked_like_tags() {
    let e = errors(
        "[stack]\nname = \"s\"\ntags = { \"reconcile:x\" = \"1\", ok = 2, ref = \"${a.b}\" }\n\n[resources.lg]\ntype = \"aws_cloudwatch_log_group\"\nname = \"lg\"\n",
    );
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(e[0].starts_with("3:10: tag key `reconcile:x` is reserved"), "{e:?}");
    assert!(e[1].starts_with("3:36: `stack.tags.ok` must be a string"), "{e:?}");
    assert!(e[2].starts_with("3:45: stack tags are literal strings"), "{e:?}");
}

#[test]
fn stack_tags_count_against_each_resources_tag_limit() {
    let own: String = (0..40).map(|i| format!("t{i} = \"v\", ")).collect();
    let stack: String = (0..10).map(|i| format!("s{i} = \"v\", ")).collect();
    let e = errors(&format!(
        "[stack]\nname = \"s\"\ntags = {{ {} }}\n\n[resources.lg]\ntype = \"aws_cloudwatch_log_group\"\nname = \"lg\"\ntags = {{ {} }}\n",
        stack.trim_end_matches(", "),
        own.trim_end_matches(", ")
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("5:12: resource `lg` has 50 tags with the stack's `[stack] tags`"), "{e:?}");
}

#[test]
fn an_empty_manifest_given_a_var_is_reported_as_a_file_without_a_stack() {
    let options = Options { variables: variables::Inputs { vars: vec!["prefix=x".into()], ..Default::default() }, ..default_options() };
    let e = parse_with(Path::new("/tmp/x/empty.toml"), String::new(), &options).unwrap_err().to_string();
    assert!(e.starts_with("/tmp/x/empty.toml:1:1: error: missing `[stack]`"), "{e}");
}
