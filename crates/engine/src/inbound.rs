//! Inbound messages: stored as `received` for the account that owns the number they were sent to. A number or
//! sender ID registered to an account is that account's alone; one registered but not in force (waiting for
//! approval, rejected, or tied to another connector) is the operator's; only an address nobody registered goes to
//! the account that last wrote to the handset from it, and failing that to the operator. Once stored, it is read as
//! a keyword (STOP, START, HELP: [`crate::consent`]) — every inbound path comes through here.

use smsgate_connectors::Inbound;
use smsgate_core::senders::SenderStatus;
use smsgate_core::{AccountId, Direction, Message, MessageId, Status};
use smsgate_store::NewMessage;
use tracing::warn;

use crate::{DomainEvent, Engine, metric};

/// How long after a campaign's or an automation's text a reply from its recipient counts as answering it (a week).
pub const REPLY_WINDOW_SECS: i64 = 7 * 24 * 3600;

impl Engine {
    /// Stores an inbound message for the account that owns its destination; whether it was kept (false only
    /// when the store failed: the carrier should send it again).
    pub(crate) async fn store_inbound(&self, i: Inbound) -> bool {
        let account = match self.inbound_owner(&i).await {
            Ok(Some(a)) => Some(a),
            Ok(None) => self.store.admin_account().await.ok().flatten().map(|a| a.id),
            Err(e) => {
                warn!(error = %e, "finding the account for an inbound message failed");
                return false;
            }
        };
        let Some(account) = account else {
            warn!(from = %i.from, to = %i.to, "inbound message with no account to own it; dropped");
            return true;
        };
        let message = inbound_message(account, &i);
        let detail = format!("received from {} via {}", i.from, i.connector);
        // A reply within a week of a campaign's or an automation's text answers it.
        let since = i.at.plus_secs(-REPLY_WINDOW_SECS);
        let origin = match self.store.replied_to(account, &i.from, &i.to, since).await {
            Ok(o) => o,
            Err(e) => {
                warn!(error = %e, "finding what an inbound message answers failed");
                return false;
            }
        };
        let campaign = origin.campaign.clone();
        let new = NewMessage { origin, ..NewMessage::new(message.clone(), detail) };
        match self.store.insert_messages(&[new]).await {
            Ok(_) => {
                metrics::counter!(metric::INBOUND).increment(1);
                self.answer_keyword(&message, campaign.as_deref()).await;
                self.inbound.notify_one();
                self.events.publish(DomainEvent::Received(message));
                true
            }
            Err(e) => {
                warn!(error = %e, "storing an inbound message failed");
                false
            }
        }
    }
}

impl Engine {
    /// The account an inbound message belongs to; `None`: the operator's.
    async fn inbound_owner(&self, i: &Inbound) -> Result<Option<AccountId>, smsgate_store::StoreError> {
        match self.store.sender_by_address(&i.to).await? {
            Some(s) => {
                let in_force = s.status == SenderStatus::Active
                    && s.connector.as_deref().is_none_or(|c| c == i.connector.as_str());
                Ok(in_force.then_some(s.account_id))
            }
            None => self.store.account_for_reply(&i.from, &i.to).await,
        }
    }
}

fn inbound_message(account: AccountId, i: &Inbound) -> Message {
    let (encoding, segments) = sms_text::plan::count(&i.body, &sms_text::Options::default());
    Message {
        id: MessageId::generate(),
        account_id: account,
        direction: Direction::Inbound,
        to: i.to.clone(),
        from: i.from.clone(),
        body: i.body.clone(),
        encoding: encoding.name(),
        segments: u32::try_from(segments).unwrap_or(u32::MAX),
        price_micros: None,
        connector: Some(i.connector.clone()),
        carrier_id: None,
        status: Status::Received,
        error_code: None,
        reference: None,
        callback_url: None,
        callback_statuses: None,
        send_at: None,
        expires_at: None,
        attempts: 0,
        category: Default::default(),
        created_at: i.at,
        updated_at: i.at,
    }
}
