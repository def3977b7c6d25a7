//! A state that cannot vanish (issue 34): a full disk under a watcher, a state file deleted or
//! replaced under it, a leftover write-ahead log, a read-only state, "database is locked" (end to
//! end against moto). The disk and the read-only file system are small tmpfs mounts: these tests
//! need root (`mount -t tmpfs`), or else passwordless `sudo` for `mount` and `umount`.

#[allow(unused_imports)]
use super::*;

use std::path::{Path, PathBuf};
use std::time::Duration;

const STACK: &str = "apigw-lambda-basic";

/// `mount`/`umount` as root: directly when the tests run as root, else through `sudo -n`.
fn privileged(program: &str) -> std::process::Command {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        std::process::Command::new(program)
    } else {
        let mut c = std::process::Command::new("sudo");
        c.args(["-n", program]);
        c
    }
}

/// A tmpfs of `size` mounted at `dir` (created; writable by everyone, so by a test run as another
/// user than the one mounting), unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: PathBuf, size: &str) -> Tmpfs {
        std::fs::create_dir_all(&dir).unwrap();
        let status = privileged("mount").args(["-t", "tmpfs", "-o", &format!("size={size},mode=1777"), "tmpfs"]).arg(&dir).status();
        assert!(
            status.as_ref().is_ok_and(|s| s.success()),
            "`mount -t tmpfs` at {} failed ({status:?}): these tests need root (or passwordless sudo) to mount a small file system",
            dir.display()
        );
        Tmpfs(dir)
    }

    fn remount(&self, mode: &str) {
        let status = privileged("mount").args(["-o", &format!("remount,{mode}")]).arg(&self.0).status().unwrap();
        assert!(status.success(), "remount {mode} of {}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = privileged("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros into `path` until the file system is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // The last partial blocks too.
    while f.write(&[0u8; 512]).is_ok_and(|n| n > 0) {}
    let _ = f.sync_all();
}

async fn set_function_timeout(aws: &Aws, seconds: i32) {
    aws.lambda.update_function_configuration().function_name("HelloLambdaTest").timeout(seconds).send().await.unwrap();
}

fn timeout_events(cli: &Cli, state: &str) -> Vec<Value> {
    let out = cli.run(&["--state", state, "--json", "drift", "--all"]);
    out.assert_success();
    let all: Vec<Value> = serde_json::from_str::<Value>(&out.stdout).unwrap().as_array().unwrap().clone();
    all.into_iter().filter(|e| e["resource"] == "hello_function" && e["field"] == "timeout").collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_under_a_watcher_is_survived_and_once_freed_it_recovers_without_a_restart() {
    let (moto, cli) = seeded();
    let disk = Tmpfs::mount(cli.join("small"), "3m");
    let state = "small/state.db";
    cli.run(&["-f", SEED, "--state", state, "apply", "--auto-approve"]).assert_success();
    let aws = aws(&moto).await;
    let (mut w, port) = spawn_watch(&cli, &["-f", SEED, "--state", state, "--lease-ttl", "4s", "--lease-renew", "1s"], &[]);
    support::poll_until(WATCH_DEADLINE, "/readyz to answer 200", || (http_get(port, "/readyz").0 == 200).then_some(()), || w.stderr());

    // The disk fills up; drift appears that the watcher must record.
    fill(&disk.0.join("filler"));
    set_function_timeout(&aws, 25).await;
    support::poll_until(
        WATCH_DEADLINE,
        "a pass that cannot record the drift for want of space",
        || {
            log_lines(&w.stderr(), "pass failed")
                .iter()
                .any(|l| l["error"].as_str().is_some_and(|e| e.contains("database or disk is full")))
                .then_some(())
        },
        || w.stderr(),
    );
    w.assert_running();

    // Space again: the same process records the drift (as first seen while the disk was full), and an
    // apply goes through beside it.
    let freed_at = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    std::fs::remove_file(disk.0.join("filler")).unwrap();
    let events = support::poll_until(
        WATCH_DEADLINE,
        "the drift to be recorded once the disk has space",
        || Some(timeout_events(&cli, state)).filter(|e| !e.is_empty()),
        || w.stderr(),
    );
    let first_seen = events[0]["first_seen"].as_str().unwrap();
    assert!(first_seen < freed_at.as_str(), "first seen while the disk was full, not when it could be written: {first_seen} vs {freed_at}");
    assert_eq!(events[0]["actual"], 25, "{events:#?}");
    cli.run(&["-f", SEED, "--state", state, "apply", "--auto-approve"]).assert_success();
    support::poll_until(
        WATCH_DEADLINE,
        "the drift to resolve",
        || timeout_events(&cli, state).iter().all(|e| e["resolved_at"].is_string()).then_some(()),
        || w.stderr(),
    );
    cli.run(&["-f", SEED, "--state", state, "plan", "--detailed-exitcode"]).assert_status(0);
    // Every connection of the watcher is usable again: passes go on with no state error (a connection
    // handed back to the pool mid-transaction fails every later write it is given).
    let before = w.stderr().len();
    wait_passes(&mut w, port, 4.0);
    let later = w.stderr()[before..].to_string();
    assert!(!later.contains("transaction depth") && log_lines(&later, "pass failed").is_empty(), "{later}");
    w.signal("TERM");
    let out = w.wait(WATCH_DEADLINE);
    out.assert_success();
    drop(disk);
}

/// The state file deleted under a running watcher: reported (log, `/readyz`), the watcher stops with
/// the error, nothing more is written into the deleted file, and the next command at that path is
/// refused beside its leftover write-ahead log rather than build a new (corrupt) state there. Put
/// back, it is whole; replaced by another file, the watcher says so and stops too.
#[tokio::test(flavor = "multi_thread")]
async fn a_state_file_deleted_or_replaced_under_a_watcher_is_reported_and_never_written_again() {
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let aws = aws(&moto).await;
    let db = cli.join("reconcile.db");
    let copy = cli.join("copy.db");
    std::fs::copy(&db, &copy).unwrap();
    let (w, port) = spawn_watch(&cli, &["-f", SEED, "--lease-ttl", "4s", "--lease-renew", "1s"], &[]);
    support::poll_until(WATCH_DEADLINE, "/readyz to answer 200", || (http_get(port, "/readyz").0 == 200).then_some(()), || w.stderr());

    // Deleted (a hard link keeps the file itself, to look into afterwards); then drift it would record.
    let kept = cli.join("kept.db");
    std::fs::hard_link(&db, &kept).unwrap();
    std::fs::remove_file(&db).unwrap();
    set_function_timeout(&aws, 25).await;
    let out = w.wait(WATCH_DEADLINE);
    assert_eq!(out.status, 1, "the watcher stops with the error:\n{out}");
    let said = "state file reconcile.db is no longer the file this process opened: it was deleted or moved away";
    assert!(out.stderr.contains(said), "{out}");
    assert!(
        log_lines(&out.stderr, "the state file is gone from under this watcher: stopping every stack (nothing more is written)").len() == 1,
        "{out}"
    );

    // The next command at that path: refused, naming the write-ahead log left beside it.
    let plan = cli.run(&["-f", SEED, "plan"]);
    plan.assert_status(1);
    assert!(plan.stderr.contains("refusing to create a new state file reconcile.db: reconcile.db-wal"), "{plan}");
    assert!(!db.exists(), "no new state file beside the old log");
    // Put back: whole, and without the drift the watcher saw after the deletion.
    std::fs::rename(&kept, &db).unwrap();
    assert!(timeout_events(&cli, "reconcile.db").is_empty(), "nothing was written into the deleted file");
    let plan = cli.run(&["-f", SEED, "--json", "plan"]);
    plan.assert_status(0);
    assert!(plan.stdout.contains("\"timeout\""), "the state is whole and sees the drift: {plan}");
    set_function_timeout(&aws, 10).await;

    // Replaced by another file (a copy renamed over it).
    let (w, port) = spawn_watch(&cli, &["-f", SEED, "--lease-ttl", "4s", "--lease-renew", "1s"], &[]);
    support::poll_until(WATCH_DEADLINE, "/readyz to answer 200", || (http_get(port, "/readyz").0 == 200).then_some(()), || w.stderr());
    std::fs::rename(&copy, &db).unwrap();
    // While its passes end, /readyz says why (the watcher then stops: it may be gone before a look).
    let mut said = None;
    support::poll_until(
        WATCH_DEADLINE,
        "/readyz to say why, or the watcher to stop",
        || match support::http_request(port, "GET", "/readyz", "") {
            Ok((503, body)) if body.contains("replaced by another file") => {
                said = Some(body);
                Some(())
            }
            Ok(_) => None,
            Err(_) => Some(()),
        },
        || w.stderr(),
    );
    if let Some(body) = said {
        assert!(body.contains(&format!("refused: {STACK}: state file reconcile.db is no longer the file")), "{body}");
    }
    let out = w.wait(WATCH_DEADLINE);
    assert_eq!(out.status, 1, "{out}");
    assert!(out.stderr.contains("it was replaced by another file"), "{out}");
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_state_is_refused_at_start_naming_it() {
    let (_moto, cli) = seeded();
    let ro = Tmpfs::mount(cli.join("ro"), "8m");
    let state = "ro/state.db";
    cli.run(&["-f", SEED, "--state", state, "apply", "--auto-approve"]).assert_success();
    ro.remount("ro");
    let out = cli.run(&["-f", SEED, "--state", state, "watch", "--interval", "1s", "--listen", "127.0.0.1:0"]);
    out.assert_status(1);
    assert!(out.stderr.contains(&format!("state file {state} is read-only here")), "{out}");
    assert!(out.stderr.contains("not writable by this process"), "{out}");
    assert!(!out.stdout.contains("listening on"), "it never started: {out}");
    ro.remount("rw");
    cli.run(&["-f", SEED, "--state", state, "plan", "--detailed-exitcode"]).assert_status(0);
}

/// The file's write lock held past the busy timeout by something else: the error names the holders
/// the state records, and what to do.
#[tokio::test(flavor = "multi_thread")]
async fn database_is_locked_names_the_holders_the_state_records() {
    use reconcile::state::Store;
    let (_moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let db = cli.join("reconcile.db");
    let store = Store::open(&db).await.unwrap();
    let held = store.lock("other-stack", "apply", Duration::ZERO).await.unwrap();
    let blocker = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(&db))
        .await
        .unwrap();
    let mut writer = blocker.begin_with("BEGIN IMMEDIATE").await.unwrap();
    sqlx::query("UPDATE stacks SET serial = serial").execute(&mut *writer).await.unwrap();

    let out = cli.run(&["-f", SEED, "apply", "--auto-approve"]);
    out.assert_status(1);
    let holder = format!("stack `other-stack` is locked by apply (pid {} on {}, running) since {}", held.pid, held.host, held.acquired_at);
    assert!(out.stderr.contains(&holder), "{out}");
    assert!(out.stderr.contains("state file reconcile.db is locked"), "{out}");
    assert!(out.stderr.contains("database is locked") && out.stderr.contains("fuser -v"), "{out}");

    writer.rollback().await.unwrap();
    blocker.close().await;
    store.unlock("other-stack", &held.id).await.unwrap();
    store.close().await;
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);
}
