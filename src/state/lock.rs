//! One way to hold a stack's write lock: [`Store::with_lock`] takes it, runs the body and releases it
//! whether the body succeeded or not.

use std::future::Future;
use std::time::Duration;

use super::{LockInfo, StateError, Store};

impl Store {
    /// Takes the stack's write lock (waiting up to `timeout`, see [`Store::lock`]), runs `body` with it,
    /// then releases it, also when the body failed.
    ///
    /// The body's result is the one returned, whatever the release does: what the body did (an apply,
    /// a repair) is done and recorded, and must be reported as such. A release that fails is logged
    /// with the `force-unlock` command that breaks the lock it left held (the next command that
    /// needs it names it too).
    pub async fn with_lock<T, E, F, Fut>(&self, stack: &str, operation: &str, timeout: Duration, body: F) -> Result<T, E>
    where
        F: FnOnce(LockInfo) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<StateError>,
    {
        let lock = self.lock(stack, operation, timeout).await?;
        let id = lock.id.clone();
        let result = body(lock).await;
        if let Err(e) = self.unlock(stack, &id).await {
            tracing::error!(stack, error = %e, "releasing the stack lock failed; `reconcile force-unlock {id}` breaks it");
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::test_backends::Backend;

    #[derive(Debug, PartialEq)]
    enum BodyError {
        Failed(&'static str),
        State(String),
    }

    impl From<StateError> for BodyError {
        fn from(e: StateError) -> Self {
            BodyError::State(e.to_string())
        }
    }

    both!(the_lock_is_released_when_the_body_fails_and_the_body_error_is_returned);
    async fn the_lock_is_released_when_the_body_fails_and_the_body_error_is_returned(backend: Backend) {
        let store = backend.store().await;
        let reader = &store;
        let result: Result<(), BodyError> = store
            .with_lock("s", "import", Duration::ZERO, |lock| async move {
                assert_eq!(lock.operation, "import");
                assert!(reader.lock_info("s").await.unwrap().is_some_and(|held| held.id == lock.id), "held while the body runs");
                Err(BodyError::Failed("body"))
            })
            .await;
        assert_eq!(result, Err(BodyError::Failed("body")));
        assert!(store.lock_info("s").await.unwrap().is_none(), "released after a failed body");
        // A second acquire succeeds at once (no wait).
        let again = store.lock("s", "apply", Duration::ZERO).await.unwrap();
        store.unlock("s", &again.id).await.unwrap();
    }

    both!(the_body_value_is_returned_and_a_held_lock_runs_no_body);
    async fn the_body_value_is_returned_and_a_held_lock_runs_no_body(backend: Backend) {
        let store = backend.store().await;
        let value: Result<u32, BodyError> = store.with_lock("s", "apply", Duration::ZERO, |_| async { Ok(7) }).await;
        assert_eq!(value, Ok(7));
        assert!(store.lock_info("s").await.unwrap().is_none());

        let held = store.lock("s", "apply", Duration::ZERO).await.unwrap();
        let mut ran = false;
        let refused: Result<(), BodyError> = store
            .with_lock("s", "destroy", Duration::ZERO, |_| {
                ran = true;
                async { Ok(()) }
            })
            .await;
        // Named by who holds it (SQLite also prints the id force-unlock needs; PostgreSQL needs none).
        let named = format!("is locked by apply (pid {}", std::process::id());
        assert!(matches!(&refused, Err(BodyError::State(m)) if m.contains(&named)), "{refused:?}");
        assert!(!ran, "the body does not run without the lock");
        assert_eq!(store.lock_info("s").await.unwrap().map(|l| l.id), Some(held.id), "someone else's lock is left alone");
    }

    both!(when_release_fails_the_body_result_is_still_the_one_returned);
    async fn when_release_fails_the_body_result_is_still_the_one_returned(backend: Backend) {
        let store = backend.store().await;
        // Closing the pool inside the body makes the release fail.
        let failed: Result<(), BodyError> = store
            .with_lock("s", "import", Duration::ZERO, |_| async {
                store.close().await;
                Err(BodyError::Failed("body"))
            })
            .await;
        assert_eq!(failed, Err(BodyError::Failed("body")));

        let store = backend.store().await;
        let succeeded: Result<(), BodyError> = store
            .with_lock("s", "import", Duration::ZERO, |_| async {
                store.close().await;
                Ok(())
            })
            .await;
        assert_eq!(succeeded, Ok(()), "a done apply is reported as done");
    }
}
