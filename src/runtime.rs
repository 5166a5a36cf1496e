//! Running the crate's work on any async executor.
//!
//! Downloads use `reqwest` and timers, which need a tokio reactor, and loading models or hashing
//! gigabytes must not block an executor's threads. Inside a tokio runtime both happen on that
//! runtime (blocking work on its blocking pool). Outside one (`futures::executor::block_on`,
//! async-std, smol), the work runs on a small tokio runtime of this crate's, started on first
//! need, and the caller's executor only awaits the result: the public API works everywhere,
//! rather than panicking with "there is no reactor running".

use std::sync::OnceLock;

use crate::error::{MoshiError, Result};

/// The runtime used when the caller is not inside one.
fn fallback() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fluent-voice-kyutai")
            .enable_all()
            .build()
            .expect("a tokio runtime can be started")
    })
}

/// The caller's tokio runtime, or this crate's own.
pub(crate) fn handle() -> tokio::runtime::Handle {
    tokio::runtime::Handle::try_current().unwrap_or_else(|_| fallback().handle().clone())
}

/// Runs `future` where a tokio reactor is available: in place inside a tokio runtime, else on
/// the crate's runtime, awaited from whatever executor polls this.
pub(crate) async fn on_tokio<F>(future: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        return future.await;
    }
    match fallback().spawn(future).await {
        Ok(output) => output,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

/// Runs CPU- or disk-bound work (loading weights, hashing files) off the async threads.
/// `what` names the work in the error if it panics.
pub(crate) async fn blocking<T, F>(what: &'static str, work: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    handle()
        .spawn_blocking(work)
        .await
        .map_err(|error| MoshiError::Inference {
            message: format!("{what} stopped unexpectedly: {error}"),
            source: Some(std::sync::Arc::new(error)),
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn works_without_a_tokio_runtime() {
        let value = futures::executor::block_on(on_tokio(async {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            blocking("adding", || Ok(2 + 2)).await
        }));
        assert_eq!(value.unwrap(), 4);
    }

    #[test]
    fn a_panic_in_blocking_work_is_an_error() {
        let error = futures::executor::block_on(blocking("the test work", || -> Result<()> {
            panic!("boom")
        }))
        .unwrap_err();
        assert!(
            error.to_string().contains("the test work stopped"),
            "{error}"
        );
    }
}
