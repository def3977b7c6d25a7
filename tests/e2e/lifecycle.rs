//! Lifecycle controls in the manifest: `ignore_changes`, `[[moved]]`, `retain_on_delete` and
//! `[stack] tags` (end to end against moto).

#[allow(unused_imports)]
use super::*;
use serde_json::json;

const TRUST: &str = r#"{ Version = "2012-10-17", Statement = [{ Effect = "Allow", Principal = { Service = "lambda.amazonaws.com" }, Action = "sts:AssumeRole" }] }"#;

async fn log_group_tags(aws: &Aws, name: &str) -> std::collections::HashMap<String, String> {
    let g = log_group(aws, name).await.unwrap_or_else(|| panic!("log group {name} missing"));
    let tags = aws.logs.list_tags_for_resource().resource_arn(g.log_group_arn().unwrap().trim_end_matches(":*")).send().await.unwrap();
    tags.tags().cloned().unwrap_or_default()
}

async fn role_tags(aws: &Aws, name: &str) -> std::collections::HashMap<String, String> {
    let tags = aws.iam.list_role_tags().role_name(name).send().await.unwrap();
    tags.tags().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect()
}

/// The AWS calls of a `--json --stats` document whose operation writes (anything but reads).
fn writes(doc: &Value) -> Vec<String> {
    doc["aws_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["operation"].as_str().unwrap().to_string())
        .filter(|op| !["Get", "List", "Describe"].iter().any(|p| op.starts_with(p)))
        .collect()
}

fn drift_listing(cli: &Cli, manifest: &str, flag: Option<&str>) -> Vec<Value> {
    let mut args = vec!["-f", manifest, "--json", "drift"];
    args.extend(flag);
    let out = cli.run(&args);
    out.assert_success();
    serde_json::from_str::<Value>(&out.stdout).unwrap().as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn ignored_fields_stay_as_aws_has_them_through_apply_and_watch_remediation() {
    let (moto, cli) = setup();
    let manifest = cli.write_file(
        "ignore.toml",
        r#"[stack]
name = "ignore"

[resources.logs]
type = "aws_cloudwatch_log_group"
name = "IgnoreLogs"
retention_in_days = 7
tags = { team = "core" }
ignore_changes = ["retention_in_days", "tags.owner"]
"#,
    );
    let m = manifest.to_str().unwrap();
    cli.run(&["-f", m, "apply", "--auto-approve"]).assert_success();
    let aws = aws(&moto).await;
    let arn = log_group(&aws, "IgnoreLogs").await.unwrap().log_group_arn().unwrap().trim_end_matches(":*").to_string();
    assert_eq!(log_group(&aws, "IgnoreLogs").await.unwrap().retention_in_days(), Some(7), "a create sends ignored fields");

    // Out of band: the ignored retention and `owner` tag, and the managed `team` tag.
    aws.logs.put_retention_policy().log_group_name("IgnoreLogs").retention_in_days(30).send().await.unwrap();
    aws.logs.tag_resource().resource_arn(&arn).tags("owner", "ops").tags("team", "other").send().await.unwrap();
    let plan = plan_json(&cli, m);
    assert_eq!(changes(&plan), vec![("logs".into(), "update".into(), vec!["tags.team".into()])]);
    let ignored: Vec<_> = plan["resources"][0]["ignored"].as_array().unwrap().iter().map(|c| c["path"].as_str().unwrap()).collect();
    assert_eq!(ignored, vec!["retention_in_days", "tags.owner"]);
    let text = cli.run(&["-f", m, "plan"]);
    assert!(text.stdout.contains("# ignore_changes: left as AWS has them: retention_in_days, tags.owner"), "{text}");
    cli.run(&["-f", m, "apply", "--auto-approve"]).assert_success();
    assert_eq!(log_group(&aws, "IgnoreLogs").await.unwrap().retention_in_days(), Some(30));
    let tags = log_group_tags(&aws, "IgnoreLogs").await;
    assert_eq!((tags["team"].as_str(), tags["owner"].as_str()), ("core", "ops"));
    cli.run(&["-f", m, "plan", "--detailed-exitcode"]).assert_status(0);

    // Watch with remediation: the managed tag is put back, the ignored fields stay; the ignored drift
    // is recorded, marked ignored, and not counted as open drift.
    aws.logs.put_retention_policy().log_group_name("IgnoreLogs").retention_in_days(14).send().await.unwrap();
    aws.logs.tag_resource().resource_arn(&arn).tags("owner", "sre").tags("team", "again").send().await.unwrap();
    let (w, port) = spawn_watch(&cli, &["--remediate", m], &[]);
    support::poll_until(
        WATCH_DEADLINE,
        "the team tag to be remediated",
        || {
            let events = drift_listing(&cli, m, Some("--all"));
            event(&events, "logs", "tags.team").filter(|e| e["how"] == "remediated").map(|_| ())
        },
        || w.stderr(),
    );
    // Two more passes, with remediation on, leave the ignored fields alone.
    let seen = log_lines(&w.stderr(), "pass finished").len();
    support::poll_until(
        WATCH_DEADLINE,
        "two more passes",
        || (log_lines(&w.stderr(), "pass finished").len() >= seen + 2).then_some(()),
        || w.stderr(),
    );
    assert!(
        log_lines(&w.stderr(), "remediation wrote it but AWS still differs from the manifest; its drift stays open").is_empty(),
        "{}",
        w.stderr()
    );
    let tags = log_group_tags(&aws, "IgnoreLogs").await;
    assert_eq!((tags["team"].as_str(), tags["owner"].as_str()), ("core", "sre"));
    assert_eq!(log_group(&aws, "IgnoreLogs").await.unwrap().retention_in_days(), Some(14));
    let open = drift_listing(&cli, m, None);
    assert!(open.is_empty(), "ignored drift is not open drift: {open:?}");
    let with_ignored = drift_listing(&cli, m, Some("--ignored"));
    let retention = event(&with_ignored, "logs", "retention_in_days").unwrap_or_else(|| panic!("{with_ignored:?}"));
    assert_eq!(
        (retention["ignored"].clone(), retention["actual"].clone(), retention["expected"].clone()),
        (json!(true), json!(14), json!(7))
    );
    assert_eq!(event(&with_ignored, "logs", "tags.owner").unwrap()["ignored"], json!(true));
    let (_, metrics) = http_get(port, "/metrics");
    assert_eq!(sample(&metrics, "reconcile_drift{stack=\"ignore\",resource=\"logs\"}").unwrap_or(0.0), 0.0, "{metrics}");
    w.signal("TERM");
    w.wait(WATCH_DEADLINE).assert_success();
}

const MOVED_API: &str = r#"[stack]
name = "moved"

[resources.api]
type = "aws_api_gateway_rest_api"
name = "MovedApi"
routes = [{ path = "/ping", method = "GET", integration = { type = "HTTP_PROXY", uri = "https://example.com/ping", http_method = "GET" } }]

[resources.deployment]
type = "aws_api_gateway_deployment"
rest_api_id = "${api.id}"
triggers = { model = "${api.model_hash}" }

[resources.stage]
type = "aws_api_gateway_stage"
rest_api_id = "${api.id}"
stage_name = "prod"
deployment_id = "${deployment.id}"

[outputs]
url = "${stage.invoke_url}"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_moved_entry_keeps_the_rest_api_its_id_and_its_invoke_url() {
    let (moto, cli) = setup();
    let manifest = cli.write_file("moved.toml", MOVED_API);
    let m = manifest.to_str().unwrap();
    cli.run(&["-f", m, "apply", "--auto-approve"]).assert_success();
    let aws = aws(&moto).await;
    let id = api_id(&aws, "MovedApi").await;
    cli.run(&["-f", m, "plan", "--detailed-exitcode"]).assert_status(0);
    let url = cli.run(&["-f", m, "output", "url"]);
    url.assert_success();
    assert!(url.stdout.contains(&id), "{url}");

    // The key renamed and the API renamed too: without an entry, a new API and the old one deleted.
    let renamed =
        MOVED_API.replace("[resources.api]", "[resources.public_api]").replace("${api.", "${public_api.").replace("MovedApi", "PublicApi");
    std::fs::write(&manifest, &renamed).unwrap();
    let plan = plan_json(&cli, m);
    assert_eq!((plan["summary"]["create"].as_u64(), plan["summary"]["delete"].as_u64()), (Some(1), Some(1)), "{plan}");

    // With the entry: moved, nothing created or deleted.
    std::fs::write(&manifest, format!("{renamed}\n[[moved]]\nfrom = \"api\"\nto = \"public_api\"\n")).unwrap();
    let plan = plan_json(&cli, m);
    let s = &plan["summary"];
    assert_eq!(
        (s["moved"].as_u64(), s["create"].as_u64(), s["delete"].as_u64(), s["replace"].as_u64()),
        (Some(1), Some(0), Some(0), Some(0)),
        "{plan}"
    );
    let api = plan["resources"].as_array().unwrap().iter().find(|r| r["name"] == "public_api").unwrap();
    assert_eq!((api["moved_from"].as_str(), api["physical_id"].as_str()), (Some("api"), Some(id.as_str())));
    // The only change is the API's new name; the move itself is no change.
    assert_eq!(changes(&plan), vec![("public_api".into(), "update".into(), vec!["name".into()])], "{}", cli.run(&["-f", m, "plan"]).stdout);
    let text = cli.run(&["-f", m, "plan"]);
    assert!(text.stdout.contains("public_api (aws_api_gateway_rest_api)") && text.stdout.contains("will be moved to this key"), "{text}");

    let out = cli.run(&["-f", m, "--json", "--stats", "apply", "--auto-approve"]);
    out.assert_success();
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    // The move itself writes nothing: the one write is the name change.
    assert_eq!(writes(&doc), vec!["UpdateRestApi".to_string()], "{out}");
    assert_eq!(api_id(&aws, "PublicApi").await, id);
    assert_eq!(aws.apigw.get_rest_apis().send().await.unwrap().items().len(), 1);
    let again = cli.run(&["-f", m, "output", "url"]);
    assert_eq!(again.stdout, url.stdout);
    cli.run(&["-f", m, "plan", "--detailed-exitcode"]).assert_status(0);
    // The entry may stay: it matches what the state already records under the new key.
    let plan = cli.run(&["-f", m, "plan"]);
    assert!(!plan.combined().contains("matches nothing"), "{plan}");
    // An entry that matches nothing is a warning, not an error.
    let logs = "[resources.logs]\ntype = \"aws_cloudwatch_log_group\"\nname = \"MovedLogs\"\n";
    std::fs::write(&manifest, format!("{renamed}\n{logs}\n[[moved]]\nfrom = \"nothing\"\nto = \"logs\"\n")).unwrap();
    let plan = cli.run(&["-f", m, "plan", "--detailed-exitcode"]);
    plan.assert_status(2);
    assert!(plan.stdout.contains("Warning: ") && plan.stdout.contains("`[[moved]]` from `nothing` to `logs` matches nothing"), "{plan}");
    assert_eq!(
        changes(&plan_json(&cli, m)),
        vec![("logs".into(), "create".into(), vec!["name".into(), "retention_in_days".into(), "tags".into()])]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retain_on_delete_forgets_the_resource_and_leaves_it_untagged_in_aws() {
    let (moto, cli) = setup();
    let text = format!(
        r#"[stack]
name = "retain"

[resources.role]
type = "aws_iam_role"
name = "RetainedRole"
assume_role_policy = {TRUST}
retain_on_delete = true

[resources.kept]
type = "aws_cloudwatch_log_group"
name = "KeptLogs"
tags = {{ team = "core" }}
retain_on_delete = true

[resources.gone]
type = "aws_cloudwatch_log_group"
name = "GoneLogs"
"#
    );
    let manifest = cli.write_file("retain.toml", &text);
    let m = manifest.to_str().unwrap();
    cli.run(&["-f", m, "apply", "--auto-approve"]).assert_success();
    let aws = aws(&moto).await;
    assert_eq!(log_group_tags(&aws, "KeptLogs").await["reconcile:stack"], "retain");

    // Removed from the manifest: forgotten, left in AWS without the ownership tags.
    let without = text[..text.find("[resources.kept]").unwrap()].to_string() + &text[text.find("[resources.gone]").unwrap()..];
    std::fs::write(&manifest, &without).unwrap();
    assert_eq!(changes(&plan_json(&cli, m)), vec![("kept".into(), "forget".into(), vec![])]);
    let plan = cli.run(&["-f", m, "plan"]);
    assert!(plan.stdout.contains("kept (aws_cloudwatch_log_group) [KeptLogs] will be forgotten (left in AWS, not deleted)"), "{plan}");
    assert!(plan.stdout.contains("0 to delete, 1 to forget (left in AWS)"), "{plan}");
    let out = cli.run(&["-f", m, "--json", "--stats", "apply", "--auto-approve"]);
    out.assert_success();
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(!writes(&doc).iter().any(|op| op.starts_with("Delete")), "{out}");
    let tags = log_group_tags(&aws, "KeptLogs").await;
    assert_eq!(tags, std::collections::HashMap::from([("team".to_string(), "core".to_string())]));
    cli.run(&["-f", m, "plan", "--detailed-exitcode"]).assert_status(0);

    // Destroy: the retained role is forgotten and untagged, the other log group deleted.
    let out = cli.run(&["-f", m, "destroy", "--auto-approve"]);
    out.assert_success();
    assert!(out.stdout.contains("Destroy complete: 2 done"), "{out}");
    assert!(log_group(&aws, "GoneLogs").await.is_none());
    assert!(aws.iam.get_role().role_name("RetainedRole").send().await.is_ok(), "the retained role is still there");
    assert!(role_tags(&aws, "RetainedRole").await.keys().all(|k| !k.starts_with("reconcile:")));
    let store = reconcile::state::Store::open(&cli.join("reconcile.db")).await.unwrap();
    assert!(store.load("retain").await.unwrap().resources.is_empty());
    store.close().await;

    // Untagged, it can be adopted again.
    std::fs::write(&manifest, &text).unwrap();
    cli.run(&["-f", m, "import", "kept", "KeptLogs"]).assert_success();
    cli.run(&["-f", m, "import", "role", "RetainedRole"]).assert_success();
}

#[tokio::test(flavor = "multi_thread")]
async fn stack_tags_reach_every_taggable_resource_under_its_own_tags() {
    let (moto, cli) = setup();
    let manifest = cli.write_file(
        "tagged.toml",
        &format!(
            r#"[stack]
name = "tagged"
tags = {{ env = "dev", team = "core" }}

[resources.role]
type = "aws_iam_role"
name = "TaggedRole"
assume_role_policy = {TRUST}
tags = {{ team = "api" }}

[resources.logs]
type = "aws_cloudwatch_log_group"
name = "TaggedLogs"

[resources.api]
type = "aws_api_gateway_rest_api"
name = "TaggedApi"
"#
        ),
    );
    let m = manifest.to_str().unwrap();
    let plan = cli.run(&["-f", m, "plan"]);
    assert!(plan.stdout.contains("\"env\": \"dev\""), "{plan}");
    cli.run(&["-f", m, "apply", "--auto-approve"]).assert_success();
    let aws = aws(&moto).await;
    let role = role_tags(&aws, "TaggedRole").await;
    assert_eq!((role["env"].as_str(), role["team"].as_str(), role["reconcile:resource"].as_str()), ("dev", "api", "role"));
    let logs = log_group_tags(&aws, "TaggedLogs").await;
    assert_eq!((logs["env"].as_str(), logs["team"].as_str(), logs["reconcile:stack"].as_str()), ("dev", "core", "tagged"));
    let id = api_id(&aws, "TaggedApi").await;
    let api = aws.apigw.get_rest_api().rest_api_id(&id).send().await.unwrap();
    let tags = api.tags().unwrap();
    assert_eq!((tags["env"].as_str(), tags["team"].as_str()), ("dev", "core"));
    cli.run(&["-f", m, "plan", "--detailed-exitcode"]).assert_status(0);

    // One line changes a tag everywhere.
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("env = \"dev\"", "env = \"prod\"")).unwrap();
    let mut got = changes(&plan_json(&cli, m));
    got.sort();
    assert_eq!(
        got,
        vec![
            ("api".into(), "update".into(), vec!["tags.env".into()]),
            ("logs".into(), "update".into(), vec!["tags.env".into()]),
            ("role".into(), "update".into(), vec!["tags.env".into()]),
        ]
    );
    // (Applying it needs `TagResource` on the REST API, which moto refuses: see README "Known emulator gaps".)
}
