//! The retry schedule: a pure decision of when (or whether) to try again.
//!
//! Time and randomness are arguments: `random` is a number in [0, 1) that the caller draws,
//! so tests can pin it.

use super::classify::Outcome;

/// The schedule in force (from `[delivery]` in the config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrySchedule {
    /// Delay before each retry, in ms: `delays_ms[0]` follows the first attempt.
    pub delays_ms: Vec<u64>,
    /// Each delay is moved by up to this many percent either way.
    pub jitter_percent: u8,
    /// The longest wait a receiver's `Retry-After` may ask for.
    pub retry_after_max_ms: u64,
}

/// What happens after a failed scheduled attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Try again at this time (ms).
    RetryAt(u64),
    /// The schedule is used up.
    Exhausted,
}

impl RetrySchedule {
    /// Most attempts one delivery gets: the first plus one per delay.
    pub fn attempts_max(&self) -> usize {
        self.delays_ms.len() + 1
    }

    /// After attempt number `attempts_made` (1-based) failed with `outcome` at `now_ms`.
    /// A `Retry-After` replaces the scheduled delay, clamped to `retry_after_max_ms`.
    pub fn after_failure(
        &self,
        attempts_made: u16,
        outcome: Outcome,
        now_ms: u64,
        random: f64,
    ) -> Next {
        let Some(&base) = self
            .delays_ms
            .get(usize::from(attempts_made).saturating_sub(1))
        else {
            return Next::Exhausted;
        };
        if let Outcome::Throttled {
            retry_after_ms: Some(wish),
            ..
        } = outcome
        {
            return Next::RetryAt(now_ms + wish.min(self.retry_after_max_ms));
        }
        Next::RetryAt(now_ms + self.jittered(base, random))
    }

    /// `base` moved by up to `jitter_percent` either way; `random` in [0, 1).
    pub fn jittered(&self, base: u64, random: f64) -> u64 {
        let spread = f64::from(self.jitter_percent) / 100.0;
        let factor = 1.0 + spread * (2.0 * random.clamp(0.0, 1.0) - 1.0);
        (base as f64 * factor).round().max(0.0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::classify::TransportFailure;

    fn schedule() -> RetrySchedule {
        RetrySchedule {
            delays_ms: vec![60_000, 300_000],
            jitter_percent: 20,
            retry_after_max_ms: 3_600_000,
        }
    }

    #[test]
    fn follows_the_schedule_with_jitter_then_exhausts() {
        let s = schedule();
        let failed = Outcome::HttpError { status: 500 };
        assert_eq!(
            s.after_failure(1, failed, 1_000, 0.5),
            Next::RetryAt(61_000)
        );
        assert_eq!(
            s.after_failure(1, failed, 1_000, 0.0),
            Next::RetryAt(1_000 + 48_000)
        );
        assert_eq!(
            s.after_failure(1, failed, 1_000, 0.999_999),
            Next::RetryAt(1_000 + 72_000)
        );
        assert_eq!(
            s.after_failure(2, Outcome::Failed(TransportFailure::Timeout), 0, 0.5),
            Next::RetryAt(300_000)
        );
        assert_eq!(s.after_failure(3, failed, 0, 0.5), Next::Exhausted);
        assert_eq!(s.attempts_max(), 3);
    }

    #[test]
    fn retry_after_moves_the_retry_within_a_cap() {
        let s = schedule();
        let asked = |ms| Outcome::Throttled {
            status: 503,
            retry_after_ms: Some(ms),
        };
        assert_eq!(
            s.after_failure(1, asked(5_000), 0, 0.5),
            Next::RetryAt(5_000)
        );
        assert_eq!(
            s.after_failure(1, asked(99_000_000), 0, 0.5),
            Next::RetryAt(3_600_000)
        );
        let unasked = Outcome::Throttled {
            status: 503,
            retry_after_ms: None,
        };
        assert_eq!(s.after_failure(1, unasked, 0, 0.5), Next::RetryAt(60_000));
        assert_eq!(
            s.after_failure(3, asked(5_000), 0, 0.5),
            Next::Exhausted,
            "the schedule still ends"
        );
    }
}
