//! What the store's tests share.

use smsgate_core::{AccountId, Direction, Message, MessageId, Status, Timestamp};

/// An outbound text of `account` from Acme to `to`, made at `at`, with a fresh id.
pub fn message(account: AccountId, to: &str, status: Status, at: Timestamp) -> Message {
    Message {
        id: MessageId::generate(),
        account_id: account,
        direction: Direction::Outbound,
        to: to.into(),
        from: "Acme".into(),
        body: "Hello".into(),
        encoding: "gsm7".into(),
        segments: 1,
        price_micros: None,
        connector: None,
        carrier_id: None,
        status,
        error_code: None,
        reference: Some("ref-1".into()),
        callback_url: None,
        callback_statuses: None,
        send_at: None,
        expires_at: Some(at.plus_secs(3600)),
        attempts: 0,
        category: Default::default(),
        created_at: at,
        updated_at: at,
    }
}
