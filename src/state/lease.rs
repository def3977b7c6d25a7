//! Watch leases: which `reconcile watch` process watches each stack when several share one state
//! database (table `watch_leases`).
//!
//! A lease names its holder (`host:pid:random`), expires at a time the holder pushes forward on every
//! renewal, and carries a generation that grows by one on every takeover: the fencing token. Taking a
//! lease is a compare-and-set on the generation of an expired (or missing) row, so two watchers never
//! both win it; a [`Fence`] put on a [`Store`] ([`Store::fenced`]) makes every state write of that store
//! check, inside its own transaction, that the lease still has the generation it had when work started
//! (see `Store::write`), so a holder that lost its lease mid-pass fails before its next AWS write
//! (the journal entry written before each write is one of those) and never records anything after
//! the new holder.
//!
//! Times are unix milliseconds computed by the caller (so tests pass explicit clocks); the SQL is
//! portable (`$N` placeholders, plain integers and text) and runs on SQLite and PostgreSQL alike.

use std::hash::{BuildHasher, Hasher};

use sqlx::Row;

use std::sync::Arc;

use super::backend::{Tx, WritePool, on_db};
use super::file::StateFile;
use super::{LockInfo, Result, StateError, Store};

/// The operation name of the stack lock `watch --remediate` takes.
pub const REMEDIATION_LOCK: &str = "watch --remediate";

/// One stack's lease as the table holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Lease {
    pub stack: String,
    /// `host:pid:random` of the watcher holding it.
    pub holder: String,
    /// Grows by one on every takeover (the fencing token).
    pub generation: i64,
    /// Unix milliseconds after which another watcher may take it.
    pub expires_at: i64,
    /// SHA-256 (hex) of the manifest file the holder watches the stack with.
    pub manifest_hash: String,
    /// Unix milliseconds when the holder took it.
    pub acquired_at: i64,
}

impl Lease {
    /// Whether the lease is still held at `now_ms` (it expires at `expires_at`, inclusive).
    pub fn live_at(&self, now_ms: i64) -> bool {
        now_ms < self.expires_at
    }

    /// The fencing token of this lease.
    pub fn fence(&self) -> Fence {
        Fence { stack: self.stack.clone(), holder: self.holder.clone(), generation: self.generation }
    }
}

/// What a holder's writes must still find in `watch_leases`: the lease it took, not a newer one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub stack: String,
    pub holder: String,
    pub generation: i64,
}

/// What [`Store::claim_lease`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This holder has the lease now; `previous` is the expired lease it took over (none: the stack
    /// had never been leased, or this holder already had it).
    Claimed { lease: Lease, previous: Option<Lease> },
    /// Another watcher holds it (live), or won the race for it.
    HeldBy(Lease),
}

/// A holder id for this process: `host:pid:random` (random, so a pid reused after a restart is
/// another holder).
pub fn holder_id() -> String {
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{}:{}:{:08x}", super::hostname(), std::process::id(), (random as u32) ^ nanos)
}

/// The current time in unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

const COLUMNS: &str = "stack, holder, generation, expires_at, manifest_hash, acquired_at";

fn lease<R: Row>(row: &R) -> Result<Lease>
where
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(Lease {
        stack: row.try_get("stack")?,
        holder: row.try_get("holder")?,
        generation: row.try_get("generation")?,
        expires_at: row.try_get("expires_at")?,
        manifest_hash: row.try_get("manifest_hash")?,
        acquired_at: row.try_get("acquired_at")?,
    })
}

impl Store {
    /// The lease of `stack`, if it was ever taken.
    pub async fn lease(&self, stack: &str) -> Result<Option<Lease>> {
        on_db!(self.db()?, pool => {
            let row = sqlx::query(&format!("SELECT {COLUMNS} FROM watch_leases WHERE stack = $1")).bind(stack).fetch_optional(pool).await?;
            row.as_ref().map(lease).transpose()
        })
    }

    /// Every lease, by stack.
    pub async fn leases(&self) -> Result<Vec<Lease>> {
        on_db!(self.db()?, pool => {
            let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM watch_leases ORDER BY stack")).fetch_all(pool).await?;
            rows.iter().map(lease).collect()
        })
    }

    /// The watchers holding a live lease at `now_ms` (each once, sorted): the watchers working on this
    /// state database now. A standby that holds no stack makes no AWS calls and is not among them.
    pub async fn live_holders(&self, now_ms: i64) -> Result<Vec<String>> {
        on_db!(self.db()?, pool => {
            let rows = sqlx::query("SELECT DISTINCT holder FROM watch_leases WHERE expires_at > $1 ORDER BY holder")
                .bind(now_ms)
                .fetch_all(pool)
                .await?;
            rows.iter().map(|r| Ok(r.try_get::<String, _>("holder")?)).collect()
        })
    }

    /// Takes `stack`'s lease for `holder` until `now_ms + ttl_ms` if nobody holds it at `now_ms` (never
    /// leased, expired or released), as one compare-and-set: of several watchers trying at once, one
    /// wins, and a takeover increments the generation. A lease this holder already has is returned as
    /// it is.
    pub async fn claim_lease(&self, stack: &str, holder: &str, manifest_hash: &str, now_ms: i64, ttl_ms: i64) -> Result<Claim> {
        let expires_at = now_ms.saturating_add(ttl_ms);
        // At most a few rounds: each one either wins or finds a live holder, unless the row changed in
        // between (then the next round sees the change).
        // The lease this holder has once it won.
        let taken = |generation| Lease {
            stack: stack.into(),
            holder: holder.into(),
            generation,
            expires_at,
            manifest_hash: manifest_hash.into(),
            acquired_at: now_ms,
        };
        for _ in 0..3 {
            match self.lease(stack).await? {
                None => {
                    let inserted = on_db!(self.db()?, pool => {
                        self.wrote(sqlx::query(
                            "INSERT INTO watch_leases (stack, holder, generation, expires_at, manifest_hash, acquired_at)
                            VALUES ($1, $2, 1, $3, $4, $5) ON CONFLICT (stack) DO NOTHING",
                        )
                        .bind(stack)
                        .bind(holder)
                        .bind(expires_at)
                        .bind(manifest_hash)
                        .bind(now_ms)
                        .execute(pool).await).await?.rows_affected()
                    });
                    if inserted == 1 {
                        return Ok(Claim::Claimed { lease: taken(1), previous: None });
                    }
                }
                Some(current) if current.holder == holder && current.live_at(now_ms) => {
                    return Ok(Claim::Claimed { lease: current, previous: None });
                }
                Some(current) if current.live_at(now_ms) => return Ok(Claim::HeldBy(current)),
                Some(current) => {
                    let generation = current.generation.saturating_add(1);
                    let updated = on_db!(self.db()?, pool => {
                        self.wrote(sqlx::query(
                            "UPDATE watch_leases SET holder = $1, generation = $2, expires_at = $3, manifest_hash = $4, acquired_at = $5
                            WHERE stack = $6 AND generation = $7 AND expires_at <= $8",
                        )
                        .bind(holder)
                        .bind(generation)
                        .bind(expires_at)
                        .bind(manifest_hash)
                        .bind(now_ms)
                        .bind(stack)
                        .bind(current.generation)
                        .bind(now_ms)
                        .execute(pool).await).await?.rows_affected()
                    });
                    if updated == 1 {
                        return Ok(Claim::Claimed { lease: taken(generation), previous: Some(current) });
                    }
                }
            }
        }
        // Still changing under us: whoever has it now keeps it this round.
        match self.lease(stack).await? {
            Some(current) if current.holder == holder => Ok(Claim::Claimed { lease: current, previous: None }),
            Some(current) => Ok(Claim::HeldBy(current)),
            None => Err(StateError::Db(sqlx::Error::RowNotFound)),
        }
    }

    /// Pushes the lease `fence` names forward to `now_ms + ttl_ms` (and records the manifest hash the
    /// holder uses). `false`: the lease is no longer this holder's at this generation (taken over);
    /// the holder must stop working on the stack. An expired lease nobody took is still the holder's:
    /// nobody could have worked on the stack without taking it (a new generation).
    pub async fn renew_lease(&self, fence: &Fence, manifest_hash: &str, now_ms: i64, ttl_ms: i64) -> Result<bool> {
        self.set_lease_expiry(fence, now_ms.saturating_add(ttl_ms), Some(manifest_hash)).await
    }

    /// Gives the lease up: it expires at `now_ms`, so another watcher may take it at once (the row and
    /// its generation stay). `false` if it was no longer this holder's.
    pub async fn release_lease(&self, fence: &Fence, now_ms: i64) -> Result<bool> {
        self.set_lease_expiry(fence, now_ms, None).await
    }

    /// Moves the expiry of the lease `fence` names (and, if given, its manifest hash), only while it
    /// is still that holder's at that generation: whether it was.
    async fn set_lease_expiry(&self, fence: &Fence, expires_at: i64, manifest_hash: Option<&str>) -> Result<bool> {
        let changed = on_db!(self.db()?, pool => {
            self.wrote(sqlx::query(
                "UPDATE watch_leases SET expires_at = $1, manifest_hash = COALESCE($2, manifest_hash)
                 WHERE stack = $3 AND holder = $4 AND generation = $5",
            )
            .bind(expires_at)
            .bind(manifest_hash)
            .bind(&fence.stack)
            .bind(&fence.holder)
            .bind(fence.generation)
            .execute(pool).await).await?.rows_affected()
        });
        Ok(changed == 1)
    }

    /// Breaks the stack lock a remediation of another watcher process left (it died, or stalled past
    /// its lease), when `fence` is the stack's current lease: only the lease holder remediates, so a
    /// remediation lock of any other watcher belongs to a holder that lost the stack, and whatever that
    /// one still tries to write is refused by its fence. The lease check and the delete are one
    /// transaction. Returns the lock broken.
    pub async fn break_stale_remediation_lock(&self, fence: &Fence) -> Result<Option<LockInfo>> {
        let Some(lock) = self.lock_info(&fence.stack).await? else { return Ok(None) };
        let ours = fence.holder.starts_with(&format!("{}:{}:", lock.host, lock.pid));
        if lock.operation != REMEDIATION_LOCK || ours {
            return Ok(None);
        }
        let broken = on_db!(self.db()?, pool => {
            let mut tx = pool.write(self.file.as_ref()).await?;
            LeaseCheck::check_lease(&mut tx, fence).await?;
            let broken = sqlx::query("DELETE FROM locks WHERE stack = $1 AND id = $2 AND operation = $3")
                .bind(&fence.stack)
                .bind(&lock.id)
                .bind(REMEDIATION_LOCK)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            broken
        });
        Ok((broken == 1).then_some(lock))
    }

    /// Whether the lease `fence` names is still the current one (not taken over since).
    pub async fn fence_holds(&self, fence: &Fence) -> Result<bool> {
        Ok(on_db!(self.db()?, pool => {
            let mut tx = Tx::begin(pool.acquire().await?, "BEGIN", None).await?;
            let holds = LeaseCheck::check_lease(&mut tx, fence).await.is_ok();
            tx.commit().await?;
            holds
        }))
    }

    /// This store with `fence` on it: each of its state writes first checks, in its own transaction,
    /// that the lease is still the one `fence` names, and fails with [`StateError::Fenced`] otherwise.
    pub fn fenced(&self, fence: Fence) -> Store {
        Store { fence: Some(std::sync::Arc::new(fence)), ..self.clone() }
    }
}

/// Fails with [`StateError::Fenced`] unless `stack`'s lease still has the fence's holder and
/// generation; run inside the transaction of the write it guards.
/// Checks, inside a transaction, that `fence`'s lease is still current (same holder, same generation).
pub(super) trait LeaseCheck {
    fn check_lease(&mut self, fence: &Fence) -> impl std::future::Future<Output = Result<()>> + Send;
}

macro_rules! lease_check {
    ($db:ty) => {
        impl LeaseCheck for Tx<$db> {
            async fn check_lease(&mut self, fence: &Fence) -> Result<()> {
                let current: Option<(String, i64)> = sqlx::query_as("SELECT holder, generation FROM watch_leases WHERE stack = $1")
                    .bind(&fence.stack)
                    .fetch_optional(&mut **self)
                    .await?;
                match current {
                    Some((holder, generation)) if holder == fence.holder && generation == fence.generation => Ok(()),
                    current => Err(StateError::Fenced {
                        stack: fence.stack.clone(),
                        generation: fence.generation,
                        now: current
                            .map(|(holder, generation)| format!("held by {holder} at generation {generation}"))
                            .unwrap_or_else(|| "not leased".into()),
                    }),
                }
            }
        }
    };
}
lease_check!(sqlx::Sqlite);
lease_check!(sqlx::Postgres);

/// A write transaction (the one writer from its start) that, for a fenced store ([`Store::fenced`]),
/// first checks that the watch lease it names is still current, and fails with
/// [`StateError::Fenced`] before anything is written otherwise.
pub(super) trait FencedWrite {
    type Db: sqlx::Database;
    fn write_fenced(
        &self,
        fence: Option<&Fence>,
        file: Option<&Arc<StateFile>>,
    ) -> impl std::future::Future<Output = Result<Tx<Self::Db>>> + Send;
}

macro_rules! fenced_write {
    ($pool:ty, $db:ty) => {
        impl FencedWrite for $pool {
            type Db = $db;
            async fn write_fenced(&self, fence: Option<&Fence>, file: Option<&Arc<StateFile>>) -> Result<Tx<$db>> {
                let mut tx = WritePool::write(self, file).await?;
                if let Some(fence) = fence {
                    LeaseCheck::check_lease(&mut tx, fence).await?;
                }
                Ok(tx)
            }
        }
    };
}
fenced_write!(sqlx::SqlitePool, sqlx::Sqlite);
fenced_write!(sqlx::PgPool, sqlx::Postgres);

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: i64 = 20_000;

    async fn claimed(store: &Store, stack: &str, holder: &str, now: i64) -> Lease {
        match store.claim_lease(stack, holder, "h1", now, TTL).await.unwrap() {
            Claim::Claimed { lease, .. } => lease,
            other => panic!("{holder} did not get {stack} at {now}: {other:?}"),
        }
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_a_takeover_only_after_expiry_with_a_new_generation() {
        let store = Store::memory().await.unwrap();
        let a = claimed(&store, "s", "a", 1_000).await;
        assert_eq!((a.generation, a.expires_at), (1, 21_000));
        // Another watcher finds it held, until the last millisecond.
        for now in [1_001, 20_999] {
            match store.claim_lease("s", "b", "h2", now, TTL).await.unwrap() {
                Claim::HeldBy(l) => assert_eq!((l.holder.as_str(), l.manifest_hash.as_str()), ("a", "h1")),
                other => panic!("{other:?}"),
            }
        }
        // The holder asking again keeps it (same generation).
        assert_eq!(claimed(&store, "s", "a", 5_000).await.generation, 1);
        // Renewed at 15 s: held until 35 s.
        assert!(store.renew_lease(&a.fence(), "h1", 15_000, TTL).await.unwrap());
        assert!(matches!(store.claim_lease("s", "b", "h2", 30_000, TTL).await.unwrap(), Claim::HeldBy(_)));
        // Not renewed any more: at 35 s another takes it, with the next generation.
        match store.claim_lease("s", "b", "h2", 35_000, TTL).await.unwrap() {
            Claim::Claimed { lease, previous } => {
                assert_eq!((lease.holder.as_str(), lease.generation, lease.expires_at), ("b", 2, 55_000));
                assert_eq!(previous.map(|p| (p.holder, p.generation)), Some(("a".into(), 1)));
            }
            other => panic!("{other:?}"),
        }
        // The old holder's renewal fails: it must stop.
        assert!(!store.renew_lease(&a.fence(), "h1", 36_000, TTL).await.unwrap());
        assert!(!store.release_lease(&a.fence(), 36_000).await.unwrap(), "it cannot release what is not its own");
        let now = store.lease("s").await.unwrap().unwrap();
        assert_eq!((now.holder.as_str(), now.generation, now.manifest_hash.as_str()), ("b", 2, "h2"));
    }

    #[tokio::test]
    async fn an_expired_lease_nobody_took_is_still_renewed_and_a_released_one_is_taken_at_once() {
        let store = Store::memory().await.unwrap();
        let a = claimed(&store, "s", "a", 0).await;
        // Late (the holder stalled past expiry) but nobody took it: still its own, same generation.
        assert!(store.renew_lease(&a.fence(), "h1b", 25_000, TTL).await.unwrap());
        let l = store.lease("s").await.unwrap().unwrap();
        assert_eq!((l.generation, l.expires_at, l.manifest_hash.as_str()), (1, 45_000, "h1b"));
        // Released (on shutdown): another takes it at once, long before it would have expired.
        assert!(store.release_lease(&a.fence(), 26_000).await.unwrap());
        let b = claimed(&store, "s", "b", 26_000).await;
        assert_eq!(b.generation, 2, "a release keeps the generation: the next holder gets a new one");
        // A stack never leased starts at generation 1; stacks are independent.
        assert_eq!(claimed(&store, "t", "a", 26_000).await.generation, 1);
        assert_eq!(
            store.leases().await.unwrap().iter().map(|l| (l.stack.as_str(), l.holder.as_str())).collect::<Vec<_>>(),
            [("s", "b"), ("t", "a")]
        );
    }

    both!(the_live_holders_are_the_watchers_holding_an_unexpired_lease);
    async fn the_live_holders_are_the_watchers_holding_an_unexpired_lease(backend: crate::state::test_backends::Backend) {
        let store = backend.store().await;
        assert!(store.live_holders(0).await.unwrap().is_empty());
        claimed(&store, "s1", "a", 0).await;
        claimed(&store, "s2", "a", 0).await;
        let b = claimed(&store, "s3", "b", 5_000).await;
        assert_eq!(store.live_holders(10_000).await.unwrap(), ["a", "b"], "each watcher once, however many stacks it holds");
        // a's leases expire at 20 s (not renewed), b's at 25 s.
        assert_eq!(store.live_holders(20_000).await.unwrap(), ["b"]);
        // A released lease is not live: nobody works on the state any more.
        assert!(store.release_lease(&b.fence(), 21_000).await.unwrap());
        assert!(store.live_holders(21_000).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn of_two_takeovers_at_once_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let first = Store::open(&path).await.unwrap();
        let second = Store::open(&path).await.unwrap();
        claimed(&first, "s", "old", 0).await;
        let now = 30_000;
        let (x, y) = tokio::join!(first.claim_lease("s", "x", "h", now, TTL), second.claim_lease("s", "y", "h", now, TTL));
        let won: Vec<_> = [x.unwrap(), y.unwrap()]
            .into_iter()
            .filter_map(|c| match c {
                Claim::Claimed { lease, .. } => Some(lease),
                Claim::HeldBy(_) => None,
            })
            .collect();
        assert_eq!(won.len(), 1, "{won:?}");
        assert_eq!(won[0].generation, 2);
        assert_eq!(first.lease("s").await.unwrap().unwrap().holder, won[0].holder);
    }

    #[tokio::test]
    async fn the_lease_holder_breaks_a_remediation_lock_only_another_watcher_left() {
        let store = Store::memory().await.unwrap();
        let me = claimed(&store, "s", &holder_id(), 0).await;
        // An apply's lock is never broken.
        let apply = store.lock("s", "apply", std::time::Duration::ZERO).await.unwrap();
        assert_eq!(store.break_stale_remediation_lock(&me.fence()).await.unwrap(), None);
        store.unlock("s", &apply.id).await.unwrap();
        // Our own remediation's lock neither.
        let own = store.lock("s", REMEDIATION_LOCK, std::time::Duration::ZERO).await.unwrap();
        assert_eq!(store.break_stale_remediation_lock(&me.fence()).await.unwrap(), None);
        store.unlock("s", &own.id).await.unwrap();
        // Another watcher's (pid 1 here): broken while our lease is current, not after we lost it.
        let pool = store.pool_for_tests();
        sqlx::query("INSERT INTO locks (stack, id, operation, pid, host) VALUES ('s', 'x', $1, 1, 'elsewhere')")
            .bind(REMEDIATION_LOCK)
            .execute(&pool)
            .await
            .unwrap();
        let lost = Fence { generation: 0, ..me.fence() };
        assert!(matches!(store.break_stale_remediation_lock(&lost).await, Err(StateError::Fenced { .. })));
        assert!(store.lock_info("s").await.unwrap().is_some());
        let broken = store.break_stale_remediation_lock(&me.fence()).await.unwrap().unwrap();
        assert_eq!((broken.id.as_str(), broken.host.as_str()), ("x", "elsewhere"));
        assert!(store.lock_info("s").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_fenced_store_writes_only_while_its_lease_is_current() {
        use crate::manifest::Kind;
        let store = Store::memory().await.unwrap();
        let a = claimed(&store, "s", "a", 0).await;
        let fenced = store.fenced(a.fence());
        assert!(fenced.fence_holds(&a.fence()).await.unwrap());
        let op = fenced.begin_operation("s", "logs", Kind::LogGroup, super::super::JournalAction::Update, Some("lg")).await.unwrap();
        fenced.finish_operation(op, &super::super::OperationOutcome::Ok).await.unwrap();
        fenced.set_last_operation("s", super::super::StackOperation::Apply).await.unwrap();

        // Taken over (a stalled past its lease): every write of the fenced store fails, before it is made.
        claimed(&store, "s", "b", 25_000).await;
        assert!(!fenced.fence_holds(&a.fence()).await.unwrap());
        let serial = store.load("s").await.unwrap().serial;
        let err = fenced.begin_operation("s", "logs", Kind::LogGroup, super::super::JournalAction::Update, Some("lg")).await.unwrap_err();
        assert!(matches!(err, StateError::Fenced { generation: 1, .. }), "{err}");
        assert!(err.to_string().contains("held by b at generation 2"), "{err}");
        assert!(store.pending_operations("s").await.unwrap().is_empty(), "no journal entry: no AWS write follows");
        assert!(matches!(fenced.set_last_operation("s", super::super::StackOperation::Apply).await, Err(StateError::Fenced { .. })));
        assert_eq!(store.load("s").await.unwrap().serial, serial, "nothing recorded");
        // The unfenced store (and the new holder) still write.
        store.set_last_operation("s", super::super::StackOperation::Apply).await.unwrap();
    }
}
