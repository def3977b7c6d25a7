//! One owner per physical resource: two declarations with one physical identity (each kind's
//! `KindSchema::identity`) are refused at the second, naming the first.

use std::path::Path;

use super::{Options, parse_with, variables::Inputs};

/// The errors of `text` (as `line:column: message`) with these `--var`s; none if it is valid.
fn errors_in(text: &str, vars: &[&str]) -> Vec<String> {
    let options =
        Options { variables: Inputs { vars: vars.iter().map(|v| v.to_string()).collect(), ..Default::default() }, ..Default::default() };
    match parse_with(Path::new("stack.toml"), text.to_string(), &options) {
        Ok(_) => Vec::new(),
        Err(e) => e.diagnostics().iter().map(|d| format!("{}:{}: {}", d.location.line, d.location.column, d.message)).collect(),
    }
}

const HEAD: &str = "[stack]\nname = \"s\"\n\n";

const API: &str = "[resources.api]\ntype = \"aws_api_gateway_rest_api\"\nname = \"a\"\n\
                   routes = [{ path = \"/x\", method = \"GET\", integration = { type = \"MOCK\" } }]\n\n\
                   [resources.dep]\ntype = \"aws_api_gateway_deployment\"\nrest_api_id = \"${api.id}\"\n\n";

fn stage(key: &str, name: &str) -> String {
    format!(
        "[resources.{key}]\ntype = \"aws_api_gateway_stage\"\nrest_api_id = \"${{api.id}}\"\nstage_name = \"{name}\"\ndeployment_id = \"${{dep.id}}\"\n\n"
    )
}

/// The one error of `text`, as `line:column: message`.
fn one_error(text: &str) -> String {
    let e = errors_in(text, &[]);
    assert_eq!(e.len(), 1, "{e:#?}");
    e.into_iter().next().unwrap_or_default()
}

#[test]
fn two_stages_with_one_name_on_one_api() {
    let text = format!("{HEAD}{API}{}{}", stage("a", "prod"), stage("b", "prod"));
    let e = one_error(&text);
    // The second stage's `stage_name`, naming the first (its table at line 13).
    assert!(e.starts_with("22:14: `b`: aws_api_gateway_stage with rest_api_id = \"${api.id}\", stage_name = \"prod\" is the same resource in AWS as `a` (stack.toml:13:12)"), "{e}");
    // Another name, or the same name on another API, is another stage.
    assert_eq!(errors_in(&format!("{HEAD}{API}{}{}", stage("a", "prod"), stage("b", "dev")), &[]), Vec::<String>::new());
}

#[test]
fn a_stage_name_given_by_a_variable_is_checked_with_its_value() {
    let vars = "[variables.prod_stage]\ntype = \"string\"\ndefault = \"prod\"\n\n";
    let text = format!("{HEAD}{vars}{API}{}{}", stage("dev", "dev"), stage("prod", "${var.prod_stage}"));
    assert!(errors_in(&text, &[]).is_empty());
    let e = errors_in(&text, &["prod_stage=dev"]);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].contains(
            "`prod`: aws_api_gateway_stage with rest_api_id = \"${api.id}\", stage_name = \"dev\" is the same resource in AWS as `dev`"
        ),
        "{e:?}"
    );
}

#[test]
fn two_associations_on_one_stage() {
    let acl = "[resources.acl]\ntype = \"aws_wafv2_web_acl\"\nname = \"acl\"\nscope = \"REGIONAL\"\ndefault_action = \"allow\"\nvisibility = { metric_name = \"m\" }\n\n";
    let assoc = |key: &str| {
        format!(
            "[resources.{key}]\ntype = \"aws_wafv2_web_acl_association\"\nweb_acl_arn = \"${{acl.arn}}\"\nresource_arn = \"${{prod.arn}}\"\n\n"
        )
    };
    let text = format!("{HEAD}{API}{}{acl}{}{}", stage("prod", "prod"), assoc("one"), assoc("two"));
    let e = one_error(&text);
    assert!(
        e.contains("`two`: aws_wafv2_web_acl_association with resource_arn = \"${prod.arn}\" is the same resource in AWS as `one`"),
        "{e}"
    );
}

#[test]
fn two_permissions_with_one_statement_id_on_one_function() {
    let perm = |key: &str, sid: &str| {
        format!(
            "[resources.{key}]\ntype = \"aws_lambda_permission\"\nfunction_name = \"fn\"\nstatement_id = \"{sid}\"\nprincipal = \"apigateway.amazonaws.com\"\n\n"
        )
    };
    let e = one_error(&format!("{HEAD}{}{}", perm("p1", "Allow"), perm("p2", "Allow")));
    assert!(e.starts_with("13:16: `p2`: aws_lambda_permission with function_name = \"fn\", statement_id = \"Allow\" is the same resource in AWS as `p1` (stack.toml:4:12)"), "{e}");
    assert!(errors_in(&format!("{HEAD}{}{}", perm("p1", "Allow"), perm("p2", "AllowToo")), &[]).is_empty());
}

#[test]
fn two_api_gateway_account_settings() {
    let role = "[resources.cw]\ntype = \"aws_iam_role\"\nname = \"cw\"\nassume_role_policy = { Version = \"2012-10-17\" }\n\n";
    let acct = |key: &str| format!("[resources.{key}]\ntype = \"aws_api_gateway_account\"\ncloudwatch_role_arn = \"${{cw.arn}}\"\n\n");
    let e = one_error(&format!("{HEAD}{role}{}{}", acct("one"), acct("two")));
    assert!(
        e.starts_with(
            "13:12: `two`: there is one aws_api_gateway_account per account and region, and `one` (stack.toml:9:12) already declares it"
        ),
        "{e}"
    );
    // One switched off is not declared.
    let off = "[resources.two]\ntype = \"aws_api_gateway_account\"\nenabled = false\ncloudwatch_role_arn = \"${cw.arn}\"\n";
    assert!(errors_in(&format!("{HEAD}{role}{}{off}", acct("one")), &[]).is_empty());
}

#[test]
fn a_route_listed_twice() {
    let text = format!(
        "{HEAD}[resources.api]\ntype = \"aws_api_gateway_rest_api\"\nname = \"a\"\nroutes = [\n\
         {{ path = \"/x\", method = \"GET\", integration = {{ type = \"MOCK\" }} }},\n\
         {{ path = \"/x\", method = \"POST\", integration = {{ type = \"MOCK\" }} }},\n\
         {{ path = \"/x\", method = \"GET\", integration = {{ type = \"MOCK\" }} }},\n]\n"
    );
    let e = one_error(&text);
    assert!(e.starts_with("10:1: `routes[2]` (GET /x) is already declared by `routes[0]` (stack.toml:8:1)"), "{e}");
}

#[test]
fn role_names_that_differ_only_in_case() {
    let role = |key: &str, name: &str| {
        format!("[resources.{key}]\ntype = \"aws_iam_role\"\nname = \"{name}\"\nassume_role_policy = {{ Version = \"2012-10-17\" }}\n\n")
    };
    let e = one_error(&format!("{HEAD}{}{}", role("a", "AppRole"), role("b", "approle")));
    assert!(e.starts_with("11:8: `b`: aws_iam_role with name = \"approle\" is the same resource in AWS as `a` (stack.toml:4:12) (AWS treats these names as one whatever their case)"), "{e}");
    // Log group names are case-sensitive in AWS: two of them.
    let group = |key: &str, name: &str| format!("[resources.{key}]\ntype = \"aws_cloudwatch_log_group\"\nname = \"{name}\"\n\n");
    assert!(errors_in(&format!("{HEAD}{}{}", group("a", "Logs"), group("b", "logs")), &[]).is_empty());
    let e = one_error(&format!("{HEAD}{}{}", group("a", "logs"), group("b", "logs")));
    assert!(
        e.starts_with("10:8: `b`: aws_cloudwatch_log_group with name = \"logs\" is the same resource in AWS as `a` (stack.toml:4:12)"),
        "{e}"
    );
}

#[test]
fn the_seed_with_its_prod_stage_named_dev_is_refused_at_the_stage() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/apigw-lambda-basic.toml"));
    let options = Options { variables: Inputs { vars: vec!["prod_stage=dev".into()], ..Default::default() }, ..Default::default() };
    let err = super::load_with(path, &options).unwrap_err();
    let d = err.diagnostics();
    assert_eq!(d.len(), 1, "{err}");
    assert!(d[0].message.starts_with("`prod_stage`: aws_api_gateway_stage with rest_api_id = \"${hello_api.id}\", stage_name = \"dev\" is the same resource in AWS as `dev_stage`"), "{err}");
    let text = std::fs::read_to_string(path).unwrap();
    let line = text.lines().nth(d[0].location.line - 1).unwrap();
    assert!(line.starts_with("stage_name = \"${var.prod_stage}\""), "points at the second stage's name: {line}");
}

#[test]
fn web_acls_of_one_name_in_two_scopes_are_two_resources() {
    let acl = |key: &str, scope: Option<&str>| {
        let scope = scope.map(|s| format!("scope = \"{s}\"\n")).unwrap_or_default();
        format!("[resources.{key}]\ntype = \"aws_wafv2_web_acl\"\nname = \"edge\"\n{scope}visibility = {{ metric_name = \"edge\" }}\n\n")
    };
    // A regional and a CloudFront web ACL may share a name: AWS keeps them apart by scope.
    assert_eq!(errors_in(&format!("{HEAD}{}{}", acl("a", Some("REGIONAL")), acl("b", Some("CLOUDFRONT"))), &[]), Vec::<String>::new());
    // The default scope is REGIONAL: written or not, it is one web ACL.
    let e = one_error(&format!("{HEAD}{}{}", acl("a", None), acl("b", Some("REGIONAL"))));
    assert!(e.contains("is the same resource in AWS as `a`"), "{e}");
}
