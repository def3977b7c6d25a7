//! Stack locks on PostgreSQL, across machines.
//!
//! The lock is a session-level advisory lock, `pg_try_advisory_lock(STACK_LOCK_CLASS, id)`, where
//! `id` is the stack's own row id in `lock_keys` (no hash: two stacks never share a key), taken on a
//! connection of its own that lives as long as the lock. The server releases it when that session
//! ends, whatever ends it: a clean exit, `kill -9` (the socket closes), or a lost network (TCP
//! keepalives set on connect, idle 10 s + 3 probes 5 s apart, and `tcp_user_timeout` 25 s for
//! unacknowledged data, notice a silent peer): free again at most 30 s after the holder died. No
//! `force-unlock`.
//!
//! The `locks` row says who holds it (operation, pid, host, since when) for the error another
//! process gets; it counts only while the advisory lock is held (a dead holder's row is stale).
//!
//! Every acquisition increments the stack's fencing token (`lock_keys.token`); every state write of
//! a holder checks, inside its transaction, that the token is still its own, so a stale holder (one
//! whose session ended while it worked) can never overwrite a newer holder's state. A heartbeat
//! checks the session every [`HEARTBEAT`]; once it fails the lock is marked lost, and the next
//! journal entry (written before every AWS write) or state write fails, so the holder stops.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::{PgConnection, PgPool};
use sqlx::{ConnectOptions, Connection};

use super::backend::{STACK_LOCK_CLASS, WritePool, now};
use super::{LockInfo, Result, StateError, hostname, lock_id};

/// How often a holder checks that its session still holds the lock.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// A lock this process holds.
#[derive(Debug)]
struct Held {
    id: String,
    token: i64,
    lost: Arc<AtomicBool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The stack locks this process holds (shared by the clones of a store).
#[derive(Debug, Clone, Default)]
pub(crate) struct HeldLocks(Arc<Mutex<BTreeMap<String, Held>>>);

impl HeldLocks {
    /// The fencing token of the held lock of `stack`; an error once it was lost.
    pub(crate) fn fence(&self, stack: &str) -> Result<Option<i64>> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(stack) {
            None => Ok(None),
            Some(h) if h.lost.load(Ordering::SeqCst) => Err(StateError::LockLost {
                stack: stack.into(),
                why: "its database session ended (connection lost, or the server restarted)".into(),
            }),
            Some(h) => Ok(Some(h.token)),
        }
    }

    /// Ends the session that holds the lock `id` of `stack` (the server releases it).
    pub(crate) async fn release(&self, stack: &str, id: &str) {
        let held = {
            let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
            match map.get(stack) {
                Some(h) if h.id == id => map.remove(stack),
                _ => None,
            }
        };
        if let Some(h) = held {
            stop(h).await;
        }
    }

    pub(crate) async fn release_all(&self) {
        let all: Vec<Held> = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner())).into_values().collect();
        for h in all {
            stop(h).await;
        }
    }

    fn insert(&self, stack: &str, held: Held) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(stack.into(), held);
    }
}

async fn stop(mut h: Held) {
    if let Some(stop) = h.stop.take() {
        let _ = stop.send(());
    }
    if let Some(task) = h.task.take() {
        let _ = task.await;
    }
}

/// Takes the lock of `stack`, waiting up to `timeout` (with backoff) while a live holder has it.
pub(crate) async fn lock(pool: &PgPool, held: &HeldLocks, stack: &str, operation: &str, timeout: Duration) -> Result<LockInfo> {
    let key: i64 = {
        sqlx::query("INSERT INTO lock_keys (stack) VALUES ($1) ON CONFLICT (stack) DO NOTHING").bind(stack).execute(pool).await?;
        sqlx::query_scalar("SELECT id FROM lock_keys WHERE stack = $1").bind(stack).fetch_one(pool).await?
    };
    let key = i32::try_from(key).map_err(|_| StateError::Db(sqlx::Error::Protocol("lock key out of range".into())))?;
    let mut conn = pool.connect_options().connect().await?;
    let start = std::time::Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        let got: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)").bind(STACK_LOCK_CLASS).bind(key).fetch_one(&mut conn).await?;
        if got {
            return hold(pool, held, conn, stack, operation, key).await;
        }
        match live_holder(pool, stack).await? {
            // Its holder is between taking the lock and saying so, or just let it go: ask again.
            None if start.elapsed() < timeout + Duration::from_secs(2) => tokio::time::sleep(Duration::from_millis(50)).await,
            None => {
                return Err(StateError::Locked {
                    stack: stack.into(),
                    holder: Box::new(LockInfo {
                        id: "(unknown)".into(),
                        operation: "(unknown)".into(),
                        pid: 0,
                        host: "(unknown)".into(),
                        acquired_at: now(),
                    }),
                    shared: true,
                });
            }
            Some(row) if start.elapsed() + delay > timeout => {
                let (id, operation, pid, host, acquired_at) = row;
                let holder = Box::new(LockInfo { id, operation, pid, host, acquired_at });
                return Err(StateError::Locked { stack: stack.into(), holder, shared: true });
            }
            Some(row) => {
                tracing::info!(stack, holder = %row.0, ?delay, "stack is locked; waiting (backoff)");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// With the advisory lock taken on `conn`: checks the session keeps it, takes a new fencing token,
/// says who holds it, and starts the heartbeat.
async fn hold(pool: &PgPool, held: &HeldLocks, mut conn: PgConnection, stack: &str, operation: &str, key: i32) -> Result<LockInfo> {
    // Behind a pooler in transaction mode each statement may run in another server session: the
    // lock would belong to a session this connection does not keep. Refuse that.
    if !holds(&mut conn, key).await? {
        let _ = conn.close().await;
        return Err(StateError::SessionPooling { stack: stack.into() });
    }
    let info =
        LockInfo { id: lock_id(), operation: operation.into(), pid: i64::from(std::process::id()), host: hostname(), acquired_at: now() };
    let token: i64 = {
        let mut tx = pool.write(None).await?;
        let token = sqlx::query_scalar("UPDATE lock_keys SET token = token + 1 WHERE stack = $1 RETURNING token")
            .bind(stack)
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO locks (stack, id, operation, pid, host, acquired_at) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (stack) DO UPDATE SET id = excluded.id, operation = excluded.operation, pid = excluded.pid,
               host = excluded.host, acquired_at = excluded.acquired_at",
        )
        .bind(stack)
        .bind(&info.id)
        .bind(&info.operation)
        .bind(info.pid)
        .bind(&info.host)
        .bind(&info.acquired_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        token
    };
    let lost = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(heartbeat(conn, key, stack.to_string(), lost.clone(), stop_rx));
    held.insert(stack, Held { id: info.id.clone(), token, lost, stop: Some(stop_tx), task: Some(task) });
    Ok(info)
}

/// Whether this connection's session holds the stack's advisory lock.
async fn holds(conn: &mut PgConnection, key: i32) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid::bigint = $1 AND objid::bigint = $2
           AND objsubid = 2 AND granted AND pid = pg_backend_pid())",
    )
    .bind(i64::from(STACK_LOCK_CLASS))
    .bind(i64::from(key))
    .fetch_one(conn)
    .await?)
}

/// Checks the session every [`HEARTBEAT`] until told to stop (then releases the lock and closes the
/// session); marks the lock lost when the check fails or does not answer in time.
async fn heartbeat(mut conn: PgConnection, key: i32, stack: String, lost: Arc<AtomicBool>, mut stop: tokio::sync::oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            _ = &mut stop => {
                let _ = sqlx::query("SELECT pg_advisory_unlock($1, $2)").bind(STACK_LOCK_CLASS).bind(key).execute(&mut conn).await;
                let _ = conn.close().await;
                return;
            }
            _ = tokio::time::sleep(HEARTBEAT) => {
                let check = tokio::time::timeout(HEARTBEAT, holds(&mut conn, key)).await;
                if !matches!(check, Ok(Ok(true))) {
                    lost.store(true, Ordering::SeqCst);
                    let why = match check {
                        Ok(Ok(_)) => "the session no longer holds it".to_string(),
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => format!("the database did not answer within {HEARTBEAT:?}"),
                    };
                    tracing::error!(stack, why, "lost the stack lock: no further AWS or state writes for this stack");
                    return;
                }
            }
        }
    }
}

/// The `locks` row of `stack` if a live session holds its advisory lock.
pub(crate) async fn live_holder(pool: &PgPool, stack: &str) -> Result<Option<(String, String, i64, String, String)>> {
    Ok(sqlx::query_as(
        "SELECT l.id, l.operation, l.pid, l.host, l.acquired_at FROM locks l JOIN lock_keys k ON k.stack = l.stack
         WHERE l.stack = $1 AND EXISTS (SELECT 1 FROM pg_locks p WHERE p.locktype = 'advisory' AND p.classid::bigint = $2
           AND p.objid::bigint = k.id AND p.objsubid = 2 AND p.granted)",
    )
    .bind(stack)
    .bind(i64::from(STACK_LOCK_CLASS))
    .fetch_optional(pool)
    .await?)
}

/// Ends the session holding the lock of `stack` (`force-unlock --force` on PostgreSQL).
pub(crate) async fn terminate_holder(pool: &PgPool, stack: &str) -> Result<()> {
    sqlx::query(
        "SELECT pg_terminate_backend(p.pid) FROM pg_locks p JOIN lock_keys k ON p.objid::bigint = k.id
         WHERE k.stack = $1 AND p.locktype = 'advisory' AND p.classid::bigint = $2 AND p.objsubid = 2 AND p.granted",
    )
    .bind(stack)
    .bind(i64::from(STACK_LOCK_CLASS))
    .execute(pool)
    .await?;
    Ok(())
}
