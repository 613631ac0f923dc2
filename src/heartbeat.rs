//! Heartbeats: how the systemd watchdog knows that the writer thread and every delivery
//! shard still make progress. Each loop beats at least once a second while healthy; the
//! watchdog pings systemd only while every heartbeat is younger than `HEARTBEAT_STALE`.
//! Monotonic time (`Instant`), not the wall clock: a clock step must not look like a hang.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::limits::HEARTBEAT_STALE;

/// One loop's last sign of life.
#[derive(Debug)]
pub struct Heartbeat {
    base: Instant,
    /// Milliseconds after `base` of the last beat.
    last_ms: AtomicU64,
}

impl Default for Heartbeat {
    fn default() -> Heartbeat {
        Heartbeat {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Heartbeat {
    /// Records a sign of life now.
    pub fn beat(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// How long ago the last beat was.
    pub fn age(&self) -> Duration {
        let now = self.base.elapsed();
        now.saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }

    pub fn is_fresh(&self) -> bool {
        self.age() < HEARTBEAT_STALE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_goes_stale_and_a_beat_is_fresh() {
        let long_ago = Instant::now()
            .checked_sub(HEARTBEAT_STALE * 2)
            .expect("the monotonic clock is past its origin");
        let heartbeat = Heartbeat {
            base: long_ago,
            last_ms: AtomicU64::new(0),
        };
        assert!(!heartbeat.is_fresh(), "no beat since {long_ago:?}");
        heartbeat.beat();
        assert!(heartbeat.is_fresh());
    }
}
