//! A bound on the memory held by requests in flight, across all connections.
//!
//! A connection reserves a frame's size as soon as the frame's length prefix arrives and only
//! then reads the body; when the budget is spent it stops reading, and TCP pushes back on the
//! client. The reservation is returned when the response has been written.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use event_listener::Event;

/// Shared byte budget.
#[derive(Debug)]
pub struct MemoryBudget {
    available: AtomicUsize,
    capacity: usize,
    freed: Event,
}

/// A reservation; returned on drop.
#[derive(Debug)]
pub struct Permit {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl MemoryBudget {
    /// A budget of `capacity` bytes.
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(MemoryBudget {
            available: AtomicUsize::new(capacity),
            capacity,
            freed: Event::new(),
        })
    }

    fn try_take(&self, bytes: usize) -> bool {
        self.available
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| {
                a.checked_sub(bytes)
            })
            .is_ok()
    }

    /// Waits until `bytes` can be reserved.
    pub async fn acquire(self: &Arc<Self>, bytes: usize) -> Permit {
        let bytes = bytes.min(self.capacity);
        loop {
            if self.try_take(bytes) {
                break;
            }
            let listener = self.freed.listen();
            if self.try_take(bytes) {
                break;
            }
            listener.await;
        }
        Permit {
            budget: self.clone(),
            bytes,
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.budget
            .available
            .fetch_add(self.bytes, Ordering::AcqRel);
        self.budget.freed.notify(usize::MAX);
    }
}
