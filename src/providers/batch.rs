//! Collection reads: one listing call for many resources of a kind, where AWS has one.
//!
//! A plan's read phase tells a [`Batch`] which resources it is about to read ([`Batch::want`]);
//! a kind's `read` then asks [`lookup`] for its resource. When the run reads more than one resource
//! of the same group (every REST API of the account, the stages or the deployments of one REST API,
//! the log groups under one name prefix, every IAM role), the group is listed once — paged
//! `GetRestApis`, `GetStages`, `GetDeployments`, `DescribeLogGroups` by prefix,
//! `GetAccountAuthorizationDetails` — and every read of the group is served from that listing. A
//! resource alone in its group is read with its own call, as without a batch.
//!
//! The answer is never a guess: a listing that could not be made (AccessDenied for
//! `iam:GetAccountAuthorizationDetails`, a throttled or failed call), or that stopped before its end
//! (paging is capped so a listing never costs more calls than the reads it replaces), sends the
//! resources it does not hold to their own reads ([`Lookup::Unknown`]). A resource a listing does
//! not hold is also read on its own: listings are eventually consistent, and a `watch` window's may
//! be older than the resource, so only the resource's own read says it is gone (or, for stages and
//! deployments, `GetStages` / `GetDeployments` saying their REST API is gone).
//!
//! The batch in use is a task-local ([`scope`]): the plan's refresh makes one per run; `watch` keeps
//! one per pass window ([`Window`]), shared by every stack's pass in that window. Listings are keyed
//! by account and region.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use super::registry::Kind;
use super::{Aws, Result};

tokio::task_local! {
    static BATCH: Arc<Batch>;
}

/// Runs `f` with `batch` serving the collection reads of the reads it makes.
pub async fn scope<F: Future>(batch: Arc<Batch>, f: F) -> F::Output {
    BATCH.scope(batch, f).await
}

/// The batch in scope, if any (none with `RECONCILE_COLLECTION_READS=off`: every resource is then
/// read with its own calls).
pub fn current() -> Option<Arc<Batch>> {
    if !enabled() {
        return None;
    }
    BATCH.try_with(Arc::clone).ok()
}

/// Whether collection reads are on (`RECONCILE_COLLECTION_READS=off` turns them off).
pub fn enabled() -> bool {
    !matches!(std::env::var("RECONCILE_COLLECTION_READS").as_deref(), Ok("off" | "0" | "false"))
}

/// What a listing of one group holds: its members by id (it may have stopped before the end).
pub type Collection<T> = HashMap<String, T>;

/// What a collection read says about one resource.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup<T> {
    /// The listing holds it.
    Found(T),
    /// Its parent is gone (the REST API of a stage or deployment): the resource does not exist.
    Gone,
    /// No listing holds it (no batch, alone in its group, the listing failed, stopped early or
    /// does not have it): read it on its own.
    Unknown,
}

/// A listing's outcome, as cached.
enum Filled<T> {
    /// The group's parent (the REST API of stages or deployments) is gone.
    ParentGone,
    Listed(Collection<T>),
    /// The listing could not be made; each member is read on its own.
    Failed,
}

type Slot = Arc<OnceCell<Arc<dyn Any + Send + Sync>>>;

/// The collection reads of one run (or one `watch` pass window).
#[derive(Default)]
pub struct Batch {
    /// How many resources of each (kind, group) the run reads.
    wanted: Mutex<HashMap<(Kind, String), usize>>,
    /// Listings made or under way, by (account/region, kind, group).
    filled: Mutex<HashMap<(String, Kind, String), Slot>>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("wanted", &self.wanted.lock().map(|w| w.clone()).unwrap_or_default()).finish()
    }
}

/// The group a resource is listed with, for kinds that have a collection read.
pub fn group_of(kind: Kind, id: &str) -> Option<String> {
    match kind {
        Kind::RestApi | Kind::IamRole => Some(String::new()),
        Kind::Stage | Kind::Deployment => id.split_once('/').map(|(api, _)| api.to_string()),
        Kind::LogGroup => log_group_prefix(id),
        _ => None,
    }
}

/// The prefix a log group is listed by: its name up to the last `/`, `-`, `_` or `.` (the part that
/// names its family, e.g. `/aws/lambda/` or `AccessLog-`); `None` for a name without one.
fn log_group_prefix(name: &str) -> Option<String> {
    let end = name.rfind(['/', '-', '_', '.'])?;
    (end > 0).then(|| name[..=end].to_string())
}

impl Batch {
    pub fn new() -> Arc<Batch> {
        Arc::new(Batch::default())
    }

    /// The run is about to read the resource `id` of `kind`. A web ACL association of an API
    /// Gateway stage is read with the stage (its `webAclArn`): it counts as a read of the stage.
    pub fn want(&self, kind: Kind, id: &str) {
        if kind == Kind::WebAclAssociation {
            if let Some(stage) = crate::providers::wafv2::association::stage_of(id) {
                self.want(Kind::Stage, &stage);
            }
            return;
        }
        if let Some(group) = group_of(kind, id)
            && let Ok(mut w) = self.wanted.lock()
        {
            *w.entry((kind, group)).or_default() += 1;
        }
    }

    fn wanted(&self, kind: Kind, group: &str) -> usize {
        self.wanted.lock().map(|w| w.get(&(kind, group.to_string())).copied().unwrap_or(0)).unwrap_or(0)
    }

    fn slot(&self, key: (String, Kind, String)) -> Option<Slot> {
        self.filled.lock().ok().map(|mut m| m.entry(key).or_default().clone())
    }
}

/// What the batch in scope knows of resource `id` of `kind`. `list(group, max_pages)` lists the group
/// (at most `max_pages` pages; `Ok(None)` when the group's parent is gone); it runs once per group
/// and account/region, only when more than one resource of the group is read.
pub async fn lookup<T, F, Fut>(aws: &Aws, kind: Kind, id: &str, list: F) -> Lookup<T>
where
    T: Clone + Send + Sync + 'static,
    F: FnOnce(String, usize) -> Fut,
    Fut: Future<Output = Result<Option<Collection<T>>>>,
{
    let Some(batch) = current() else { return Lookup::Unknown };
    if group_of(kind, id).is_none_or(|group| batch.wanted(kind, &group) < 2) {
        return Lookup::Unknown;
    }
    let Ok(account) = aws.account_id().await else { return Lookup::Unknown };
    batch.lookup(&format!("{account}/{}", aws.region), kind, id, list).await
}

impl Batch {
    /// [`lookup`] in this batch, for the account and region `place`.
    async fn lookup<T, F, Fut>(&self, place: &str, kind: Kind, id: &str, list: F) -> Lookup<T>
    where
        T: Clone + Send + Sync + 'static,
        F: FnOnce(String, usize) -> Fut,
        Fut: Future<Output = Result<Option<Collection<T>>>>,
    {
        let Some(group) = group_of(kind, id) else { return Lookup::Unknown };
        let wanted = self.wanted(kind, &group);
        if wanted < 2 {
            return Lookup::Unknown;
        }
        let Some(slot) = self.slot((place.to_string(), kind, group.clone())) else { return Lookup::Unknown };
        let filled = slot
            .get_or_init(|| async {
                let filled: Filled<T> = match list(group.clone(), wanted).await {
                    Ok(Some(c)) => Filled::Listed(c),
                    Ok(None) => Filled::ParentGone,
                    Err(e) => {
                        tracing::info!(%kind, group, error = %e, "collection read failed: reading each resource on its own");
                        Filled::Failed
                    }
                };
                Arc::new(filled) as Arc<dyn Any + Send + Sync>
            })
            .await;
        let Some(filled) = filled.downcast_ref::<Filled<T>>() else { return Lookup::Unknown };
        let key = match kind {
            Kind::Stage | Kind::Deployment => id.split_once('/').map_or(id, |(_, rest)| rest),
            _ => id,
        };
        match filled {
            Filled::ParentGone => Lookup::Gone,
            Filled::Failed => Lookup::Unknown,
            Filled::Listed(c) => c.get(key).map_or(Lookup::Unknown, |item| Lookup::Found(item.clone())),
        }
    }
}

/// `watch`'s batches: one per pass window, shared by the passes of every stack that start in it, so
/// a listing serves them all. A window holds at most one pass of each stack: a new one starts when a
/// stack comes back for its next pass (its data must not be older than its previous pass's), when
/// the interval has passed since the current one began, or when a stack's state changed since its
/// previous pass (an apply or a remediation wrote AWS after the listings were made: they may be stale
/// for it).
#[derive(Debug)]
pub struct Window {
    length: Duration,
    current: Mutex<WindowState>,
}

#[derive(Debug)]
struct WindowState {
    started: Instant,
    batch: Arc<Batch>,
    /// The state serial each stack's previous pass saw.
    serials: HashMap<String, i64>,
    /// The stacks whose pass this window's batch served.
    served: std::collections::HashSet<String>,
}

impl Window {
    pub fn new(length: Duration) -> Window {
        let state = WindowState { started: Instant::now(), batch: Batch::new(), serials: HashMap::new(), served: Default::default() };
        Window { length, current: Mutex::new(state) }
    }

    /// The batch for a pass of `stack`, whose state is at `serial`.
    pub fn batch(&self, stack: &str, serial: i64) -> Arc<Batch> {
        let Ok(mut w) = self.current.lock() else { return Batch::new() };
        let changed = w.serials.insert(stack.to_string(), serial).is_some_and(|before| before != serial);
        let again = !w.served.insert(stack.to_string());
        if changed || again || w.started.elapsed() >= self.length {
            w.started = Instant::now();
            w.batch = Batch::new();
            w.served = std::collections::HashSet::from([stack.to_string()]);
        }
        w.batch.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ProviderError;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn one_listing_serves_every_read_of_its_group() {
        let batch = Batch::new();
        for id in ["api1/prod", "api1/dev", "api2/prod"] {
            batch.want(Kind::Stage, id);
        }
        let listed = AtomicUsize::new(0);
        let list = |group: String, max_pages: usize| {
            listed.fetch_add(1, Ordering::SeqCst);
            async move {
                assert_eq!((group.as_str(), max_pages), ("api1", 2));
                Ok(Some(HashMap::from([("prod".to_string(), 1), ("dev".to_string(), 2)])))
            }
        };
        assert_eq!(batch.lookup("acct/r", Kind::Stage, "api1/prod", list).await, Lookup::Found(1));
        assert_eq!(batch.lookup("acct/r", Kind::Stage, "api1/dev", list).await, Lookup::Found(2));
        assert_eq!(batch.lookup("acct/r", Kind::Stage, "api1/test", list).await, Lookup::Unknown, "not listed: read on its own");
        assert_eq!(listed.load(Ordering::SeqCst), 1, "listed once");
        let never = |_: String, _: usize| async { panic!("a resource alone in its group is read on its own") };
        assert_eq!(batch.lookup::<i32, _, _>("acct/r", Kind::Stage, "api2/prod", never).await, Lookup::Unknown);
        assert_eq!(batch.lookup::<i32, _, _>("acct/r", Kind::LambdaFunction, "f", never).await, Lookup::Unknown);
    }

    #[tokio::test]
    async fn a_refused_listing_sends_each_read_to_its_own_call() {
        let batch = Batch::new();
        batch.want(Kind::IamRole, "a");
        batch.want(Kind::IamRole, "b");
        let tries = AtomicUsize::new(0);
        let refused = |_: String, _: usize| {
            tries.fetch_add(1, Ordering::SeqCst);
            async { Err::<Option<Collection<i32>>, _>(ProviderError::Other("AccessDenied".into())) }
        };
        assert_eq!(batch.lookup("acct/r", Kind::IamRole, "a", refused).await, Lookup::Unknown);
        assert_eq!(batch.lookup("acct/r", Kind::IamRole, "b", refused).await, Lookup::Unknown);
        assert_eq!(tries.load(Ordering::SeqCst), 1, "a failed listing is not tried again for each read");
        let other_place = |_: String, _: usize| async { Ok(Some(HashMap::from([("a".to_string(), 5)]))) };
        assert_eq!(batch.lookup("acct/other-region", Kind::IamRole, "a", other_place).await, Lookup::Found(5), "keyed by account/region");
    }

    #[tokio::test]
    async fn a_gone_parent_means_its_children_are_gone() {
        let batch = Batch::new();
        batch.want(Kind::Deployment, "api1/d1");
        batch.want(Kind::Deployment, "api1/d2");
        let gone = |_: String, _: usize| async { Ok::<Option<Collection<i32>>, ProviderError>(None) };
        assert_eq!(batch.lookup("p", Kind::Deployment, "api1/d2", gone).await, Lookup::Gone);
    }

    #[test]
    fn groups() {
        assert_eq!(group_of(Kind::Stage, "api1/prod").as_deref(), Some("api1"));
        assert_eq!(group_of(Kind::Deployment, "api1/d1").as_deref(), Some("api1"));
        assert_eq!(group_of(Kind::RestApi, "api1").as_deref(), Some(""));
        assert_eq!(group_of(Kind::LogGroup, "/aws/lambda/Hello").as_deref(), Some("/aws/lambda/"));
        assert_eq!(group_of(Kind::LogGroup, "DevLogGroupAccessLog-c07").as_deref(), Some("DevLogGroupAccessLog-"));
        assert_eq!(group_of(Kind::LogGroup, "plain"), None);
        assert_eq!(group_of(Kind::LogGroup, "/top"), None, "a prefix of `/` alone would list every group");
        assert_eq!(group_of(Kind::LambdaFunction, "Hello"), None);
    }

    #[test]
    fn a_window_renews_when_a_stack_state_changed() {
        let w = Window::new(Duration::from_secs(3600));
        let first = w.batch("a", 1);
        assert!(Arc::ptr_eq(&first, &w.batch("b", 7)), "the stacks' passes share the window's batch");
        let next = w.batch("a", 1);
        assert!(!Arc::ptr_eq(&first, &next), "a stack's next pass gets listings no older than its previous pass's");
        assert!(Arc::ptr_eq(&next, &w.batch("b", 7)), "and the others' next passes share them");
        let renewed = w.batch("b", 8);
        assert!(!Arc::ptr_eq(&next, &renewed), "a stack whose state changed gets fresh listings");
        assert!(Arc::ptr_eq(&renewed, &w.batch("a", 1)));
        let short = Window::new(Duration::ZERO);
        assert!(!Arc::ptr_eq(&short.batch("a", 1), &short.batch("a", 1)), "a window ends after its length");
    }
}
