//! Who may send from what, kept in memory for a few seconds: admission asks on every message (an SMPP client's
//! every `submit_sm`), and the answer changes only when the operator registers a number, approves a sender ID or
//! changes a policy. A change made on this node is seen at once ([`SenderBook::forget`]); one made on another node
//! sharing the database, within [`RIGHTS_TTL`].
//!
//! The rule: a number or sender ID in force (`active`) is its owner's alone; an account whose policy is
//! [`SenderPolicy::Any`] may also send from what nobody owns.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smsgate_core::AccountId;
use smsgate_core::senders::{SenderPolicy, SenderStatus, address_key};
use smsgate_store::{SenderFilter, Store, StoreError};

/// How long what the book read is trusted without asking the store again.
pub const RIGHTS_TTL: Duration = Duration::from_secs(5);

/// The most accounts' policies kept; past it, they are read again.
const MAX_ACCOUNTS: usize = 10_000;

/// Owners of the senders in force, by [`address_key`].
type Owners = HashMap<String, AccountId>;

/// Accounts' policies and the owners of senders. One per engine.
#[derive(Debug, Default)]
pub struct SenderBook {
    policies: Mutex<HashMap<AccountId, (Instant, SenderPolicy)>>,
    owners: Mutex<Option<(Instant, Arc<Owners>)>>,
}

/// Whether `account`, of `policy`, may send from `from` when `owner` owns it (`None`: nobody does).
pub fn may_send(account: AccountId, policy: SenderPolicy, owner: Option<AccountId>) -> bool {
    match owner {
        Some(o) => o == account,
        None => policy == SenderPolicy::Any,
    }
}

impl SenderBook {
    /// Whether `account` may send from `from` (as admission normalized it); false if there is no such account.
    pub async fn may_send_from(&self, store: &dyn Store, account: AccountId, from: &str) -> Result<bool, StoreError> {
        let Some(policy) = self.policy(store, account).await? else {
            return Ok(false);
        };
        let owners = self.owners(store).await?;
        Ok(may_send(account, policy, owners.get(&address_key(from)).copied()))
    }

    async fn policy(&self, store: &dyn Store, account: AccountId) -> Result<Option<SenderPolicy>, StoreError> {
        {
            let policies = self.policies.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, p)) = policies.get(&account)
                && at.elapsed() < RIGHTS_TTL
            {
                return Ok(Some(*p));
            }
        }
        let Some(a) = store.account(account).await? else {
            return Ok(None);
        };
        let mut policies = self.policies.lock().unwrap_or_else(|e| e.into_inner());
        if policies.len() >= MAX_ACCOUNTS {
            policies.clear();
        }
        policies.insert(account, (Instant::now(), a.sender_policy));
        Ok(Some(a.sender_policy))
    }

    async fn owners(&self, store: &dyn Store) -> Result<Arc<Owners>, StoreError> {
        {
            let owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, o)) = owners.as_ref()
                && at.elapsed() < RIGHTS_TTL
            {
                return Ok(o.clone());
            }
        }
        let read: Owners = store
            .senders(&SenderFilter::default())
            .await?
            .into_iter()
            .filter(|s| s.status == SenderStatus::Active)
            .map(|s| (address_key(&s.address), s.account_id))
            .collect();
        let read = Arc::new(read);
        *self.owners.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), read.clone()));
        Ok(read)
    }

    /// Forgets what was read, after a change of senders or of `account`'s policy on this node.
    pub fn forget(&self, account: AccountId) {
        self.policies.lock().unwrap_or_else(|e| e.into_inner()).remove(&account);
        *self.owners.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owned_sender_is_its_owners_alone() {
        let (acme, globex) = (AccountId::generate(), AccountId::generate());
        for policy in [SenderPolicy::Owned, SenderPolicy::Any] {
            assert!(may_send(acme, policy, Some(acme)), "{policy:?}");
            assert!(!may_send(globex, policy, Some(acme)), "{policy:?}: another's sender");
        }
        assert!(may_send(globex, SenderPolicy::Any, None), "nobody's, with leave to send from anything");
        assert!(!may_send(globex, SenderPolicy::Owned, None), "nobody's, without it");
    }
}
