//! Support for the end-to-end tests (`mod support;` in tests/e2e.rs).
//!
//! * [`Moto`]: a private moto server per test on 127.0.0.1 with a free port, configured like
//!   `scripts/moto start` (managed IAM policies loaded, Lambda without containers); killed on drop.
//! * [`Cli`]: runs the `reconcile` binary in a temporary work directory against such a server,
//!   isolated from the developer's AWS configuration.
//!
//! * [`pg`]: a private PostgreSQL server per test binary, a new database per test.
//!
//! The moto_server executable comes from `$MOTO_SERVER` (set by `scripts/test`), else
//! `<repo>/.venv/bin/moto_server`, else `scripts/moto install` is run once to create it.
#![allow(dead_code)]

pub mod pg;

use std::collections::VecDeque;
use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// How long moto may take to print its address and answer HTTP.
pub const MOTO_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Default limit for one `reconcile` run before the test kills it.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(300);
/// Lines of moto output kept for failure messages.
const LOG_LINES: usize = 400;
const RUNNING_ON: &str = "Running on http://127.0.0.1:";

pub fn repo_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Path of the moto_server executable; installs it (once per test process) when missing.
pub fn moto_server_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(p) = std::env::var_os("MOTO_SERVER").filter(|p| !p.is_empty()) {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "MOTO_SERVER={} does not exist; run `scripts/moto install` or unset MOTO_SERVER", p.display());
            return p;
        }
        let local = repo_dir().join(".venv/bin/moto_server");
        if local.is_file() {
            return local;
        }
        // The script is idempotent and takes a file lock, so other test processes are safe too.
        let script = repo_dir().join("scripts/moto");
        let out = Command::new("bash")
            .arg(&script)
            .arg("install")
            .current_dir(repo_dir())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run `bash {} install`: {e}", script.display()));
        assert!(
            out.status.success(),
            "`scripts/moto install` failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert!(p.is_file(), "`scripts/moto install` printed {:?}, which is not a file", p.display());
        p
    })
    .clone()
}

/// A moto server owned by one test. Dropping it kills the process.
pub struct Moto {
    /// `http://127.0.0.1:<port>`
    pub url: String,
    pub port: u16,
    child: Child,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Moto {
    /// Starts a fresh moto server on a free port and waits until it is ready.
    pub fn start() -> Moto {
        let server = moto_server_path();
        let mut child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", server.display()));

        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (port_tx, port_rx) = mpsc::channel::<u16>();
        // werkzeug prints the address on stderr; watch both pipes, and keep draining them for the
        // server's whole life so it never blocks writing its request log.
        let stdout: Box<dyn Read + Send> = Box::new(child.stdout.take().expect("piped stdout"));
        let stderr: Box<dyn Read + Send> = Box::new(child.stderr.take().expect("piped stderr"));
        for pipe in [stdout, stderr] {
            let log = Arc::clone(&log);
            let port_tx = port_tx.clone();
            thread::spawn(move || drain(pipe, &log, &port_tx));
        }
        drop(port_tx);

        // From here on a panic drops `moto`, which kills the child.
        let mut moto = Moto { url: String::new(), port: 0, child, log };
        let deadline = Instant::now() + MOTO_START_TIMEOUT;
        moto.port = loop {
            match port_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(port) => break port,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Both pipes closed without the address line: the server died.
                    let status = moto.child.wait().map(|s| s.to_string()).unwrap_or_default();
                    panic!("moto_server ({}) exited ({status}) before printing `{RUNNING_ON}<port>`:\n{}", server.display(), moto.log());
                }
            }
            if let Ok(Some(status)) = moto.child.try_wait() {
                thread::sleep(Duration::from_millis(200)); // let the drain threads catch up
                panic!("moto_server exited ({status}) during start-up:\n{}", moto.log());
            }
            if Instant::now() > deadline {
                panic!("moto_server did not print `{RUNNING_ON}<port>` within {MOTO_START_TIMEOUT:?}:\n{}", moto.log());
            }
        };
        moto.url = format!("http://127.0.0.1:{}", moto.port);

        // Wait until it answers HTTP; the same request switches Lambda to the no-container mode
        // (Invoke then answers 200 and echoes the payload).
        let config = r#"{"lambda":{"use_docker":false}}"#;
        loop {
            let err = match moto.request("POST", "/moto-api/config", config) {
                Ok((status, _)) if (200..300).contains(&status) => break,
                Ok((status, body)) => format!("HTTP {status}: {body}"),
                Err(e) => e.to_string(),
            };
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto_server exited ({status}) at {}:\n{}", moto.url, moto.log());
            }
            if Instant::now() > deadline {
                panic!(
                    "moto_server at {} did not accept POST /moto-api/config within {MOTO_START_TIMEOUT:?} \
                     (last error: {err}):\n{}",
                    moto.url,
                    moto.log()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        moto
    }

    /// Environment for an AWS SDK client talking to this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.url.as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_MAX_ATTEMPTS", "2"),
            // moto enforces no API Gateway limits; tests that want the pacing turn it back on.
            ("RECONCILE_PACING", "off"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// One HTTP/1.1 request to the server; returns (status, body). `body` is sent as JSON.
    pub fn request(&self, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        http_request(self.port, method, path, body)
    }

    /// POSTs `body` (JSON) to `path` and returns the response body; panics unless the answer is 2xx.
    pub fn http_post(&self, path: &str, body: &str) -> String {
        self.expect_2xx("POST", path, body)
    }

    /// GETs `path` and returns the response body; panics unless the answer is 2xx.
    pub fn http_get(&self, path: &str) -> String {
        self.expect_2xx("GET", path, "")
    }

    /// Drops every emulated resource (`POST /moto-api/reset`); the Lambda config survives.
    pub fn reset(&self) {
        self.http_post("/moto-api/reset", "");
    }

    /// The last lines moto printed (startup messages and its request log).
    pub fn log(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().map(String::as_str).collect::<Vec<_>>().join("\n")
    }

    fn expect_2xx(&self, method: &str, path: &str, body: &str) -> String {
        match self.request(method, path, body) {
            Ok((status, text)) if (200..300).contains(&status) => text,
            Ok((status, text)) => panic!("{method} {}{path} answered HTTP {status}:\n{text}", self.url),
            Err(e) => panic!("{method} {}{path} failed: {e}\nmoto log:\n{}", self.url, self.log()),
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl fmt::Debug for Moto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Moto").field("url", &self.url).field("pid", &self.child.id()).finish()
    }
}

/// Reads a pipe of the moto process to its end: records lines, reports the port once seen.
fn drain(pipe: Box<dyn Read + Send>, log: &Mutex<VecDeque<String>>, port_tx: &mpsc::Sender<u16>) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
        if let Some(i) = line.find(RUNNING_ON) {
            let digits: String = line[i + RUNNING_ON.len()..].chars().take_while(char::is_ascii_digit).collect();
            if let Ok(port) = digits.parse::<u16>() {
                let _ = port_tx.send(port); // the receiver is gone after start-up; keep draining
            }
        }
        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() == LOG_LINES {
            log.pop_front();
        }
        log.push_back(line);
    }
}

/// Minimal HTTP/1.1 client for 127.0.0.1 (`Connection: close`, handles chunked answers).
pub fn http_request(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let invalid = |msg: String| std::io::Error::new(std::io::ErrorKind::InvalidData, msg);
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: */*\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;

    let split =
        raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| invalid(format!("no end of headers in {} bytes", raw.len())))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let mut body = raw[split + 4..].to_vec();
    if chunked {
        body = dechunk(&body).ok_or_else(|| invalid("malformed chunked body".to_string()))?;
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        let size_field = std::str::from_utf8(&data[..eol]).ok()?;
        let size = usize::from_str_radix(size_field.split(';').next()?.trim(), 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// What one `reconcile` run produced.
#[derive(Clone)]
pub struct Output {
    /// Exit code; 128 + signal number if it was killed by a signal.
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
    /// The arguments it ran with (for messages).
    pub args: Vec<String>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == 0
    }

    /// Panics, showing stdout and stderr, unless the exit code is 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(self.success(), "expected success:\n{self}");
        self
    }

    /// Panics, showing stdout and stderr, unless the exit code is `code`.
    #[track_caller]
    pub fn assert_status(&self, code: i32) -> &Self {
        assert_eq!(self.status, code, "unexpected exit code:\n{self}");
        self
    }

    /// stdout followed by stderr.
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "`reconcile {}` exited with {}", self.args.join(" "), self.status)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr ---\n{}", self.stderr.trim_end())
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Runs the `reconcile` binary in a temporary work directory against one moto server.
pub struct Cli {
    pub dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    /// Limit for each run; the process is killed and the test panics when it is exceeded.
    pub timeout: Duration,
}

/// Variables that could point the binary at real AWS or at the developer's configuration.
const SCRUBBED_ENV: &[&str] = &[
    "RUST_LOG",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_DEFAULT_REGION",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "CLICOLOR_FORCE",
    // A developer's own defaults must not redirect a test that relies on `reconcile.toml` and `reconcile.db`.
    "RECONCILE_MANIFEST",
    "RECONCILE_STATE",
    "RECONCILE_ALLOW_CODE_FROM",
];

impl Cli {
    pub fn new(moto: &Moto) -> Cli {
        let dir = tempfile::Builder::new().prefix("reconcile-e2e-").tempdir().expect("cannot create a temporary directory for the test");
        Cli { dir, env: moto.env(), timeout: CLI_TIMEOUT }
    }

    /// The work directory (the binary's current directory).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Deletes the SQLite state file with its WAL and shared-memory files (a killed run leaves them,
    /// and reconcile refuses to make a new state beside a leftover WAL).
    pub fn remove_state(&self) {
        for file in ["reconcile.db", "reconcile.db-wal", "reconcile.db-shm"] {
            let _ = std::fs::remove_file(self.join(file));
        }
    }

    /// `rel` inside the work directory.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Copies the directory `src` (relative paths are taken from the repository root, e.g.
    /// `Path::new("manifests")`) recursively into the work directory under its own name and
    /// returns the copy's path, e.g. `<tmp>/manifests`.
    pub fn copy_manifest_tree(&self, src: &Path) -> PathBuf {
        let src = if src.is_absolute() { src.to_path_buf() } else { repo_dir().join(src) };
        assert!(src.is_dir(), "copy_manifest_tree: {} is not a directory", src.display());
        let name = src.file_name().unwrap_or_else(|| panic!("copy_manifest_tree: {} has no file name", src.display()));
        let dest = self.join(name);
        copy_dir(&src, &dest);
        dest
    }

    /// Writes `contents` to `rel` in the work directory (creating parent directories).
    pub fn write_file(&self, rel: impl AsRef<Path>, contents: &str) -> PathBuf {
        let path = self.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
        }
        fs::write(&path, contents).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// Reads `rel` from the work directory.
    pub fn read_file(&self, rel: impl AsRef<Path>) -> String {
        let path = self.join(rel);
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    }

    /// `reconcile <args>` in the work directory with the moto environment and `overrides` applied
    /// last (`(name, Some(value))` sets, `(name, None)` removes), stdin closed, output piped.
    fn command(&self, args: &[&str], overrides: &[(&str, Option<&str>)]) -> Command {
        self.configure(Command::new(env!("CARGO_BIN_EXE_reconcile")), args, overrides)
    }

    /// `cmd <args>` set up as [`Cli::command`] sets up `reconcile <args>`.
    fn configure(&self, mut cmd: Command, args: &[&str], overrides: &[(&str, Option<&str>)]) -> Command {
        cmd.args(args).current_dir(self.dir.path()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        for name in SCRUBBED_ENV {
            cmd.env_remove(name);
        }
        // Never read the developer's ~/.aws: point the SDK at files that do not exist.
        cmd.env("AWS_CONFIG_FILE", self.join(".no-aws/config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", self.join(".no-aws/credentials"))
            .env("NO_COLOR", "1");
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        for (name, value) in overrides {
            match value {
                Some(v) => cmd.env(name, v),
                None => cmd.env_remove(name),
            };
        }
        cmd
    }

    /// Runs `reconcile <args>` in the work directory with the moto environment.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with_env(args, &[])
    }

    /// Like [`Cli::run`], with environment overrides applied last: `(name, Some(value))` sets,
    /// `(name, None)` removes (e.g. `("AWS_REGION", None)` to test a missing region).
    pub fn run_with_env(&self, args: &[&str], overrides: &[(&str, Option<&str>)]) -> Output {
        let bin = env!("CARGO_BIN_EXE_reconcile");
        let mut cmd = self.command(args, overrides);

        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
        let out = Collector::start(child.stdout.take().expect("piped stdout"));
        let err = Collector::start(child.stderr.take().expect("piped stderr"));
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let partial = Output {
                        status: -1,
                        stdout: out.finish(Duration::from_millis(200)),
                        stderr: err.finish(Duration::from_millis(200)),
                        args,
                    };
                    panic!("killed after {:?}:\n{partial}", self.timeout);
                }
                Ok(None) => thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("waiting for {bin}: {e}"),
            }
        };
        // A leftover grandchild could hold the pipes open; do not wait for it forever.
        Output { status: exit_code(status), stdout: out.finish(Duration::from_secs(5)), stderr: err.finish(Duration::from_secs(5)), args }
    }
}

impl fmt::Debug for Cli {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cli").field("dir", &self.dir.path()).finish()
    }
}

/// A fresh moto server and a CLI runner pointed at it.
pub fn setup() -> (Moto, Cli) {
    let moto = Moto::start();
    let cli = Cli::new(&moto);
    (moto, cli)
}

/// Reads a child's pipe on a thread, so neither pipe can fill up and block the child.
struct Collector {
    buf: Arc<Mutex<Vec<u8>>>,
    handle: thread::JoinHandle<()>,
}

impl Collector {
    fn start<R: Read + Send + 'static>(mut pipe: R) -> Collector {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buf);
        let handle = thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) => return,
                    Ok(n) => sink.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
        });
        Collector { buf, handle }
    }

    /// What was read, after waiting up to `grace` for the end of the pipe.
    fn finish(self, grace: Duration) -> String {
        let deadline = Instant::now() + grace;
        while !self.handle.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        let buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&buf).into_owned()
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    if let Some(code) = status.code() {
        return code;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return 128 + signal;
        }
    }
    -1
}

fn copy_dir(src: &Path, dest: &Path) {
    fs::create_dir_all(dest).unwrap_or_else(|e| panic!("cannot create {}: {e}", dest.display()));
    let entries = fs::read_dir(src).unwrap_or_else(|e| panic!("cannot list {}: {e}", src.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", src.display()));
        let from = entry.path();
        let to = dest.join(entry.file_name());
        // fs::metadata follows symlinks: a linked file or directory is copied as its target.
        let meta = fs::metadata(&from).unwrap_or_else(|e| panic!("cannot stat {}: {e}", from.display()));
        if meta.is_dir() {
            copy_dir(&from, &to);
        } else {
            fs::copy(&from, &to).unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", from.display(), to.display()));
        }
    }
}

/// How long the fault proxy may take to print its address.
pub const FAULT_PROXY_START_TIMEOUT: Duration = Duration::from_secs(10);
const LISTENING_ON: &str = "listening on http://127.0.0.1:";

/// The `faultproxy` binary (the workspace crate faultproxy/, found through `$FAULTPROXY`, which
/// scripts/test sets after building it) in front of an upstream, normally a [`Moto`]:
/// injects latency, throttling errors, 503s and dropped connections. Dropping it kills the process.
///
/// Point a [`Cli`] run at it with `cli.run_with_env(args, &[("AWS_ENDPOINT_URL", Some(&proxy.url)),
/// ("AWS_MAX_ATTEMPTS", None)])` (without `AWS_MAX_ATTEMPTS` the binary makes up to 5 attempts;
/// [`Moto::env`] sets 2). Faults can be switched on and off mid-test with [`FaultProxy::configure`].
pub struct FaultProxy {
    /// `http://127.0.0.1:<port>`
    pub url: String,
    pub port: u16,
    child: Child,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl FaultProxy {
    /// Starts the proxy on a free loopback port in front of `upstream` (e.g. `&moto.url`), with extra
    /// flags such as `["--throttle-rate", "0.3", "--seed", "7", "--only", "iam,logs"]`.
    pub fn start(upstream: &str, args: &[&str]) -> FaultProxy {
        let bin = faultproxy_bin();
        let mut child = Command::new(&bin)
            .arg("--upstream")
            .arg(upstream)
            .args(args)
            .env_remove("FAULTPROXY_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));

        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (port_tx, port_rx) = mpsc::channel::<u16>();
        let stdout: Box<dyn Read + Send> = Box::new(child.stdout.take().expect("piped stdout"));
        let stderr: Box<dyn Read + Send> = Box::new(child.stderr.take().expect("piped stderr"));
        for pipe in [stdout, stderr] {
            let log = Arc::clone(&log);
            let port_tx = port_tx.clone();
            thread::spawn(move || drain_lines(pipe, &log, LISTENING_ON, &port_tx));
        }
        drop(port_tx);

        let mut proxy = FaultProxy { url: String::new(), port: 0, child, log };
        let deadline = Instant::now() + FAULT_PROXY_START_TIMEOUT;
        proxy.port = loop {
            match port_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(port) => break port,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = proxy.child.wait().map(|s| s.to_string()).unwrap_or_default();
                    panic!("faultproxy {args:?} exited ({status}) before printing `{LISTENING_ON}<port>`:\n{}", proxy.log());
                }
            }
            if Instant::now() > deadline {
                panic!("faultproxy did not print `{LISTENING_ON}<port>` within {FAULT_PROXY_START_TIMEOUT:?}:\n{}", proxy.log());
            }
        };
        proxy.url = format!("http://127.0.0.1:{}", proxy.port);
        proxy
    }

    /// `GET /__faultproxy/stats`: `requests`, `forwarded`, `throttled`, `errored`, `dropped`,
    /// `upstream_errors`, `by_service.<service>.<counter>` (SigV4 service names, plus `moto-api`
    /// and `unknown`), `connections`, `added_latency_ms`, `config`.
    pub fn stats(&self) -> serde_json::Value {
        let body = self.expect_2xx("GET", "/__faultproxy/stats", "");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("faultproxy stats are not JSON ({e}):\n{body}"))
    }

    /// `POST /__faultproxy/config` with `json`, e.g. `{"throttle_rate": 0, "error_rate": 0}` (only the
    /// keys given change); returns the new configuration. Panics on an invalid configuration.
    pub fn configure(&self, json: &str) -> serde_json::Value {
        let body = self.expect_2xx("POST", "/__faultproxy/config", json);
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("faultproxy config answer is not JSON ({e}):\n{body}"))
    }

    /// What the proxy printed (stderr; `-v` in the args logs each fault).
    pub fn log(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().map(String::as_str).collect::<Vec<_>>().join("\n")
    }

    fn expect_2xx(&self, method: &str, path: &str, body: &str) -> String {
        match http_request(self.port, method, path, body) {
            Ok((status, text)) if (200..300).contains(&status) => text,
            Ok((status, text)) => panic!("{method} {}{path} answered HTTP {status}:\n{text}", self.url),
            Err(e) => panic!("{method} {}{path} failed: {e}\nfaultproxy log:\n{}", self.url, self.log()),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy").field("url", &self.url).field("pid", &self.child.id()).finish()
    }
}

/// Reads a pipe to its end: records lines, reports the port that follows `marker` once seen.
fn drain_lines(pipe: Box<dyn Read + Send>, log: &Mutex<VecDeque<String>>, marker: &str, port_tx: &mpsc::Sender<u16>) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
        if let Some(Ok(port)) = line.strip_prefix(marker).map(|rest| rest.trim().parse::<u16>()) {
            let _ = port_tx.send(port);
        }
        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() == LOG_LINES {
            log.pop_front();
        }
        log.push_back(line);
    }
}

/// A long-running `reconcile` process (e.g. `watch`) started by [`Cli::spawn`], with the same
/// environment as [`Cli::run`]. Its output is collected as it comes; dropping it kills the process.
pub struct Daemon {
    child: Child,
    stdout: Option<Collector>,
    stderr: Option<Collector>,
    pub args: Vec<String>,
}

impl Cli {
    /// Starts `reconcile <args>` in the work directory with the moto environment, without waiting.
    pub fn spawn(&self, args: &[&str]) -> Daemon {
        self.spawn_with_env(args, &[])
    }

    /// Like [`Cli::spawn`], with environment overrides as in [`Cli::run_with_env`].
    pub fn spawn_with_env(&self, args: &[&str], overrides: &[(&str, Option<&str>)]) -> Daemon {
        let bin = env!("CARGO_BIN_EXE_reconcile");
        let mut cmd = self.command(args, overrides);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
        let stdout = Collector::start(child.stdout.take().expect("piped stdout"));
        let stderr = Collector::start(child.stderr.take().expect("piped stderr"));
        Daemon { child, stdout: Some(stdout), stderr: Some(stderr), args: args.iter().map(|s| s.to_string()).collect() }
    }
}

impl Cli {
    /// Like [`Cli::spawn`], run by `sh -c '<shell>; exec reconcile <args>'` (e.g. `ulimit -n 256` to run
    /// it under a lower open-file limit).
    pub fn spawn_under(&self, shell: &str, args: &[&str]) -> Daemon {
        let bin = env!("CARGO_BIN_EXE_reconcile");
        let mut sh = Command::new("sh");
        sh.arg("-c").arg(format!("{shell}; exec \"$0\" \"$@\"")).arg(bin);
        let mut cmd = self.configure(sh, args, &[]);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run sh -c for {bin}: {e}"));
        let stdout = Collector::start(child.stdout.take().expect("piped stdout"));
        let stderr = Collector::start(child.stderr.take().expect("piped stderr"));
        Daemon { child, stdout: Some(stdout), stderr: Some(stderr), args: args.iter().map(|s| s.to_string()).collect() }
    }
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.as_ref().map(Collector::snapshot).unwrap_or_default()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.as_ref().map(Collector::snapshot).unwrap_or_default()
    }

    /// Panics (with its output) if the process has exited.
    #[track_caller]
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "`reconcile {}` exited ({status}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
                self.args.join(" "),
                self.stdout(),
                self.stderr()
            );
        }
    }

    /// Waits until stdout has `<prefix><port>` (e.g. `listening on http://127.0.0.1:`) and returns the port.
    #[track_caller]
    pub fn port_after(&mut self, prefix: &str, timeout: Duration) -> u16 {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.stdout();
            if let Some(port) = out.lines().find_map(|l| l.trim().strip_prefix(prefix).and_then(|p| p.trim().parse::<u16>().ok())) {
                return port;
            }
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "no `{prefix}<port>` on stdout within {timeout:?}:\n{out}\n--- stderr ---\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a signal by name (`TERM`, `INT`…) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.pid().to_string()).status().expect("cannot run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// Waits for the process to exit (killing it after `timeout`) and returns what it printed.
    pub fn wait(mut self, timeout: Duration) -> Output {
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break exit_code(status),
                Ok(None) if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break -1;
                }
                Ok(None) => thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("waiting for reconcile: {e}"),
            }
        };
        let stdout = self.stdout.take().map(|c| c.finish(Duration::from_secs(5))).unwrap_or_default();
        let stderr = self.stderr.take().map(|c| c.finish(Duration::from_secs(5))).unwrap_or_default();
        Output { status, stdout, stderr, args: self.args.clone() }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Collector {
    /// What was read so far.
    fn snapshot(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

/// Calls `check` every 100 ms until it returns `Some`, or panics after `timeout` with `what` and the
/// last state `describe` gives.
#[track_caller]
pub fn poll_until<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>, describe: impl Fn() -> String) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}\n{}", describe());
        }
        thread::sleep(Duration::from_millis(100));
    }
}

// --- The fault proxy's binary -------------------------------------------------------------------

/// The fault proxy is a crate of its own (faultproxy/), not a binary of this package, so Cargo does
/// not build it for these tests: scripts/test builds it and passes its path in `$FAULTPROXY`.
pub fn faultproxy_bin() -> std::path::PathBuf {
    let how = "run the tests with scripts/test (it builds the proxy and sets FAULTPROXY), or run \
               `cargo build -p faultproxy` and set FAULTPROXY=<target dir>/debug/faultproxy";
    let Some(path) = std::env::var_os("FAULTPROXY").filter(|p| !p.is_empty()) else {
        panic!("FAULTPROXY is not set: this test needs the fault proxy binary; {how}");
    };
    let path = std::path::PathBuf::from(path);
    if !path.is_file() {
        panic!("FAULTPROXY={} is not a file; {how}", path.display());
    }
    path
}
