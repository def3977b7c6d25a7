//! A private PostgreSQL server for the tests that put the state on PostgreSQL: started once per test
//! binary on 127.0.0.1 and a free port, from the Debian `postgresql` package's server binaries
//! (`/usr/lib/postgresql/<version>/bin`, not on `PATH`), in a temporary folder; each test gets a
//! database of its own. The server stops when the test binary exits (a watcher shell stops it when
//! its stdin, held by this process, closes) and its folder is removed.
//!
//! `PG_TEST_URL` (a server URL such as `postgres://user:pass@127.0.0.1:5432/postgres`) uses a server
//! already running instead; each test still gets a new database on it.
//!
//! Used by the end-to-end tests (tests/support) and by the state store's unit tests (`#[path]`).
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A running server: its base URL (no database name) and, when started here, the watcher that
/// stops it.
pub struct PgServer {
    /// `postgres://reconcile@127.0.0.1:PORT` (no trailing slash, no database).
    pub base: String,
    psql: Option<PathBuf>,
    /// The watcher's stdin: dropped (at exit), it stops the server.
    _keeper: Option<std::sync::Mutex<std::process::ChildStdin>>,
    /// The watcher itself (it outlives this process only as long as it takes to stop the server).
    _watcher: Option<std::sync::Mutex<std::process::Child>>,
}

/// The server for this test binary, started on first use.
pub fn server() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(|| match std::env::var("PG_TEST_URL") {
        Ok(url) if !url.is_empty() => {
            // Keep scheme, credentials and host; the database part is ours to choose.
            let base = match url.rfind('/') {
                Some(i) if i > "postgres://".len() => url[..i].to_string(),
                _ => url,
            };
            PgServer { base, psql: None, _keeper: None, _watcher: None }
        }
        _ => start(),
    })
}

/// A new, empty database on the test server; its URL.
pub fn fresh_database() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let s = server();
    let name = format!("t{}_{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
    s.sql("postgres", &format!("CREATE DATABASE {name}"));
    format!("{}/{name}", s.base)
}

impl PgServer {
    /// Runs one SQL command on `database` with psql (panics on failure: tests only).
    pub fn sql(&self, database: &str, sql: &str) -> String {
        let psql = self.psql.clone().unwrap_or_else(|| bin_dir().map(|d| d.join("psql")).unwrap_or_else(|| "psql".into()));
        let out = Command::new(psql)
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d", &format!("{}/{database}", self.base), "-c", sql])
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql `{sql}` failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// The newest installed server's binaries.
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, p): &(u32, PathBuf)| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// `cmd args...`, as the `postgres` user when this process is root (initdb and postgres refuse root).
fn as_server_user(bin: &Path, args: &[&str]) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin).args(args);
        c
    } else {
        let mut c = Command::new(bin);
        c.args(args);
        c
    }
}

fn start() -> PgServer {
    let bin = bin_dir().expect(
        "PostgreSQL server binaries not found under /usr/lib/postgresql/<version>/bin: install the `postgresql` package \
         (.ci/run does), or set PG_TEST_URL to a server the tests may create databases on",
    );
    let dir = std::env::temp_dir().join(format!("reconcile-pg-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).expect("create the server folder");
    let data = dir.join("data");
    if is_root() {
        let ok = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status().map(|s| s.success()).unwrap_or(false);
        assert!(ok, "chown {} to postgres failed", dir.display());
    }
    let data_s = data.to_string_lossy().into_owned();
    let out = as_server_user(&bin.join("initdb"), &["-D", &data_s, "-U", "reconcile", "-A", "trust", "-E", "UTF8", "--no-sync"])
        .output()
        .expect("run initdb");
    assert!(out.status.success(), "initdb failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let port = free_port();
    let log = dir.join("server.log");
    // The watcher: starts the server, then waits for its stdin to close (this process exited, or
    // dropped it) and stops the server fast and removes the folder.
    let postgres = bin.join("postgres");
    let pg_ctl = bin.join("pg_ctl");
    let run_as = if is_root() { "runuser -u postgres --" } else { "" };
    let script = format!(
        "{run_as} '{postgres}' -D '{data}' -p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{dir}' \
           -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 >'{log}' 2>&1 &\n\
         cat >/dev/null\n\
         {run_as} '{pg_ctl}' -D '{data}' -m immediate -w stop >/dev/null 2>&1\n\
         rm -rf '{dir}'\n",
        postgres = postgres.display(),
        pg_ctl = pg_ctl.display(),
        data = data.display(),
        dir = dir.display(),
        log = log.display(),
    );
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the PostgreSQL watcher");
    let stdin = child.stdin.take().expect("watcher stdin");
    let base = format!("postgres://reconcile@127.0.0.1:{port}");
    let server = PgServer {
        base,
        psql: Some(bin.join("psql")),
        _keeper: Some(std::sync::Mutex::new(stdin)),
        _watcher: Some(std::sync::Mutex::new(child)),
    };
    let pg_isready = bin.join("pg_isready");
    let start = Instant::now();
    loop {
        let ready = Command::new(&pg_isready)
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", "reconcile", "-d", "postgres"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ready {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "PostgreSQL did not start on port {port}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::io::stderr().write_all(format!("test PostgreSQL on 127.0.0.1:{port} ({})\n", dir.display()).as_bytes());
    server
}
