//! The accounts behind recently used API keys, kept in memory for a few seconds so that a busy client's every
//! request does not read the store (a blocking-thread hop on SQLite, a round trip on PostgreSQL). Only keys the
//! store knows are kept; an unknown key is looked up each time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smsgate_core::access::Scopes;
use smsgate_store::Account;

/// How long a key's account is trusted without asking the store again: the longest a revoked key (or a changed
/// account) can still be honoured by a node that used it just before.
pub const KEY_TTL: Duration = Duration::from_secs(10);

/// The most keys kept; past it, expired entries go, and if none had, all do.
const MAX_KEYS: usize = 10_000;

/// A key's account, its scopes and its id.
pub type KeyHolder = (Account, Scopes, String);

/// Key hash to account and the key's scopes, with when it was looked up. Cheap to clone: clones share the map.
#[derive(Debug, Clone, Default)]
pub struct KeyCache {
    keys: Arc<Mutex<HashMap<String, (KeyHolder, Instant)>>>,
    /// Requests a second, by key hash, for the keys of accounts that have a limit.
    requests: Arc<smsgate_core::rate::Buckets<String>>,
}

impl KeyCache {
    /// The account of a key hash looked up less than [`KEY_TTL`] ago.
    pub fn get(&self, hash: &str) -> Option<KeyHolder> {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.get(hash).filter(|(_, at)| at.elapsed() < KEY_TTL).map(|(a, _)| a.clone())
    }

    /// Keeps the account the store gave for a key hash.
    pub fn put(&self, hash: &str, account: KeyHolder) {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if keys.len() >= MAX_KEYS {
            keys.retain(|_, (_, at)| at.elapsed() < KEY_TTL);
            if keys.len() >= MAX_KEYS {
                keys.clear();
            }
        }
        keys.insert(hash.to_string(), (account, Instant::now()));
    }

    /// Takes a request from a key's rate, or says how long until it could go.
    pub fn take_request(&self, hash: &str, rate: u32) -> Result<(), Duration> {
        self.requests.take(&hash.to_string(), f64::from(rate), 1.0, Instant::now())
    }

    /// Forgets every key, so the next request of each asks the store (after a key is revoked on this node).
    pub fn clear(&self) {
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smsgate_core::{AccountId, Timestamp};

    fn account(name: &str) -> KeyHolder {
        let account = Account {
            id: AccountId::generate(),
            name: name.into(),
            is_admin: false,
            created_at: Timestamp(0),
            routes: None,
            sender_policy: smsgate_core::senders::SenderPolicy::Owned,
            requests_per_second: None,
            messages_per_second: None,
        };
        (account, Scopes::all_for(false), "key-id".to_string())
    }

    #[test]
    fn keeps_known_keys_until_cleared_and_stays_bounded() {
        let cache = KeyCache::default();
        assert_eq!(cache.get("h1"), None);
        let acme = account("acme");
        cache.put("h1", acme.clone());
        assert_eq!(cache.get("h1"), Some(acme));
        cache.clear();
        assert_eq!(cache.get("h1"), None);
        for i in 0..MAX_KEYS + 10 {
            cache.put(&format!("k{i}"), account("x"));
        }
        assert!(cache.keys.lock().unwrap().len() <= MAX_KEYS);
        assert!(cache.get(&format!("k{}", MAX_KEYS + 9)).is_some(), "the newest key is kept");
    }

    #[test]
    fn an_old_entry_is_not_trusted() {
        let cache = KeyCache::default();
        let old = Instant::now().checked_sub(KEY_TTL + Duration::from_millis(1));
        let Some(old) = old else { return };
        cache.keys.lock().unwrap().insert("h".into(), (account("a"), old));
        assert_eq!(cache.get("h"), None);
    }
}
