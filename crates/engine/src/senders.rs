//! Who may send from what, kept in memory for a few seconds: admission asks on every message (an SMPP client's
//! every `submit_sm`), and the answer changes only when the operator registers a number, approves a sender ID or
//! changes a policy. A change made on this node is seen at once ([`SenderBook::forget`]); one made on another node
//! sharing the database, within [`RIGHTS_TTL`].
//!
//! The same book keeps the accounts themselves for as long, for the other settings admission asks on every
//! message: the account's messages a second (`messages_per_second`, a token bucket on this node).
//!
//! The rule: a number or sender ID in force (`active`) is its owner's alone; an account whose policy is
//! [`SenderPolicy::Any`] may also send from what nobody owns.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smsgate_core::AccountId;
use smsgate_core::rate::Buckets;
use smsgate_core::senders::{SenderPolicy, SenderStatus, address_key};
use smsgate_store::{Account, SenderFilter, Store, StoreError};

/// Why messages may not go now.
#[derive(Debug, thiserror::Error)]
pub enum RateError {
    /// Over the account's messages a second: how long until they could go.
    #[error("over the account's messages a second; try again in {0:?}")]
    Limited(Duration),
    /// The store could not say what the account's limit is.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How long what the book read is trusted without asking the store again.
pub const RIGHTS_TTL: Duration = Duration::from_secs(5);

/// The most accounts' policies kept; past it, they are read again.
const MAX_ACCOUNTS: usize = 10_000;

/// Owners of the senders in force, by [`address_key`].
type Owners = HashMap<String, AccountId>;

/// Accounts' policies and the owners of senders. One per engine.
#[derive(Debug, Default)]
pub struct SenderBook {
    accounts: Mutex<HashMap<AccountId, (Instant, Arc<Account>)>>,
    owners: Mutex<Option<(Instant, Arc<Owners>)>>,
    /// Messages a second, by account, for the accounts that have a limit.
    messages: Buckets<AccountId>,
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
        let Some(a) = self.account(store, account).await? else {
            return Ok(false);
        };
        let owners = self.owners(store).await?;
        Ok(may_send(account, a.sender_policy, owners.get(&address_key(from)).copied()))
    }

    /// Takes `n` messages from the account's rate (`messages_per_second`), or says how long until they could go.
    pub async fn take_messages(&self, store: &dyn Store, account: AccountId, n: usize) -> Result<(), RateError> {
        let Some(a) = self.account(store, account).await? else { return Ok(()) };
        let Some(rate) = a.messages_per_second else { return Ok(()) };
        #[allow(clippy::cast_precision_loss)] // A batch is at most 10,000 messages.
        let n = n as f64;
        self.messages.take(&account, f64::from(rate), n, Instant::now()).map_err(RateError::Limited)
    }

    /// An account as read less than [`RIGHTS_TTL`] ago.
    pub async fn account(&self, store: &dyn Store, account: AccountId) -> Result<Option<Arc<Account>>, StoreError> {
        {
            let accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, a)) = accounts.get(&account)
                && at.elapsed() < RIGHTS_TTL
            {
                return Ok(Some(a.clone()));
            }
        }
        let Some(a) = store.account(account).await? else {
            return Ok(None);
        };
        let a = Arc::new(a);
        let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        if accounts.len() >= MAX_ACCOUNTS {
            accounts.clear();
        }
        accounts.insert(account, (Instant::now(), a.clone()));
        Ok(Some(a))
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

    /// Forgets what was read, after a change of senders or of `account`'s settings on this node.
    pub fn forget(&self, account: AccountId) {
        self.accounts.lock().unwrap_or_else(|e| e.into_inner()).remove(&account);
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
