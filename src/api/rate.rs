//! Per-token request rate limits: one token bucket per API token, refilled continuously at
//! `api.token_rate_per_second` up to `api.token_rate_burst`. A request that finds its
//! bucket empty is answered 429 with `Retry-After`, before its body is read. One noisy
//! token cannot starve the others: each has its own bucket.
//!
//! The same buckets, keyed by client address, throttle failed authentications
//! (`AuthThrottle`): a client that sent `AUTH_FAILURES_BURST` bad tokens is answered 429
//! before its next token is even looked at, until its bucket refills.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

use super::ApiError;
use crate::limits::{
    AUTH_FAILURE_BUCKETS_MAX, AUTH_FAILURES_BURST, AUTH_FAILURES_PER_SECOND, RATE_BUCKETS_MAX,
};

/// One token's bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Bucket {
    tokens: f64,
    updated_ms: u64,
}

impl Bucket {
    pub(super) fn full(burst: u32, now_ms: u64) -> Bucket {
        Bucket {
            tokens: f64::from(burst),
            updated_ms: now_ms,
        }
    }

    /// Refills for the time passed, then takes one request; `Err(wait_ms)` says how long
    /// until one is available. Pure: time is passed in.
    pub(super) fn take(&mut self, now_ms: u64, rate: u32, burst: u32) -> Result<(), u64> {
        let elapsed_s = now_ms.saturating_sub(self.updated_ms) as f64 / 1000.0;
        let rate = f64::from(rate);
        self.tokens = (self.tokens + elapsed_s * rate).min(f64::from(burst));
        self.updated_ms = self.updated_ms.max(now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - self.tokens) / rate * 1000.0).ceil() as u64)
        }
    }

    fn is_full(&self, now_ms: u64, rate: u32, burst: u32) -> bool {
        let elapsed_s = now_ms.saturating_sub(self.updated_ms) as f64 / 1000.0;
        self.tokens + elapsed_s * f64::from(rate) >= f64::from(burst)
    }
}

/// The buckets of every token (or client address) seen recently.
pub(super) struct RateLimiter<K = [u8; 32]> {
    /// A std mutex: the critical section is a map lookup and arithmetic, never `.await`.
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K> Default for RateLimiter<K> {
    fn default() -> Self {
        RateLimiter {
            buckets: Mutex::new(HashMap::new()),
        }
    }
}

/// Failed authentications per client address.
#[derive(Default)]
pub(super) struct AuthThrottle(RateLimiter<IpAddr>);

impl AuthThrottle {
    /// 429 if `peer` has used up its failed authentications; takes nothing.
    pub(super) fn check(&self, peer: IpAddr, now_ms: u64) -> Result<(), ApiError> {
        let buckets = self
            .0
            .buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(bucket) = buckets.get(&peer) else {
            return Ok(());
        };
        // Try on a copy: checking must not spend the bucket.
        let mut probe = *bucket;
        probe
            .take(now_ms, AUTH_FAILURES_PER_SECOND, AUTH_FAILURES_BURST)
            .map_err(|wait_ms| ApiError::AuthThrottled {
                retry_after_secs: retry_after(wait_ms),
            })
    }

    /// Counts one failed authentication of `peer`.
    pub(super) fn failed(&self, peer: IpAddr, now_ms: u64) {
        let _ = self.0.take_with(
            peer,
            now_ms,
            AUTH_FAILURES_PER_SECOND,
            AUTH_FAILURES_BURST,
            AUTH_FAILURE_BUCKETS_MAX,
        );
    }
}

fn retry_after(wait_ms: u64) -> u32 {
    u32::try_from(wait_ms.div_ceil(1000))
        .unwrap_or(u32::MAX)
        .max(1)
}

impl<K: Hash + Eq + Copy> RateLimiter<K> {
    /// Takes one from `key`'s bucket (made full if new, room made for it within
    /// `max`); `Err(wait_ms)` when it is empty.
    fn take_with(&self, key: K, now_ms: u64, rate: u32, burst: u32, max: usize) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if !buckets.contains_key(&key) {
            make_room(&mut buckets, max, now_ms, rate, burst);
        }
        buckets
            .entry(key)
            .or_insert_with(|| Bucket::full(burst, now_ms))
            .take(now_ms, rate, burst)
    }
}

impl RateLimiter {
    /// Takes one request for `token_hash`; 429 when its bucket is empty. `rate` 0 is off.
    pub(super) fn check(
        &self,
        token_hash: &[u8; 32],
        now_ms: u64,
        rate: u32,
        burst: u32,
    ) -> Result<(), ApiError> {
        if rate == 0 {
            return Ok(());
        }
        self.take_with(*token_hash, now_ms, rate, burst, RATE_BUCKETS_MAX)
            .map_err(|wait_ms| ApiError::RateLimited {
                retry_after_secs: retry_after(wait_ms),
            })
    }
}

/// Leaves fewer than `max` buckets: first drops the full ones, then (all in use) the one
/// nearest to full, which gives its token the least it did not already have.
fn make_room<K: Hash + Eq + Copy>(
    buckets: &mut HashMap<K, Bucket>,
    max: usize,
    now_ms: u64,
    rate: u32,
    burst: u32,
) {
    if buckets.len() < max {
        return;
    }
    buckets.retain(|_, b| !b.is_full(now_ms, rate, burst));
    while buckets.len() >= max {
        let fullest = buckets
            .iter()
            .max_by(|a, b| a.1.tokens.total_cmp(&b.1.tokens))
            .map(|(key, _)| *key);
        match fullest {
            Some(key) => buckets.remove(&key),
            None => break,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let mut bucket = Bucket::full(3, 0);
        for _ in 0..3 {
            assert_eq!(bucket.take(0, 2, 3), Ok(()));
        }
        assert_eq!(
            bucket.take(0, 2, 3),
            Err(500),
            "2/s: one more in half a second"
        );
        assert_eq!(bucket.take(499, 2, 3), Err(2));
        assert_eq!(bucket.take(500, 2, 3), Ok(()));
        // Idle time refills up to the burst, not beyond.
        assert_eq!(bucket.take(60_000, 2, 3), Ok(()));
        assert_eq!(bucket.take(60_000, 2, 3), Ok(()));
        assert_eq!(bucket.take(60_000, 2, 3), Ok(()));
        assert!(bucket.take(60_000, 2, 3).is_err());
    }

    #[test]
    fn tokens_have_their_own_buckets() {
        let limiter = RateLimiter::default();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert!(limiter.check(&a, 0, 1, 1).is_ok());
        assert!(matches!(
            limiter.check(&a, 0, 1, 1),
            Err(ApiError::RateLimited {
                retry_after_secs: 1
            })
        ));
        assert!(limiter.check(&b, 0, 1, 1).is_ok());
        assert!(limiter.check(&a, 0, 0, 1).is_ok(), "rate 0 is no limit");
    }

    #[test]
    fn failed_authentications_are_throttled_per_address() {
        let throttle = AuthThrottle::default();
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        for _ in 0..AUTH_FAILURES_BURST {
            assert!(throttle.check(a, 0).is_ok(), "checking spends nothing");
            throttle.failed(a, 0);
        }
        assert!(matches!(
            throttle.check(a, 0),
            Err(ApiError::AuthThrottled {
                retry_after_secs: 1
            })
        ));
        assert!(
            throttle.check(b, 0).is_ok(),
            "another address is not held up"
        );
        assert!(throttle.check(a, 1_000).is_ok(), "one more a second later");
    }

    #[test]
    fn room_is_made_from_idle_buckets_first_then_the_fullest() {
        let mut buckets = HashMap::new();
        let mut busy = |key: u8, tokens: f64| {
            buckets.insert(
                [key; 32],
                Bucket {
                    tokens,
                    updated_ms: 0,
                },
            );
        };
        busy(1, 0.0);
        busy(2, 10.0); // full at burst 10: idle
        busy(3, 5.0);
        make_room(&mut buckets, 3, 0, 1, 10);
        assert_eq!(buckets.len(), 2, "the idle one went");
        assert!(!buckets.contains_key(&[2; 32]));
        make_room(&mut buckets, 2, 0, 1, 10);
        assert_eq!(buckets.len(), 1, "all in use: the fullest went");
        assert!(buckets.contains_key(&[1; 32]));
    }
}
