//! `Live<T>`: a setting that SIGHUP may replace while Sluice runs. Readers take a cheap
//! snapshot (`get`) and use it for one whole operation, so an attempt or a request never
//! sees half an old and half a new config. The lock is held only to clone or swap an
//! `Arc`, never across `.await`.

use std::sync::{Arc, PoisonError, RwLock};

/// A shared, replaceable value.
#[derive(Debug)]
pub struct Live<T>(Arc<RwLock<Arc<T>>>);

impl<T> Clone for Live<T> {
    fn clone(&self) -> Live<T> {
        Live(Arc::clone(&self.0))
    }
}

impl<T> Live<T> {
    pub fn new(value: T) -> Live<T> {
        Live(Arc::new(RwLock::new(Arc::new(value))))
    }

    /// The current value.
    pub fn get(&self) -> Arc<T> {
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Replaces the value; snapshots already taken keep the old one.
    pub fn set(&self, value: T) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_keeps_its_value_across_a_swap() {
        let live = Live::new(1);
        let other_handle = live.clone();
        let before = live.get();
        other_handle.set(2);
        assert_eq!((*before, *live.get()), (1, 2));
    }
}
