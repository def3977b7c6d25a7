//! State layer: what the engine owns, in SQLite through sqlx (schema in `migrations/`, applied on open).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Row, Sqlite, Transaction};
use tracing::instrument;

use crate::manifest::Kind;

pub mod drift;
pub use drift::{DELETED, Drift, DriftEvent, Resolution};

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
    #[error(
        "stack `{stack}` is locked by {} (pid {} on {}) since {}; wait with --lock-timeout, or if that process is gone, run `reconcile force-unlock {}`",
        .holder.operation, .holder.pid, .holder.host, .holder.acquired_at, .holder.id
    )]
    Locked { stack: String, holder: Box<LockInfo> },
    #[error("stack `{stack}` has no lock with id `{id}`{}", .current.as_ref().map(|c| format!(" (it is held as `{}`)", c.id)).unwrap_or_else(|| " (it is not locked)".into()))]
    NoSuchLock { stack: String, id: String, current: Option<Box<LockInfo>> },
    #[error("state holds invalid data for {what}: {source}")]
    Decode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

pub type Result<T, E = StateError> = std::result::Result<T, E>;

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
    /// The last command that changed the stack as a whole (`apply` or `destroy`); `None` before either ran.
    pub last_operation: Option<String>,
}

/// [`StackState::last_operation`] of a stack whose last command was `destroy`.
pub const DESTROY: &str = "destroy";
/// [`StackState::last_operation`] of a stack whose last command was `apply`.
pub const APPLY: &str = "apply";

/// A write that started and never finished (the process died in between).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PendingOperation {
    pub id: i64,
    pub resource: String,
    pub kind: String,
    pub action: String,
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

/// The SQLite state store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    path: PathBuf,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl Store {
    /// Opens (creating with mode 0600 if missing) and migrates the state file.
    #[instrument(skip_all, fields(path = %path.display()))]
    pub async fn open(path: &Path) -> Result<Store> {
        if !path.exists() {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|source| StateError::Create { path: path.into(), source })?;
            }
            create_private(path).map_err(|source| StateError::Create { path: path.into(), source })?;
        }
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(|source| StateError::Open { path: path.into(), source })?
            .filename(path)
            .create_if_missing(false)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await.map_err(|e| classify_open_error(path, e))?;
        Self::migrate(&pool, path).await?;
        Ok(Store { pool, path: path.to_path_buf() })
    }

    /// An in-memory store, for tests.
    pub async fn memory() -> Result<Store> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await?;
        Self::migrate(&pool, Path::new(":memory:")).await?;
        Ok(Store { pool, path: PathBuf::from(":memory:") })
    }

    async fn migrate(pool: &SqlitePool, path: &Path) -> Result<()> {
        // A schema newer than this binary knows is refused before anything is written.
        let newest_known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let applied: Option<i64> = match sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations").fetch_one(pool).await {
            Ok(v) => v,
            Err(sqlx::Error::Database(e)) if e.message().contains("no such table") => None,
            Err(e) => return Err(classify_open_error(path, e)),
        };
        if let Some(found) = applied.filter(|v| *v > newest_known) {
            return Err(StateError::NewerSchema { path: path.into(), found });
        }
        // Two processes opening a new file at once both try to migrate it; SQLite serialises their
        // transactions, and the loser finds the tables made. Retried with backoff, it finds the
        // migrations recorded and has nothing left to do.
        let mut delay = Duration::from_millis(50);
        for attempt in 1.. {
            match MIGRATOR.run(pool).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt < 6 && e.to_string().contains("already exists") => {
                    tracing::debug!(attempt, "another process is migrating the state file; retrying after backoff");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(sqlx::migrate::MigrateError::Execute(e) | sqlx::migrate::MigrateError::ExecuteMigration(e, _)) => {
                    return Err(classify_open_error(path, e));
                }
                Err(other) => return Err(StateError::Db(sqlx::Error::Migrate(Box::new(other)))),
            }
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    #[instrument(skip_all, fields(stack))]
    pub async fn load(&self, stack: &str) -> Result<StackState> {
        let mut state = StackState::default();
        if let Some(row) =
            sqlx::query("SELECT serial, outputs, last_operation FROM stacks WHERE name = ?").bind(stack).fetch_optional(&self.pool).await?
        {
            state.serial = row.try_get("serial")?;
            state.outputs = decode(&row.try_get::<String, _>("outputs")?, "stack outputs")?;
            state.last_operation = row.try_get("last_operation")?;
        }
        let rows =
            sqlx::query("SELECT name, kind, physical_id, attributes, outputs, depends_on FROM resources WHERE stack = ? ORDER BY name")
                .bind(stack)
                .fetch_all(&self.pool)
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
            state.resources.insert(name, r);
        }
        Ok(state)
    }

    /// Records a resource after a successful create or update.
    #[instrument(skip_all, fields(stack, resource = %r.name))]
    pub async fn put_resource(&self, stack: &str, r: &ResourceState) -> Result<i64> {
        // Secret values never reach the file: only their hash does.
        let mut attributes = r.attributes.clone();
        if let Value::Object(map) = &mut attributes {
            crate::manifest::schema::hash_secrets(r.kind, map);
        }
        let mut tx = self.pool.begin().await?;
        let serial = bump(&mut tx, stack).await?;
        sqlx::query(
            "INSERT INTO resources (stack, name, kind, physical_id, attributes, outputs, depends_on) VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (stack, name) DO UPDATE SET kind = excluded.kind, physical_id = excluded.physical_id,
               attributes = excluded.attributes, outputs = excluded.outputs, depends_on = excluded.depends_on,
               updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
        )
        .bind(stack)
        .bind(&r.name)
        .bind(r.kind.type_name())
        .bind(&r.physical_id)
        .bind(attributes.to_string())
        .bind(serde_json::to_string(&r.outputs).unwrap_or_default())
        .bind(serde_json::to_string(&r.depends_on).unwrap_or_default())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(serial)
    }

    /// Forgets a resource after it was deleted.
    #[instrument(skip_all, fields(stack, resource))]
    pub async fn delete_resource(&self, stack: &str, resource: &str) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        let serial = bump(&mut tx, stack).await?;
        sqlx::query("DELETE FROM resources WHERE stack = ? AND name = ?").bind(stack).bind(resource).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(serial)
    }

    #[instrument(skip_all, fields(stack))]
    pub async fn set_outputs(&self, stack: &str, outputs: &BTreeMap<String, String>) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        let serial = bump(&mut tx, stack).await?;
        sqlx::query("UPDATE stacks SET outputs = ? WHERE name = ?")
            .bind(serde_json::to_string(outputs).unwrap_or_default())
            .bind(stack)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(serial)
    }

    /// Records the command (`apply` or `destroy`) that is changing the stack as a whole; bumps the serial.
    #[instrument(skip_all, fields(stack, operation))]
    pub async fn set_last_operation(&self, stack: &str, operation: &str) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        let serial = bump(&mut tx, stack).await?;
        sqlx::query("UPDATE stacks SET last_operation = ? WHERE name = ?").bind(operation).bind(stack).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(serial)
    }

    /// Journals a write before it is sent to AWS; returns the operation id.
    pub async fn begin_operation(&self, stack: &str, resource: &str, kind: Kind, action: &str, physical_name: Option<&str>) -> Result<i64> {
        let id = sqlx::query("INSERT INTO operations (stack, resource, kind, action, physical_name) VALUES (?, ?, ?, ?, ?)")
            .bind(stack)
            .bind(resource)
            .bind(kind.type_name())
            .bind(action)
            .bind(physical_name)
            .execute(&self.pool)
            .await?
            .last_insert_rowid();
        Ok(id)
    }

    pub async fn finish_operation(&self, id: i64, outcome: &str) -> Result<()> {
        sqlx::query("UPDATE operations SET finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), outcome = ? WHERE id = ?")
            .bind(outcome)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn pending_operations(&self, stack: &str) -> Result<Vec<PendingOperation>> {
        let rows = sqlx::query("SELECT id, resource, kind, action, physical_name, started_at FROM operations WHERE stack = ? AND finished_at IS NULL ORDER BY id")
            .bind(stack)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                Ok(PendingOperation {
                    id: row.try_get("id")?,
                    resource: row.try_get("resource")?,
                    kind: row.try_get("kind")?,
                    action: row.try_get("action")?,
                    physical_name: row.try_get("physical_name")?,
                    started_at: row.try_get("started_at")?,
                })
            })
            .collect()
    }

    /// Takes the stack's write lock, waiting up to `timeout` (with backoff) while another holds it.
    #[instrument(skip_all, fields(stack, operation))]
    pub async fn lock(&self, stack: &str, operation: &str, timeout: Duration) -> Result<LockInfo> {
        let start = std::time::Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            let id = lock_id();
            let host = hostname();
            let inserted =
                sqlx::query("INSERT INTO locks (stack, id, operation, pid, host) VALUES (?, ?, ?, ?, ?) ON CONFLICT (stack) DO NOTHING")
                    .bind(stack)
                    .bind(&id)
                    .bind(operation)
                    .bind(i64::from(std::process::id()))
                    .bind(&host)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
            if inserted == 1 {
                return self.lock_info(stack).await?.ok_or_else(|| StateError::NoSuchLock { stack: stack.into(), id, current: None });
            }
            let holder = self.lock_info(stack).await?;
            match holder {
                None => continue,
                Some(holder) if start.elapsed() + delay > timeout => {
                    return Err(StateError::Locked { stack: stack.into(), holder: Box::new(holder) });
                }
                Some(holder) => {
                    tracing::info!(stack, holder = %holder.id, ?delay, "stack is locked; waiting (backoff)");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    pub async fn lock_info(&self, stack: &str) -> Result<Option<LockInfo>> {
        let row = sqlx::query("SELECT id, operation, pid, host, acquired_at FROM locks WHERE stack = ?")
            .bind(stack)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(LockInfo {
                id: r.try_get("id")?,
                operation: r.try_get("operation")?,
                pid: r.try_get("pid")?,
                host: r.try_get("host")?,
                acquired_at: r.try_get("acquired_at")?,
            })
        })
        .transpose()
    }

    /// Releases a lock this process holds.
    pub async fn unlock(&self, stack: &str, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM locks WHERE stack = ? AND id = ?").bind(stack).bind(id).execute(&self.pool).await?;
        Ok(())
    }

    /// Breaks a lock left by a process that died; only the exact lock id is accepted.
    pub async fn force_unlock(&self, stack: &str, id: &str) -> Result<LockInfo> {
        let current = self.lock_info(stack).await?;
        match current {
            Some(c) if c.id == id => {
                self.unlock(stack, id).await?;
                Ok(c)
            }
            current => Err(StateError::NoSuchLock { stack: stack.into(), id: id.into(), current: current.map(Box::new) }),
        }
    }

    pub async fn close(&self) {
        self.pool.close().await;
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

async fn bump(tx: &mut Transaction<'_, Sqlite>, stack: &str) -> Result<i64> {
    let serial: i64 = sqlx::query_scalar(
        "INSERT INTO stacks (name, serial) VALUES (?, 1)
         ON CONFLICT (name) DO UPDATE SET serial = serial + 1, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
         RETURNING serial",
    )
    .bind(stack)
    .fetch_one(&mut **tx)
    .await?;
    Ok(serial)
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

#[cfg(unix)]
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    // `create`, not `create_new`: two processes opening a new state file at once must both succeed.
    std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(path).map(|_| ())
}

#[cfg(not(unix))]
fn create_private(path: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(path).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    #[tokio::test]
    async fn serial_increases_on_every_write_and_state_round_trips() {
        let store = Store::memory().await.unwrap();
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
        assert!(matches!(b.force_unlock("s", "wrong").await, Err(StateError::NoSuchLock { .. })));
        b.force_unlock("s", &held.id).await.unwrap();
        let again = b.lock("s", "apply", Duration::ZERO).await.unwrap();
        b.unlock("s", &again.id).await.unwrap();
        assert!(b.lock_info("s").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = Store::open(&path).await.unwrap();
        store.put_resource("s", &role("a")).await.unwrap();
        sqlx::query("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (99990101000000, 'from the future', 1, x'00', 0)")
            .execute(&store.pool)
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

    #[tokio::test(flavor = "multi_thread")]
    async fn many_processes_can_open_a_new_state_file_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
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

    #[tokio::test]
    async fn the_last_operation_is_recorded_per_stack_and_bumps_the_serial() {
        let store = Store::memory().await.unwrap();
        assert_eq!(store.load("s").await.unwrap().last_operation, None);
        store.put_resource("s", &role("a")).await.unwrap();
        assert_eq!(store.set_last_operation("s", DESTROY).await.unwrap(), 2);
        store.delete_resource("s", "a").await.unwrap();
        let state = store.load("s").await.unwrap();
        assert_eq!((state.last_operation.as_deref(), state.serial), (Some(DESTROY), 3));
        store.set_last_operation("s", APPLY).await.unwrap();
        assert_eq!(store.load("s").await.unwrap().last_operation.as_deref(), Some(APPLY));
        assert_eq!(store.load("other").await.unwrap().last_operation, None);
    }

    #[tokio::test]
    async fn pending_operations_are_listed_until_finished() {
        let store = Store::memory().await.unwrap();
        let id = store.begin_operation("s", "fn", Kind::LambdaFunction, "create", Some("Hello")).await.unwrap();
        assert_eq!(store.pending_operations("s").await.unwrap().len(), 1);
        store.finish_operation(id, "ok").await.unwrap();
        assert!(store.pending_operations("s").await.unwrap().is_empty());
    }
}
