//! One owner per physical resource (end to end): a manifest whose variables make two resources one
//! physical resource is refused before any AWS call.

#[allow(unused_imports)]
use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_with_prod_stage_dev_is_refused_at_plan_and_apply_with_no_aws_call() {
    let (moto, cli) = seeded();
    let proxy = support::FaultProxy::start(&moto.url, &[]);
    let through_proxy = [("AWS_ENDPOINT_URL", Some(proxy.url.as_str()))];
    let seed = std::fs::read_to_string(cli.join(SEED)).unwrap();
    // The prod stage's `stage_name = "${var.prod_stage}"` (the second stage of HelloApiGw).
    let line = seed.lines().position(|l| l == "stage_name = \"${var.prod_stage}\"").unwrap() + 1;
    let dev = seed.lines().position(|l| l == "[resources.dev_stage]").unwrap() + 1;
    for command in [&["plan"][..], &["apply", "--auto-approve"]] {
        let mut args = vec!["-f", SEED, "--var", "prod_stage=dev"];
        args.extend_from_slice(command);
        let out = cli.run_with_env(&args, &through_proxy);
        out.assert_status(1);
        let expected = format!(
            "{SEED}:{line}:14: error: `prod_stage`: aws_api_gateway_stage with rest_api_id = \"${{hello_api.id}}\", stage_name = \"dev\" \
             is the same resource in AWS as `dev_stage` ({SEED}:{dev}:12)"
        );
        assert!(out.stderr.starts_with(&expected), "{out}");
    }
    let stats = proxy.stats();
    assert_eq!(stats["requests"], 0, "refused before any AWS call: {stats}");
    assert!(aws(&moto).await.apigw.get_rest_apis().send().await.unwrap().items().is_empty(), "nothing was made");
    // The same stack with its own stage name plans.
    cli.run(&["-f", SEED, "--var", "prod_stage=live", "plan"]).assert_success();
}
