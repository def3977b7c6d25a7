//! `reconcile state migrate`: copies every stack of one state to another (SQLite ⇄ PostgreSQL, or
//! file to file): its row (serial, outputs, pin, last operation), resources, journal and drift
//! history, holding the stacks' locks on both sides; refuses a target that already knows one of them,
//! and checks the copy (counts and a hash of every copied row) before it reports it.

use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::backend::{WritePool, on_db};
use super::{Result, StateError, Store};

type StackRow = (String, i64, String, String, Option<String>, Option<String>, Option<String>, Option<String>, Option<String>);
type ResourceRow = (String, String, String, String, String, String, String, Option<String>, bool);
type OperationRow = (String, String, String, Option<String>, String, Option<String>, Option<String>);
type DriftRow = (String, String, String, String, String, String, String, Option<String>, Option<String>, bool);

/// Everything the state holds for one stack, row ids left out (the target numbers its own rows).
#[derive(Debug, Clone, PartialEq, Serialize)]
struct StackDump {
    stack: Option<StackRow>,
    resources: Vec<ResourceRow>,
    operations: Vec<OperationRow>,
    drift: Vec<DriftRow>,
}

impl StackDump {
    fn is_empty(&self) -> bool {
        self.stack.is_none() && self.resources.is_empty() && self.operations.is_empty() && self.drift.is_empty()
    }

    fn digest(&self) -> String {
        let text = serde_json::to_string(self).unwrap_or_default();
        Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// What was moved for one stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MovedStack {
    pub stack: String,
    pub serial: i64,
    pub resources: usize,
    pub journal_entries: usize,
    pub drift_events: usize,
    /// `account (partition) in region`, when the stack is pinned.
    pub pinned_to: Option<String>,
    /// SHA-256 of every copied row, the same read back from the target.
    pub sha256: String,
}

impl Store {
    /// The names of every stack this state knows (with a row, resources, journal or drift).
    pub async fn stack_names(&self) -> Result<Vec<String>> {
        on_db!(self.db()?, pool => {
            Ok(sqlx::query_scalar(
                "SELECT name FROM stacks UNION SELECT stack FROM resources UNION SELECT stack FROM operations
                 UNION SELECT stack FROM drift_events ORDER BY 1",
            )
            .fetch_all(pool)
            .await?)
        })
    }

    async fn dump(&self, stack: &str) -> Result<StackDump> {
        on_db!(self.db()?, pool => {
            let row: Option<StackRow> = sqlx::query_as(
                "SELECT name, serial, outputs, updated_at, account_id, partition, region, last_operation, lineage FROM stacks WHERE name = $1",
            )
            .bind(stack)
            .fetch_optional(pool)
            .await?;
            let resources: Vec<ResourceRow> = sqlx::query_as(
                "SELECT name, kind, physical_id, attributes, outputs, depends_on, updated_at, incomplete, retain_on_delete
                 FROM resources WHERE stack = $1 ORDER BY rowid",
            )
            .bind(stack)
            .fetch_all(pool)
            .await?;
            let operations: Vec<OperationRow> = sqlx::query_as(
                "SELECT resource, kind, action, physical_name, started_at, finished_at, outcome FROM operations WHERE stack = $1 ORDER BY id",
            )
            .bind(stack)
            .fetch_all(pool)
            .await?;
            let drift: Vec<DriftRow> = sqlx::query_as(
                "SELECT resource, kind, field, expected, actual, first_seen, last_seen, resolved_at, how, ignored
                 FROM drift_events WHERE stack = $1 ORDER BY id",
            )
            .bind(stack)
            .fetch_all(pool)
            .await?;
            Ok(StackDump { stack: row, resources, operations, drift })
        })
    }

    /// Writes `dump` as stack `stack` of this (empty for that stack) state, in one transaction.
    async fn restore(&self, stack: &str, dump: &StackDump) -> Result<()> {
        on_db!(self.db()?, pool => {
            let mut tx = pool.write(self.file.as_ref()).await?;
            if let Some((name, serial, outputs, updated_at, account_id, partition, region, last_operation, lineage)) = &dump.stack {
                // The lineage goes along: a plan saved against the source is still recognised (and a
                // trigger or default only fills it in when it is missing).
                sqlx::query(
                    "INSERT INTO stacks (name, serial, outputs, updated_at, account_id, partition, region, last_operation, lineage)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(name)
                .bind(serial)
                .bind(outputs)
                .bind(updated_at)
                .bind(account_id)
                .bind(partition)
                .bind(region)
                .bind(last_operation)
                .bind(lineage)
                .execute(&mut *tx)
                .await?;
            }
            for (name, kind, physical_id, attributes, outputs, depends_on, updated_at, incomplete, retain) in &dump.resources {
                sqlx::query(
                    "INSERT INTO resources (stack, name, kind, physical_id, attributes, outputs, depends_on, updated_at, incomplete, retain_on_delete)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(stack)
                .bind(name)
                .bind(kind)
                .bind(physical_id)
                .bind(attributes)
                .bind(outputs)
                .bind(depends_on)
                .bind(updated_at)
                .bind(incomplete)
                .bind(retain)
                .execute(&mut *tx)
                .await?;
            }
            for (resource, kind, action, physical_name, started_at, finished_at, outcome) in &dump.operations {
                sqlx::query(
                    "INSERT INTO operations (stack, resource, kind, action, physical_name, started_at, finished_at, outcome)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(stack)
                .bind(resource)
                .bind(kind)
                .bind(action)
                .bind(physical_name)
                .bind(started_at)
                .bind(finished_at)
                .bind(outcome)
                .execute(&mut *tx)
                .await?;
            }
            for (resource, kind, field, expected, actual, first_seen, last_seen, resolved_at, how, ignored) in &dump.drift {
                sqlx::query(
                    "INSERT INTO drift_events (stack, resource, kind, field, expected, actual, first_seen, last_seen, resolved_at, how, ignored)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(stack)
                .bind(resource)
                .bind(kind)
                .bind(field)
                .bind(expected)
                .bind(actual)
                .bind(first_seen)
                .bind(last_seen)
                .bind(resolved_at)
                .bind(how)
                .bind(ignored)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Removes stack `stack`'s records (drift history, journal, resources, its row) from this state:
    /// a copy `migrate_to` made before it failed.
    async fn discard_copy(&self, stack: &str) -> Result<()> {
        on_db!(self.db()?, pool => {
            let mut tx = pool.write(self.file.as_ref()).await?;
            for table in ["drift_events", "operations", "resources"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE stack = $1")).bind(stack).execute(&mut *tx).await?;
            }
            sqlx::query("DELETE FROM stacks WHERE name = $1").bind(stack).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Copies every stack of this state to `target`, holding each stack's lock in both (no wait):
    /// refused, with nothing written, if the target already has any of them. Each copy is read back
    /// and compared row for row (counts and SHA-256) before it is reported.
    pub async fn migrate_to(&self, target: &Store) -> Result<Vec<MovedStack>> {
        let stacks = self.stack_names().await?;
        let mut locks = Vec::new();
        let mut restored: Vec<String> = Vec::new();
        let result = async {
            for stack in &stacks {
                locks.push((self.clone(), stack.clone(), self.lock(stack, "state migrate", Duration::ZERO).await?.id));
                locks.push((target.clone(), stack.clone(), target.lock(stack, "state migrate", Duration::ZERO).await?.id));
            }
            let mut dumps = Vec::new();
            for stack in &stacks {
                if !target.dump(stack).await?.is_empty() {
                    return Err(StateError::MigrateTargetHasStack { stack: stack.clone(), target: target.path().display().to_string() });
                }
                dumps.push((stack, self.dump(stack).await?));
            }
            let mut moved = Vec::new();
            for (stack, dump) in dumps {
                restored.push(stack.clone());
                target.restore(stack, &dump).await?;
                let copy = target.dump(stack).await?;
                if copy != dump {
                    return Err(StateError::MigrateMismatch { stack: stack.clone(), target: target.path().display().to_string() });
                }
                moved.push(MovedStack {
                    stack: stack.clone(),
                    serial: dump.stack.as_ref().map_or(0, |s| s.1),
                    resources: copy.resources.len(),
                    journal_entries: copy.operations.len(),
                    drift_events: copy.drift.len(),
                    pinned_to: dump.stack.as_ref().and_then(|s| match (&s.4, &s.5, &s.6) {
                        (Some(a), Some(p), Some(r)) => Some(format!("account {a} ({p}) in {r}")),
                        _ => None,
                    }),
                    sha256: copy.digest(),
                });
            }
            Ok(moved)
        }
        .await;
        // A migration that failed part way leaves nothing in the target: what it copied is removed
        // again (the source is untouched either way), so it can simply be run again.
        if result.is_err() {
            for stack in &restored {
                if let Err(e) = target.discard_copy(stack).await {
                    tracing::error!(stack, error = %e, "removing a partial copy from the migration target failed; remove the stack there by hand before migrating again");
                }
            }
        }
        for (store, stack, id) in locks {
            if let Err(e) = store.unlock(&stack, &id).await {
                tracing::error!(stack, error = %e, "releasing a lock taken for state migrate failed; `reconcile force-unlock {id}` breaks it");
            }
        }
        result
    }
}
