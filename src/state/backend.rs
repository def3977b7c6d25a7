//! The two databases a state can live in: a SQLite file (the zero-setup default) or PostgreSQL (a
//! state shared by a team, `postgres://…`). Both run the same SQL: every statement is written once,
//! with `$N` placeholders (SQLite reads `$N` as the N-th argument too), timestamps bound from here
//! rather than computed by the database, and [`on_db!`] compiling the statement's body once per
//! driver. What differs lives here: how a write transaction starts, how the serial is bumped and
//! fenced, how each schema is migrated (`migrations/sqlite/`, `migrations/postgres/`).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::SqlitePool;
use sqlx::{Postgres, Sqlite};

use super::file::StateFile;
use super::{Result, StateError};

/// A state database's connection pool.
#[derive(Debug, Clone)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the pool of whichever database the store uses: the same
/// source, compiled once per driver (so rows, binds and transactions are each driver's own types).
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::state::backend::Db::Sqlite($pool) => $body,
            $crate::state::backend::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_db;

/// The advisory lock classes (the first of the two 32-bit keys) reconcile uses on PostgreSQL; the
/// second key is the stack's row id in `lock_keys` (no hashing: two stacks never share a key).
pub(crate) const STACK_LOCK_CLASS: i32 = 0x7263_0001;
/// Taken for the length of every write transaction: writers go one at a time, as on SQLite.
pub(crate) const WRITE_LOCK_CLASS: i32 = 0x7263_0002;
/// Taken while the schema is migrated: many processes opening a new database at once apply it once.
pub(crate) const MIGRATE_LOCK_CLASS: i32 = 0x7263_0003;

/// A write transaction on one pooled connection, which goes back to the pool only outside a
/// transaction: after its COMMIT went through, or after a ROLLBACK did. A transaction that ends any
/// other way (an error inside it, a COMMIT that failed, a future dropped half-way) is rolled back
/// off the pool, by a task that owns the connection, and the connection is closed if that ROLLBACK
/// fails too (which rolls it back on the server side, SQLite and PostgreSQL alike). sqlx's own
/// `Transaction` hands a connection back with its transaction depth left at 1 when COMMIT and
/// ROLLBACK both fail (a full disk, where SQLite has already rolled back): every later `begin` on it
/// failed, and the watcher held the file against every other process. On SQLite, a failed
/// transaction also has every connection opened before it reopened ([`StateFile::reopen_connections`]:
/// one opened read-only does not outlive the cause), and the COMMIT is sent only while the path
/// still names the file opened.
pub(crate) struct Tx<DB: sqlx::Database> {
    conn: Option<PoolConnection<DB>>,
    file: Option<Arc<StateFile>>,
    /// Ends a transaction that did not commit (see [`abandon`]).
    abandon: fn(PoolConnection<DB>),
}

impl<DB: sqlx::Database> Tx<DB>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    pub(super) async fn begin(conn: PoolConnection<DB>, begin: &'static str, file: Option<Arc<StateFile>>) -> Result<Tx<DB>> {
        let mut tx = Tx { conn: Some(conn), file, abandon: abandon::<DB> };
        sqlx::Executor::execute(&mut *tx, begin).await?;
        Ok(tx)
    }

    /// Commits; the connection goes back to the pool only if that worked.
    pub(crate) async fn commit(mut self) -> Result<()> {
        if let Some(file) = &self.file {
            file.check()?;
        }
        sqlx::Executor::execute(&mut *self, "COMMIT").await?;
        drop(self.conn.take());
        Ok(())
    }
}

/// Rolls back a transaction that did not commit, owning its connection: back to the pool once the
/// ROLLBACK went through, closed if it did not (or if there is no runtime to run it on).
fn abandon<DB: sqlx::Database>(conn: PoolConnection<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move {
                let mut conn = conn;
                if sqlx::Executor::execute(&mut *conn, "ROLLBACK").await.is_err() {
                    let _ = conn.close().await;
                }
            });
        }
        Err(_) => drop(conn.detach()),
    }
}

impl<DB: sqlx::Database> std::ops::Deref for Tx<DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        self.conn.as_deref().expect("a transaction keeps its connection until it ends")
    }
}

impl<DB: sqlx::Database> std::ops::DerefMut for Tx<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        self.conn.as_deref_mut().expect("a transaction keeps its connection until it ends")
    }
}

impl<DB: sqlx::Database> Drop for Tx<DB> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if let Some(file) = &self.file {
                file.reopen_connections();
            }
            (self.abandon)(conn);
        }
    }
}

/// What differs between the two drivers' write transactions.
pub(crate) trait WritePool {
    type Db: sqlx::Database;
    /// A transaction that is the one writer from its start. `file`: the SQLite file it writes
    /// (checked still in place before it starts and before it commits).
    fn write(&self, file: Option<&Arc<StateFile>>) -> impl std::future::Future<Output = Result<Tx<Self::Db>>> + Send;
}

impl WritePool for SqlitePool {
    type Db = Sqlite;
    /// `BEGIN IMMEDIATE`: a deferred transaction that reads first cannot wait for the write lock once
    /// another connection has written (SQLite answers "database is locked" at once, whatever the busy
    /// timeout); this one waits for it, up to the busy timeout, before reading anything. Past it, the
    /// error names the holders the state records ([`StateError::Busy`]).
    async fn write(&self, file: Option<&Arc<StateFile>>) -> Result<Tx<Sqlite>> {
        if let Some(file) = file {
            file.check()?;
        }
        let conn = self.acquire().await?;
        match Tx::begin(conn, "BEGIN IMMEDIATE", file.cloned()).await {
            Err(StateError::Db(e)) if is_busy(&e) => Err(busy(self, file, e).await),
            other => other,
        }
    }
}

impl WritePool for PgPool {
    type Db = Postgres;
    /// A transaction holding the write advisory lock (released at commit or rollback).
    async fn write(&self, _file: Option<&Arc<StateFile>>) -> Result<Tx<Postgres>> {
        let mut tx = Tx::begin(self.acquire().await?, "BEGIN", None).await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, 0)").bind(WRITE_LOCK_CLASS).execute(&mut *tx).await?;
        Ok(tx)
    }
}

/// Whether `e` is SQLite's "database is locked" (SQLITE_BUSY, after the busy timeout).
pub(crate) fn is_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
                && d.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(|n| n & 0xff == 5)
        }
        _ => false,
    }
}

/// [`StateError::Busy`] for a SQLite state whose write lock another connection held past the busy
/// timeout: with the holders the state records (stack locks, live watch leases), read as a reader
/// (WAL readers are not blocked by a writer).
pub(crate) async fn busy(pool: &SqlitePool, file: Option<&Arc<StateFile>>, source: sqlx::Error) -> StateError {
    let locks: Vec<(String, String, i64, String, String)> =
        sqlx::query_as("SELECT stack, operation, pid, host, acquired_at FROM locks ORDER BY stack")
            .fetch_all(pool)
            .await
            .unwrap_or_default();
    let leases: Vec<(String, String)> = sqlx::query_as("SELECT stack, holder FROM watch_leases WHERE expires_at > $1 ORDER BY stack")
        .bind(super::lease::now_ms())
        .fetch_all(pool)
        .await
        .unwrap_or_default();
    let mut holders: Vec<String> = locks
        .into_iter()
        .map(|(stack, operation, pid, host, acquired_at)| {
            let info = super::LockInfo { id: String::new(), operation, pid, host, acquired_at };
            format!("stack `{stack}` is locked by {}", info.describe())
        })
        .collect();
    holders.extend(
        leases.into_iter().map(|(stack, holder)| format!("stack `{stack}` is watched by `reconcile watch` {holder} (host:pid:id)")),
    );
    StateError::Busy {
        path: file.map(|f| f.path().to_path_buf()).unwrap_or_default(),
        holders: if holders.is_empty() {
            "the state records no holder (no stack lock, no live watch lease)".into()
        } else {
            format!("the state records: {}", holders.join("; "))
        },
        source,
    }
}

/// What a write does to the stack's row, per driver: bump the serial, after checking the fence.
pub(crate) trait StackTx {
    /// Refuses the write when `fence` (the token this process's lock of the stack was given) is no
    /// longer the stack's current one: another process has taken the lock since.
    fn check_fence(&mut self, stack: &str, fence: Option<i64>) -> impl std::future::Future<Output = Result<()>> + Send;
    /// Increments the stack's serial (creating its row); returns the new serial.
    fn bump(&mut self, stack: &str, fence: Option<i64>) -> impl std::future::Future<Output = Result<i64>> + Send;
}

const BUMP: &str = "INSERT INTO stacks (name, serial) VALUES ($1, 1)
     ON CONFLICT (name) DO UPDATE SET serial = stacks.serial + 1, updated_at = $2
     RETURNING serial";

impl StackTx for Tx<Sqlite> {
    /// One machine, one file: the SQLite lock is the `locks` row, broken only by `force-unlock`.
    async fn check_fence(&mut self, _stack: &str, _fence: Option<i64>) -> Result<()> {
        Ok(())
    }

    async fn bump(&mut self, stack: &str, _fence: Option<i64>) -> Result<i64> {
        Ok(sqlx::query_scalar(BUMP).bind(stack).bind(now()).fetch_one(&mut **self).await?)
    }
}

impl StackTx for Tx<Postgres> {
    async fn check_fence(&mut self, stack: &str, fence: Option<i64>) -> Result<()> {
        let Some(token) = fence else { return Ok(()) };
        let current: Option<i64> =
            sqlx::query_scalar("SELECT token FROM lock_keys WHERE stack = $1").bind(stack).fetch_optional(&mut **self).await?;
        if current != Some(token) {
            return Err(StateError::LockLost {
                stack: stack.into(),
                why: "another process took the stack's lock since; this write is refused (fenced)".into(),
            });
        }
        Ok(())
    }

    async fn bump(&mut self, stack: &str, fence: Option<i64>) -> Result<i64> {
        self.check_fence(stack, fence).await?;
        Ok(sqlx::query_scalar(BUMP).bind(stack).bind(now()).fetch_one(&mut **self).await?)
    }
}

/// Now, as the state stores times: UTC, RFC 3339 with milliseconds (`2026-12-02T05:39:18.123Z`),
/// the format SQLite's `strftime('%Y-%m-%dT%H:%M:%fZ', 'now')` column defaults write.
pub(crate) fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// Whether `--state` names a PostgreSQL database rather than a SQLite file.
pub fn is_postgres_url(target: &str) -> bool {
    target.starts_with("postgres://") || target.starts_with("postgresql://")
}

/// The URL with any password replaced by `***`, for messages (never the secret itself).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    // The user info ends at the last `@`: a password may hold `/`, `?` or `:` (taking a later `@`, in
    // the query, masks more than needed, never less).
    let (userinfo, rest) = match rest.rfind('@') {
        Some(i) => {
            let user = &rest[..i];
            let shown = match user.split_once(':') {
                Some((name, _)) => format!("{name}:***@"),
                None => format!("{user}@"),
            };
            (shown, &rest[i + 1..])
        }
        None => (String::new(), rest),
    };
    // A password can also be a query parameter.
    let rest = match rest.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => rest.to_string(),
    };
    format!("{scheme}://{userinfo}{rest}")
}

pub(crate) static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
pub(crate) static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Connects to a PostgreSQL state: the URL as libpq reads it (password in the URL, else
/// `PGPASSWORD`, else `PGPASSFILE`/`~/.pgpass`; `sslmode`, `sslrootcert`… honoured).
pub(crate) async fn connect_postgres(url: &str) -> Result<PgPool> {
    let shown = redact_url(url);
    let open_err = |source| StateError::OpenDb { location: shown.clone(), source };
    let options = PgConnectOptions::from_str(url)
        .map_err(open_err)?
        .application_name("reconcile")
        // A dropped connection (a holder killed, a network gone) is noticed by the server in a
        // bounded time: it releases that session's locks then (see README, "Shared PostgreSQL").
        .options([
            ("tcp_keepalives_idle", "10"),
            ("tcp_keepalives_interval", "5"),
            ("tcp_keepalives_count", "3"),
            ("tcp_user_timeout", "25000"),
        ]);
    let pool =
        PgPoolOptions::new().max_connections(4).acquire_timeout(Duration::from_secs(30)).connect_with(options).await.map_err(open_err)?;
    migrate_postgres(&pool, &shown).await?;
    Ok(pool)
}

/// Applies the PostgreSQL migrations (in one transaction, holding the migration advisory lock, so
/// concurrent first opens apply them once); refuses a schema newer than this binary knows, before
/// writing anything.
async fn migrate_postgres(pool: &PgPool, shown: &str) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, 0)").bind(MIGRATE_LOCK_CLASS).execute(&mut *tx).await?;
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL").fetch_one(&mut *tx).await?;
    if exists {
        let rows: Vec<(i64, Vec<u8>, bool)> =
            sqlx::query_as("SELECT version, checksum, success FROM _sqlx_migrations").fetch_all(&mut *tx).await?;
        if up_to_date(&PG_MIGRATOR, &rows).map_err(|found| StateError::NewerSchemaAt { location: shown.into(), found })? {
            return Ok(());
        }
    }
    match PG_MIGRATOR.run_direct(&mut *tx).await {
        Ok(()) => {}
        Err(other) => return Err(StateError::Db(sqlx::Error::Migrate(Box::new(other)))),
    }
    tx.commit().await?;
    Ok(())
}

/// Whether `applied` (version, checksum, success) has every migration of `migrator`; `Err(version)`
/// when it has one newer than the migrator knows.
pub(crate) fn up_to_date(migrator: &sqlx::migrate::Migrator, applied: &[(i64, Vec<u8>, bool)]) -> Result<bool, i64> {
    let newest_known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    if let Some(found) = applied.iter().map(|r| r.0).max().filter(|v| *v > newest_known) {
        return Err(found);
    }
    let applied: std::collections::BTreeMap<i64, (&[u8], bool)> = applied.iter().map(|(v, c, ok)| (*v, (c.as_slice(), *ok))).collect();
    Ok(migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .all(|m| applied.get(&m.version).is_some_and(|(c, ok)| *ok && *c == &*m.checksum)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show_in_a_redacted_url() {
        assert_eq!(redact_url("postgres://u:s3cret@db:5432/state?sslmode=require"), "postgres://u:***@db:5432/state?sslmode=require");
        assert_eq!(redact_url("postgresql://u@db/state"), "postgresql://u@db/state");
        assert_eq!(redact_url("postgres://db/state?user=u&password=s3cret"), "postgres://db/state?user=u&password=***");
        assert_eq!(redact_url("postgres://u:p@ss@db/x"), "postgres://u:***@db/x");
        // A password holding `/`, `?` or `:` is masked whole.
        assert_eq!(redact_url("postgres://u:pa/ss@db/state"), "postgres://u:***@db/state");
        assert_eq!(redact_url("postgres://u:p?w:d@db:5432/state?sslmode=require"), "postgres://u:***@db:5432/state?sslmode=require");
        assert!(!redact_url("postgres://u:s3/cr?et@db/x?password=other").contains("s3"));
        assert!(!redact_url("postgres://u:s3/cr?et@db/x?password=other").contains("other"));
        assert!(is_postgres_url("postgresql://x") && is_postgres_url("postgres://x") && !is_postgres_url("state.db"));
    }
}
