//! The state on PostgreSQL (end to end against moto and a private PostgreSQL server): apply, plan,
//! destroy; the stack pinned to its region; two processes on one stack; a holder killed with -9.

#[allow(unused_imports)]
use super::*;

use std::time::Duration;

use reconcile::state::Store;

/// `--state <url>` first, then the rest.
fn with_state<'a>(url: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["--state", url];
    all.extend_from_slice(args);
    all
}

async fn rest_apis_named(aws: &Aws, name: &str) -> usize {
    aws.apigw.get_rest_apis().send().await.unwrap().items().iter().filter(|a| a.name() == Some(name)).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_state_apply_plan_destroy_and_a_region_switch_is_refused_with_no_aws_write() {
    let (moto, cli) = seeded();
    let url = support::pg::fresh_database();
    cli.run(&with_state(&url, &["-f", SEED, "apply", "--auto-approve"])).assert_success();
    let aws = aws(&moto).await;
    assert!(aws.lambda.get_function().function_name("HelloLambdaTest").send().await.is_ok());
    assert!(!cli.join("reconcile.db").exists(), "no SQLite file next to a PostgreSQL state");
    // The state is in the database, pinned where it was applied.
    let store = Store::open(Path::new(&url)).await.unwrap();
    assert_eq!(store.load(STACK).await.unwrap().resources.len(), 17);
    assert_eq!(store.identity(STACK).await.unwrap().map(|i| i.region), Some("us-east-1".to_string()));
    store.close().await;
    cli.run(&with_state(&url, &["-f", SEED, "plan", "--detailed-exitcode"])).assert_status(0);
    // RECONCILE_STATE names it as well as --state.
    cli.run_with_env(&["-f", SEED, "plan", "--detailed-exitcode"], &[("RECONCILE_STATE", Some(&url))]).assert_status(0);

    // Another region: refused, and no AWS call but identifying the caller.
    let proxy = support::FaultProxy::start(&moto.url, &[]);
    let env = [("AWS_REGION", Some("eu-west-1")), ("AWS_ENDPOINT_URL", Some(proxy.url.as_str()))];
    for args in [vec!["plan"], vec!["apply", "--auto-approve"], vec!["destroy", "--auto-approve"]] {
        let mut all = with_state(&url, &["-f", SEED]);
        all.extend(args);
        let out = cli.run_with_env(&all, &env);
        out.assert_status(1);
        assert!(out.stderr.contains("refusing to read or change it"), "{out}");
    }
    let stats = proxy.stats();
    assert_eq!(stats["by_service"].as_object().unwrap().keys().collect::<Vec<_>>(), vec!["sts"], "{stats}");
    assert_eq!(stats["by_service"]["sts"]["requests"], 3, "{stats}");

    cli.run(&with_state(&url, &["-f", SEED, "destroy", "--auto-approve"])).assert_success();
    assert!(aws.lambda.get_function().function_name("HelloLambdaTest").send().await.is_err());
    let store = Store::open(Path::new(&url)).await.unwrap();
    assert!(store.load(STACK).await.unwrap().resources.is_empty());
    store.close().await;
}

/// One apply holds the stack (slowed by a proxy); a second is refused and told who holds it; the
/// first is killed with -9 mid-apply; the next apply gets the lock without force-unlock and
/// converges with nothing made twice.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_lock_names_the_holder_and_a_killed_holder_frees_the_stack_without_force_unlock() {
    let (moto, cli) = seeded();
    let url = support::pg::fresh_database();
    let slow = support::FaultProxy::start(&moto.url, &["--latency-ms", "400"]);
    let holder = cli.spawn_with_env(&with_state(&url, &["-f", SEED, "apply", "--auto-approve"]), &[("AWS_ENDPOINT_URL", Some(&slow.url))]);
    let rt = tokio::runtime::Handle::current();
    let probe = Store::open(Path::new(&url)).await.unwrap();
    // Wait until it holds the lock and has recorded a few resources (writes are under way).
    support::poll_until(
        Duration::from_secs(120),
        "the slowed apply to hold the lock and record resources",
        || {
            tokio::task::block_in_place(|| {
                rt.block_on(async {
                    let held = probe.lock_info(STACK).await.unwrap().is_some();
                    let recorded = probe.load(STACK).await.unwrap().resources.len();
                    (held && recorded >= 3).then_some(())
                })
            })
        },
        || holder.stderr(),
    );

    let second = cli.run(&with_state(&url, &["-f", SEED, "apply", "--auto-approve"]));
    second.assert_status(1);
    let named = format!("stack `{STACK}` is locked by apply (pid {} on ", holder.pid());
    assert!(second.stderr.contains(&named), "expected `{named}`:\n{second}");
    assert!(second.stderr.contains(") since ") && second.stderr.contains("no force-unlock needed"), "{second}");

    holder.signal("KILL");
    let killed = holder.wait(Duration::from_secs(10));
    assert_ne!(killed.status, 0, "{killed}");
    // No force-unlock: the server frees a dead session's lock; the next apply waits for it.
    let next = cli.run(&with_state(&url, &["-f", SEED, "apply", "--auto-approve", "--lock-timeout", "30s"]));
    next.assert_success();
    cli.run(&with_state(&url, &["-f", SEED, "plan", "--detailed-exitcode"])).assert_status(0);
    let aws = aws(&moto).await;
    assert_eq!(rest_apis_named(&aws, "ApiGwDemo").await, 1, "one REST API, not two");
    let functions = aws.lambda.list_functions().send().await.unwrap();
    assert_eq!(functions.functions().iter().filter(|f| f.function_name() == Some("HelloLambdaTest")).count(), 1);
    assert!(probe.pending_operations(STACK).await.unwrap().is_empty(), "the killed run's journal was reconciled");
    probe.close().await;
}

/// Drift history as `drift --all --json` lists it, ids left out (each state numbers its own rows).
fn drift_history(cli: &Cli, state: &str) -> Vec<Value> {
    let out = cli.run(&with_state(state, &["-f", SEED, "--json", "drift", "--all"]));
    out.assert_success();
    let mut events: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}:\n{out}"));
    let events = events.as_array_mut().unwrap_or_else(|| panic!("not a list:\n{out}"));
    for e in events.iter_mut() {
        e.as_object_mut().unwrap().remove("id");
    }
    events.clone()
}

/// SQLite → PostgreSQL → SQLite: every step's plan is empty, the drift history and the pin come along,
/// and a target that already has the stack is refused.
#[tokio::test(flavor = "multi_thread")]
async fn state_migrate_round_trips_sqlite_postgres_sqlite_with_empty_plans_and_drift_history() {
    use reconcile::manifest::Kind;
    use reconcile::state::Drift;
    let (_moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    // Drift history as watch records it: one drift resolved, one still open.
    {
        let store = Store::open(&cli.join("reconcile.db")).await.unwrap();
        let all: std::collections::BTreeSet<String> = ["hello_function".to_string()].into();
        let drift = |field: &str| Drift {
            resource: "hello_function".into(),
            kind: Kind::LambdaFunction,
            field: field.into(),
            expected: serde_json::json!(128),
            actual: serde_json::json!(256),
            ignored: false,
        };
        store.record_drift(STACK, &[drift("memory_size")], &all, &all).await.unwrap();
        store.record_drift(STACK, &[drift("timeout")], &all, &all).await.unwrap();
        store.close().await;
    }
    let sqlite = cli.join("reconcile.db").display().to_string();
    let history = drift_history(&cli, &sqlite);
    assert_eq!(history.len(), 2, "{history:?}");

    let url = support::pg::fresh_database();
    let out = cli.run(&["state", "migrate", "--to", &url]);
    out.assert_success();
    assert!(out.stdout.contains(&format!("Copied stack `{STACK}` to {url}: 17 resources")), "{out}");
    assert!(out.stdout.contains("pinned to account 123456789012 (aws) in us-east-1"), "{out}");
    cli.run(&with_state(&url, &["-f", SEED, "plan", "--detailed-exitcode"])).assert_status(0);
    assert_eq!(drift_history(&cli, &url), history);

    // Again into the same database: refused, nothing written.
    let again = cli.run(&["state", "migrate", "--to", &url]);
    again.assert_status(1);
    assert!(again.stderr.contains(&format!("already has stack `{STACK}`")), "{again}");

    let back = cli.join("back.db").display().to_string();
    let out = cli.run(&with_state(&url, &["state", "migrate", "--to", &back]));
    out.assert_success();
    assert!(out.stdout.contains("17 resources"), "{out}");
    cli.run(&with_state(&back, &["-f", SEED, "plan", "--detailed-exitcode"])).assert_status(0);
    assert_eq!(drift_history(&cli, &back), history);
    let store = Store::open(Path::new(&back)).await.unwrap();
    assert_eq!(store.identity(STACK).await.unwrap().map(|i| i.region), Some("us-east-1".to_string()));
    store.close().await;
}
