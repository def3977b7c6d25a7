//! Several `reconcile watch` processes on one state file share the stacks (end to end against moto).

#[allow(unused_imports)]
use super::*;

use std::collections::BTreeMap;

use reconcile::state::Store;
use reconcile::state::lease::{Lease, now_ms};

/// A deadline for a takeover: far beyond the bound (TTL 5 s + renew 1 s here).
const TAKEOVER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// A one-resource stack: a log group with a 7-day retention.
fn small_stack(name: &str, retention: u32) -> String {
    format!(
        "[stack]\nname = \"{name}\"\n\n[resources.logs]\ntype = \"aws_cloudwatch_log_group\"\nname = \"{name}-logs\"\nretention_in_days = {retention}\n"
    )
}

/// Every lease in the state file.
async fn leases(cli: &Cli) -> Vec<Lease> {
    let store = Store::open(&cli.join("reconcile.db")).await.unwrap();
    let all = store.leases().await.unwrap();
    store.close().await;
    all
}

/// The pid in a holder id (`host:pid:random`).
fn holder_pid(l: &Lease) -> u32 {
    l.holder.rsplit(':').nth(1).unwrap().parse().unwrap()
}

/// The host in a holder id (`host:pid:random`).
fn holder_host(l: &Lease) -> String {
    l.holder.rsplitn(3, ':').nth(2).unwrap().to_string()
}

/// The stacks a watcher says it holds (`reconcile_watch_lease_held` 1) and its takeovers, from /metrics.
fn held_by(port: u16) -> (Vec<String>, f64) {
    let body = http_get(port, "/metrics").1;
    let mut held = Vec::new();
    let mut takeovers = 0.0;
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("reconcile_watch_lease_held{stack=\"") {
            let (stack, value) = rest.split_once("\"} ").unwrap();
            if value.trim() == "1" {
                held.push(stack.to_string());
            }
        } else if line.starts_with("reconcile_watch_lease_takeovers_total{") {
            takeovers += line.rsplit(' ').next().unwrap().parse::<f64>().unwrap();
        }
    }
    held.sort();
    (held, takeovers)
}

/// AWS calls to `operation` a watcher made, from /metrics.
fn calls(port: u16, operation: &str) -> f64 {
    let body = http_get(port, "/metrics").1;
    let needle = format!("operation=\"{operation}\"}} ");
    body.lines()
        .filter(|l| l.starts_with("reconcile_aws_calls_total{"))
        .filter_map(|l| l.split_once(&needle))
        .map(|(_, v)| v.trim().parse::<f64>().unwrap())
        .sum()
}

/// Stack → holder pid, once every stack has a live lease held by one of `pids` and each watcher's
/// /metrics says the same (every stack held by exactly one of them).
async fn settled(cli: &Cli, watchers: &[(u32, u16)], stacks: &[String]) -> Option<BTreeMap<String, u32>> {
    let now = now_ms();
    let table: BTreeMap<String, u32> =
        leases(cli).await.iter().filter(|l| l.live_at(now)).map(|l| (l.stack.clone(), holder_pid(l))).collect();
    if table.keys().cloned().collect::<Vec<_>>() != stacks || !table.values().all(|p| watchers.iter().any(|(pid, _)| pid == p)) {
        return None;
    }
    let mut seen: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (pid, port) in watchers {
        for s in held_by(*port).0 {
            seen.entry(s).or_default().push(*pid);
        }
    }
    stacks.iter().all(|s| seen.get(s).is_some_and(|holders| holders == &vec![table[s]])).then_some(table)
}

#[tokio::test(flavor = "multi_thread")]
async fn three_watchers_share_five_stacks_and_take_over_a_killed_one_remediating_once() {
    let (moto, cli) = setup();
    let stacks: Vec<String> = (1..=5).map(|i| format!("shared-{i}")).collect();
    for s in &stacks {
        let file = format!("stacks/{s}.toml");
        cli.write_file(&file, &small_stack(s, 7));
        cli.run(&["-f", &file, "apply", "--auto-approve"]).assert_success();
    }
    let aws = aws(&moto).await;
    let args = ["stacks", "--remediate", "--lease-ttl", "5s", "--lease-renew", "1s"];
    let mut watchers: Vec<(support::Daemon, u16)> = (0..3).map(|_| spawn_watch(&cli, &args, &[])).collect();
    let ids = |ws: &[(support::Daemon, u16)]| ws.iter().map(|(d, p)| (d.pid(), *p)).collect::<Vec<_>>();
    let stderr = |ws: &[(support::Daemon, u16)]| ws.iter().map(|(d, _)| d.stderr()).collect::<Vec<_>>().join("\n---\n");

    // Every stack held by exactly one watcher, as the lease table and each /metrics say; every
    // watcher is ready, a standby holding nothing included.
    let rt = tokio::runtime::Handle::current();
    let all = ids(&watchers);
    let holders = support::poll_until(
        TAKEOVER_DEADLINE,
        "every stack held by exactly one watcher",
        || tokio::task::block_in_place(|| rt.block_on(settled(&cli, &all, &stacks))),
        || stderr(&watchers),
    );
    for (w, port) in &mut watchers {
        support::poll_until(WATCH_DEADLINE, "/readyz to answer 200", || (http_get(*port, "/readyz").0 == 200).then_some(()), || w.stderr());
    }
    assert!(leases(&cli).await.iter().all(|l| l.generation == 1), "no takeover while all run: {:?}", leases(&cli).await);

    // kill -9 the watcher holding the most stacks.
    let victim_pid = *holders.values().max_by_key(|p| holders.values().filter(|q| q == p).count()).unwrap();
    let taken: Vec<String> = holders.iter().filter(|(_, p)| **p == victim_pid).map(|(s, _)| s.clone()).collect();
    let at = watchers.iter().position(|(d, _)| d.pid() == victim_pid).unwrap();
    let (victim, _) = watchers.remove(at);
    victim.signal("KILL");
    let _ = victim.wait(WATCH_DEADLINE);

    // Its stacks are taken over by the others (a new generation each); the rest stay where they were.
    let survivors = ids(&watchers);
    let after = support::poll_until(
        TAKEOVER_DEADLINE,
        "the killed watcher's stacks to be taken over",
        || tokio::task::block_in_place(|| rt.block_on(settled(&cli, &survivors, &stacks))),
        || stderr(&watchers),
    );
    let table = leases(&cli).await;
    for l in &table {
        if taken.contains(&l.stack) {
            assert_eq!(l.generation, 2, "{l:?}");
        } else {
            assert_eq!((l.generation, holder_pid(l)), (1, holders[&l.stack]), "{l:?}");
        }
    }
    assert!(after.values().all(|p| *p != victim_pid));
    let takeovers: f64 = watchers.iter().map(|(_, port)| held_by(*port).1).sum();
    assert_eq!(takeovers, taken.len() as f64, "{}", stderr(&watchers));

    // Drift made after the kill on a stack that changed hands: found and repaired exactly once, also
    // when the killed watcher died holding that stack's lock in a remediation (made up here: the
    // lock row such a death leaves, with its host and pid).
    let target = &taken[0];
    let group = format!("{target}-logs");
    // Every watcher here runs on this host.
    let victim_host = holder_host(&table[0]);
    {
        use sqlx::ConnectOptions;
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new().filename(cli.join("reconcile.db")).connect().await.unwrap();
        sqlx::query("INSERT INTO locks (stack, id, operation, pid, host) VALUES (?, 'left-by-the-dead', 'watch --remediate', ?, ?)")
            .bind(target)
            .bind(i64::from(victim_pid))
            .bind(&victim_host)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    aws.logs.put_retention_policy().log_group_name(&group).retention_in_days(30).send().await.unwrap();
    let repaired =
        || drift_events(&cli, true).into_iter().filter(|e| e["stack"] == target.as_str() && e["resource"] == "logs").collect::<Vec<_>>();
    support::poll_until(
        TAKEOVER_DEADLINE,
        "the drift to be remediated",
        || repaired().iter().any(|e| e["how"] == "remediated").then_some(()),
        || stderr(&watchers),
    );
    // A few more passes (about two of each stack), then count.
    let passes = || watchers.iter().map(|(_, p)| all_passes(*p)).sum::<f64>();
    let enough = passes() + 10.0;
    support::poll_until(WATCH_DEADLINE, "more passes", || (passes() >= enough).then_some(()), || stderr(&watchers));
    let events = repaired();
    assert_eq!(events.len(), 1, "one event, remediated: {events:#?}");
    assert_eq!((events[0]["field"].as_str(), events[0]["how"].as_str()), (Some("retention_in_days"), Some("remediated")));
    let writes: f64 = watchers.iter().map(|(_, p)| calls(*p, "PutRetentionPolicy")).sum();
    assert_eq!(writes, 1.0, "one repairing call in all:\n{}", stderr(&watchers));
    let logs = stderr(&watchers);
    let remediated: Vec<Value> = log_lines(&logs, "drift remediated").into_iter().filter(|l| l["stack"] == target.as_str()).collect();
    assert_eq!(remediated.len(), 1, "{logs}");
    let broke = "broke the stack lock a remediation of the stack's previous watcher left (that watcher no longer holds the stack)";
    let broken: Vec<Value> = log_lines(&logs, broke).into_iter().filter(|l| l["stack"] == target.as_str()).collect();
    assert_eq!(broken.len(), 1, "{logs}");
    assert_eq!(broken[0]["pid"].as_u64(), Some(u64::from(victim_pid)));
    assert_eq!(log_group(&aws, &group).await.unwrap().retention_in_days(), Some(7));
    // Only the holder watched it: one watcher's passes of that stack since the takeover.
    let passers: Vec<u32> = watchers
        .iter()
        .filter(|(d, _)| log_lines(&d.stderr(), "pass finished").iter().any(|l| l["stack"] == target.as_str()))
        .map(|(d, _)| d.pid())
        .collect();
    assert_eq!(passers, vec![after[target]], "{logs}");

    // Stopped cleanly, the survivors release their leases and leave no lock.
    for (w, _) in watchers {
        w.signal("TERM");
        w.wait(WATCH_DEADLINE).assert_success();
    }
    let now = now_ms();
    let end = leases(&cli).await;
    assert!(end.iter().all(|l| !l.live_at(now)), "released: {end:?}");
    let store = Store::open(&cli.join("reconcile.db")).await.unwrap();
    for s in &stacks {
        assert!(store.lock_info(s).await.unwrap().is_none(), "a lock was left on {s}");
    }
    store.close().await;
    for s in &stacks {
        cli.run(&["-f", &format!("stacks/{s}.toml"), "plan", "--detailed-exitcode"]).assert_status(0);
    }
}

/// Passes of every stack a watcher finished, from /metrics.
fn all_passes(port: u16) -> f64 {
    let body = http_get(port, "/metrics").1;
    body.lines().filter(|l| l.starts_with("reconcile_passes_total{")).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_holders_manifest_is_used_a_different_copy_is_logged_once_and_a_stopped_holder_hands_over_at_once() {
    let (moto, cli) = setup();
    cli.write_file("a/stack.toml", &small_stack("shared", 7));
    cli.write_file("b/stack.toml", &small_stack("shared", 14));
    cli.run(&["-f", "a/stack.toml", "apply", "--auto-approve"]).assert_success();
    let aws = aws(&moto).await;
    // Long leases: only a release can hand the stack over within this test.
    let args = |dir: &'static str| ["--remediate", "--lease-ttl", "1h", "--lease-renew", "1s", dir];
    let (mut a, a_port) = spawn_watch(&cli, &args("a"), &[]);
    support::poll_until(WATCH_DEADLINE, "a to hold the stack", || (held_by(a_port).0 == ["shared"]).then_some(()), || a.stderr());
    support::poll_until(WATCH_DEADLINE, "a to be ready", || (http_get(a_port, "/readyz").0 == 200).then_some(()), || a.stderr());
    let (mut b, b_port) = spawn_watch(&cli, &args("b"), &[]);
    support::poll_until(
        WATCH_DEADLINE,
        "b, a standby, to be ready",
        || (http_get(b_port, "/readyz").0 == 200).then_some(()),
        || b.stderr(),
    );
    let told = "this watcher's manifest of the stack differs from the one its holder uses; the holder's version is used";
    support::poll_until(
        WATCH_DEADLINE,
        "b to log the difference",
        || (!log_lines(&b.stderr(), told).is_empty()).then_some(()),
        || b.stderr(),
    );
    // Several lease ticks and passes later: said once; the holder's retention (7) stays.
    wait_all_passes(&mut a, a_port, 4.0);
    assert_eq!(log_lines(&b.stderr(), told).len(), 1, "{}", b.stderr());
    assert_eq!(held_by(b_port).0, Vec::<String>::new());
    assert!(log_lines(&b.stderr(), "pass finished").is_empty(), "a standby runs no pass:\n{}", b.stderr());
    assert_eq!(log_group(&aws, "shared-logs").await.unwrap().retention_in_days(), Some(7));

    // The holder stops: it releases the lease and b takes the stack at its next tick (not after the
    // hour-long TTL), then watches it with its own manifest.
    a.signal("TERM");
    let out = a.wait(WATCH_DEADLINE);
    out.assert_success();
    assert!(!log_lines(&out.stderr, "released the stack's lease").is_empty(), "{out}");
    support::poll_until(
        WATCH_DEADLINE,
        "b to take the stack over",
        || (held_by(b_port) == (vec!["shared".to_string()], 1.0)).then_some(()),
        || b.stderr(),
    );
    support::poll_until(
        WATCH_DEADLINE,
        "b to remediate to its manifest",
        || {
            let rt = tokio::runtime::Handle::current();
            let g = tokio::task::block_in_place(|| rt.block_on(log_group(&aws, "shared-logs")));
            (g.unwrap().retention_in_days() == Some(14)).then_some(())
        },
        || b.stderr(),
    );
    b.assert_running();
    b.signal("TERM");
    b.wait(WATCH_DEADLINE).assert_success();
}

fn wait_all_passes(w: &mut support::Daemon, port: u16, n: f64) {
    let target = all_passes(port) + n;
    support::poll_until(WATCH_DEADLINE, &format!("{n} more passes"), || (all_passes(port) >= target).then_some(()), || w.stderr());
}

/// Every lease in a state given by path or URL.
async fn leases_at(state: &str) -> Vec<Lease> {
    let store = Store::open(Path::new(state)).await.unwrap();
    let all = store.leases().await.unwrap();
    store.close().await;
    all
}

/// The same sharing with the state on PostgreSQL (the watchers could be on different hosts): two
/// watchers on three stacks, each stack held by one; the one holding stacks is killed with -9; the
/// other takes them over and repairs drift made after the kill exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn watchers_on_a_postgresql_state_share_the_stacks_and_take_over_a_killed_one() {
    let (moto, cli) = setup();
    let url = support::pg::fresh_database();
    let stacks: Vec<String> = (1..=3).map(|i| format!("pgshared-{i}")).collect();
    for s in &stacks {
        let file = format!("stacks/{s}.toml");
        cli.write_file(&file, &small_stack(s, 7));
        cli.run(&["--state", &url, "-f", &file, "apply", "--auto-approve"]).assert_success();
    }
    assert!(!cli.join("reconcile.db").exists(), "the state is in PostgreSQL");
    let aws = aws(&moto).await;
    let args = ["--state", url.as_str(), "stacks", "--remediate", "--lease-ttl", "5s", "--lease-renew", "1s"];
    let mut watchers: Vec<(support::Daemon, u16)> = (0..2).map(|_| spawn_watch(&cli, &args, &[])).collect();
    let stderr = |ws: &[(support::Daemon, u16)]| ws.iter().map(|(d, _)| d.stderr()).collect::<Vec<_>>().join("\n---\n");
    let rt = tokio::runtime::Handle::current();
    // Each stack held by exactly one of them, as the lease table and /metrics agree.
    let settled_pg = |ws: &[(support::Daemon, u16)]| {
        let now = now_ms();
        let table: BTreeMap<String, u32> = tokio::task::block_in_place(|| rt.block_on(leases_at(&url)))
            .iter()
            .filter(|l| l.live_at(now))
            .map(|l| (l.stack.clone(), holder_pid(l)))
            .collect();
        let mut seen: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (d, port) in ws {
            for s in held_by(*port).0 {
                seen.entry(s).or_default().push(d.pid());
            }
        }
        (table.keys().cloned().collect::<Vec<_>>() == stacks
            && stacks.iter().all(|s| seen.get(s).is_some_and(|h| h == &vec![table[s]]) && ws.iter().any(|(d, _)| d.pid() == table[s])))
        .then_some(table)
    };
    let holders =
        support::poll_until(TAKEOVER_DEADLINE, "every stack held by exactly one watcher", || settled_pg(&watchers), || stderr(&watchers));
    let victim_pid = *holders.values().next().unwrap();
    let taken: Vec<String> = holders.iter().filter(|(_, p)| **p == victim_pid).map(|(s, _)| s.clone()).collect();
    let at = watchers.iter().position(|(d, _)| d.pid() == victim_pid).unwrap();
    let (victim, _) = watchers.remove(at);
    victim.signal("KILL");
    let _ = victim.wait(WATCH_DEADLINE);
    let after = support::poll_until(
        TAKEOVER_DEADLINE,
        "the killed watcher's stacks to be taken over",
        || settled_pg(&watchers),
        || stderr(&watchers),
    );
    let survivor = watchers[0].0.pid();
    assert!(after.values().all(|p| *p == survivor), "{after:?}");
    for l in leases_at(&url).await {
        assert_eq!(l.generation, if taken.contains(&l.stack) { 2 } else { 1 }, "{l:?}");
    }
    assert_eq!(held_by(watchers[0].1).1, taken.len() as f64, "takeovers counted");

    // Drift after the kill, on a stack that changed hands: repaired once.
    let target = &taken[0];
    let group = format!("{target}-logs");
    aws.logs.put_retention_policy().log_group_name(&group).retention_in_days(30).send().await.unwrap();
    let before = calls(watchers[0].1, "PutRetentionPolicy");
    support::poll_until(
        TAKEOVER_DEADLINE,
        "the drift to be remediated",
        || (calls(watchers[0].1, "PutRetentionPolicy") > before).then_some(()),
        || stderr(&watchers),
    );
    let enough = all_passes(watchers[0].1) + 6.0;
    support::poll_until(WATCH_DEADLINE, "more passes", || (all_passes(watchers[0].1) >= enough).then_some(()), || stderr(&watchers));
    assert_eq!(calls(watchers[0].1, "PutRetentionPolicy") - before, 1.0, "one repairing call:\n{}", stderr(&watchers));
    assert_eq!(log_group(&aws, &group).await.unwrap().retention_in_days(), Some(7));
    for (w, _) in watchers {
        w.signal("TERM");
        w.wait(WATCH_DEADLINE).assert_success();
    }
    for s in &stacks {
        cli.run(&["--state", &url, "-f", &format!("stacks/{s}.toml"), "plan", "--detailed-exitcode"]).assert_status(0);
    }
}

/// A watcher's share of the API budget and how many watchers split it, from /metrics.
fn share_of(port: u16) -> (Option<f64>, Option<f64>) {
    let body = http_get(port, "/metrics").1;
    (sample(&body, "reconcile_api_share{service=\"apigateway\"}"), sample(&body, "reconcile_api_share_watchers"))
}

/// Watchers on one state split watch's share of the account's API budget (0.5 unless `--api-share`
/// says otherwise) evenly among the live ones, so two of them together still leave an apply its half;
/// when one stops (releasing its stacks), the other takes the whole share back.
#[tokio::test(flavor = "multi_thread")]
async fn watchers_on_one_state_split_the_api_share_and_the_last_one_takes_it_back() {
    let (_moto, cli) = setup();
    let files: Vec<String> = ["split-a", "split-b"]
        .iter()
        .map(|s| {
            let file = format!("split/{s}.toml");
            cli.write_file(&file, &small_stack(s, 7));
            cli.run(&["-f", &file, "apply", "--auto-approve"]).assert_success();
            file
        })
        .collect();
    // Paced, as outside the tests (the share is the pacer's).
    let paced = [("RECONCILE_PACING", None)];
    let (a, port_a) = spawn_watch(&cli, &[&files[0], "--lease-ttl", "5s", "--lease-renew", "1s"], &paced);
    support::poll_until(
        WATCH_DEADLINE,
        "the first watcher alone to keep the whole share",
        || (share_of(port_a) == (Some(0.5), Some(1.0))).then_some(()),
        || a.stderr(),
    );

    let (b, port_b) = spawn_watch(&cli, &[&files[1], "--lease-ttl", "5s", "--lease-renew", "1s"], &paced);
    for port in [port_a, port_b] {
        support::poll_until(
            TAKEOVER_DEADLINE,
            "both watchers to split the share",
            || (share_of(port) == (Some(0.25), Some(2.0))).then_some(()),
            || format!("{}\n---\n{}", a.stderr(), b.stderr()),
        );
    }
    let (_, metrics) = http_get(port_b, "/metrics");
    let allowed = sample(&metrics, "reconcile_api_rate_limit_per_second{service=\"apigateway\"}").unwrap();
    assert!(allowed > 2.0 && allowed <= 2.5, "a quarter of API Gateway's 10 per second (less the margin): {allowed}");

    b.signal("TERM");
    b.wait(WATCH_DEADLINE).assert_success();
    support::poll_until(
        TAKEOVER_DEADLINE,
        "the last watcher to take the whole share back",
        || (share_of(port_a) == (Some(0.5), Some(1.0))).then_some(()),
        || a.stderr(),
    );
    assert!(
        log_lines(
            &a.stderr(),
            "2 watcher(s) live on this state database split the watch API share: this one now uses 0.25 of the account's limits"
        )
        .len()
            == 1,
        "{}",
        a.stderr()
    );
    a.signal("TERM");
    a.wait(WATCH_DEADLINE).assert_success();
}
