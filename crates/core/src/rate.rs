//! Token buckets: how many of something (requests, messages) may go in a second, with a second's worth at once.
//! The time is a parameter, so the arithmetic is tested without waiting.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A rate with a second's worth of burst. A take of more than a second's worth goes when the bucket is full, and
/// leaves it in debt: what follows waits until the debt is paid, so the rate holds over time either way.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket of `rate` a second.
    pub fn new(rate: f64, now: Instant) -> Bucket {
        Bucket { rate, tokens: capacity(rate), at: now }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Takes `n` tokens, or says how long until they could be taken.
    pub fn take(&mut self, n: f64, now: Instant) -> Result<(), Duration> {
        let cap = capacity(self.rate);
        self.tokens = (self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * self.rate).min(cap);
        self.at = now;
        let needed = n.min(cap);
        if self.tokens >= needed {
            self.tokens -= n;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((needed - self.tokens) / self.rate))
        }
    }
}

fn capacity(rate: f64) -> f64 {
    rate.max(1.0)
}

/// The most buckets kept; past it, they start again full.
const MAX_BUCKETS: usize = 100_000;

/// Buckets by key, each with the rate its owner has now (a changed rate starts a new, full bucket).
#[derive(Debug)]
pub struct Buckets<K> {
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K> Default for Buckets<K> {
    fn default() -> Self {
        Buckets { buckets: Mutex::new(HashMap::new()) }
    }
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    /// Takes `n` tokens from `key`'s bucket of `rate` a second, or says how long until they could be taken.
    pub fn take(&self, key: &K, rate: f64, n: f64, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            buckets.clear();
        }
        let bucket = buckets.entry(key.clone()).or_insert_with(|| Bucket::new(rate, now));
        if bucket.rate() != rate {
            *bucket = Bucket::new(rate, now);
        }
        bucket.take(n, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seconds_worth_at_once_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10.0, t0);
        for _ in 0..10 {
            assert_eq!(b.take(1.0, t0), Ok(()));
        }
        let wait = b.take(1.0, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        assert_eq!(b.take(1.0, t0 + Duration::from_millis(100)), Ok(()));
        assert!(b.take(1.0, t0 + Duration::from_millis(100)).is_err());
        // Refills to a second's worth, no more.
        assert_eq!(b.take(10.0, t0 + Duration::from_secs(60)), Ok(()));
        assert!(b.take(1.0, t0 + Duration::from_secs(60)).is_err());
    }

    #[test]
    fn a_take_larger_than_the_burst_goes_when_full_and_leaves_a_debt() {
        let t0 = Instant::now();
        let mut b = Bucket::new(100.0, t0);
        assert_eq!(b.take(1000.0, t0), Ok(()), "a batch of 1000 at 100/s goes when the bucket is full");
        // 900 tokens of debt and one more to take: 9.01 s.
        let wait = b.take(1.0, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 9.01).abs() < 1e-6, "{wait:?}");
        assert_eq!(b.take(1.0, t0 + Duration::from_millis(9010)), Ok(()));
    }

    #[test]
    fn buckets_by_key_and_a_changed_rate_starts_afresh() {
        let t0 = Instant::now();
        let all: Buckets<&str> = Buckets::default();
        assert!(all.take(&"a", 1.0, 1.0, t0).is_ok());
        assert!(all.take(&"a", 1.0, 1.0, t0).is_err());
        assert!(all.take(&"b", 1.0, 1.0, t0).is_ok(), "another key, another bucket");
        assert!(all.take(&"a", 5.0, 1.0, t0).is_ok(), "a new rate, a full bucket");
    }
}
