//! Senders as resources: the operator assigns numbers (long numbers and short codes) to accounts, with the
//! connector their inbound messages arrive on; accounts ask for alphanumeric sender IDs, which the operator may
//! have to approve; each account's sender policy says whether it may send from anything else. Admission
//! ([`crate::Messages::prepare`]) and inbound ownership (the engine) read what is kept here.

use smsgate_core::AccountId;
use smsgate_core::admission::{SenderKind, normalize_sender};
use smsgate_core::senders::{AddressKind, SenderPolicy, SenderStatus};
use smsgate_store::{Account, Sender, SenderFilter};

use crate::admin::Admin;
use crate::error::{Result, ServiceError};

/// Which kind of sender a call is about: the numbers' routes and the sender IDs' routes see only their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderClass {
    /// Long numbers and short codes (`/v1/numbers`).
    Number,
    /// Alphanumeric sender IDs (`/v1/sender-ids`).
    SenderId,
}

impl SenderClass {
    fn holds(self, kind: AddressKind) -> bool {
        (kind == AddressKind::Alphanumeric) == (self == SenderClass::SenderId)
    }

    fn noun(self) -> &'static str {
        match self {
            SenderClass::Number => "number",
            SenderClass::SenderId => "sender ID",
        }
    }
}

/// A number the operator assigns.
#[derive(Debug, Clone)]
pub struct NumberSpec {
    /// E.164 (`+` and digits) or a short code (3 to 8 digits).
    pub number: String,
    pub account: AccountId,
    /// The connector its inbound messages arrive on; `None`: any.
    pub connector: Option<String>,
}

impl Admin {
    /// Assigns a long number or short code to an account. Operator only; a number has one owner.
    pub async fn assign_number(&self, caller: &Account, spec: NumberSpec) -> Result<Sender> {
        if !caller.is_admin {
            return Err(ServiceError::forbidden("forbidden", "only the admin key assigns numbers"));
        }
        let (address, kind) = normalize_sender(&spec.number, None)
            .ok()
            .filter(|(_, k)| *k != SenderKind::Alphanumeric)
            .ok_or_else(|| {
                ServiceError::invalid(
                    "invalid_number",
                    format!("number {:?} is neither a short code (3 to 8 digits) nor an E.164 number", spec.number),
                )
            })?;
        self.account(spec.account).await?;
        if let Some(c) = &spec.connector
            && !self.store.connectors().await?.iter().any(|r| &r.name == c)
        {
            return Err(ServiceError::invalid("unknown_connector", format!("no connector named {c:?}")));
        }
        let now = self.engine.now();
        let sender = Sender {
            id: uuid::Uuid::now_v7().hyphenated().to_string(),
            account_id: spec.account,
            kind: kind.into(),
            address,
            connector: spec.connector,
            status: SenderStatus::Active,
            created_at: now,
            updated_at: now,
        };
        self.insert(sender, SenderClass::Number).await
    }

    /// Registers an alphanumeric sender ID. The operator registers it for any account, in force at once; an
    /// account asks for its own, in force at once or, when the operator approves sender IDs, `pending` until then.
    pub async fn register_sender_id(
        &self,
        caller: &Account,
        sender_id: &str,
        account: Option<AccountId>,
    ) -> Result<Sender> {
        let owner = match account {
            Some(a) if a != caller.id && !caller.is_admin => {
                return Err(ServiceError::forbidden("forbidden", "an account registers sender IDs for itself only"));
            }
            Some(a) => a,
            None => caller.id,
        };
        let (address, kind) = normalize_sender(sender_id, None)
            .ok()
            .filter(|(_, k)| *k == SenderKind::Alphanumeric)
            .ok_or_else(|| {
                ServiceError::invalid(
                    "invalid_sender_id",
                    format!(
                        "sender_id {sender_id:?} must be 1 to 11 letters, digits, spaces or - _ . & ' ! # @ +, at \
                         least one a letter"
                    ),
                )
            })?;
        self.account(owner).await?;
        let status = if caller.is_admin || !self.sender_ids_need_approval {
            SenderStatus::Active
        } else {
            SenderStatus::Pending
        };
        let now = self.engine.now();
        let sender = Sender {
            id: uuid::Uuid::now_v7().hyphenated().to_string(),
            account_id: owner,
            kind: kind.into(),
            address,
            connector: None,
            status,
            created_at: now,
            updated_at: now,
        };
        self.insert(sender, SenderClass::SenderId).await
    }

    async fn insert(&self, sender: Sender, class: SenderClass) -> Result<Sender> {
        if !self.store.insert_sender(&sender).await? {
            let code = match class {
                SenderClass::Number => "number_taken",
                SenderClass::SenderId => "sender_id_taken",
            };
            return Err(ServiceError::conflict(code, format!("{:?} is registered already", sender.address)));
        }
        self.engine.senders().forget(sender.account_id);
        Ok(sender)
    }

    /// The senders of a class the caller may see: the operator's view is every account's (or one's, when
    /// `account` is given); an account's is its own.
    pub async fn senders(
        &self,
        caller: &Account,
        class: SenderClass,
        account: Option<AccountId>,
    ) -> Result<Vec<Sender>> {
        let account = match account {
            _ if !caller.is_admin => Some(caller.id),
            a => a,
        };
        let filter = SenderFilter { account, numbers: Some(class == SenderClass::Number) };
        Ok(self.store.senders(&filter).await?)
    }

    /// One sender of a class the caller may see; [`ServiceError::NotFound`] for another account's.
    pub async fn sender(&self, caller: &Account, class: SenderClass, id: &str) -> Result<Sender> {
        let found = self.store.sender(id).await?;
        found
            .filter(|s| class.holds(s.kind) && (caller.is_admin || s.account_id == caller.id))
            .ok_or_else(|| ServiceError::not_found("not_found", format!("no such {}", class.noun())))
    }

    /// Removes a sender: numbers by the operator only, sender IDs by the operator or their account. What is sent
    /// to it afterwards is the operator's.
    pub async fn remove_sender(&self, caller: &Account, class: SenderClass, id: &str) -> Result<Sender> {
        let sender = self.sender(caller, class, id).await?;
        if class == SenderClass::Number && !caller.is_admin {
            return Err(ServiceError::forbidden("forbidden", "only the admin key removes numbers"));
        }
        self.store.delete_sender(id).await?;
        self.engine.senders().forget(sender.account_id);
        Ok(sender)
    }

    /// Approves (`active`) or rejects a sender ID. Operator only.
    pub async fn decide_sender_id(&self, caller: &Account, id: &str, approve: bool) -> Result<Sender> {
        if !caller.is_admin {
            return Err(ServiceError::forbidden("forbidden", "only the admin key approves sender IDs"));
        }
        let sender = self.sender(caller, SenderClass::SenderId, id).await?;
        let status = if approve { SenderStatus::Active } else { SenderStatus::Rejected };
        let now = self.engine.now();
        self.store.set_sender_status(id, status, now).await?;
        self.engine.senders().forget(sender.account_id);
        Ok(Sender { status, updated_at: now, ..sender })
    }

    /// Sets an account's rate limits: requests a second per API key, messages a second on every way in (`None`:
    /// none). Operator only.
    pub async fn set_account_rates(
        &self,
        caller: &Account,
        account: AccountId,
        requests_per_second: Option<u32>,
        messages_per_second: Option<u32>,
    ) -> Result<Account> {
        if !caller.is_admin {
            return Err(ServiceError::forbidden("forbidden", "only the admin key sets rate limits"));
        }
        if requests_per_second == Some(0) || messages_per_second == Some(0) {
            return Err(ServiceError::invalid("invalid_rate", "a rate is at least 1 a second (null: no limit)"));
        }
        if !self.store.set_account_rates(account, requests_per_second, messages_per_second).await? {
            return Err(ServiceError::not_found("not_found", "no such account"));
        }
        self.engine.senders().forget(account);
        self.account(account).await
    }

    /// Sets whether an account may send from senders it does not own. Operator only.
    pub async fn set_sender_policy(
        &self,
        caller: &Account,
        account: AccountId,
        policy: SenderPolicy,
    ) -> Result<Account> {
        if !caller.is_admin {
            return Err(ServiceError::forbidden("forbidden", "only the admin key sets sender policies"));
        }
        if !self.store.set_sender_policy(account, policy).await? {
            return Err(ServiceError::not_found("not_found", "no such account"));
        }
        self.engine.senders().forget(account);
        self.account(account).await
    }
}
