//! Slots: how many streams an endpoint serves at once (its batch size).
//!
//! For now each endpoint counts its own slots; once the engine batches conversations it will
//! report its own used/total slots, and [`Slots`] becomes a thin view of that (the server only
//! needs `try_acquire`, `used` and `total`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// The slots of one endpoint.
#[derive(Debug, Clone)]
pub(crate) struct Slots {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    used: AtomicUsize,
    total: usize,
    freed: Notify,
}

/// A slot held by one stream; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct Slot {
    inner: Arc<Inner>,
}

impl Slots {
    pub(crate) fn new(total: usize) -> Slots {
        Slots {
            inner: Arc::new(Inner {
                used: AtomicUsize::new(0),
                total,
                freed: Notify::new(),
            }),
        }
    }

    /// A free slot, or `None` when every slot is taken.
    pub(crate) fn try_acquire(&self) -> Option<Slot> {
        self.inner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < self.inner.total).then_some(used + 1)
            })
            .ok()
            .map(|_| Slot {
                inner: self.inner.clone(),
            })
    }

    /// A slot, waiting up to `wait` for one to free up (POST requests queue briefly, as
    /// moshi-server's do).
    pub(crate) async fn acquire_within(&self, wait: std::time::Duration) -> Option<Slot> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let freed = self.inner.freed.notified();
            if let Some(slot) = self.try_acquire() {
                return Some(slot);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return self.try_acquire();
            }
        }
    }

    pub(crate) fn used(&self) -> usize {
        self.inner.used.load(Ordering::Acquire)
    }

    pub(crate) fn total(&self) -> usize {
        self.inner.total
    }

    /// Waits until every slot is free (all streams have ended).
    pub(crate) async fn all_free(&self) {
        loop {
            let freed = self.inner.freed.notified();
            if self.used() == 0 {
                return;
            }
            freed.await;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.inner.used.fetch_sub(1, Ordering::AcqRel);
        self.inner.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_are_counted_and_freed() {
        let slots = Slots::new(2);
        let a = slots.try_acquire().unwrap();
        let _b = slots.try_acquire().unwrap();
        assert!(slots.try_acquire().is_none());
        assert_eq!((slots.used(), slots.total()), (2, 2));
        let waiter = {
            let slots = slots.clone();
            tokio::spawn(async move {
                slots
                    .acquire_within(std::time::Duration::from_secs(5))
                    .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        drop(a);
        // The waiter gets the freed slot and holds it: none is left.
        let _c = waiter.await.unwrap().expect("the freed slot");
        assert_eq!(slots.used(), 2);
        assert!(
            slots
                .acquire_within(std::time::Duration::from_millis(10))
                .await
                .is_none()
        );
    }
}
