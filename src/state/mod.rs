//! State layer: what the engine owns, in SQLite (a file, the default) or PostgreSQL (a shared database)
//! through sqlx, the same SQL on both (see [`backend`]; schemas in `migrations/sqlite/` and
//! `migrations/postgres/`, applied on open).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use tracing::instrument;

use crate::manifest::Kind;

/// Declares each named `async fn NAME(backend: Backend)` test as two tests, `NAME::sqlite` and
/// `NAME::postgres`: the same body against each backend.
#[cfg(test)]
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    super::$name($crate::state::test_backends::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    super::$name($crate::state::test_backends::Backend::Postgres).await
                }
            }
        )*
    };
}

#[cfg(test)]
#[path = "../../tests/support/pg.rs"]
mod test_pg;

#[cfg(test)]
pub(crate) mod test_backends {
    use std::path::PathBuf;

    use super::{Result, Store, backend::on_db};

    /// Which database a store test runs against.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Backend {
        Sqlite,
        Postgres,
    }

    impl Backend {
        /// A new, empty state that can be opened several times: a file in `dir`, or a new database on
        /// the test PostgreSQL server.
        pub(crate) async fn target(self, dir: &tempfile::TempDir) -> PathBuf {
            match self {
                Backend::Sqlite => dir.path().join("state.db"),
                Backend::Postgres => PathBuf::from(tokio::task::spawn_blocking(super::test_pg::fresh_database).await.unwrap()),
            }
        }

        /// A new, empty store.
        pub(crate) async fn store(self) -> Store {
            match self {
                Backend::Sqlite => Store::memory().await.unwrap(),
                Backend::Postgres => {
                    let dir = tempfile::tempdir().unwrap();
                    Store::open(&self.target(&dir).await).await.unwrap()
                }
            }
        }
    }

    impl Store {
        /// Runs one statement with text arguments, on either backend (tests look at the tables).
        pub(crate) async fn exec_for_tests(&self, sql: &str, args: &[&str]) -> Result<u64> {
            on_db!(self.db()?, pool => {
                let mut q = sqlx::query(sql);
                for a in args {
                    q = q.bind(*a);
                }
                Ok(q.execute(pool).await?.rows_affected())
            })
        }

        /// The first column of every row a query returns, as text.
        pub(crate) async fn texts_for_tests(&self, sql: &str, args: &[&str]) -> Result<Vec<String>> {
            on_db!(self.db()?, pool => {
                let mut q = sqlx::query_scalar(sql);
                for a in args {
                    q = q.bind(*a);
                }
                Ok(q.fetch_all(pool).await?)
            })
        }
    }
}

pub(crate) mod backend;
use backend::{Db, SQLITE_MIGRATOR as MIGRATOR, StackTx, WritePool, now, on_db};
pub use backend::{is_postgres_url, redact_url};
use lease::FencedWrite;
pub mod drift;
mod file;
pub mod fingerprint;
pub use drift::{DELETED, Drift, DriftEvent, Listing, Resolution};
use file::StateFile;
pub mod lease;
mod lock;
mod migrate;
pub use migrate::MovedStack;
pub mod pacing;
mod pg_lock;

/// Where a stack's resources live: the AWS account, its partition and the region.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Identity {
    pub account_id: String,
    /// `aws`, `aws-cn`, `aws-us-gov`…
    pub partition: String,
    pub region: String,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "account {} ({}) in {}", self.account_id, self.partition, self.region)
    }
}

/// A second key of a stack about to record a physical resource another key records.
#[derive(Debug)]
pub struct SharedId {
    pub stack: String,
    /// The key being recorded.
    pub resource: String,
    /// The key that records it already.
    pub other: String,
    pub kind: Kind,
    pub id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot open state file {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    #[error("state file {} is not a reconcile state database (corrupt or another kind of file); move it aside or point --state elsewhere", path.display())]
    Corrupt { path: PathBuf },
    #[error("state file {} was written by a newer version of reconcile (schema {found}); upgrade reconcile", path.display())]
    NewerSchema { path: PathBuf, found: i64 },
    #[error("cannot create state file {}: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("cannot open state database {location}: {source}")]
    OpenDb {
        location: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("state database {location} was written by a newer version of reconcile (schema {found}); upgrade reconcile")]
    NewerSchemaAt { location: String, found: i64 },
    /// This process's lock of the stack is gone (its database session ended, or another process took
    /// it): no more AWS writes, no more state writes for the stack.
    #[error(
        "refusing to record `{}` of stack `{}` as {} `{}`: `{}` already records that resource, and one physical resource has one \
         owner; the two declarations name the same resource in AWS (keep one of them)",
        .0.resource, .0.stack, .0.kind, .0.id, .0.other
    )]
    SharedPhysicalId(Box<SharedId>),
    #[error("lost the lock of stack `{stack}`: {why}; stopped before any further AWS or state write (run the command again)")]
    LockLost { stack: String, why: String },
    #[error(
        "the stack lock of `{stack}` did not stay with this connection's database session: reconcile's PostgreSQL locks are \
         session-level advisory locks and need session pooling (connect directly, or use pgbouncer with pool_mode = session, \
         not transaction)"
    )]
    SessionPooling { stack: String },
    #[error(
        "refusing to migrate: the target state {target} already has stack `{stack}` (nothing was copied); migrate into a state without it"
    )]
    MigrateTargetHasStack { stack: String, target: String },
    #[error(
        "the copy of stack `{stack}` in {target} does not read back as the source has it; the target holds a partial copy of it: remove it there before trying again"
    )]
    MigrateMismatch { stack: String, target: String },
    #[error("stack `{stack}` is locked by {}; {}", .holder.describe(), locked_hint(*.shared, &.holder.id))]
    Locked {
        stack: String,
        holder: Box<LockInfo>,
        /// On PostgreSQL: a holder that dies frees the lock by itself.
        shared: bool,
    },
    /// The id given does not match. The real id is never shown: asking for it is the safeguard.
    #[error("stack `{stack}` has no lock with id `{id}`{}", .current.as_ref().map(|c| format!("; it is locked by {}; break it with the lock id the command that found it locked printed", c.describe())).unwrap_or_else(|| " (it is not locked)".into()))]
    NoSuchLock { stack: String, id: String, current: Option<Box<LockInfo>> },
    #[error(
        "refusing to break the lock of stack `{stack}`: it is held by {}, and that process is still running; \
         wait for it to finish or stop it, or pass --force if you are sure it is not reconcile working on this stack",
        .holder.describe()
    )]
    HolderAlive { stack: String, holder: Box<LockInfo> },
    #[error(
        "state file {} is empty (0 bytes), not a reconcile state database; refusing to treat it as a new state (that would \
         forget every resource the stack owns). Restore it from a backup, or, if there never was a state, delete the file",
        path.display()
    )]
    Empty { path: PathBuf },
    /// A write by a watcher whose lease of the stack was taken over since it started the work.
    #[error("stack `{stack}`: this watcher's lease (generation {generation}) was taken over ({now}); not writing")]
    Fenced { stack: String, generation: i64, now: String },
    #[error("{0}")]
    SecretKey(String),
    #[error(
        "the secret key file {} does not exist (--secret-key-file, RECONCILE_SECRET_KEY_FILE); give the key the state's \
         fingerprints were made with, or a new file (e.g. `openssl rand -hex 32 > FILE`, mode 0600)",
        .0.display()
    )]
    SecretKeyMissing(PathBuf),
    /// The SQLite file's path no longer names the file this process opened: nothing more is read
    /// or written through this store.
    #[error(
        "state file {} is no longer the file this process opened: {why}. Stopped using it: nothing more is written (writes \
         into a deleted or replaced state file are lost, and its leftover -wal would corrupt the next state made at that \
         path). Put the state file back where it was (with its -wal and -shm files), then run reconcile again",
        path.display()
    )]
    Vanished { path: PathBuf, why: String },
    #[error(
        "refusing to create a new state file {}: {} {} left beside it, the write-ahead log of a state file that was \
         deleted or moved (a new database next to them would read them as its own: a corrupt state). If the state file \
         was moved, move it back, or move these along with it; if it was deleted by mistake, restore it from a backup \
         with these files; to start a new state here, delete them first",
        path.display(),
        leftovers.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" and "),
        if leftovers.len() == 1 { "is" } else { "are" }
    )]
    Leftovers { path: PathBuf, leftovers: Vec<PathBuf> },
    #[error(
        "state file {} is read-only here: {why}. Every write (the journal before each AWS call, the resources made) would \
         fail; fix the permission or the mount (or point --state at a writable file), then run the command again",
        path.display()
    )]
    ReadOnly { path: PathBuf, why: String },
    /// SQLite's "database is locked": another connection held the file's write lock past the busy timeout.
    #[error(
        "state file {} is locked: another connection held its write lock for longer than {} s ({source}); {holders}. \
         A reconcile process stuck in a write, or another program with the file open, holds it (`fuser -v {}` lists \
         the processes that have it open): wait for it to finish or stop it, then run the command again",
        path.display(),
        BUSY_TIMEOUT.as_secs(),
        path.display()
    )]
    Busy {
        path: PathBuf,
        holders: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("state holds invalid data for {what}: {source}")]
    Decode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

pub type Result<T, E = StateError> = std::result::Result<T, E>;

/// What to do about a held lock: on SQLite a dead holder's lock stays until `force-unlock`; on
/// PostgreSQL it frees itself.
fn locked_hint(shared: bool, id: &str) -> String {
    if shared {
        "wait with --lock-timeout (a holder that died frees it within 30 s by itself: no force-unlock needed)".into()
    } else {
        format!("wait with --lock-timeout, or if that process is gone, run `reconcile force-unlock {id}`")
    }
}

/// One managed resource as last applied.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ResourceState {
    pub name: String,
    pub kind: Kind,
    pub physical_id: String,
    /// Attributes as last applied, references resolved.
    pub attributes: Value,
    pub outputs: BTreeMap<String, String>,
    pub depends_on: Vec<String>,
}

/// A stack's state.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StackState {
    pub serial: i64,
    pub resources: BTreeMap<String, ResourceState>,
    pub outputs: BTreeMap<String, String>,
    /// Resources whose create did not finish (made in AWS, recorded so they are not lost): name →
    /// what went wrong. The next apply finishes or replaces them.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub incomplete: BTreeMap<String, String>,
    /// Region-wide singletons (`aws_api_gateway_account`) another stack of this state file owns:
    /// the stack that recorded one first owns it.
    #[serde(skip)]
    pub foreign_singletons: Vec<Owner>,
    /// The last command that changed the stack as a whole; `None` before either ran.
    pub last_operation: Option<StackOperation>,
    /// Resources recorded with `retain_on_delete = true`: forgotten, not deleted, once they leave the
    /// manifest or the stack is destroyed.
    #[serde(skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub retained: std::collections::BTreeSet<String>,
}

/// Which resource of which stack records a physical resource.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Owner {
    pub stack: String,
    pub resource: String,
    pub kind: Kind,
    pub physical_id: String,
}

/// [`StackState::last_operation`]: the last command that changed the stack as a whole, stored as the
/// TEXT values the column has always had (`apply`, `destroy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type, serde::Serialize)]
#[sqlx(rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum StackOperation {
    Apply,
    Destroy,
}

/// What a journal entry announces, stored as the TEXT values the journal has always had (`create`,
/// `update`, `delete`, `delete-previous`), so state files written before keep working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, sqlx::Type, serde::Serialize)]
#[sqlx(rename_all = "kebab-case")]
#[serde(rename_all = "kebab-case")]
pub enum JournalAction {
    /// A resource is being created (`physical_name`: the name it is to have, when the manifest fixes one).
    Create,
    /// A resource is being updated in place (`physical_name`: its physical id).
    Update,
    /// A resource is being deleted (`physical_name`: its physical id).
    Delete,
    /// The previous physical resource of a replacement is to be deleted once its successor exists
    /// (`physical_name`: the previous one's id); open from before the new one is created until the old one is gone.
    DeletePrevious,
}

impl StackOperation {
    /// The value stored in `stacks.last_operation`.
    pub fn as_str(self) -> &'static str {
        match self {
            StackOperation::Apply => "apply",
            StackOperation::Destroy => "destroy",
        }
    }

    pub fn parse(s: &str) -> Option<StackOperation> {
        [StackOperation::Apply, StackOperation::Destroy].into_iter().find(|o| o.as_str() == s)
    }
}

impl JournalAction {
    pub fn parse(s: &str) -> Option<JournalAction> {
        [JournalAction::Create, JournalAction::Update, JournalAction::Delete, JournalAction::DeletePrevious]
            .into_iter()
            .find(|a| a.as_str() == s)
    }

    /// The value stored in the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            JournalAction::Create => "create",
            JournalAction::Update => "update",
            JournalAction::Delete => "delete",
            JournalAction::DeletePrevious => "delete-previous",
        }
    }
}

impl std::fmt::Display for JournalAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a journal entry ended, stored as TEXT in its `outcome` column (`ok`, `failed: <why>`, or
/// `reconciled by a later run`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperationOutcome {
    Ok,
    Failed(String),
    /// An interrupted run's entry, closed by the run that reconciled what it left.
    Reconciled,
    /// An interrupted run's entry, closed by `state rm`: what it left in AWS is no longer managed.
    Forgotten,
}

impl std::fmt::Display for OperationOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OperationOutcome::Ok => f.write_str("ok"),
            OperationOutcome::Failed(why) => write!(f, "failed: {why}"),
            OperationOutcome::Reconciled => f.write_str("reconciled by a later run"),
            OperationOutcome::Forgotten => f.write_str("forgotten by state rm"),
        }
    }
}

/// A write that started and never finished (the process died in between).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PendingOperation {
    pub id: i64,
    pub resource: String,
    pub kind: String,
    pub action: JournalAction,
    pub physical_name: Option<String>,
    pub started_at: String,
}

/// Who holds a stack's lock.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LockInfo {
    pub id: String,
    pub operation: String,
    pub pid: i64,
    pub host: String,
    pub acquired_at: String,
}

/// Whether the process holding a lock is still there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HolderStatus {
    /// On this host, and a process with its pid is running.
    Running,
    /// On this host, and no process has its pid.
    Gone,
    /// On another host (or this host cannot tell): unknown.
    Unknown,
}

impl LockInfo {
    /// Whether the holder is alive, as far as this host can tell.
    pub fn status(&self) -> HolderStatus {
        if self.host != hostname() {
            return HolderStatus::Unknown;
        }
        process_status(self.pid)
    }

    /// Who holds the lock, for messages: operation, pid, host, since when and whether it still runs
    /// (never the lock id).
    pub fn describe(&self) -> String {
        let status = match self.status() {
            HolderStatus::Running => "running",
            HolderStatus::Gone => "no longer running",
            HolderStatus::Unknown => "another host: cannot tell whether it is running",
        };
        format!("{} (pid {} on {}, {status}) since {}", self.operation, self.pid, self.host, self.acquired_at)
    }
}

/// Whether a process with `pid` exists on this host (Linux `/proc`; elsewhere unknown).
fn process_status(pid: i64) -> HolderStatus {
    let proc = Path::new("/proc");
    if pid <= 0 || !proc.join("self").exists() {
        return HolderStatus::Unknown;
    }
    if proc.join(pid.to_string()).exists() { HolderStatus::Running } else { HolderStatus::Gone }
}

/// The state store: a SQLite file or a PostgreSQL database, the same behaviour on both.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
    /// The SQLite file, or the PostgreSQL URL with its password masked (for messages).
    path: PathBuf,
    /// The stack locks this process holds on PostgreSQL (their sessions, fencing tokens, and whether
    /// they were lost).
    held: pg_lock::HeldLocks,
    /// When set ([`Store::fenced`]), every write transaction first checks the watch lease is still this one.
    fence: Option<std::sync::Arc<lease::Fence>>,
    /// The key of the secret fingerprints ([`fingerprint`]); never stored in the state.
    secret_key: Option<std::sync::Arc<fingerprint::SecretKey>>,
    /// The SQLite file opened (none in memory and on PostgreSQL): checked still in place before every
    /// statement and every COMMIT.
    file: Option<std::sync::Arc<StateFile>>,
}

impl Store {
    /// Opens and migrates the state: a `postgres://` or `postgresql://` URL is a PostgreSQL database
    /// (see [`Store::open_postgres`]); anything else a SQLite file. A missing file is created with mode
    /// 0600, atomically: it is built aside and linked into place complete, so no process ever sees a
    /// half-made (or empty) state file, and a zero-length file is refused rather than taken for a new
    /// state.
    #[instrument(skip_all, fields(path = %redact_url(&path.to_string_lossy())))]
    pub async fn open(path: &Path) -> Result<Store> {
        let text = path.to_string_lossy();
        if is_postgres_url(&text) {
            return Self::open_postgres(&text).await;
        }
        Self::open_with(path, SqlitePoolOptions::new().max_connections(4), BUSY_TIMEOUT).await
    }

    /// Connects to a PostgreSQL state and migrates it (the first opener applies the schema, holding
    /// an advisory lock; a schema newer than this binary is refused untouched).
    pub async fn open_postgres(url: &str) -> Result<Store> {
        let pool = backend::connect_postgres(url).await?;
        Ok(Store {
            db: Db::Postgres(pool),
            path: PathBuf::from(redact_url(url)),
            held: Default::default(),
            fence: None,
            secret_key: None,
            file: None,
        })
    }

    /// Whether the state is on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self.db, Db::Postgres(_))
    }

    async fn open_with(path: &Path, pool: SqlitePoolOptions, busy_timeout: Duration) -> Result<Store> {
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() && m.len() == 0 => return Err(StateError::Empty { path: path.into() }),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let leftovers = file::leftovers(path);
                if !leftovers.is_empty() {
                    return Err(StateError::Leftovers { path: path.into(), leftovers });
                }
                create_new(path).await?
            }
            Err(source) => return Err(StateError::Create { path: path.into(), source }),
        }
        if let Some(why) = file::not_writable(path) {
            return Err(StateError::ReadOnly { path: path.into(), why });
        }
        let file = std::sync::Arc::new(StateFile::at(path).map_err(|source| StateError::Create { path: path.into(), source })?);
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(|source| StateError::Open { path: path.into(), source })?
            .filename(path)
            .create_if_missing(false)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(busy_timeout);
        // A connection opened before a write failed is closed rather than reused (see [`file`]).
        let keep = file.clone();
        let pool = pool.before_acquire(move |_, meta| {
            let reuse = keep.keep(meta.age);
            Box::pin(async move { Ok(reuse) })
        });
        let pool = pool.connect_with(options).await.map_err(|e| classify_open_error(path, e))?;
        Self::migrate(&pool, path).await?;
        file.check()?;
        Ok(Store {
            db: Db::Sqlite(pool),
            path: path.to_path_buf(),
            held: Default::default(),
            fence: None,
            secret_key: None,
            file: Some(file),
        })
    }

    /// The database, while the SQLite file opened is still in place ([`StateError::Vanished`] once
    /// its path names another file or none).
    fn db(&self) -> Result<&Db> {
        if let Some(file) = &self.file {
            file.check()?;
        }
        Ok(&self.db)
    }

    /// Whether the SQLite state file this store opened is still the one its path names (always true
    /// on PostgreSQL and in memory): `watch` asks once per pass, and stops when it is not. Every
    /// statement checks it too.
    pub fn check_file(&self) -> Result<()> {
        self.db().map(|_| ())
    }

    /// What a write outside a transaction (one autocommit statement) returned: on SQLite, a failure
    /// has the older connections reopened, and "database is locked" names the holders.
    async fn wrote<T>(&self, result: std::result::Result<T, sqlx::Error>) -> Result<T> {
        let e = match result {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        match (&self.db, &self.file) {
            (Db::Sqlite(pool), Some(file)) => {
                file.reopen_connections();
                if backend::is_busy(&e) { Err(backend::busy(pool, Some(file), e).await) } else { Err(StateError::Db(e)) }
            }
            _ => Err(StateError::Db(e)),
        }
    }

    /// An in-memory store, for tests.
    pub async fn memory() -> Result<Store> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await?;
        Self::migrate(&pool, Path::new(":memory:")).await?;
        Ok(Store {
            db: Db::Sqlite(pool),
            path: PathBuf::from(":memory:"),
            held: Default::default(),
            fence: None,
            secret_key: None,
            file: None,
        })
    }

    async fn migrate(pool: &SqlitePool, path: &Path) -> Result<()> {
        // Nothing to apply (the common case): no write, no lock.
        let up_to_date = {
            let mut conn = pool.acquire().await.map_err(|e| classify_open_error(path, e))?;
            applied_up_to_date(&mut conn, path).await?
        };
        if up_to_date {
            return Ok(());
        }
        // Applying: as the one writer (`BEGIN IMMEDIATE` waits out another opener's migration within
        // the busy timeout); whoever comes second finds everything applied.
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(|e| classify_open_error(path, e))?;
        if applied_up_to_date(&mut tx, path).await? {
            return Ok(());
        }
        match MIGRATOR.run_direct(&mut *tx).await {
            Ok(()) => {}
            Err(sqlx::migrate::MigrateError::Execute(e) | sqlx::migrate::MigrateError::ExecuteMigration(e, _)) => {
                return Err(classify_open_error(path, e));
            }
            Err(other) => return Err(StateError::Db(sqlx::Error::Migrate(Box::new(other)))),
        }
        tx.commit().await?;
        Ok(())
    }

    /// The SQLite file, or the PostgreSQL URL with its password masked.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The fencing token of this process's lock of `stack` (`None`: not held here, no fence), or
    /// [`StateError::LockLost`] once that lock was lost: nothing more is written for the stack.
    fn fence(&self, stack: &str) -> Result<Option<i64>> {
        self.held.fence(stack)
    }

    #[instrument(skip_all, fields(stack))]
    pub async fn load(&self, stack: &str) -> Result<StackState> {
        let mut state = StackState::default();
        on_db!(self.db()?, pool => {
            if let Some(row) = sqlx::query("SELECT serial, outputs, last_operation FROM stacks WHERE name = $1")
                .bind(stack)
                .fetch_optional(pool)
                .await?
            {
                state.serial = row.try_get("serial")?;
                state.outputs = decode(&row.try_get::<String, _>("outputs")?, "stack outputs")?;
                state.last_operation = row.try_get::<Option<String>, _>("last_operation")?.as_deref().and_then(StackOperation::parse);
            }
            let rows = sqlx::query(
                "SELECT name, kind, physical_id, attributes, outputs, depends_on, incomplete, retain_on_delete FROM resources WHERE stack = $1 ORDER BY name",
            )
            .bind(stack)
            .fetch_all(pool)
            .await?;
            for row in rows {
                let name: String = row.try_get("name")?;
                let kind: String = row.try_get("kind")?;
                let what = format!("resource `{name}`");
                let kind = Kind::from_type_name(&kind).ok_or_else(|| StateError::Decode {
                    what: what.clone(),
                    source: serde::de::Error::custom(format!("unknown kind `{kind}`")),
                })?;
                let r = ResourceState {
                    kind,
                    physical_id: row.try_get("physical_id")?,
                    attributes: decode(&row.try_get::<String, _>("attributes")?, &what)?,
                    outputs: decode(&row.try_get::<String, _>("outputs")?, &what)?,
                    depends_on: decode(&row.try_get::<String, _>("depends_on")?, &what)?,
                    name: name.clone(),
                };
                if let Some(why) = row.try_get::<Option<String>, _>("incomplete")? {
                    state.incomplete.insert(name.clone(), why);
                }
                if row.try_get::<bool, _>("retain_on_delete")? {
                    state.retained.insert(name.clone());
                }
                state.resources.insert(name, r);
            }
        });
        state.foreign_singletons = self.singleton_owners().await?.into_iter().filter(|o| o.stack != stack).collect();
        Ok(state)
    }

    /// Every resource, of any stack in this state, that records the physical resource `id` of
    /// `kind` (ids compared as AWS would: a Lambda permission's function by name or ARN alike).
    pub async fn owners_of(&self, kind: Kind, id: &str) -> Result<Vec<Owner>> {
        let rows: Vec<(String, String, String)> = on_db!(self.db()?, pool => {
            sqlx::query_as("SELECT stack, name, physical_id FROM resources WHERE kind = $1 ORDER BY rowid")
                .bind(kind.type_name())
                .fetch_all(pool)
                .await?
        });
        let wanted = crate::providers::canonical_id(kind, id);
        Ok(rows
            .into_iter()
            .filter(|(_, _, physical_id)| crate::providers::canonical_id(kind, physical_id) == wanted)
            .map(|(stack, resource, physical_id)| Owner { stack, resource, kind, physical_id })
            .collect())
    }

    /// The owner of each region-wide singleton recorded in this state: of the stacks that record
    /// one, the first to have recorded it (its row is the oldest).
    pub async fn singleton_owners(&self) -> Result<Vec<Owner>> {
        let mut owners = Vec::new();
        for kind in Kind::ALL.iter().copied().filter(|k| k.is_singleton()) {
            let row: Option<(String, String, String)> = on_db!(self.db()?, pool => {
                sqlx::query_as("SELECT stack, name, physical_id FROM resources WHERE kind = $1 ORDER BY rowid LIMIT 1")
                    .bind(kind.type_name())
                    .fetch_optional(pool)
                    .await?
            });
            if let Some((stack, resource, physical_id)) = row {
                owners.push(Owner { stack, resource, kind, physical_id });
            }
        }
        Ok(owners)
    }

    /// Records a resource after a successful create or update (it is complete).
    #[instrument(skip_all, fields(stack, resource = %r.name))]
    pub async fn put_resource(&self, stack: &str, r: &ResourceState) -> Result<i64> {
        self.put(stack, r, None, None).await
    }

    /// Records a resource as `put_resource` does, with the manifest's `retain_on_delete` in the same
    /// transaction (a run killed in between never leaves a retained resource recorded as deletable).
    #[instrument(skip_all, fields(stack, resource = %r.name))]
    pub async fn put_resource_retaining(&self, stack: &str, r: &ResourceState, retain_on_delete: bool) -> Result<i64> {
        self.put(stack, r, None, Some(retain_on_delete)).await
    }

    /// Records a resource a create made but did not finish, with what went wrong: the next plan
    /// finishes or replaces it, `destroy` deletes it.
    #[instrument(skip_all, fields(stack, resource = %r.name))]
    pub async fn put_incomplete_resource(&self, stack: &str, r: &ResourceState, why: &str) -> Result<i64> {
        self.put(stack, r, Some(why), None).await
    }

    async fn put(&self, stack: &str, r: &ResourceState, incomplete: Option<&str>, retain: Option<bool>) -> Result<i64> {
        // Secret values never reach the database: only their keyed fingerprint does.
        let mut attributes = r.attributes.clone();
        if let Value::Object(map) = &mut attributes {
            fingerprint::fingerprint_secrets(r.kind, map, self.secret_key());
        }
        let fence = self.fence(stack)?;
        on_db!(self.db()?, pool => {
            let mut tx = pool.write_fenced(self.fence.as_deref(), self.file.as_ref()).await?;
            // One physical resource has one key: a second key recording it (two declarations that
            // resolved to one resource at apply) is refused before it is written, in the same
            // transaction, so removing one of them can never delete what the other still declares.
            if !r.physical_id.is_empty() {
                let others: Vec<(String, String)> =
                    sqlx::query_as("SELECT name, physical_id FROM resources WHERE stack = $1 AND kind = $2 AND name <> $3")
                        .bind(stack)
                        .bind(r.kind.type_name())
                        .bind(&r.name)
                        .fetch_all(&mut *tx)
                        .await?;
                let wanted = crate::providers::canonical_id(r.kind, &r.physical_id);
                if let Some((other, _)) = others.into_iter().find(|(_, id)| crate::providers::canonical_id(r.kind, id) == wanted) {
                    return Err(StateError::SharedPhysicalId(Box::new(SharedId {
                        stack: stack.into(),
                        resource: r.name.clone(),
                        other,
                        kind: r.kind,
                        id: r.physical_id.clone(),
                    })));
                }
            }
            let serial = tx.bump(stack, fence).await?;
            sqlx::query(
                "INSERT INTO resources (stack, name, kind, physical_id, attributes, outputs, depends_on, incomplete, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (stack, name) DO UPDATE SET kind = excluded.kind, physical_id = excluded.physical_id,
                   attributes = excluded.attributes, outputs = excluded.outputs, depends_on = excluded.depends_on,
                   incomplete = excluded.incomplete, updated_at = excluded.updated_at",
            )
            .bind(stack)
            .bind(&r.name)
            .bind(r.kind.type_name())
            .bind(&r.physical_id)
            .bind(attributes.to_string())
            .bind(serde_json::to_string(&r.outputs).unwrap_or_default())
            .bind(serde_json::to_string(&r.depends_on).unwrap_or_default())
            .bind(incomplete)
            .bind(now())
            .execute(&mut *tx)
            .await?;
            if let Some(retain) = retain {
                sqlx::query("UPDATE resources SET retain_on_delete = $1 WHERE stack = $2 AND name = $3")
                    .bind(retain)
                    .bind(stack)
                    .bind(&r.name)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(serial)
        })
    }

    /// Forgets a resource after it was deleted.
    #[instrument(skip_all, fields(stack, resource))]
    pub async fn delete_resource(&self, stack: &str, resource: &str) -> Result<i64> {
        let fence = self.fence(stack)?;
        on_db!(self.db()?, pool => {
            let mut tx = pool.write_fenced(self.fence.as_deref(), self.file.as_ref()).await?;
            let serial = tx.bump(stack, fence).await?;
            sqlx::query("DELETE FROM resources WHERE stack = $1 AND name = $2").bind(stack).bind(resource).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(serial)
        })
    }

    /// Records each resource's `retain_on_delete` as the manifest has it, where it differs from what
    /// the state holds (resources not in the state are left out). Bumps the serial only if something
    /// changed.
    #[instrument(skip_all, fields(stack))]
    pub async fn set_retain(&self, stack: &str, flags: &[(String, bool)]) -> Result<()> {
        let fence = self.fence(stack)?;
        on_db!(self.db()?, pool => {
            let mut tx = pool.write_fenced(self.fence.as_deref(), self.file.as_ref()).await?;
            tx.check_fence(stack, fence).await?;
            let mut changed = 0;
            for (name, retain) in flags {
                changed += sqlx::query("UPDATE resources SET retain_on_delete = $1 WHERE stack = $2 AND name = $3 AND retain_on_delete != $1")
                    .bind(retain)
                    .bind(stack)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            if changed > 0 {
                tx.bump(stack, fence).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Moves a resource's record to a new key (the manifest renamed it), and what other resources
    /// recorded as depending on the old key to the new one.
    #[instrument(skip_all, fields(stack, from, to))]
    pub async fn rename_resource(&self, stack: &str, from: &str, to: &str) -> Result<i64> {
        let fence = self.fence(stack)?;
        on_db!(self.db()?, pool => {
            let mut tx = pool.write_fenced(self.fence.as_deref(), self.file.as_ref()).await?;
            let serial = tx.bump(stack, fence).await?;
            sqlx::query("UPDATE resources SET name = $1, updated_at = $4 WHERE stack = $2 AND name = $3")
                .bind(to)
                .bind(stack)
                .bind(from)
                .bind(now())
                .execute(&mut *tx)
                .await?;
            // `depends_on` is a JSON array of keys; keys are identifiers, so the quoted key is unambiguous.
            sqlx::query("UPDATE resources SET depends_on = replace(depends_on, $1, $2) WHERE stack = $3")
                .bind(format!("\"{from}\""))
                .bind(format!("\"{to}\""))
                .bind(stack)
                .execute(&mut *tx)
                .await?;
            // What an interrupted run journaled for the old key (a create not yet recorded, a previous
            // resource still to delete) and the key's open drift follow it: left under the old key, the
            // next run would take them for a resource that left the manifest.
            for rekey in [
                "UPDATE operations SET resource = $1 WHERE stack = $2 AND resource = $3 AND finished_at IS NULL",
                "UPDATE drift_events SET resource = $1 WHERE stack = $2 AND resource = $3 AND resolved_at IS NULL",
            ] {
                sqlx::query(rekey).bind(to).bind(stack).bind(from).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(serial)
        })
    }

    /// Forgets a resource without touching AWS (`state rm`): its record goes, and so do what
    /// interrupted runs journaled for its key (closed as forgotten, so no later run deletes or adopts
    /// what they left) and its open drift (resolved as no longer managed). Returns the serial and the
    /// journal entries it closed.
    #[instrument(skip_all, fields(stack, resource))]
    pub async fn forget_resource(&self, stack: &str, resource: &str) -> Result<(i64, Vec<PendingOperation>)> {
        let pending: Vec<PendingOperation> = self.pending_operations(stack).await?.into_iter().filter(|p| p.resource == resource).collect();
        let fence = self.fence(stack)?;
        let serial = on_db!(self.db()?, pool => {
            let mut tx = pool.write_fenced(self.fence.as_deref(), self.file.as_ref()).await?;
            let serial = tx.bump(stack, fence).await?;
            sqlx::query("DELETE FROM resources WHERE stack = $1 AND name = $2").bind(stack).bind(resource).execute(&mut *tx).await?;
            sqlx::query(
                "UPDATE operations SET finished_at = $4, outcome = $1 WHERE stack = $2 AND resource = $3 AND finished_at IS NULL",
            )
            .bind(OperationOutcome::Forgotten.to_string())
            .bind(stack)
            .bind(resource)
            .bind(now())
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE drift_events SET resolved_at = $4, how = $1 WHERE stack = $2 AND resource = $3 AND resolved_at IS NULL")
                .bind(drift::Resolution::NoLongerManaged.as_str())
                .bind(stack)
                .bind(resource)
                .bind(now())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            serial
        });
        Ok((serial, pending))
    }

    #[instrument(skip_all, fields(stack))]
    pub async fn set_outputs(&self, stack: &str, outputs: &BTreeMap<String, String>) -> Result<i64> {
        let fence = self.fence(stack)?;
        on_db!(self.db()?, pool => {
            let mut tx = pool.write_fenced(self.fence.as_deref(), self.file.as_ref()).await?;
            let serial = tx.bump(stack, fence).await?;
            sqlx::query("UPDATE stacks SET outputs = $1 WHERE name = $2")
                .bind(serde_json::to_string(outputs).unwrap_or_default())
                .bind(stack)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(serial)
        })
    }

    /// The account, partition and region the stack is pinned to; `None` when it is not pinned.
    pub async fn identity(&self, stack: &str) -> Result<Option<Identity>> {
        type Pin = (Option<String>, Option<String>, Option<String>);
        let row: Option<Pin> = on_db!(self.db()?, pool => {
            sqlx::query_as("SELECT account_id, partition, region FROM stacks WHERE name = $1").bind(stack).fetch_optional(pool).await?
        });
        Ok(match row {
            Some((Some(account_id), Some(partition), Some(region))) => Some(Identity { account_id, partition, region }),
            _ => None,
        })
    }

    /// The stack's lineage: a UUID its row got when it was created, kept for as long as the row lives
    /// (`None` before anything was recorded for the stack). A saved plan records it with the serial.
    #[instrument(skip_all, fields(stack))]
    pub async fn lineage(&self, stack: &str) -> Result<Option<String>> {
        let lineage: Option<Option<String>> = on_db!(self.db()?, pool => {
            sqlx::query_scalar("SELECT lineage FROM stacks WHERE name = $1").bind(stack).fetch_optional(pool).await?
        });
        Ok(lineage.flatten())
    }

    /// Pins the stack to `id` (creating its row if needed). Not a change of the resources: the serial stays.
    #[instrument(skip_all, fields(stack))]
    pub async fn set_identity(&self, stack: &str, id: &Identity) -> Result<()> {
        let fence = self.fence(stack)?;
        on_db!(self.db()?, pool => {
            let mut tx = pool.write_fenced(self.fence.as_deref(), self.file.as_ref()).await?;
            tx.check_fence(stack, fence).await?;
            sqlx::query(
                "INSERT INTO stacks (name, serial, account_id, partition, region) VALUES ($1, 0, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET account_id = excluded.account_id, partition = excluded.partition, region = excluded.region",
            )
            .bind(stack)
            .bind(&id.account_id)
            .bind(&id.partition)
            .bind(&id.region)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Unpins the stack (its state is empty: it may be applied anywhere).
    #[instrument(skip_all, fields(stack))]
    pub async fn clear_identity(&self, stack: &str) -> Result<()> {
        let fence = self.fence(stack)?;
        on_db!(self.db()?, pool => {
            let mut tx = pool.write_fenced(self.fence.as_deref(), self.file.as_ref()).await?;
            tx.check_fence(stack, fence).await?;
            sqlx::query("UPDATE stacks SET account_id = NULL, partition = NULL, region = NULL WHERE name = $1")
                .bind(stack)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Records the command (`apply` or `destroy`) that is changing the stack as a whole; bumps the serial.
    #[instrument(skip_all, fields(stack, operation))]
    pub async fn set_last_operation(&self, stack: &str, operation: StackOperation) -> Result<i64> {
        let fence = self.fence(stack)?;
        on_db!(self.db()?, pool => {
            let mut tx = pool.write_fenced(self.fence.as_deref(), self.file.as_ref()).await?;
            let serial = tx.bump(stack, fence).await?;
            sqlx::query("UPDATE stacks SET last_operation = $1 WHERE name = $2")
                .bind(operation.as_str())
                .bind(stack)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(serial)
        })
    }

    /// Journals a write before it is sent to AWS; returns the operation id. Refused once this
    /// process lost the stack's lock (on PostgreSQL): the write is then never sent.
    pub async fn begin_operation(
        &self,
        stack: &str,
        resource: &str,
        kind: Kind,
        action: JournalAction,
        physical_name: Option<&str>,
    ) -> Result<i64> {
        let fence = self.fence(stack)?;
        on_db!(self.db()?, pool => {
            let mut tx = pool.write_fenced(self.fence.as_deref(), self.file.as_ref()).await?;
            tx.check_fence(stack, fence).await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO operations (stack, resource, kind, action, physical_name) VALUES ($1, $2, $3, $4, $5) RETURNING id",
            )
            .bind(stack)
            .bind(resource)
            .bind(kind.type_name())
            .bind(action.as_str())
            .bind(physical_name)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(id)
        })
    }

    /// Closes a journal entry. On a fenced store whose lease was taken over it is left open (and the
    /// write fails): the next run adopts what the write made.
    pub async fn finish_operation(&self, id: i64, outcome: &OperationOutcome) -> Result<()> {
        on_db!(self.db()?, pool => {
            let mut tx = pool.write_fenced(self.fence.as_deref(), self.file.as_ref()).await?;
            sqlx::query("UPDATE operations SET finished_at = $1, outcome = $2 WHERE id = $3")
                .bind(now())
                .bind(outcome.to_string())
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn pending_operations(&self, stack: &str) -> Result<Vec<PendingOperation>> {
        type Op = (i64, String, String, String, Option<String>, String);
        let rows: Vec<Op> = on_db!(self.db()?, pool => {
            sqlx::query_as(
                "SELECT id, resource, kind, action, physical_name, started_at FROM operations WHERE stack = $1 AND finished_at IS NULL ORDER BY id",
            )
            .bind(stack)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(id, resource, kind, action, physical_name, started_at)| {
                let action = JournalAction::parse(&action).ok_or_else(|| StateError::Decode {
                    what: format!("journal entry {id}"),
                    source: serde::de::Error::custom(format!("unknown action `{action}`")),
                })?;
                Ok(PendingOperation { id, resource, kind, action, physical_name, started_at })
            })
            .collect()
    }

    /// Takes the stack's write lock, waiting up to `timeout` (with backoff) while another holds it.
    /// On PostgreSQL, a session-level advisory lock (see [`pg_lock`]).
    #[instrument(skip_all, fields(stack, operation))]
    pub async fn lock(&self, stack: &str, operation: &str, timeout: Duration) -> Result<LockInfo> {
        let pool = match self.db()? {
            Db::Sqlite(pool) => pool,
            Db::Postgres(pool) => return pg_lock::lock(pool, &self.held, stack, operation, timeout).await,
        };
        let start = std::time::Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            let id = lock_id();
            let host = hostname();
            let inserted = self
                .wrote(
                    sqlx::query(
                        "INSERT INTO locks (stack, id, operation, pid, host, acquired_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (stack) DO NOTHING",
                    )
                    .bind(stack)
                    .bind(&id)
                    .bind(operation)
                    .bind(i64::from(std::process::id()))
                    .bind(&host)
                    .bind(now())
                    .execute(pool)
                    .await,
                )
                .await?
                .rows_affected();
            if inserted == 1 {
                return self.lock_info(stack).await?.ok_or_else(|| StateError::NoSuchLock { stack: stack.into(), id, current: None });
            }
            let holder = self.lock_info(stack).await?;
            match holder {
                None => continue,
                Some(holder) if start.elapsed() + delay > timeout => {
                    return Err(StateError::Locked { stack: stack.into(), holder: Box::new(holder), shared: false });
                }
                Some(holder) => {
                    tracing::info!(stack, holder = %holder.id, ?delay, "stack is locked; waiting (backoff)");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Who holds the stack's lock. On PostgreSQL only a live holder counts: a row whose session is
    /// gone (its holder died or lost its connection) is not a lock any more.
    pub async fn lock_info(&self, stack: &str) -> Result<Option<LockInfo>> {
        type Lock = (String, String, i64, String, String);
        let row: Option<Lock> = match self.db()? {
            Db::Sqlite(pool) => {
                sqlx::query_as("SELECT id, operation, pid, host, acquired_at FROM locks WHERE stack = $1")
                    .bind(stack)
                    .fetch_optional(pool)
                    .await?
            }
            Db::Postgres(pool) => pg_lock::live_holder(pool, stack).await?,
        };
        Ok(row.map(|(id, operation, pid, host, acquired_at)| LockInfo { id, operation, pid, host, acquired_at }))
    }

    /// Releases a lock this process holds.
    pub async fn unlock(&self, stack: &str, id: &str) -> Result<()> {
        on_db!(self.db()?, pool => {
            self.wrote(sqlx::query("DELETE FROM locks WHERE stack = $1 AND id = $2").bind(stack).bind(id).execute(pool).await).await?;
        });
        self.held.release(stack, id).await;
        Ok(())
    }

    /// Breaks a lock left by a process that died; only the exact lock id is accepted, and a holder
    /// that is still running on this host is refused unless `force`. On PostgreSQL a lock whose
    /// holder died is already free; a live holder's session is ended (`pg_terminate_backend`) only
    /// with `force`.
    pub async fn force_unlock(&self, stack: &str, id: &str, force: bool) -> Result<LockInfo> {
        let current = self.lock_info(stack).await?;
        match current {
            Some(c) if c.id == id => {
                let alive = match &self.db {
                    Db::Sqlite(_) => c.status() == HolderStatus::Running,
                    Db::Postgres(_) => true,
                };
                if alive && !force {
                    return Err(StateError::HolderAlive { stack: stack.into(), holder: Box::new(c) });
                }
                if let Db::Postgres(pool) = &self.db {
                    pg_lock::terminate_holder(pool, stack).await?;
                }
                self.unlock(stack, id).await?;
                Ok(c)
            }
            current => Err(StateError::NoSuchLock { stack: stack.into(), id: id.into(), current: current.map(Box::new) }),
        }
    }

    /// The SQLite connection pool, for tests that look at the tables themselves.
    #[cfg(test)]
    pub(crate) fn pool_for_tests(&self) -> SqlitePool {
        match &self.db {
            Db::Sqlite(pool) => pool.clone(),
            Db::Postgres(_) => panic!("not a SQLite store"),
        }
    }

    pub async fn close(&self) {
        self.held.release_all().await;
        on_db!(&self.db, pool => pool.close().await)
    }
}

impl Store {
    /// One pacing transaction: as the one writer, drops the rows of every budget that say nothing
    /// any more, reads `budget`'s, lets `change` work on them at the clock's time (read once the
    /// write lock is held), writes them back and commits. Nothing waits inside.
    async fn pace_update(
        &self,
        budget: &pacing::Budget,
        clock: &pacing::Clock,
        change: impl FnOnce(&mut pacing::Rows, i64) -> i64,
    ) -> Result<(i64, pacing::Rows)> {
        on_db!(self.db()?, pool => {
            let mut tx = pool.write(self.file.as_ref()).await?;
            let now = clock.now_ms();
            sqlx::query("DELETE FROM pace_ledger WHERE at_ms <= $1").bind(now).execute(&mut *tx).await?;
            let mut rows = pacing::Rows::new();
            let found: Vec<(String, i64, i64)> =
                sqlx::query_as("SELECT bucket, at_ms, spent_ms FROM pace_ledger WHERE account_id = $1 AND region = $2 AND service = $3")
                    .bind(&budget.account_id)
                    .bind(&budget.region)
                    .bind(&budget.service)
                    .fetch_all(&mut *tx)
                    .await?;
            for (bucket, at_ms, spent_ms) in found {
                rows.insert(bucket, pacing::Row { at_ms, spent_ms });
            }
            let before = rows.clone();
            let out = change(&mut rows, now);
            for (bucket, row) in rows.iter().filter(|(b, r)| before.get(*b) != Some(r)) {
                sqlx::query(
                    "INSERT INTO pace_ledger (account_id, region, service, bucket, at_ms, spent_ms) VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (account_id, region, service, bucket) DO UPDATE SET at_ms = excluded.at_ms, spent_ms = excluded.spent_ms",
                )
                .bind(&budget.account_id)
                .bind(&budget.region)
                .bind(&budget.service)
                .bind(bucket)
                .bind(row.at_ms)
                .bind(row.spent_ms)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok((out, rows))
        })
    }
}

impl pacing::PaceLedger for Store {
    fn reserve<'a>(
        &'a self,
        budget: &'a pacing::Budget,
        limits: &'a pacing::Limits,
        operation: Option<&'a str>,
        clock: &'a pacing::Clock,
    ) -> futures::future::BoxFuture<'a, Result<(i64, pacing::Rows)>> {
        Box::pin(self.pace_update(budget, clock, move |rows, now| pacing::reserve(rows, limits, operation, now)))
    }

    fn spent<'a>(
        &'a self,
        budget: &'a pacing::Budget,
        limits: &'a pacing::Limits,
        operation: Option<&'a str>,
        clock: &'a pacing::Clock,
    ) -> futures::future::BoxFuture<'a, Result<(i64, pacing::Rows)>> {
        Box::pin(self.pace_update(budget, clock, move |rows, now| pacing::spent(rows, limits, operation, now)))
    }

    fn row<'a>(&'a self, budget: &'a pacing::Budget, bucket: &'a str) -> futures::future::BoxFuture<'a, Result<Option<pacing::Row>>> {
        Box::pin(async move {
            let row: Option<(i64, i64)> = on_db!(self.db()?, pool => {
                sqlx::query_as("SELECT at_ms, spent_ms FROM pace_ledger WHERE account_id = $1 AND region = $2 AND service = $3 AND bucket = $4")
                    .bind(&budget.account_id)
                    .bind(&budget.region)
                    .bind(&budget.service)
                    .bind(bucket)
                    .fetch_optional(pool)
                    .await?
            });
            Ok(row.map(|(at_ms, spent_ms)| pacing::Row { at_ms, spent_ms }))
        })
    }
}

fn lock_id() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{:x}-{:x}", std::process::id(), nanos & 0xffff_ffff_ffff)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether every migration this binary knows is applied (same checksums); refuses a schema newer
/// than it knows before anything is written.
async fn applied_up_to_date(conn: &mut sqlx::SqliteConnection, path: &Path) -> Result<bool> {
    let rows: Vec<(i64, Vec<u8>, bool)> =
        match sqlx::query_as("SELECT version, checksum, success FROM _sqlx_migrations").fetch_all(conn).await {
            Ok(rows) => rows,
            Err(sqlx::Error::Database(e)) if e.message().contains("no such table") => return Ok(false),
            Err(e) => return Err(classify_open_error(path, e)),
        };
    backend::up_to_date(&MIGRATOR, &rows).map_err(|found| StateError::NewerSchema { path: path.into(), found })
}

/// Builds a new, migrated state file next to `path` and links it into place, so that `path` only
/// ever exists complete. If another process got there first, its file is kept and ours dropped.
async fn create_new(path: &Path) -> Result<()> {
    let create_err = |source| StateError::Create { path: path.into(), source };
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(create_err)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "state".into());
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = parent.join(format!(".{name}.{}-{seq}.new", lock_id()));
    create_private(&tmp).map_err(create_err)?;
    let built = build(&tmp, path).await;
    let linked = match built {
        Ok(()) => match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            // Another process made it meanwhile: theirs is complete too; use it.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            // A file system without hard links: rename, which does not clobber what is not there.
            Err(_) if !path.exists() => std::fs::rename(&tmp, path).map_err(create_err),
            Err(_) => Ok(()),
        },
        Err(e) => Err(e),
    };
    for leftover in [tmp.clone(), sidecar(&tmp, "-wal"), sidecar(&tmp, "-shm"), sidecar(&tmp, "-journal")] {
        let _ = std::fs::remove_file(leftover);
    }
    linked
}

/// Migrates the new file at `tmp` and closes it with everything in the main file (no WAL left).
async fn build(tmp: &Path, path: &Path) -> Result<()> {
    let options = SqliteConnectOptions::from_str("sqlite:")
        .map_err(|source| StateError::Open { path: path.into(), source })?
        .filename(tmp)
        .create_if_missing(false)
        // WAL is recorded in the file itself: openers of the real file need not switch to it (a
        // switch takes an exclusive lock the busy timeout cannot wait for).
        .journal_mode(SqliteJournalMode::Wal)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT);
    let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await.map_err(|e| classify_open_error(path, e))?;
    let result = async {
        Store::migrate(&pool, path).await?;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&pool).await?;
        Ok::<(), StateError>(())
    }
    .await;
    pool.close().await;
    result?;
    if std::fs::metadata(sidecar(tmp, "-wal")).is_ok_and(|m| m.len() > 0) {
        return Err(StateError::Create {
            path: path.into(),
            source: std::io::Error::other("the new state file's write-ahead log was not checkpointed"),
        });
    }
    Ok(())
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn decode<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|source| StateError::Decode { what: what.to_string(), source })
}

fn classify_open_error(path: &Path, e: sqlx::Error) -> StateError {
    let text = e.to_string();
    if text.contains("file is not a database") || text.contains("malformed") {
        StateError::Corrupt { path: path.into() }
    } else {
        StateError::Open { path: path.into(), source: e }
    }
}

/// Creates a new, empty file only this user can read (a private name: the file is built aside).
#[cfg(unix)]
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map(|_| ())
}

#[cfg(not(unix))]
fn create_private(path: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new().write(true).create_new(true).open(path).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::test_backends::Backend;
    use serde_json::json;
    use std::collections::BTreeSet;

    fn role(name: &str) -> ResourceState {
        ResourceState {
            name: name.into(),
            kind: Kind::IamRole,
            physical_id: format!("{name}-physical"),
            attributes: json!({"name": name}),
            outputs: BTreeMap::from([("arn".to_string(), format!("arn:aws:iam::1:role/{name}"))]),
            depends_on: vec![],
        }
    }

    both!(an_incomplete_resource_is_loaded_as_such_until_recorded_complete);
    async fn an_incomplete_resource_is_loaded_as_such_until_recorded_complete(backend: Backend) {
        let store = backend.store().await;
        store.put_incomplete_resource("s", &role("a"), "iam:PutRolePolicy: MalformedPolicyDocument").await.unwrap();
        let state = store.load("s").await.unwrap();
        assert_eq!(state.resources["a"], role("a"));
        assert_eq!(state.incomplete.get("a").map(String::as_str), Some("iam:PutRolePolicy: MalformedPolicyDocument"));
        store.put_resource("s", &role("a")).await.unwrap();
        assert!(store.load("s").await.unwrap().incomplete.is_empty(), "a later complete record clears the mark");
    }

    /// Open drift of `resource`, written as watch writes it.
    async fn open_drift(store: &Store, resource: &str) {
        store
            .exec_for_tests(
                "INSERT INTO drift_events (stack, resource, kind, field) VALUES ('s', $1, 'aws_iam_role', 'description')",
                &[resource],
            )
            .await
            .unwrap();
    }

    both!(a_moved_key_takes_its_journal_and_open_drift_along_and_a_forgotten_key_closes_them);
    async fn a_moved_key_takes_its_journal_and_open_drift_along_and_a_forgotten_key_closes_them(backend: Backend) {
        let store = backend.store().await;
        store.put_resource("s", &role("a")).await.unwrap();
        store.put_resource("s", &role("b")).await.unwrap();
        // An unfinished create-first replacement of `a`, and drift on both keys.
        let previous = store.begin_operation("s", "a", Kind::IamRole, JournalAction::DeletePrevious, Some("a-old")).await.unwrap();
        open_drift(&store, "a").await;
        open_drift(&store, "b").await;

        store.rename_resource("s", "a", "c").await.unwrap();
        let pending = store.pending_operations("s").await.unwrap();
        assert_eq!(pending.iter().map(|p| (p.id, p.resource.as_str())).collect::<Vec<_>>(), vec![(previous, "c")]);
        let open = store.drift_events(Some("s"), false).await.unwrap();
        assert_eq!(open.iter().map(|e| e.resource.as_str()).collect::<BTreeSet<_>>(), BTreeSet::from(["b", "c"]));

        let (_, closed) = store.forget_resource("s", "c").await.unwrap();
        assert_eq!(closed.iter().map(|p| p.id).collect::<Vec<_>>(), vec![previous]);
        assert!(store.pending_operations("s").await.unwrap().is_empty(), "no later run acts on a forgotten key's journal");
        let outcome =
            store.texts_for_tests("SELECT outcome FROM operations WHERE id = CAST($1 AS BIGINT)", &[&previous.to_string()]).await.unwrap();
        assert_eq!(outcome, ["forgotten by state rm"]);
        let open = store.drift_events(Some("s"), false).await.unwrap();
        assert_eq!(open.iter().map(|e| e.resource.as_str()).collect::<Vec<_>>(), vec!["b"], "the other key's drift stays open");
        assert_eq!(store.load("s").await.unwrap().resources.keys().collect::<Vec<_>>(), vec!["b"]);
    }

    both!(retain_on_delete_is_recorded_with_the_resource);
    async fn retain_on_delete_is_recorded_with_the_resource(backend: Backend) {
        let store = backend.store().await;
        store.put_resource_retaining("s", &role("a"), true).await.unwrap();
        assert!(store.load("s").await.unwrap().retained.contains("a"));
        store.put_resource_retaining("s", &role("a"), false).await.unwrap();
        assert!(!store.load("s").await.unwrap().retained.contains("a"));
    }

    both!(serial_increases_on_every_write_and_state_round_trips);
    async fn serial_increases_on_every_write_and_state_round_trips(backend: Backend) {
        let store = backend.store().await;
        assert_eq!(store.put_resource("s", &role("a")).await.unwrap(), 1);
        assert_eq!(store.put_resource("s", &role("b")).await.unwrap(), 2);
        assert_eq!(store.delete_resource("s", "a").await.unwrap(), 3);
        let state = store.load("s").await.unwrap();
        assert_eq!(state.serial, 3);
        assert_eq!(state.resources.keys().collect::<Vec<_>>(), vec!["b"]);
        assert_eq!(state.resources["b"], role("b"));
        assert!(store.load("other").await.unwrap().resources.is_empty());
    }

    #[tokio::test]
    async fn file_is_private_and_corrupt_files_are_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = Store::open(&path).await.unwrap();
        store.put_resource("s", &role("a")).await.unwrap();
        store.close().await;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let reopened = Store::open(&path).await.unwrap();
        assert_eq!(reopened.load("s").await.unwrap().serial, 1);
        reopened.close().await;

        let bad = dir.path().join("bad.db");
        std::fs::write(&bad, b"this is not sqlite, just text that is long enough to matter.............................................")
            .unwrap();
        let before = std::fs::read(&bad).unwrap();
        let err = Store::open(&bad).await.unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
        assert_eq!(std::fs::read(&bad).unwrap(), before);
    }

    #[tokio::test]
    async fn one_writer_per_stack_and_force_unlock_needs_the_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let a = Store::open(&path).await.unwrap();
        let b = Store::open(&path).await.unwrap();
        let held = a.lock("s", "apply", Duration::ZERO).await.unwrap();
        let err = b.lock("s", "destroy", Duration::from_millis(300)).await.unwrap_err();
        assert!(matches!(&err, StateError::Locked { holder, .. } if holder.id == held.id), "{err}");
        assert!(err.to_string().contains(&format!("reconcile force-unlock {}", held.id)), "{err}");
        // Another stack is independent.
        b.lock("other", "apply", Duration::ZERO).await.unwrap();
        let wrong = b.force_unlock("s", "wrong", true).await.unwrap_err();
        assert!(matches!(wrong, StateError::NoSuchLock { .. }), "{wrong}");
        // Never hands out the id, even with --force; says who holds it and that it is alive.
        assert!(!wrong.to_string().contains(&held.id), "{wrong}");
        assert!(wrong.to_string().contains(&format!("apply (pid {} on {}, running)", std::process::id(), hostname())), "{wrong}");
        // The holder (this process) is alive on this host: refused unless forced.
        let alive = b.force_unlock("s", &held.id, false).await.unwrap_err();
        assert!(matches!(alive, StateError::HolderAlive { .. }), "{alive}");
        assert!(alive.to_string().contains("still running") && alive.to_string().contains("--force"), "{alive}");
        assert!(b.lock_info("s").await.unwrap().is_some());
        b.force_unlock("s", &held.id, true).await.unwrap();
        let again = b.lock("s", "apply", Duration::ZERO).await.unwrap();
        b.unlock("s", &again.id).await.unwrap();
        assert!(b.lock_info("s").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_lock_whose_holder_is_gone_is_broken_with_its_id_alone() {
        let store = Store::memory().await.unwrap();
        // A pid no process has: a child that has exited (and been reaped).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = i64::from(child.id());
        child.wait().unwrap();
        sqlx::query("INSERT INTO locks (stack, id, operation, pid, host) VALUES ('s', 'dead-1', 'apply', ?, ?)")
            .bind(pid)
            .bind(hostname())
            .execute(&store.pool_for_tests())
            .await
            .unwrap();
        let info = store.lock_info("s").await.unwrap().unwrap();
        assert_eq!(info.status(), HolderStatus::Gone);
        let wrong = store.force_unlock("s", "nope", false).await.unwrap_err();
        assert!(wrong.to_string().contains("no longer running") && !wrong.to_string().contains("dead-1"), "{wrong}");
        store.force_unlock("s", "dead-1", false).await.unwrap();
        assert!(store.lock_info("s").await.unwrap().is_none());
        // Another host's holder cannot be checked from here: said so, and the id alone breaks it.
        let other = LockInfo { host: "elsewhere.invalid".into(), ..info };
        assert_eq!(other.status(), HolderStatus::Unknown);
        assert!(other.describe().contains("cannot tell"), "{}", other.describe());
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = Store::open(&path).await.unwrap();
        store.put_resource("s", &role("a")).await.unwrap();
        sqlx::query("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (99990101000000, 'from the future', 1, x'00', 0)")
            .execute(&store.pool_for_tests())
            .await
            .unwrap();
        store.close().await;
        let err = Store::open(&path).await.unwrap_err();
        assert!(matches!(err, StateError::NewerSchema { found: 99990101000000, .. }), "{err}");
        assert!(err.to_string().contains("upgrade reconcile"), "{err}");
        // Nothing was migrated or written: the rows are as they were.
        let options = SqliteConnectOptions::from_str("sqlite:").unwrap().filename(&path).read_only(true);
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await.unwrap();
        let versions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations").fetch_one(&pool).await.unwrap();
        assert_eq!(versions as usize, MIGRATOR.iter().count() + 1);
        let serial: i64 = sqlx::query_scalar("SELECT serial FROM stacks WHERE name = 's'").fetch_one(&pool).await.unwrap();
        assert_eq!(serial, 1);
    }

    both!(many_processes_can_open_a_new_state_at_once);
    async fn many_processes_can_open_a_new_state_at_once(backend: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let path = backend.target(&dir).await;
        let opens: Vec<_> = (0..8)
            .map(|_| {
                tokio::spawn({
                    let path = path.clone();
                    async move { Store::open(&path).await }
                })
            })
            .collect();
        for o in opens {
            let store = o.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
            store.close().await;
        }
    }

    both!(owners_are_found_across_stacks_and_the_first_to_record_a_singleton_owns_it);
    async fn owners_are_found_across_stacks_and_the_first_to_record_a_singleton_owns_it(backend: Backend) {
        let store = backend.store().await;
        let account = |name: &str| ResourceState {
            name: name.into(),
            kind: Kind::ApiGatewayAccount,
            physical_id: "account".into(),
            attributes: json!({}),
            outputs: BTreeMap::new(),
            depends_on: vec![],
        };
        store.put_resource("b", &account("acct")).await.unwrap();
        store.put_resource("a", &account("setting")).await.unwrap();
        store.put_resource("a", &role("r")).await.unwrap();
        let permission = ResourceState { kind: Kind::LambdaPermission, physical_id: "Hello/Sid".into(), ..role("perm") };
        store.put_resource("a", &permission).await.unwrap();

        let owners = store.owners_of(Kind::LambdaPermission, "arn:aws:lambda:us-east-1:1:function:Hello/Sid").await.unwrap();
        assert_eq!(owners.iter().map(|o| (o.stack.as_str(), o.resource.as_str())).collect::<Vec<_>>(), vec![("a", "perm")]);
        assert!(store.owners_of(Kind::LambdaPermission, "Hello/Other").await.unwrap().is_empty());
        assert!(store.owners_of(Kind::LogGroup, "r-physical").await.unwrap().is_empty(), "ids are per kind");

        // `b` recorded the account setting first: it owns it, even after `a` updated its own row.
        store.put_resource("a", &account("setting")).await.unwrap();
        assert!(store.load("b").await.unwrap().foreign_singletons.is_empty());
        let seen_by_a = store.load("a").await.unwrap().foreign_singletons;
        assert_eq!(seen_by_a.iter().map(|o| (o.stack.as_str(), o.resource.as_str())).collect::<Vec<_>>(), vec![("b", "acct")]);
        // Once `b` lets it go, `a` owns it.
        store.delete_resource("b", "acct").await.unwrap();
        assert!(store.load("a").await.unwrap().foreign_singletons.is_empty());
        assert_eq!(store.load("b").await.unwrap().foreign_singletons.len(), 1);
    }

    both!(one_physical_resource_is_never_recorded_under_two_keys);
    async fn one_physical_resource_is_never_recorded_under_two_keys(backend: Backend) {
        let store = backend.store().await;
        let assoc = |name: &str, id: &str| ResourceState { kind: Kind::WebAclAssociation, physical_id: id.into(), ..role(name) };
        let stage = "arn:aws:apigateway:us-east-1::/restapis/a1/stages/prod";
        store.put_resource("s", &assoc("one", stage)).await.unwrap();
        let err = store.put_resource("s", &assoc("two", stage)).await.unwrap_err();
        assert!(matches!(&err, StateError::SharedPhysicalId(s) if s.resource == "two" && s.other == "one"), "{err}");
        let recorded: Vec<String> = store.load("s").await.unwrap().resources.keys().cloned().collect();
        assert_eq!(recorded, vec!["one".to_string()], "nothing recorded for the second key");
        // Ids compared as AWS would: a permission's function by name or ARN alike.
        let perm = |name: &str, id: &str| ResourceState { kind: Kind::LambdaPermission, physical_id: id.into(), ..role(name) };
        store.put_resource("s", &perm("p1", "Hello/Sid")).await.unwrap();
        assert!(store.put_resource("s", &perm("p2", "arn:aws:lambda:us-east-1:1:function:Hello/Sid")).await.is_err());
        // The same key again (an update), another kind, another stack: all fine.
        store.put_resource("s", &assoc("one", stage)).await.unwrap();
        store.put_resource("s", &ResourceState { physical_id: stage.into(), ..role("r") }).await.unwrap();
        store.put_resource("t", &assoc("two", stage)).await.unwrap();
    }

    #[tokio::test]
    async fn a_zero_length_state_file_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        std::fs::write(&path, b"").unwrap();
        let err = Store::open(&path).await.unwrap_err();
        assert!(matches!(err, StateError::Empty { .. }), "{err}");
        assert!(err.to_string().contains("is empty (0 bytes)"), "{err}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "the file must be left as it was");
    }

    #[tokio::test]
    async fn a_new_state_file_appears_complete_and_leaves_nothing_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("state.db");
        let store = Store::open(&path).await.unwrap();
        store.close().await;
        let names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("state.db"))
            .collect();
        assert!(names.is_empty(), "leftovers: {names:?}");
        assert!(std::fs::metadata(&path).unwrap().len() > 0);
        // Already in WAL mode and migrated: a read-only open finds the tables.
        let options = SqliteConnectOptions::from_str("sqlite:").unwrap().filename(&path).read_only(true);
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await.unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&pool).await.unwrap();
        assert_eq!(mode, "wal");
        let versions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations").fetch_one(&pool).await.unwrap();
        assert_eq!(versions as usize, MIGRATOR.iter().count());
    }

    // Writers on separate pools (as separate processes or watch passes would be), each reading
    // before it writes: none may get "database is locked".
    both!(concurrent_writers_on_one_state_wait_for_each_other);
    async fn concurrent_writers_on_one_state_wait_for_each_other(backend: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let path = backend.target(&dir).await;
        Store::open(&path).await.unwrap().close().await;
        let tasks: Vec<_> = (0..6)
            .map(|w| {
                let path = path.clone();
                tokio::spawn(async move {
                    let store = Store::open(&path).await?;
                    let stack = format!("s{}", w % 3);
                    let all: BTreeSet<String> = ["f".to_string()].into();
                    for i in 0..25 {
                        store.put_resource(&stack, &role(&format!("r{w}"))).await?;
                        let d = Drift {
                            resource: "f".into(),
                            kind: Kind::LambdaFunction,
                            field: "memory_size".into(),
                            expected: json!(512),
                            actual: json!(i),
                            ignored: false,
                        };
                        let observed = if i % 3 == 2 { vec![] } else { vec![d] };
                        store.record_drift(&stack, &observed, &all, &all).await?;
                        store.set_outputs(&stack, &BTreeMap::from([("n".to_string(), i.to_string())])).await?;
                    }
                    store.close().await;
                    Ok::<_, StateError>(())
                })
            })
            .collect();
        let mut errors = Vec::new();
        for t in tasks {
            if let Err(e) = t.await.unwrap() {
                errors.push(e.to_string());
            }
        }
        assert!(errors.is_empty(), "{errors:?}");
        let store = Store::open(&path).await.unwrap();
        // Every write was counted: 2 writers per stack x 25 x (put + outputs).
        assert_eq!(store.load("s0").await.unwrap().serial, 100);
    }

    // A write whose COMMIT fails (a deferred constraint here; a full disk, where SQLite has already
    // rolled the transaction back and the ROLLBACK fails too) never leaves its connection in the pool
    // mid-transaction: nothing of it is recorded, and every later write goes through, from this store
    // (on each of its connections) and from another process.
    both!(a_failed_commit_never_leaves_a_connection_in_a_transaction);
    async fn a_failed_commit_never_leaves_a_connection_in_a_transaction(backend: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let target = backend.target(&dir).await;
        let store = Store::open(&target).await.unwrap();
        store.put_resource("s", &role("a")).await.unwrap();
        on_db!(&store.db, pool => {
            let mut tx = pool.write(store.file.as_ref()).await.unwrap();
            sqlx::query("CREATE TEMP TABLE t (id INTEGER PRIMARY KEY, p INTEGER REFERENCES t (id) DEFERRABLE INITIALLY DEFERRED)")
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query("INSERT INTO t VALUES (1, 2)").execute(&mut *tx).await.unwrap();
            sqlx::query("UPDATE stacks SET serial = 99 WHERE name = 's'").execute(&mut *tx).await.unwrap();
            let err = tx.commit().await.unwrap_err();
            assert!(err.to_string().to_lowercase().contains("foreign key"), "{err}");
        });
        if backend == Backend::Sqlite {
            // As on a full disk: the transaction is gone under the connection, COMMIT and ROLLBACK fail.
            on_db!(&store.db, pool => {
                let mut tx = pool.write(store.file.as_ref()).await.unwrap();
                sqlx::query("ROLLBACK").execute(&mut *tx).await.unwrap();
                assert!(tx.commit().await.is_err());
            });
        }
        assert_eq!(store.load("s").await.unwrap().serial, 1, "nothing of the failed write is recorded");
        let other = Store::open(&target).await.unwrap();
        other.put_resource("s", &role("other")).await.unwrap();
        for i in 0..8 {
            store.put_resource("s", &role(&format!("r{i}"))).await.unwrap();
        }
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { store.put_resource("s", &role(&format!("p{i}"))).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(other.load("s").await.unwrap().serial, 18);
    }

    #[tokio::test]
    async fn a_new_state_is_refused_beside_a_leftover_wal_or_shm_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        for leftovers in [&["-wal", "-shm"][..], &["-wal"], &["-shm"]] {
            for suffix in leftovers {
                std::fs::write(sidecar(&path, suffix), b"the log of a state file that is gone").unwrap();
            }
            let err = Store::open(&path).await.unwrap_err();
            assert!(matches!(&err, StateError::Leftovers { leftovers: l, .. } if l.len() == leftovers.len()), "{err}");
            let text = err.to_string();
            for suffix in leftovers {
                assert!(text.contains(&sidecar(&path, suffix).display().to_string()), "{text}");
            }
            assert!(text.contains("refusing to create a new state file") && text.contains("delete them first"), "{text}");
            assert!(!path.exists(), "no state file is made beside them");
            for suffix in leftovers {
                assert_eq!(std::fs::read(sidecar(&path, suffix)).unwrap(), b"the log of a state file that is gone", "left as they were");
                std::fs::remove_file(sidecar(&path, suffix)).unwrap();
            }
        }
        Store::open(&path).await.unwrap().close().await;
    }

    /// A state file deleted, or replaced by another, under a store that has it open: the store
    /// writes nothing more (into the unlinked file, nor into the new one), says so naming the
    /// path, and the next opener at a path with the old write-ahead log beside it is refused.
    #[tokio::test]
    async fn a_state_file_deleted_or_replaced_under_a_store_is_never_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = Store::open(&path).await.unwrap();
        store.put_resource("s", &role("a")).await.unwrap();
        store.check_file().unwrap();

        // Replaced: another state renamed over it (a restore from a backup while it was open).
        let other_path = dir.path().join("other.db");
        let other = Store::open(&other_path).await.unwrap();
        other.put_resource("s", &role("b")).await.unwrap();
        other.close().await;
        std::fs::rename(&other_path, &path).unwrap();
        let err = store.put_resource("s", &role("c")).await.unwrap_err();
        assert!(matches!(&err, StateError::Vanished { why, .. } if why.contains("replaced by another file")), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
        assert!(matches!(store.load("s").await, Err(StateError::Vanished { .. })), "nothing read either");
        assert!(matches!(store.lock("s", "apply", Duration::ZERO).await, Err(StateError::Vanished { .. })));
        assert!(matches!(store.check_file(), Err(StateError::Vanished { .. })));
        // Nothing went into the file it had open, nor into the one now at the path.
        let names: Vec<String> =
            sqlx::query_scalar("SELECT name FROM resources ORDER BY name").fetch_all(&store.pool_for_tests()).await.unwrap();
        assert_eq!(names, ["a"]);
        store.close().await;

        // Deleted (its -wal stays while it is open).
        let path = dir.path().join("deleted.db");
        let store = Store::open(&path).await.unwrap();
        store.put_resource("s", &role("a")).await.unwrap();
        std::fs::remove_file(&path).unwrap();
        let err = store.put_resource("s", &role("c")).await.unwrap_err();
        assert!(matches!(&err, StateError::Vanished { why, .. } if why.contains("deleted or moved away")), "{err}");
        let names: Vec<String> =
            sqlx::query_scalar("SELECT name FROM resources ORDER BY name").fetch_all(&store.pool_for_tests()).await.unwrap();
        assert_eq!(names, ["a"]);
        assert!(matches!(Store::open(&path).await, Err(StateError::Leftovers { .. })), "the old log is not taken for a new state's");
        assert!(!path.exists());
        store.close().await;
    }

    /// SQLITE_BUSY past the busy timeout names the holders the state records, and what to do.
    #[tokio::test]
    async fn database_is_locked_names_the_recorded_holders() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = Store::open_with(&path, SqlitePoolOptions::new().max_connections(2), Duration::from_millis(200)).await.unwrap();
        let held = store.lock("s", "apply", Duration::ZERO).await.unwrap();
        let holder = lease::holder_id();
        store.claim_lease("w", &holder, "h", lease::now_ms(), 60_000).await.unwrap();
        // Another program holds the write lock of the file.
        let blocker = SqlitePoolOptions::new().max_connections(1).connect_with(SqliteConnectOptions::new().filename(&path)).await.unwrap();
        let mut writer = blocker.begin_with("BEGIN IMMEDIATE").await.unwrap();
        sqlx::query("UPDATE stacks SET serial = serial").execute(&mut *writer).await.unwrap();

        let err = store.put_resource("s", &role("a")).await.unwrap_err();
        assert!(matches!(err, StateError::Busy { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("stack `s` is locked by apply (pid {} on {}, running) since {}", held.pid, held.host, held.acquired_at)),
            "{text}"
        );
        assert!(text.contains(&format!("stack `w` is watched by `reconcile watch` {holder}")), "{text}");
        assert!(text.contains(&format!("fuser -v {}", path.display())) && text.contains("database is locked"), "{text}");
        // An autocommit write is told the same.
        let err = store
            .renew_lease(&lease::Fence { stack: "w".into(), holder: holder.clone(), generation: 1 }, "h", lease::now_ms(), 60_000)
            .await;
        assert!(matches!(err, Err(StateError::Busy { .. })), "{err:?}");

        writer.rollback().await.unwrap();
        store.put_resource("s", &role("a")).await.unwrap();
        blocker.close().await;
        store.close().await;
    }

    both!(the_last_operation_is_recorded_per_stack_and_bumps_the_serial);
    async fn the_last_operation_is_recorded_per_stack_and_bumps_the_serial(backend: Backend) {
        let store = backend.store().await;
        assert_eq!(store.load("s").await.unwrap().last_operation, None);
        store.put_resource("s", &role("a")).await.unwrap();
        assert_eq!(store.set_last_operation("s", StackOperation::Destroy).await.unwrap(), 2);
        store.delete_resource("s", "a").await.unwrap();
        let state = store.load("s").await.unwrap();
        assert_eq!((state.last_operation, state.serial), (Some(StackOperation::Destroy), 3));
        store.set_last_operation("s", StackOperation::Apply).await.unwrap();
        assert_eq!(store.load("s").await.unwrap().last_operation, Some(StackOperation::Apply));
        assert_eq!(store.load("other").await.unwrap().last_operation, None);
    }

    both!(pending_operations_are_listed_until_finished);
    async fn pending_operations_are_listed_until_finished(backend: Backend) {
        let store = backend.store().await;
        let id = store.begin_operation("s", "fn", Kind::LambdaFunction, JournalAction::Create, Some("Hello")).await.unwrap();
        assert_eq!(store.pending_operations("s").await.unwrap().len(), 1);
        store.finish_operation(id, &OperationOutcome::Ok).await.unwrap();
        assert!(store.pending_operations("s").await.unwrap().is_empty());
    }

    both!(journal_actions_round_trip_as_the_text_the_journal_always_had);
    async fn journal_actions_round_trip_as_the_text_the_journal_always_had(backend: Backend) {
        let store = backend.store().await;
        let all = [JournalAction::Create, JournalAction::Update, JournalAction::Delete, JournalAction::DeletePrevious];
        for action in all {
            store.begin_operation("s", "r", Kind::LogGroup, action, Some("lg")).await.unwrap();
        }
        let read: Vec<JournalAction> = store.pending_operations("s").await.unwrap().into_iter().map(|op| op.action).collect();
        assert_eq!(read, all);
        // Stored as the same TEXT values as before the enum, so older state files read the same.
        let stored = store.texts_for_tests("SELECT action FROM operations ORDER BY id", &[]).await.unwrap();
        assert_eq!(stored, ["create", "update", "delete", "delete-previous"]);
        assert!(all.iter().zip(&stored).all(|(a, s)| a.as_str() == s));
        // An entry an older version wrote reads as its variant.
        store
            .exec_for_tests(
                "INSERT INTO operations (stack, resource, kind, action, physical_name) VALUES ('old', 'fn', 'aws_lambda_function', 'delete-previous', 'Old')",
                &[],
            )
            .await
            .unwrap();
        let old = store.pending_operations("old").await.unwrap();
        assert_eq!((old[0].action, old[0].physical_name.as_deref()), (JournalAction::DeletePrevious, Some("Old")));
        assert_eq!(serde_json::to_value(&old[0]).unwrap()["action"], "delete-previous");
        // The outcome is the text it always was.
        let id = old[0].id;
        store.finish_operation(id, &OperationOutcome::Failed("boom".into())).await.unwrap();
        let outcome =
            store.texts_for_tests("SELECT outcome FROM operations WHERE id = CAST($1 AS BIGINT)", &[&id.to_string()]).await.unwrap();
        assert_eq!(outcome, ["failed: boom"]);
    }

    /// A raw connection to a PostgreSQL test database, to look at (or break) what a store did.
    async fn raw_pg(url: &Path) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&url.to_string_lossy()).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_a_newer_schema_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let url = Backend::Postgres.target(&dir).await;
        let store = Store::open(&url).await.unwrap();
        store.put_resource("s", &role("a")).await.unwrap();
        store
            .exec_for_tests(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                 VALUES (99990101000000, 'from the future', TRUE, decode('00', 'hex'), 0)",
                &[],
            )
            .await
            .unwrap();
        store.close().await;
        let err = Store::open(&url).await.unwrap_err();
        assert!(matches!(err, StateError::NewerSchemaAt { found: 99990101000000, .. }), "{err}");
        assert!(err.to_string().contains("upgrade reconcile"), "{err}");
        let raw = raw_pg(&url).await;
        let versions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations").fetch_one(&raw).await.unwrap();
        assert_eq!(versions as usize, backend::PG_MIGRATOR.iter().count() + 1);
        let serial: i64 = sqlx::query_scalar("SELECT serial FROM stacks WHERE name = 's'").fetch_one(&raw).await.unwrap();
        assert_eq!(serial, 1);
    }

    /// Two processes (two stores on one database): one holds a stack, the other is told who; other
    /// stacks are free; a holder whose session ends (killed, connection lost) frees the stack without
    /// force-unlock, and everything it still tries to write for the stack is refused (fenced).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_locks_name_the_holder_free_themselves_when_it_dies_and_fence_it() {
        let dir = tempfile::tempdir().unwrap();
        let url = Backend::Postgres.target(&dir).await;
        let a = Store::open(&url).await.unwrap();
        let b = Store::open(&url).await.unwrap();
        let held = a.lock("s", "apply", Duration::ZERO).await.unwrap();
        a.put_resource("s", &role("r")).await.unwrap();
        let err = b.lock("s", "destroy", Duration::from_millis(300)).await.unwrap_err();
        assert!(matches!(&err, StateError::Locked { holder, .. } if holder.id == held.id), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("apply (pid {} on {}", std::process::id(), hostname())) && text.contains(&held.acquired_at),
            "{text}"
        );
        assert!(text.contains("no force-unlock needed") && !text.contains(&held.id), "{text}");
        // Another stack is independent.
        let other = b.lock("other", "apply", Duration::ZERO).await.unwrap();
        b.unlock("other", &other.id).await.unwrap();

        // The holder's session ends as a killed process's would.
        let raw = raw_pg(&url).await;
        let ended: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND classid::bigint = $1 AND granted",
        )
        .bind(i64::from(backend::STACK_LOCK_CLASS))
        .fetch_all(&raw)
        .await
        .unwrap();
        assert_eq!(ended, [true]);
        // Free again, no force-unlock: the next holder waits for the server to notice, then has it.
        let next = b.lock("s", "apply", Duration::from_secs(30)).await.unwrap();
        assert_ne!(next.id, held.id);
        b.put_resource("s", &role("newer")).await.unwrap();
        // The stale holder can no longer write the stack's state, nor journal an AWS write.
        let stale = a.put_resource("s", &role("stale")).await.unwrap_err();
        assert!(matches!(stale, StateError::LockLost { .. }), "{stale}");
        let journal = a.begin_operation("s", "fn", Kind::LambdaFunction, JournalAction::Create, None).await.unwrap_err();
        assert!(matches!(journal, StateError::LockLost { .. }), "{journal}");
        let state = b.load("s").await.unwrap();
        assert_eq!(state.resources.keys().collect::<Vec<_>>(), vec!["newer", "r"]);
        // A clean release frees it at once.
        b.unlock("s", &next.id).await.unwrap();
        assert!(b.lock_info("s").await.unwrap().is_none());
        let again = a.lock("s", "apply", Duration::ZERO).await.unwrap();
        a.put_resource("s", &role("again")).await.unwrap();
        a.unlock("s", &again.id).await.unwrap();
    }

    both!(the_pacing_ledger_is_shared_by_every_store_on_one_state);
    async fn the_pacing_ledger_is_shared_by_every_store_on_one_state(backend: Backend) {
        use pacing::PaceLedger;
        let dir = tempfile::tempdir().unwrap();
        let target = backend.target(&dir).await;
        let (a, b) = (Store::open(&target).await.unwrap(), Store::open(&target).await.unwrap());
        let budget = pacing::Budget { account_id: "123456789012".into(), region: "us-east-1".into(), service: "apigateway".into() };
        let limits = pacing::Limits { interval_ms: 100, burst: 3, spacing: vec![("CreateDeployment", 5000)], apart: Vec::new() };
        let clock = pacing::Clock::at(1000);
        let (first, _) = a.reserve(&budget, &limits, Some("CreateDeployment"), &clock).await.unwrap();
        let (second, _) = b.reserve(&budget, &limits, Some("CreateDeployment"), &clock).await.unwrap();
        // (The test clock runs on from 1000 ms as real time passes.)
        assert!(first >= 1000);
        assert_eq!(second, first + 5000, "the second process waits for the first one's slot, one spacing later");
        let (retry, _) = b.spent(&budget, &limits, Some("CreateDeployment"), &clock).await.unwrap();
        let spent_at = a.row(&budget, "CreateDeployment").await.unwrap().map(|r| r.spent_ms).unwrap();
        assert!(spent_at >= first, "the 429 is recorded for every process: {spent_at}");
        assert_eq!(retry, spent_at + 5000);
        assert_eq!(a.row(&budget, "nothing").await.unwrap(), None);
    }
}
