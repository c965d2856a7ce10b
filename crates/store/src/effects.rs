//! What a status change makes besides itself: the webhook callback it reports, and the deliver_sm it sends to
//! the account's SMPP clients. One pure function, [`effects`], decides both; each store reads what it needs of
//! the message and its account, calls it, and writes the rows it says in the change's transaction.

use std::ops::RangeInclusive;

use smsgate_core::{Status, StatusMask};

use crate::smpp_outbox::SmppReceipts;

/// What [`effects`] needs to know of a message after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change<'a> {
    /// The status the message reached.
    pub status: Status,
    /// The message's own callback URL, if it has one.
    pub callback_url: Option<&'a str>,
    /// The statuses the message asked to hear of; `None`: every one.
    pub callback_statuses: Option<StatusMask>,
    /// The receipts the SMPP client that submitted it asked for.
    pub smpp: Option<SmppReceipts>,
}

/// What [`effects`] needs to know of the message's account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountHooks<'a> {
    pub status_url: Option<&'a str>,
    pub inbound_url: Option<&'a str>,
    /// Whether the account has SMPP credentials (its clients may bind to hear of inbound messages).
    pub smpp_clients: bool,
}

/// The rows a change makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effects<'a> {
    /// A callback for the webhook outbox.
    pub callback: Option<Callback<'a>>,
    /// Deliver_sm for the SMPP outbox.
    pub deliveries: Option<Deliveries>,
}

/// A webhook callback: its kind (`status` or `inbound`) and where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Callback<'a> {
    pub kind: &'static str,
    pub url: &'a str,
}

/// Deliver_sm for an account's SMPP clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deliveries {
    /// `receipt` or `inbound`.
    pub kind: &'static str,
    /// One deliver_sm per part: 0 for the message as a whole; 1 to n when the client was given an id per part.
    pub parts: RangeInclusive<u32>,
    /// None other of the message can be pending before these (no intermediate receipt was asked for), so they may
    /// go out without waiting their turn in a claim.
    pub alone: bool,
}

/// Whether a status change is reported to webhooks: every one after `queued`.
pub fn notifies(status: Status) -> bool {
    !matches!(status, Status::Queued | Status::Scheduled)
}

/// What a change to `change.status` makes:
/// - a callback for every status after `queued`: `received` to the account's inbound URL; any other status the
///   message asks to hear of (`callback_statuses`; none: every one) to the message's own callback URL, else the
///   account's status URL; nothing where there is no URL;
/// - deliver_sm: an inbound message for an account with SMPP credentials; a receipt for each id the submitting
///   SMPP client was given, when its `registered_delivery` asks for this status ([`SmppReceipts::wants`]).
pub fn effects<'a>(change: &Change<'a>, account: &AccountHooks<'a>) -> Effects<'a> {
    let status = change.status;
    let url = if !notifies(status) {
        None
    } else if status == Status::Received {
        account.inbound_url
    } else if change.callback_statuses.is_some_and(|asked| !asked.contains(status)) {
        None
    } else {
        change.callback_url.or(account.status_url)
    };
    let kind = if status == Status::Received { "inbound" } else { "status" };
    let callback = url.map(|url| Callback { kind, url });
    let alone = change.smpp.is_none_or(|r| r.registered_delivery & 0x10 == 0);
    let deliveries = match change.smpp {
        _ if status == Status::Received => {
            account.smpp_clients.then_some(Deliveries { kind: "inbound", parts: 0..=0, alone })
        }
        Some(r) if r.wants(status) => {
            let parts = if r.ids > 1 { 1..=r.ids } else { 0..=0 };
            Some(Deliveries { kind: "receipt", parts, alone })
        }
        _ => None,
    };
    Effects { callback, deliveries }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: &str = "https://own.example/cb";
    const STATUS: &str = "https://acme.example/status";
    const INBOUND: &str = "https://acme.example/inbound";

    fn hooks(status_url: bool, inbound_url: bool, smpp_clients: bool) -> AccountHooks<'static> {
        AccountHooks {
            status_url: status_url.then_some(STATUS),
            inbound_url: inbound_url.then_some(INBOUND),
            smpp_clients,
        }
    }

    fn change(status: Status) -> Change<'static> {
        Change { status, callback_url: None, callback_statuses: None, smpp: None }
    }

    fn smpp(registered_delivery: u8, ids: u32) -> Option<SmppReceipts> {
        Some(SmppReceipts { registered_delivery, ids })
    }

    /// The callback a change makes: its kind and URL.
    fn check_callback(change: Change<'static>, account: AccountHooks<'static>, expected: Option<(&str, &str)>) {
        let got = effects(&change, &account).callback.map(|c| (c.kind, c.url));
        assert_eq!(got, expected, "{change:?} {account:?}");
    }

    #[test]
    fn callbacks_go_where_the_message_or_its_account_says() {
        let all = hooks(true, true, false);
        // Acceptance is not reported; every later status is.
        check_callback(change(Status::Queued), all, None);
        check_callback(change(Status::Scheduled), all, None);
        for s in [Status::Sending, Status::Sent, Status::Delivered, Status::Undelivered, Status::Failed] {
            check_callback(change(s), all, Some(("status", STATUS)));
        }
        check_callback(change(Status::Expired), all, Some(("status", STATUS)));
        check_callback(change(Status::Canceled), all, Some(("status", STATUS)));
        // The message's own URL wins over the account's, and needs no account URL.
        let own = Change { callback_url: Some(OWN), ..change(Status::Delivered) };
        check_callback(own, all, Some(("status", OWN)));
        check_callback(own, hooks(false, false, false), Some(("status", OWN)));
        // No URL at all: nothing.
        check_callback(change(Status::Delivered), hooks(false, true, false), None);
        // Inbound messages go to the inbound URL only, whatever the message's own URL.
        check_callback(change(Status::Received), all, Some(("inbound", INBOUND)));
        check_callback(change(Status::Received), hooks(true, false, false), None);
        let received_own = Change { callback_url: Some(OWN), ..change(Status::Received) };
        check_callback(received_own, hooks(true, false, false), None);
    }

    #[test]
    fn a_message_hears_only_of_the_statuses_it_asked_for() {
        let asked = StatusMask(Status::Delivered.bit() | Status::Failed.bit());
        let with = |s| Change { callback_url: Some(OWN), callback_statuses: Some(asked), ..change(s) };
        let all = hooks(true, true, false);
        check_callback(with(Status::Delivered), all, Some(("status", OWN)));
        check_callback(with(Status::Failed), all, Some(("status", OWN)));
        check_callback(with(Status::Sent), all, None);
        check_callback(with(Status::Sending), all, None);
        // The mask applies to the account's URL too.
        let without_own = Change { callback_url: None, ..with(Status::Sent) };
        check_callback(without_own, all, None);
    }

    /// The deliver_sm a change makes: kind, parts and whether it is alone of its message.
    fn check_deliveries(
        change: Change<'static>,
        account: AccountHooks<'static>,
        expected: Option<(&str, RangeInclusive<u32>, bool)>,
    ) {
        let got = effects(&change, &account).deliveries.map(|d| (d.kind, d.parts, d.alone));
        assert_eq!(got, expected, "{change:?} {account:?}");
    }

    #[test]
    fn receipts_follow_registered_delivery() {
        let none = AccountHooks::default();
        let with = |s, rd, ids| Change { smpp: smpp(rd, ids), ..change(s) };
        // Not submitted over SMPP: no receipt.
        check_deliveries(change(Status::Delivered), none, None);
        // 01: a receipt for the final status, whatever it is.
        for s in [Status::Delivered, Status::Undelivered, Status::Failed, Status::Expired, Status::Canceled] {
            check_deliveries(with(s, 1, 1), none, Some(("receipt", 0..=0, true)));
        }
        check_deliveries(with(Status::Sent, 1, 1), none, None);
        check_deliveries(with(Status::Sending, 1, 1), none, None);
        // 10: only for a final failure.
        check_deliveries(with(Status::Delivered, 2, 1), none, None);
        check_deliveries(with(Status::Canceled, 2, 1), none, None);
        for s in [Status::Undelivered, Status::Failed, Status::Expired] {
            check_deliveries(with(s, 2, 1), none, Some(("receipt", 0..=0, true)));
        }
        // 00: none.
        check_deliveries(with(Status::Delivered, 0, 1), none, None);
        // Bit 4: `sent` as an intermediate notification; the receipts then take their turn in order.
        check_deliveries(with(Status::Sent, 0x11, 1), none, Some(("receipt", 0..=0, false)));
        check_deliveries(with(Status::Delivered, 0x11, 1), none, Some(("receipt", 0..=0, false)));
        check_deliveries(with(Status::Sent, 0x10, 1), none, Some(("receipt", 0..=0, false)));
        // An id per part: a receipt per part.
        check_deliveries(with(Status::Delivered, 1, 3), none, Some(("receipt", 1..=3, true)));
    }

    #[test]
    fn inbound_messages_go_to_accounts_with_smpp_clients() {
        check_deliveries(change(Status::Received), hooks(true, true, true), Some(("inbound", 0..=0, true)));
        check_deliveries(change(Status::Received), hooks(true, true, false), None);
        // A receipt is never made for an account's SMPP credentials alone.
        check_deliveries(change(Status::Delivered), hooks(false, false, true), None);
    }
}
