//! Refused SMPP binds back off and lock out, per `system_id` and per address: a client that guesses passwords
//! gets a few tries, then waits, longer each time, without the server spending an Argon2 check on it. The
//! operator sees who is locked out, and can lift it. Kept in memory, per node: a lockout ends with the process,
//! and each node counts the binds it answered.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use smsgate_core::Timestamp;

use crate::admin::Admin;

/// Failed binds allowed before a lockout.
pub const FREE_FAILURES: u32 = 5;
/// The first lockout; each failure after it doubles the next.
pub const FIRST_LOCKOUT: Duration = Duration::from_secs(30);
/// The longest lockout.
pub const MAX_LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// Failures are forgotten this long after the last one.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// The most keys tracked; past it, those not locked are forgotten.
const MAX_TRACKED: usize = 100_000;

/// What a lockout is on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BindKey {
    SystemId(String),
    Address(IpAddr),
}

/// A lockout in force, as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lockout {
    pub key: BindKey,
    /// Failed binds since the last success (or since failures were last forgotten).
    pub failures: u32,
    pub until: Timestamp,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// Failed binds by key. One per [`Admin`] and its clones.
#[derive(Debug, Default)]
pub struct BindGuard {
    failures: Mutex<HashMap<BindKey, Failures>>,
}

impl BindGuard {
    /// How long each of `keys` is still locked out, the longest; `None`: none is.
    pub fn locked(&self, keys: &[BindKey]) -> Option<Duration> {
        let now = Instant::now();
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        keys.iter()
            .filter_map(|k| failures.get(k)?.locked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max()
    }

    /// Counts a failed bind against each key; past [`FREE_FAILURES`], locks it out.
    pub fn failed(&self, keys: &[BindKey]) {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, f| f.locked_until.is_some_and(|u| u > now));
        }
        for key in keys {
            let f = failures.entry(key.clone()).or_insert(Failures { count: 0, last: now, locked_until: None });
            if now.duration_since(f.last) > FORGET_AFTER {
                *f = Failures { count: 0, last: now, locked_until: None };
            }
            f.count += 1;
            f.last = now;
            if f.count >= FREE_FAILURES {
                f.locked_until = Some(now + lockout(f.count));
            }
        }
    }

    /// Forgets the failures of each key (a bind that succeeded).
    pub fn succeeded(&self, keys: &[BindKey]) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        for key in keys {
            failures.remove(key);
        }
    }

    /// The lockouts in force, `now` being the time they are told in.
    pub fn lockouts(&self, now: Timestamp) -> Vec<Lockout> {
        let instant = Instant::now();
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<Lockout> = failures
            .iter()
            .filter_map(|(k, f)| {
                let until = f.locked_until.filter(|u| *u > instant)?;
                let left = i64::try_from((until - instant).as_millis()).unwrap_or(i64::MAX);
                Some(Lockout { key: k.clone(), failures: f.count, until: now.plus_millis(left) })
            })
            .collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    }

    /// Lifts every lockout and forgets every failure.
    pub fn clear(&self) {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// The lockout after `failures` failed binds: [`FIRST_LOCKOUT`] at [`FREE_FAILURES`], doubling, at most
/// [`MAX_LOCKOUT`].
pub fn lockout(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(FREE_FAILURES).min(16);
    (FIRST_LOCKOUT * 2u32.pow(doublings)).min(MAX_LOCKOUT)
}

impl Admin {
    /// The keys a bind from `system_id` at `address` is counted under.
    pub fn bind_keys(system_id: Option<&str>, address: Option<IpAddr>) -> Vec<BindKey> {
        let mut keys = Vec::with_capacity(2);
        keys.extend(system_id.map(|s| BindKey::SystemId(s.to_string())));
        // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d: one address either way.
        keys.extend(address.map(|a| BindKey::Address(a.to_canonical())));
        keys
    }

    /// Failed SMPP binds, their lockouts, for this node.
    pub fn binds(&self) -> &BindGuard {
        &self.binds
    }

    /// The lockouts in force on this node.
    pub fn bind_lockouts(&self) -> Vec<Lockout> {
        self.binds.lockouts(self.now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockouts_start_after_the_free_failures_and_double() {
        assert_eq!(lockout(FREE_FAILURES), FIRST_LOCKOUT);
        assert_eq!(lockout(FREE_FAILURES + 1), FIRST_LOCKOUT * 2);
        assert_eq!(lockout(FREE_FAILURES + 3), FIRST_LOCKOUT * 8);
        assert_eq!(lockout(1000), MAX_LOCKOUT);
    }

    #[test]
    fn failures_lock_out_their_keys_only_and_success_forgets() {
        let guard = BindGuard::default();
        let acme = BindKey::SystemId("acme".into());
        let here = BindKey::Address("10.0.0.1".parse().unwrap());
        let there = BindKey::Address("10.0.0.2".parse().unwrap());
        for _ in 1..FREE_FAILURES {
            guard.failed(&[acme.clone(), here.clone()]);
        }
        assert_eq!(guard.locked(std::slice::from_ref(&acme)), None, "a few tries are free");
        guard.failed(&[acme.clone(), here.clone()]);
        assert!(guard.locked(std::slice::from_ref(&acme)).is_some_and(|d| d <= FIRST_LOCKOUT));
        assert!(guard.locked(std::slice::from_ref(&there)).is_none());
        assert!(guard.locked(&[BindKey::SystemId("other".into()), here.clone()]).is_some(), "by address too");
        assert_eq!(guard.lockouts(Timestamp(0)).len(), 2);
        guard.succeeded(std::slice::from_ref(&acme));
        assert!(guard.locked(&[acme]).is_none());
        guard.clear();
        assert!(guard.locked(&[here]).is_none());
    }
}
