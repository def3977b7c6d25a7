//! Drift events (`drift_events`): what `reconcile watch` found different from the manifest, when it
//! was first and last seen, and how it ended. One open row per (stack, resource, field); a drift that
//! comes back after it was resolved opens a new row.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use tracing::instrument;

use super::backend::{now, on_db};
use super::lease::FencedWrite;
use super::{Result, Store};
use crate::manifest::Kind;

/// The `field` of a resource deleted outside reconcile.
pub const DELETED: &str = "*";

/// One field of one resource that differs from the manifest, as a pass saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drift {
    pub resource: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    /// A plan field path (`memory_size`, `tags.env`), or [`DELETED`].
    pub field: String,
    /// What the manifest says.
    pub expected: Value,
    /// What AWS has.
    pub actual: Value,
    /// In a field the manifest's `ignore_changes` names: recorded, never counted as open drift nor
    /// remediated.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignored: bool,
}

/// How a drift ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Resolution {
    /// `watch --remediate` put the manifest's value back.
    Remediated,
    /// AWS matches the manifest again (changed back by hand, by `apply`, or the manifest changed).
    BackInSync,
    /// The resource is neither in the manifest nor in the state any more.
    NoLongerManaged,
}

impl Resolution {
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Remediated => "remediated",
            Resolution::BackInSync => "back in sync",
            Resolution::NoLongerManaged => "no longer managed",
        }
    }
}

/// A drift event as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftEvent {
    pub id: i64,
    pub stack: String,
    pub resource: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub field: String,
    pub expected: Value,
    pub actual: Value,
    pub first_seen: String,
    pub last_seen: String,
    pub resolved_at: Option<String>,
    /// `remediated`, `back in sync` or `no longer managed` once resolved.
    pub how: Option<String>,
    /// In a field `ignore_changes` names: listed with `drift --ignored` or `--all`, never counted as
    /// open drift, never remediated.
    pub ignored: bool,
}

impl DriftEvent {
    pub fn is_open(&self) -> bool {
        self.resolved_at.is_none()
    }
}

/// Which drift events [`Store::drift_events_with`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// Open drift, not in ignored fields: what counts.
    Open,
    /// Open drift, also in ignored fields.
    OpenAndIgnored,
    /// Every event, resolved or not, ignored or not.
    All,
}

/// What one pass changes in a stack's open events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventDelta {
    /// Drift not open before: a new event each.
    pub opened: Vec<Drift>,
    /// Open events seen again (id, what was seen now: the values may have moved).
    pub seen_again: Vec<(i64, Drift)>,
    /// Open events that are over, and how.
    pub resolved: Vec<(DriftEvent, Resolution)>,
}

/// Decides what a pass does to the open events: drift not open yet opens an event; drift already open
/// is seen again; an open event whose resource was read this pass (`checked`) and shows no drift on
/// that field any more is back in sync; one whose resource is no longer `managed` (neither in the
/// manifest nor in the state) is over; the events of resources not read this pass (their read
/// failed, or they wait for their backoff) are left as they are.
pub fn delta(open: &[DriftEvent], observed: &[Drift], checked: &BTreeSet<String>, managed: &BTreeSet<String>) -> EventDelta {
    let by_key: BTreeMap<(&str, &str), &DriftEvent> = open.iter().map(|e| ((e.resource.as_str(), e.field.as_str()), e)).collect();
    let mut out = EventDelta::default();
    let mut seen: BTreeSet<(&str, &str)> = BTreeSet::new();
    for d in observed {
        let key = (d.resource.as_str(), d.field.as_str());
        if !seen.insert(key) {
            continue;
        }
        match by_key.get(&key) {
            Some(e) => out.seen_again.push((e.id, d.clone())),
            None => out.opened.push(d.clone()),
        }
    }
    for e in open {
        if seen.contains(&(e.resource.as_str(), e.field.as_str())) {
            continue;
        }
        if !managed.contains(&e.resource) {
            out.resolved.push((e.clone(), Resolution::NoLongerManaged));
        } else if checked.contains(&e.resource) {
            out.resolved.push((e.clone(), Resolution::BackInSync));
        }
    }
    out
}

const COLUMNS: &str = "id, stack, resource, kind, field, expected, actual, first_seen, last_seen, resolved_at, how, ignored";

/// A drift event from its row, whichever database it came from.
fn event<R: Row>(row: &R) -> Result<DriftEvent>
where
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
{
    let json = |col: &str| -> Result<Value> {
        let text: String = row.try_get(col)?;
        Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    };
    Ok(DriftEvent {
        id: row.try_get("id")?,
        stack: row.try_get("stack")?,
        resource: row.try_get("resource")?,
        kind: row.try_get("kind")?,
        field: row.try_get("field")?,
        expected: json("expected")?,
        actual: json("actual")?,
        first_seen: row.try_get("first_seen")?,
        last_seen: row.try_get("last_seen")?,
        resolved_at: row.try_get("resolved_at")?,
        how: row.try_get("how")?,
        ignored: row.try_get("ignored")?,
    })
}

impl Store {
    /// Drift events, oldest first: the open ones (not in ignored fields: open drift that counts), or
    /// with `all` every one; of one stack or of all.
    pub async fn drift_events(&self, stack: Option<&str>, all: bool) -> Result<Vec<DriftEvent>> {
        self.drift_events_with(stack, if all { Listing::All } else { Listing::Open }).await
    }

    /// Drift events, oldest first, as `listing` says; of one stack or of all.
    #[instrument(skip_all)]
    pub async fn drift_events_with(&self, stack: Option<&str>, listing: Listing) -> Result<Vec<DriftEvent>> {
        let filter = match listing {
            Listing::Open => "resolved_at IS NULL AND NOT ignored",
            Listing::OpenAndIgnored => "resolved_at IS NULL",
            Listing::All => "TRUE",
        };
        let sql = format!("SELECT {COLUMNS} FROM drift_events WHERE ($1 IS NULL OR stack = $1) AND {filter} ORDER BY stack, id");
        on_db!(self.db()?, pool => {
            let rows = sqlx::query(&sql).bind(stack).fetch_all(pool).await?;
            rows.iter().map(event).collect()
        })
    }

    /// Records what one pass saw, in one transaction (see [`delta`]); returns what changed.
    #[instrument(skip_all, fields(stack))]
    pub async fn record_drift(
        &self,
        stack: &str,
        observed: &[Drift],
        checked: &BTreeSet<String>,
        managed: &BTreeSet<String>,
    ) -> Result<EventDelta> {
        self.record_drift_since(stack, observed, checked, managed, &BTreeMap::new()).await
    }

    /// [`Store::record_drift`], where `seen_since` says when some of the drift was first seen, by
    /// (resource, field) (a pass that could not record it: the state unwritable, its disk full): a new
    /// event's `first_seen` is that time, not the time it could be written.
    #[instrument(skip_all, fields(stack))]
    pub async fn record_drift_since(
        &self,
        stack: &str,
        observed: &[Drift],
        checked: &BTreeSet<String>,
        managed: &BTreeSet<String>,
        seen_since: &BTreeMap<(String, String), String>,
    ) -> Result<EventDelta> {
        on_db!(self.db()?, pool => {
            let mut tx = pool.write_fenced(self.fence.as_deref(), self.file.as_ref()).await?;
            let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM drift_events WHERE stack = $1 AND resolved_at IS NULL ORDER BY id"))
                .bind(stack)
                .fetch_all(&mut *tx)
                .await?;
            let open = rows.iter().map(event).collect::<Result<Vec<_>>>()?;
            let change = delta(&open, observed, checked, managed);
            let at = now();
            for d in &change.opened {
                let first_seen = seen_since.get(&(d.resource.clone(), d.field.clone())).filter(|t| **t < at).unwrap_or(&at);
                sqlx::query(
                    "INSERT INTO drift_events (stack, resource, kind, field, expected, actual, ignored, first_seen, last_seen)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(stack)
                .bind(&d.resource)
                .bind(d.kind.type_name())
                .bind(&d.field)
                .bind(d.expected.to_string())
                .bind(d.actual.to_string())
                .bind(d.ignored)
                .bind(first_seen)
                .bind(&at)
                .execute(&mut *tx)
                .await?;
            }
            for (id, d) in &change.seen_again {
                sqlx::query("UPDATE drift_events SET last_seen = $1, expected = $2, actual = $3, kind = $4, ignored = $5 WHERE id = $6")
                    .bind(&at)
                    .bind(d.expected.to_string())
                    .bind(d.actual.to_string())
                    .bind(d.kind.type_name())
                    .bind(d.ignored)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            for (e, how) in &change.resolved {
                sqlx::query("UPDATE drift_events SET resolved_at = $1, how = $2 WHERE id = $3 AND resolved_at IS NULL")
                    .bind(&at)
                    .bind(how.as_str())
                    .bind(e.id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(change)
        })
    }

    /// Resolves every open event of one resource (e.g. after remediation); returns those events.
    #[instrument(skip_all, fields(stack, resource))]
    pub async fn resolve_drift(&self, stack: &str, resource: &str, how: Resolution) -> Result<Vec<DriftEvent>> {
        on_db!(self.db()?, pool => {
            let rows = sqlx::query(&format!(
                "UPDATE drift_events SET resolved_at = $1, how = $2 WHERE stack = $3 AND resource = $4 AND resolved_at IS NULL RETURNING {COLUMNS}"
            ))
            .bind(now())
            .bind(how.as_str())
            .bind(stack)
            .bind(resource)
            .fetch_all(pool)
            .await;
            self.wrote(rows).await?.iter().map(event).collect()
        })
    }

    /// Resolves one open event by id; `None` if it was not open.
    #[instrument(skip_all, fields(id))]
    /// On a fenced store ([`Store::fenced`]), only while the watch lease is still current (checked in
    /// the same transaction).
    pub async fn resolve_drift_event(&self, id: i64, how: Resolution) -> Result<Option<DriftEvent>> {
        on_db!(self.db()?, pool => {
            let mut tx = pool.write_fenced(self.fence.as_deref(), self.file.as_ref()).await?;
            let row = sqlx::query(&format!(
                "UPDATE drift_events SET resolved_at = $1, how = $2 WHERE id = $3 AND resolved_at IS NULL RETURNING {COLUMNS}"
            ))
            .bind(now())
            .bind(how.as_str())
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            tx.commit().await?;
            row.as_ref().map(event).transpose()
        })
    }

    /// Open drift fields per resource of a stack (drift in ignored fields does not count).
    pub async fn open_drift_counts(&self, stack: &str) -> Result<BTreeMap<String, u64>> {
        let rows: Vec<(String, i64)> = on_db!(self.db()?, pool => {
            sqlx::query_as(
                "SELECT resource, COUNT(*) AS n FROM drift_events WHERE stack = $1 AND resolved_at IS NULL AND NOT ignored GROUP BY resource",
            )
            .bind(stack)
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(|(resource, n)| (resource, n.max(0) as u64)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::test_backends::Backend;
    use serde_json::json;

    fn drift(resource: &str, field: &str, expected: Value, actual: Value) -> Drift {
        Drift { resource: resource.into(), kind: Kind::LambdaFunction, field: field.into(), expected, actual, ignored: false }
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn open(id: i64, resource: &str, field: &str) -> DriftEvent {
        DriftEvent {
            id,
            stack: "s".into(),
            resource: resource.into(),
            kind: "aws_lambda_function".into(),
            field: field.into(),
            expected: json!(512),
            actual: json!(256),
            first_seen: "t0".into(),
            last_seen: "t0".into(),
            resolved_at: None,
            how: None,
            ignored: false,
        }
    }

    #[test]
    fn new_drift_opens_known_drift_is_seen_again_and_gone_drift_resolves_only_where_read() {
        let events = [open(1, "f", "memory_size"), open(2, "f", "timeout"), open(3, "g", "memory_size"), open(4, "gone", "*")];
        let observed = [
            drift("f", "memory_size", json!(512), json!(128)),
            drift("f", "memory_size", json!(512), json!(128)), // duplicates count once
            drift("h", "*", json!("present"), json!("deleted")),
        ];
        // `g` was not read this pass (backoff): its event stays open, untouched.
        let d = delta(&events, &observed, &set(&["f", "h"]), &set(&["f", "g", "h"]));
        assert_eq!(d.opened, vec![observed[2].clone()]);
        assert_eq!(d.seen_again, vec![(1, observed[0].clone())]);
        let resolved: Vec<_> = d.resolved.iter().map(|(e, how)| (e.id, *how)).collect();
        assert_eq!(resolved, vec![(2, Resolution::BackInSync), (4, Resolution::NoLongerManaged)]);
    }

    // Drift a pass saw but could not record (the state unwritable, its disk full) is recorded, once it
    // can be, as first seen when it was seen.
    both!(drift_seen_before_it_could_be_recorded_keeps_its_first_seen);
    async fn drift_seen_before_it_could_be_recorded_keeps_its_first_seen(backend: Backend) {
        let store = backend.store().await;
        let all = set(&["f"]);
        let earlier = "2026-01-01T00:00:00.000Z".to_string();
        let since = BTreeMap::from([(("f".to_string(), "timeout".to_string()), earlier.clone())]);
        let observed = [drift("f", "timeout", json!(10), json!(25)), drift("f", "memory_size", json!(512), json!(256))];
        store.record_drift_since("s", &observed, &all, &all, &since).await.unwrap();
        let events = store.drift_events(Some("s"), false).await.unwrap();
        let timeout = events.iter().find(|e| e.field == "timeout").unwrap();
        assert_eq!(timeout.first_seen, earlier);
        assert!(timeout.last_seen > earlier, "{timeout:?}");
        let memory = events.iter().find(|e| e.field == "memory_size").unwrap();
        assert!(memory.first_seen > earlier, "seen now: {memory:?}");
    }

    both!(events_open_update_resolve_and_reopen_as_new_rows);
    async fn events_open_update_resolve_and_reopen_as_new_rows(backend: Backend) {
        let store = backend.store().await;
        let all = set(&["f"]);
        let d = store.record_drift("s", &[drift("f", "memory_size", json!(512), json!(256))], &all, &all).await.unwrap();
        assert_eq!(d.opened.len(), 1);
        // Seen again with another value: the same event, values updated.
        let d = store.record_drift("s", &[drift("f", "memory_size", json!(512), json!(128))], &all, &all).await.unwrap();
        assert_eq!((d.opened.len(), d.seen_again.len()), (0, 1));
        let events = store.drift_events(Some("s"), false).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].expected.clone(), events[0].actual.clone()), (json!(512), json!(128)));
        assert!(events[0].is_open());
        assert_eq!(store.open_drift_counts("s").await.unwrap(), BTreeMap::from([("f".to_string(), 1)]));

        // Read again and in sync: resolved.
        let d = store.record_drift("s", &[], &all, &all).await.unwrap();
        assert_eq!(d.resolved, vec![(events[0].clone(), Resolution::BackInSync)]);
        assert!(store.drift_events(Some("s"), false).await.unwrap().is_empty());
        let past = store.drift_events(Some("s"), true).await.unwrap();
        assert_eq!(past[0].how.as_deref(), Some("back in sync"));
        assert!(past[0].resolved_at.is_some());

        // It comes back: a new row; remediation resolves it with how = remediated.
        store.record_drift("s", &[drift("f", "memory_size", json!(512), json!(64))], &all, &all).await.unwrap();
        let resolved = store.resolve_drift("s", "f", Resolution::Remediated).await.unwrap();
        assert_eq!(resolved.len(), 1);
        assert_ne!(resolved[0].id, past[0].id);
        assert_eq!(resolved[0].how.as_deref(), Some("remediated"));
        assert_eq!(store.drift_events(None, true).await.unwrap().len(), 2);
        assert!(store.open_drift_counts("s").await.unwrap().is_empty());
        // Other stacks are separate.
        assert!(store.drift_events(Some("other"), true).await.unwrap().is_empty());
    }

    both!(only_one_open_event_per_resource_and_field);
    async fn only_one_open_event_per_resource_and_field(backend: Backend) {
        let store = backend.store().await;
        store.record_drift("s", &[drift("f", "timeout", json!(10), json!(3))], &set(&["f"]), &set(&["f"])).await.unwrap();
        let dup = store
            .exec_for_tests(
                "INSERT INTO drift_events (stack, resource, kind, field) VALUES ('s', 'f', 'aws_lambda_function', 'timeout')",
                &[],
            )
            .await;
        assert!(dup.is_err(), "the unique index must refuse a second open event");
    }
}
