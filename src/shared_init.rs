//! `SharedInit`: a once-cell for expensive async initialization (downloading and loading models).
//!
//! `tokio::sync::OnceCell::get_or_try_init` does not fit: when an initialization fails, the next
//! waiter starts its own attempt, so N callers waiting on a broken network retry N times, one
//! after another. Here the callers that join an attempt in flight all receive *that attempt's*
//! result, success or error; a failure is not cached, so a call made after it retries.

use std::sync::OnceLock;

use futures::future::{BoxFuture, FutureExt, Shared};
use parking_lot::Mutex;

type Attempt<T, E> = Shared<BoxFuture<'static, Result<T, E>>>;

/// A value initialized at most once by a shared async attempt; failures are retried by later calls.
pub struct SharedInit<T: Clone, E: Clone> {
    value: OnceLock<T>,
    in_flight: Mutex<Option<(u64, Attempt<T, E>)>>,
    attempts: Mutex<u64>,
}

impl<T, E> SharedInit<T, E>
where
    T: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
{
    /// An empty cell. `const` so that it can live in a `static`.
    pub const fn new() -> Self {
        SharedInit {
            value: OnceLock::new(),
            in_flight: Mutex::new(None),
            attempts: Mutex::new(0),
        }
    }

    /// The value, if an initialization has succeeded. This is the hot path: one atomic load.
    #[inline]
    pub fn get(&self) -> Option<&T> {
        self.value.get()
    }

    /// How many initialization attempts have been started (for tests and diagnostics).
    pub fn attempts_started(&self) -> u64 {
        *self.attempts.lock()
    }

    /// Returns the value, starting `init` if no attempt is in flight, or joining the one that is.
    pub async fn get_or_try_init<F>(&self, init: F) -> Result<&T, E>
    where
        F: FnOnce() -> BoxFuture<'static, Result<T, E>>,
    {
        if let Some(value) = self.value.get() {
            return Ok(value);
        }
        let (id, attempt) = {
            let mut in_flight = self.in_flight.lock();
            if let Some(value) = self.value.get() {
                return Ok(value);
            }
            match in_flight.as_ref() {
                Some((id, attempt)) => (*id, attempt.clone()),
                None => {
                    let mut attempts = self.attempts.lock();
                    *attempts += 1;
                    let attempt = init().shared();
                    *in_flight = Some((*attempts, attempt.clone()));
                    (*attempts, attempt)
                }
            }
        };
        let result = attempt.await;
        let mut in_flight = self.in_flight.lock();
        if let Ok(value) = &result {
            // First finisher stores it; later ones find it set.
            let _ = self.value.set(value.clone());
        }
        // Clear the finished attempt so that a later call (after a failure) starts a new one.
        if in_flight
            .as_ref()
            .is_some_and(|(current, _)| *current == id)
        {
            *in_flight = None;
        }
        drop(in_flight);
        match result {
            Ok(_) => Ok(self.value.get().expect("value was just set")),
            Err(error) => Err(error),
        }
    }
}

impl<T, E> Default for SharedInit<T, E>
where
    T: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn slow_init(
        calls: Arc<AtomicUsize>,
        result: Result<u32, String>,
    ) -> impl FnOnce() -> BoxFuture<'static, Result<u32, String>> {
        move || {
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                result
            }
            .boxed()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_one_successful_attempt() {
        let cell = Arc::new(SharedInit::<u32, String>::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (cell, calls) = (cell.clone(), calls.clone());
                tokio::spawn(async move {
                    *cell.get_or_try_init(slow_init(calls, Ok(7))).await.unwrap()
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), 7);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(cell.attempts_started(), 1);
        assert_eq!(cell.get(), Some(&7));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiters_get_the_failed_attempts_error_and_a_later_call_retries() {
        let cell = Arc::new(SharedInit::<u32, String>::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (cell, calls) = (cell.clone(), calls.clone());
                tokio::spawn(async move {
                    cell.get_or_try_init(slow_init(calls, Err("network down".into())))
                        .await
                        .copied()
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), Err("network down".to_string()));
        }
        // One attempt for eight callers, and the failure is not cached.
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(cell.get().is_none());
        let value = cell
            .get_or_try_init(slow_init(calls.clone(), Ok(9)))
            .await
            .unwrap();
        assert_eq!(*value, 9);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
