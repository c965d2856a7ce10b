//! The one way messages come in, whatever the door (REST, the SMPP server, later campaigns): admission
//! ([`Ingress::prepare`], where opt-out and quiet-hour rules will live), then storing — committed before any answer
//! says accepted — and, when the dispatcher has room, stored already claimed and handed to it at once.

use std::sync::Arc;

use smsgate_core::admission::{Policy, Rejection, Request, admit};
use smsgate_core::{AccountId, Direction, Message, MessageId, Status, Timestamp};
use smsgate_store::{Inserted, NewMessage, Origin, SmppReceipts, Store};

use crate::group::Group;
use crate::{DomainEvent, Engine, EngineError};

/// The most messages one group commit of single submissions stores.
pub const GROUP_INSERT: usize = 1000;

/// Admission and storing for every way in. Clones share it.
#[derive(Debug, Clone)]
pub struct Ingress {
    engine: Engine,
    store: Arc<dyn Store>,
    policy: Arc<Policy>,
    /// Single submissions that arrive together wait for one transaction (one disk sync) instead of one each.
    inserter: Group<NewMessage, Inserted>,
}

/// A message admitted and built, not yet stored, with its first event's detail.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub message: Message,
    pub detail: String,
    /// Submitted over SMPP with receipts asked for.
    pub smpp: Option<SmppReceipts>,
    /// The campaign or automation it is sent for.
    pub origin: Origin,
}

impl Ingress {
    /// The engine messages go to.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Now, by the engine's clock.
    pub fn now(&self) -> smsgate_core::Timestamp {
        self.engine.now()
    }

    /// Starts the group writer on the current runtime; it ends when the last clone is dropped.
    pub fn spawn(engine: Engine, store: Arc<dyn Store>, policy: Arc<Policy>) -> Ingress {
        let writer_store = store.clone();
        let (inserter, _writer) =
            Group::spawn(GROUP_INSERT, tokio_util::sync::CancellationToken::new(), move |batch: Vec<NewMessage>| {
                let store = writer_store.clone();
                async move { Ok(store.insert_messages(&batch).await?) }
            });
        Ingress { engine, store, policy, inserter }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Admits one request for `account` and builds the message to store.
    pub fn prepare(&self, account: AccountId, request: &Request, now: Timestamp) -> Result<Prepared, Rejection> {
        let admitted = admit(request, &self.policy, now)?;
        let detail = match admitted.status {
            Status::Scheduled => "accepted; scheduled".to_string(),
            _ => "accepted".to_string(),
        };
        let message = Message {
            id: MessageId::generate(),
            account_id: account,
            direction: Direction::Outbound,
            to: admitted.to,
            from: admitted.from,
            body: admitted.body,
            encoding: admitted.encoding,
            segments: admitted.segments,
            price_micros: None,
            connector: None,
            carrier_id: None,
            status: admitted.status,
            error_code: None,
            reference: admitted.reference,
            callback_url: admitted.callback_url,
            callback_statuses: admitted.callback_statuses,
            send_at: admitted.send_at,
            expires_at: Some(admitted.expires_at),
            attempts: 0,
            category: admitted.category,
            created_at: now,
            updated_at: now,
        };
        Ok(Prepared { message, detail, smpp: None, origin: Origin::default() })
    }

    /// Stores one prepared message, in a group commit with others arriving meanwhile; committed when this returns.
    /// `idempotency` is the key and the request's hash. On [`Inserted::New`] the message is returned as stored
    /// (`sending` when it went straight to the dispatcher).
    pub async fn submit(
        &self,
        prepared: Prepared,
        idempotency: Option<(String, String)>,
        now: Timestamp,
    ) -> Result<(Inserted, Message), EngineError> {
        let Prepared { mut message, detail, smpp, origin } = prepared;
        let reservation = self.engine.reserve(usize::from(message.status == Status::Queued));
        let claim = (!reservation.is_empty()).then(|| self.engine.claim(now));
        let new = NewMessage { message: message.clone(), detail, idempotency, claim: claim.clone(), smpp, origin };
        let inserted = self.inserter.submit(new).await?;
        if inserted == Inserted::New {
            if claim.is_some() {
                message.status = Status::Sending;
                message.attempts += 1;
                self.engine.dispatch_claimed(vec![message.clone()], reservation);
            } else {
                self.engine.wake();
            }
            if self.engine.events().listened() {
                self.engine.events().publish(DomainEvent::Accepted(message.clone()));
            }
        }
        Ok((inserted, message))
    }

    /// Stores prepared messages in one transaction; returns them as stored, in order.
    pub async fn submit_many(&self, prepared: Vec<Prepared>, now: Timestamp) -> Result<Vec<Message>, EngineError> {
        let keyed = prepared.into_iter().map(|p| (p, None)).collect();
        Ok(self.submit_keyed(keyed, now).await?.into_iter().map(|(_, m)| m).collect())
    }

    /// Stores prepared messages, each with its idempotency key (and its request's hash) if it has one, in one
    /// transaction: what became of each, in order, with the message as stored (a duplicate's as prepared: the
    /// store kept the first one, whose id [`Inserted::Duplicate`] gives).
    pub async fn submit_keyed(
        &self,
        prepared: Vec<(Prepared, Option<(String, String)>)>,
        now: Timestamp,
    ) -> Result<Vec<(Inserted, Message)>, EngineError> {
        let mut to_store: Vec<NewMessage> = prepared
            .into_iter()
            .map(|(p, idempotency)| NewMessage {
                smpp: p.smpp,
                origin: p.origin,
                idempotency,
                ..NewMessage::new(p.message, p.detail)
            })
            .collect();
        if to_store.is_empty() {
            return Ok(Vec::new());
        }
        // As many as the dispatcher has room for are stored claimed and go to the carrier at once; the rest queue.
        let due = to_store.iter().filter(|n| n.message.status == Status::Queued).count();
        let reservation = self.engine.reserve(due);
        let claim = self.engine.claim(now);
        for n in to_store.iter_mut().filter(|n| n.message.status == Status::Queued).take(reservation.len()) {
            n.claim = Some(claim.clone());
        }
        let inserted = self.store.insert_messages(&to_store).await?;
        let mut handed = Vec::with_capacity(reservation.len());
        for (n, what) in to_store.iter_mut().zip(&inserted) {
            // A duplicate was not stored, so not claimed either: the first one is on its own way.
            if n.claim.is_some() && *what == Inserted::New {
                n.message.status = Status::Sending;
                n.message.attempts += 1;
                handed.push(n.message.clone());
            }
        }
        if handed.len() < due {
            self.engine.wake();
        }
        self.engine.dispatch_claimed(handed, reservation);
        let stored: Vec<(Inserted, Message)> =
            inserted.into_iter().zip(to_store.into_iter().map(|n| n.message)).collect();
        if self.engine.events().listened() {
            for (_, m) in stored.iter().filter(|(what, _)| *what == Inserted::New) {
                self.engine.events().publish(DomainEvent::Accepted(m.clone()));
            }
        }
        Ok(stored)
    }
}
