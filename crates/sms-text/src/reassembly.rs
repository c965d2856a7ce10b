//! Reassembly of inbound concatenated messages: parts arrive in any order, maybe twice, maybe not all. Parts are
//! grouped by a caller's key (typically the source and destination addresses) and the concatenation reference and
//! total; a set is released whole when its last part arrives. A set that stays incomplete past the timeout is
//! released as it is or dropped, by [`ExpiryPolicy`]. No timers here: the caller passes the time in and calls
//! [`Reassembler::expire`], so the logic is tested without sleeping.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::udh::Concat;

/// What becomes of a set still incomplete when its time is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryPolicy {
    /// Hand over the parts that came, in order, marked incomplete.
    Release,
    /// Throw them away (the caller still hears of it, to count it).
    Drop,
}

/// Settings of a [`Reassembler`].
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// How long after its first part a set may stay incomplete.
    pub timeout: Duration,
    pub policy: ExpiryPolicy,
    /// Incomplete sets held at most; past it the oldest set expires at once. Bounds memory under a flood of
    /// first parts that never complete.
    pub max_pending: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { timeout: Duration::from_secs(300), policy: ExpiryPolicy::Release, max_pending: 100_000 }
    }
}

/// What [`Reassembler::push`] did with a part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed<T> {
    /// The set is complete: every part, in order.
    Complete(Vec<T>),
    /// The part is held; more are to come.
    Pending,
    /// A part with this number was already held; this one was ignored.
    Duplicate,
    /// The numbers are impossible (total 0, or a sequence number outside 1..=total).
    Invalid,
}

/// A set that expired incomplete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired<K, T> {
    pub key: K,
    pub reference: u16,
    pub total: u8,
    /// The parts that came, with their numbers, in order; empty under [`ExpiryPolicy::Drop`].
    pub parts: Vec<(u8, T)>,
    /// The numbers that never came.
    pub missing: Vec<u8>,
    pub policy: ExpiryPolicy,
}

#[derive(Debug)]
struct Pending<T> {
    first_seen: Instant,
    parts: Vec<Option<T>>,
    held: usize,
}

/// Holds parts until their sets complete or expire.
#[derive(Debug)]
pub struct Reassembler<K, T> {
    config: Config,
    pending: HashMap<(K, u16, u8), Pending<T>>,
}

impl<K: Hash + Eq + Clone, T> Reassembler<K, T> {
    pub fn new(config: Config) -> Self {
        Reassembler { config, pending: HashMap::new() }
    }

    /// Incomplete sets held.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Whether a part would start a set (none of its key, reference and total is held).
    pub fn starts_set(&self, key: &K, concat: &Concat) -> bool {
        !self.pending.contains_key(&(key.clone(), concat.reference, concat.total))
    }

    /// Takes one part. `now` is the caller's clock. When the part would start a set beyond `max_pending`, the
    /// oldest set expires first and is returned in the second field.
    pub fn push(&mut self, key: K, concat: Concat, part: T, now: Instant) -> (Pushed<T>, Option<Expired<K, T>>) {
        if !concat.is_valid() {
            return (Pushed::Invalid, None);
        }
        if concat.total == 1 {
            return (Pushed::Complete(vec![part]), None);
        }
        let id = (key, concat.reference, concat.total);
        let mut evicted = None;
        if !self.pending.contains_key(&id) && self.pending.len() >= self.config.max_pending {
            let oldest = self.pending.iter().min_by_key(|(_, p)| p.first_seen).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                evicted = self.pending.remove_entry(&oldest).map(|(k, p)| expired(k, p, self.config.policy));
            }
        }
        let set = self.pending.entry(id.clone()).or_insert_with(|| Pending {
            first_seen: now,
            parts: (0..concat.total).map(|_| None).collect(),
            held: 0,
        });
        let slot = &mut set.parts[usize::from(concat.seq - 1)];
        if slot.is_some() {
            return (Pushed::Duplicate, evicted);
        }
        *slot = Some(part);
        set.held += 1;
        if set.held < usize::from(concat.total) {
            return (Pushed::Pending, evicted);
        }
        let parts = self.pending.remove(&id).map(|p| p.parts.into_iter().flatten().collect()).unwrap_or_default();
        (Pushed::Complete(parts), evicted)
    }

    /// Expires every set whose first part is older than the timeout at `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<Expired<K, T>> {
        let (timeout, policy) = (self.config.timeout, self.config.policy);
        let due: Vec<_> = self
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.first_seen) >= timeout)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out: Vec<_> =
            due.into_iter().filter_map(|k| self.pending.remove_entry(&k)).map(|(k, p)| expired(k, p, policy)).collect();
        out.sort_by_key(|e| e.reference);
        out
    }

    /// When the next set expires, if any is pending.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.first_seen + self.config.timeout).min()
    }
}

fn expired<K, T>((key, reference, total): (K, u16, u8), p: Pending<T>, policy: ExpiryPolicy) -> Expired<K, T> {
    let mut parts = Vec::new();
    let mut missing = Vec::new();
    for (seq, part) in (1..=u8::MAX).zip(p.parts) {
        match part {
            Some(part) => parts.push((seq, part)),
            None => missing.push(seq),
        }
    }
    if policy == ExpiryPolicy::Drop {
        parts.clear();
    }
    Expired { key, reference, total, parts, missing, policy }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn concat(total: u8, seq: u8) -> Concat {
        Concat { reference: 7, wide: false, total, seq }
    }

    #[test]
    fn any_order_and_duplicates() {
        let mut r = Reassembler::new(Config::default());
        let t = Instant::now();
        assert_eq!(r.push("a", concat(3, 3), "c", t).0, Pushed::Pending);
        assert_eq!(r.push("a", concat(3, 1), "a", t).0, Pushed::Pending);
        assert_eq!(r.push("a", concat(3, 1), "x", t).0, Pushed::Duplicate);
        assert_eq!(r.push("b", concat(3, 2), "other", t).0, Pushed::Pending);
        assert_eq!(r.push("a", concat(3, 2), "b", t).0, Pushed::Complete(vec!["a", "b", "c"]));
        assert_eq!(r.pending(), 1);
    }

    #[test]
    fn invalid_numbers() {
        let mut r: Reassembler<u8, u8> = Reassembler::new(Config::default());
        let t = Instant::now();
        assert_eq!(r.push(0, concat(0, 0), 1, t).0, Pushed::Invalid);
        assert_eq!(r.push(0, concat(2, 3), 1, t).0, Pushed::Invalid);
        assert_eq!(r.push(0, concat(1, 1), 1, t).0, Pushed::Complete(vec![1]));
    }

    #[test]
    fn expiry_releases_or_drops() {
        for policy in [ExpiryPolicy::Release, ExpiryPolicy::Drop] {
            let config = Config { timeout: Duration::from_secs(10), policy, max_pending: 10 };
            let mut r = Reassembler::new(config);
            let t = Instant::now();
            r.push("k", concat(3, 2), "b", t);
            assert_eq!(r.next_deadline(), Some(t + Duration::from_secs(10)));
            assert!(r.expire(t + Duration::from_secs(9)).is_empty());
            let expired = r.expire(t + Duration::from_secs(10));
            assert_eq!(expired.len(), 1);
            assert_eq!(expired[0].missing, vec![1, 3]);
            let want = if policy == ExpiryPolicy::Release { vec![(2, "b")] } else { vec![] };
            assert_eq!(expired[0].parts, want);
            assert_eq!(r.pending(), 0);
        }
    }

    #[test]
    fn a_full_set_of_255_parts() {
        let mut r = Reassembler::new(Config::default());
        let t = Instant::now();
        for seq in 1..=254u8 {
            assert_eq!(r.push((), concat(255, seq), seq, t).0, Pushed::Pending);
        }
        let (done, _) = r.push((), concat(255, 255), 255, t);
        assert_eq!(done, Pushed::Complete((1..=255).collect()));
        // And an incomplete set of 255 expires with every number accounted for.
        let mut r = Reassembler::new(Config { timeout: Duration::ZERO, ..Config::default() });
        for seq in 2..=255u8 {
            r.push((), concat(255, seq), seq, t);
        }
        let expired = r.expire(t);
        assert_eq!(expired[0].missing, vec![1]);
        assert_eq!(expired[0].parts.len(), 254);
    }

    #[test]
    fn memory_is_bounded() {
        let config = Config { timeout: Duration::from_secs(10), policy: ExpiryPolicy::Drop, max_pending: 2 };
        let mut r = Reassembler::new(config);
        let t = Instant::now();
        r.push(1, concat(2, 1), (), t);
        r.push(2, concat(2, 1), (), t + Duration::from_secs(1));
        let (_, evicted) = r.push(3, concat(2, 1), (), t + Duration::from_secs(2));
        assert_eq!(evicted.map(|e| e.key), Some(1));
        assert_eq!(r.pending(), 2);
    }
}
