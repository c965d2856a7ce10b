//! The engine moves stored messages along their journey, one module a concern:
//!
//! - `dispatch`: the **dispatcher** claims due messages from the store with a lease, checks their validity, hands
//!   each to a connector (at most `max_in_flight` at once, within the connector's window and pace) and records
//!   what [`policy::next`] makes of the outcome: `sent` with its id, `failed`, back to `queued` with a backoff,
//!   or waiting off the queue for a connector of its route;
//! - [`policy`]: that decision, a pure function with a table of tests;
//! - `receipts`: **receipts** from connectors find their message by carrier id and move it to `delivered`,
//!   `undelivered` or `expired`; a receipt that arrives before the `sent` it follows waits for it;
//! - `inbound`: **inbound** messages are stored as `received` for the account that last wrote to that handset;
//! - `sweeps`: reloading connectors and routes, the **unparker** (what waits for its route goes back when a
//!   connector of it is up) and the **expiry** sweep;
//! - `writer`: the group-commit writer every status change and receipt goes through ([`group`]);
//! - [`ingress`]: the way messages come in; [`registry`] and [`runtime`]: the connectors and routes in force,
//!   and each connector's pace, window and health on this node.
//!
//! Every task stops on the shutdown token; the dispatcher finishes the sends it started before [`Engine::run`]
//! returns.

pub mod consent;
mod dispatch;
mod error;
pub mod events;
pub mod group;
mod inbound;
pub mod ingress;
pub mod outbox;
pub mod policy;
mod receipts;
pub mod registry;
pub mod runtime;
pub mod senders;
mod sweeps;
mod writer;

pub use error::EngineError;
pub use events::{DomainEvent, Events};
pub use registry::Registry;
pub use sweeps::Deleted;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use smsgate_connectors::ConnectorEvent;
use smsgate_core::clock::Clock;
use smsgate_core::{Message, MessageId, Timestamp};
use smsgate_store::{Claim, Store};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use writer::{GROUP_COMMIT, PARALLEL_GROUPS, Write, Written, write_group};

/// How the engine works.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's name, as leases record it.
    pub node: String,
    /// How long a claim holds; a node that dies loses its messages to others after this.
    pub lease: Duration,
    /// Messages claimed at once.
    pub batch: u32,
    /// How often the dispatcher looks for due messages when nobody wakes it.
    pub poll_interval: Duration,
    /// Submissions under way at once. A message accepted while one is free goes to the dispatcher stored already
    /// claimed; one accepted while none is waits in the queue for a claim, a second write. Room for more than the
    /// clients' windows keeps a busy node's messages out of the queue (each connector's own window still bounds
    /// what its carrier has at once).
    pub max_in_flight: usize,
    /// Attempts before a temporary error becomes a failure.
    pub max_attempts: u32,
    /// The first retry's delay; each later one doubles, up to five minutes.
    pub retry_base: Duration,
    /// How long a receipt waits for its message to be recorded as `sent`.
    pub receipt_wait: Duration,
    /// How often expired messages are swept.
    pub expiry_interval: Duration,
    /// The time every decision is made by (due times, validity, retries); tests may move it.
    pub clock: Arc<dyn Clock>,
    /// The key numbers are hashed with in the consent tables (`smsgate serve` derives it from the server's
    /// secret; nodes sharing a database must share it).
    pub consent_key: Vec<u8>,
    /// How long final messages are kept; then they are deleted, with their parts and callbacks. `None`: kept.
    pub history: Option<Duration>,
    /// How long webhook callbacks that are done (delivered, or given up) are kept, for their delivery log.
    pub callback_log: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node: "node-1".into(),
            lease: Duration::from_secs(60),
            batch: 500,
            poll_interval: Duration::from_millis(250),
            max_in_flight: 4096,
            max_attempts: 5,
            retry_base: Duration::from_secs(1),
            receipt_wait: Duration::from_secs(5),
            expiry_interval: Duration::from_secs(1),
            clock: smsgate_core::clock::system(),
            consent_key: b"smsgate consent key for tests".to_vec(),
            history: None,
            callback_log: Duration::from_secs(3 * 86_400),
        }
    }
}

/// The engine: one per node. Cheap to clone (one shared part): every API request and send path holds a clone.
#[derive(Debug, Clone)]
pub struct Engine(Arc<Shared>);

impl std::ops::Deref for Engine {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// When the history purge last walked from the start, and where it stopped in each account's messages.
type PurgeWalk = (Option<std::time::Instant>, HashMap<(smsgate_core::AccountId, smsgate_core::Direction), MessageId>);

/// What the clones of an [`Engine`] share.
#[derive(Debug)]
pub struct Shared {
    store: Arc<dyn Store>,
    /// The connectors and routes in force.
    registry: Arc<Registry>,
    /// What each account may send from.
    senders: senders::SenderBook,
    /// Who is opted out, and each account's compliance settings.
    consent: consent::ConsentBook,
    /// Where the history purge stopped in each account's messages, and when it last started from the beginning.
    purge_walked: Mutex<PurgeWalk>,
    config: Arc<Config>,
    wake: Arc<Notify>,
    /// Told when this node put changed connectors or routes in force ([`Engine::reload`]): waiting messages may
    /// have somewhere to go.
    reloaded: Arc<Notify>,
    /// The group-commit writer of status changes and receipts ([`Engine::write`]); started by [`Engine::run`].
    recorder: Arc<Mutex<Option<group::Group<Write, Written>>>>,
    /// Submission slots: at most `max_in_flight` messages are with the carrier at once.
    permits: Arc<Semaphore>,
    /// Whether the dispatcher runs (and takes messages handed to [`Engine::dispatch_claimed`]).
    running: Arc<std::sync::atomic::AtomicBool>,
    /// Messages stored already claimed for this node, each with its slot, on their way to the dispatcher.
    claimed_tx: mpsc::UnboundedSender<Handed>,
    claimed_rx: Arc<Mutex<Option<mpsc::UnboundedReceiver<Handed>>>>,
    /// When each message this node sent was accepted by its carrier, by carrier id, for the sent-to-delivered
    /// histogram, and whether its `sent` is written yet: a receipt that comes first waits for that write instead of
    /// missing its message. Bounded: past [`SENT_TIMES`] entries it is cleared (a few observations are lost, and
    /// their early receipts take the slower way of trying again, memory is not).
    sent_at: Arc<Mutex<HashMap<String, SentAt>>>,
    /// Told each time a `sent` write finishes.
    sent_written: Arc<Notify>,
    /// The routing version under which every message that waited for its route was last sent back to routing
    /// (both passes of [`Engine::unpark_every`] done); `u64::MAX` before the first.
    rerouted: std::sync::atomic::AtomicU64,
    /// Committed changes, told to subscribers ([`Engine::subscribe`]).
    events: Events,
    /// Told each time an inbound message is stored ([`Engine::inbound_stored`]).
    inbound: Arc<Notify>,
    /// How many times a session closed under each message after its submit went out (`connection_lost`), for
    /// [`policy::FREE_LINK_LOSSES`]. Bounded like `sent_at`: cleared past [`SENT_TIMES`] entries.
    link_losses: Mutex<HashMap<MessageId, u32>>,
}

/// An entry of [`Engine::sent_at`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct SentAt {
    pub(crate) at: Timestamp,
    pub(crate) written: bool,
}

/// A message stored claimed for this node, with its submission slot.
type Handed = (Message, OwnedSemaphorePermit);

/// Submission slots taken for messages about to be stored already claimed ([`Engine::reserve`]). Dropping it gives
/// the slots back.
#[derive(Debug)]
pub struct Reservation {
    permits: Vec<OwnedSemaphorePermit>,
}

impl Reservation {
    /// How many slots it holds.
    pub fn len(&self) -> usize {
        self.permits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.permits.is_empty()
    }
}

/// How often connectors and routes are read again from the store.
pub(crate) const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// How often messages that wait for their route are looked at ([`Engine::unpark_every`]), and how many go back on
/// the queue per write.
pub(crate) const UNPARK_EVERY: Duration = Duration::from_secs(1);
pub(crate) const UNPARK_CHUNK: u32 = 1000;

/// The most sent times kept for latency metrics.
pub(crate) const SENT_TIMES: usize = 200_000;

/// Metric names, as `/metrics` shows them.
pub mod metric {
    /// Submissions by outcome (`sent`, `failed`, `retry`, `expired`, `waiting`: no connector of the route was up).
    pub const SUBMISSIONS: &str = "smsgate_submissions_total";
    /// Receipts by resulting status, and `unmatched`.
    pub const RECEIPTS: &str = "smsgate_receipts_total";
    /// Seconds from acceptance (or `send_at`) to `sent`.
    pub const SUBMIT_TO_SENT: &str = "smsgate_submit_to_sent_seconds";
    /// Seconds from `sent` to a final receipt.
    pub const SENT_TO_DELIVERED: &str = "smsgate_sent_to_delivered_seconds";
    /// Inbound messages stored.
    pub const INBOUND: &str = "smsgate_inbound_total";
    /// Submissions by connector and outcome (`accepted`, `rejected`, `temporary_error`, `put_back` to wait for
    /// the connector's pace).
    pub const CONNECTOR_SUBMISSIONS: &str = "smsgate_connector_submissions_total";
    /// Temporary errors by connector and code.
    pub const CONNECTOR_ERRORS: &str = "smsgate_connector_errors_total";
    /// Seconds a carrier took to answer a submission, by connector.
    pub const CONNECTOR_SUBMIT_SECONDS: &str = "smsgate_connector_submit_seconds";
    /// Submissions waiting for the carrier's answer, by connector (a gauge, set when `/metrics` is read).
    pub const CONNECTOR_IN_FLIGHT: &str = "smsgate_connector_in_flight";
    /// 1 when a connector is up, 0 while it cools down after errors (a gauge, set when `/metrics` is read).
    pub const CONNECTOR_UP: &str = "smsgate_connector_up";
}

pub(crate) fn seconds_between(from: Timestamp, to: Timestamp) -> f64 {
    (to.0 - from.0).max(0) as f64 / 1000.0
}

impl Engine {
    /// An engine that sends through the connectors and routes of `registry` (loaded when [`Engine::run`] starts).
    pub fn new(store: Arc<dyn Store>, registry: Arc<Registry>, config: Config) -> Engine {
        let (claimed_tx, claimed_rx) = mpsc::unbounded_channel();
        Engine(Arc::new(Shared {
            store,
            registry,
            senders: senders::SenderBook::default(),
            consent: consent::ConsentBook::new(&config.consent_key),
            purge_walked: Mutex::new((None, HashMap::new())),
            permits: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            running: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            claimed_tx,
            claimed_rx: Arc::new(Mutex::new(Some(claimed_rx))),
            config: Arc::new(config),
            wake: Arc::new(Notify::new()),
            reloaded: Arc::new(Notify::new()),
            recorder: Arc::new(Mutex::new(None)),
            sent_at: Arc::new(Mutex::new(HashMap::new())),
            sent_written: Arc::new(Notify::new()),
            link_losses: Mutex::new(HashMap::new()),
            events: Events::default(),
            inbound: Arc::new(Notify::new()),
            rerouted: std::sync::atomic::AtomicU64::new(u64::MAX),
        }))
    }

    /// What each account may send from, as admission asks it.
    pub fn senders(&self) -> &senders::SenderBook {
        &self.senders
    }

    /// Now, by the engine's clock ([`Config::clock`]): the time every way in stamps and decides by.
    pub fn now(&self) -> Timestamp {
        self.config.clock.now()
    }

    /// The engine's clock, for the parts of the node that decide by the same time.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.config.clock.clone()
    }

    /// Every domain event committed from now on: messages accepted and received, status changes, receipts.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<DomainEvent> {
        self.events.subscribe()
    }

    /// Told (one permit kept) each time an inbound message is stored: what reads inbound messages from the store
    /// (automations) waits on this rather than on [`Engine::subscribe`], which would have every event built.
    pub fn inbound_stored(&self) -> Arc<Notify> {
        self.inbound.clone()
    }

    /// The bus events are published on, for the ways in that store messages.
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// Tells the dispatcher that messages were stored, so it looks now rather than at its next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Takes up to `wanted` submission slots that are free right now, for messages the caller will store already
    /// claimed (with [`Engine::claim`]) and hand to [`Engine::dispatch_claimed`]: a message accepted while the
    /// dispatcher has room is stored once, `sending`, and goes to the carrier at once, instead of being stored
    /// `queued`, woken for, and claimed by a second write. None while the dispatcher is not running.
    pub fn reserve(&self, wanted: usize) -> Reservation {
        let mut permits = Vec::new();
        if self.running.load(std::sync::atomic::Ordering::Acquire) {
            // No more than the connectors' paces have turns for: the rest would only be put back.
            let wanted =
                self.registry.paced_room(std::time::Instant::now()).map_or(wanted, |(room, _)| wanted.min(room));
            while permits.len() < wanted {
                match self.permits.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
        }
        Reservation { permits }
    }

    /// The lease this node takes on a message it stores already claimed.
    pub fn claim(&self, now: Timestamp) -> Claim {
        let lease_ms = i64::try_from(self.config.lease.as_millis()).unwrap_or(i64::MAX);
        Claim { owner: self.config.node.clone(), until: now.plus_millis(lease_ms) }
    }

    /// Sends messages that were stored claimed by [`Engine::claim`], one slot of `reservation` each (slots left over
    /// go back). A message handed in while the engine stops stays claimed and is sent again when its lease runs
    /// out, as after a crash.
    pub fn dispatch_claimed(&self, messages: Vec<Message>, mut reservation: Reservation) {
        for m in messages {
            let Some(permit) = reservation.permits.pop() else { break };
            if self.claimed_tx.send((m, permit)).is_err() {
                break;
            }
        }
    }

    /// Runs the dispatcher, the receipt and inbound handler, and the expiry sweep until `shutdown`; then waits for
    /// the submissions under way.
    pub async fn run(self, events: mpsc::Receiver<ConnectorEvent>, shutdown: CancellationToken) {
        // The zero-config connector and route, the first time this database is used; then what is in force. Nothing
        // is sent before the routes are loaded: with none, every message would fail for want of a route.
        loop {
            let loaded = async {
                registry::seed_defaults(self.store.as_ref(), self.now()).await?;
                self.registry.reload(self.store.as_ref()).await
            };
            match loaded.await {
                Ok(()) => break,
                Err(e) => warn!(error = %e, "loading connectors and routes failed; trying again in a second"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        let writer_stop = CancellationToken::new();
        let (store, bus) = (self.store.clone(), self.events.clone());
        let (recorder, writer) = group::Group::spawn_parallel(
            GROUP_COMMIT,
            PARALLEL_GROUPS,
            writer_stop.clone(),
            move |batch: Vec<Write>| {
                let (store, bus) = (store.clone(), bus.clone());
                async move { write_group(store.as_ref(), &bus, batch).await }
            },
        );
        *self.recorder.lock().unwrap_or_else(|e| e.into_inner()) = Some(recorder);
        // Whatever this node claimed before it stopped (or crashed) is not under way: take it back now rather than
        // when the leases run out.
        match self.store.release_leases(&self.config.node).await {
            Ok(0) => {}
            Ok(n) => info!(released = n, node = %self.config.node, "took back this node's earlier claims"),
            Err(e) => warn!(error = %e, "releasing this node's earlier claims failed; they are taken when they expire"),
        }
        let reloads = tokio::spawn(self.clone().reload_every(shutdown.clone()));
        let receipts = tokio::spawn(self.clone().handle_events(events, shutdown.clone()));
        let expiry = tokio::spawn(self.clone().sweep_expired(shutdown.clone()));
        let unparks = tokio::spawn(self.clone().unpark_every(shutdown.clone()));
        let consent = tokio::spawn(self.clone().refresh_consent_every(shutdown.clone()));
        let retention = tokio::spawn(self.clone().purge_history_every(shutdown.clone()));
        let history = tokio::spawn(self.clone().delete_history_every(shutdown.clone()));
        self.dispatch(shutdown).await;
        let _ = consent.await;
        let _ = retention.await;
        let _ = history.await;
        let _ = receipts.await;
        let _ = expiry.await;
        let _ = reloads.await;
        let _ = unparks.await;
        // Everything that records has stopped: let the writer drain what is left, then end.
        writer_stop.cancel();
        let _ = writer.await;
    }

    /// Whether the dispatcher runs (connectors and routes are loaded, messages are being sent).
    pub fn is_running(&self) -> bool {
        self.running.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether every message that waited for its route has been routed again under the routes in force now: after
    /// a change of routes the unparker sends them all back twice, a tick apart (a message routed by the old routes
    /// may be set waiting just after the first pass), and this turns true once both are done.
    pub fn rerouted(&self) -> bool {
        self.rerouted.load(std::sync::atomic::Ordering::Acquire) == self.registry.routing_version()
    }

    /// The connectors and routes in force.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Puts in force the connectors and routes the store holds now (after a change over the API).
    pub async fn reload(&self) -> Result<(), EngineError> {
        self.registry.reload(self.store.as_ref()).await?;
        self.reloaded.notify_one();
        Ok(())
    }
}
