//! The engine moves stored messages along their journey:
//!
//! - the **dispatcher** claims due messages from the store with a lease, checks their validity, hands each to a
//!   connector (at most `max_in_flight` at once) and records what the carrier said: `sent` with its id, `failed`,
//!   or back to `queued` with a backoff for a temporary error; a message whose route has no connector up waits
//!   for one off the queue, and the **unparker** puts it back when one is up;
//! - **receipts** from connectors find their message by carrier id and move it to `delivered`, `undelivered` or
//!   `expired`; a receipt that arrives before the `sent` it follows is held and tried again;
//! - **inbound** messages are stored as `received` for the account that last wrote to that handset;
//! - the **expiry** sweep ends messages whose validity passed.
//!
//! Routing, throttles and webhooks join here in the next issue. Every task stops on the shutdown token; the
//! dispatcher finishes the sends it started before [`Engine::run`] returns.

pub mod group;
pub mod ingress;
pub mod registry;
pub mod runtime;

pub use registry::Registry;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runtime::{Readiness, Turn, WINDOW_HOLD};
use smsgate_connectors::{ConnectorEvent, Inbound, Receipt, ReceiptState, SubmitError, now};
use smsgate_core::routing::Decision;
use smsgate_core::{AccountId, Direction, Message, MessageId, Status, Timestamp};
use smsgate_store::{Changes, Claim, NewMessage, ReceiptUpdate, Store, Transition};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

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

/// What the clones of an [`Engine`] share.
#[derive(Debug)]
pub struct Shared {
    store: Arc<dyn Store>,
    /// The connectors and routes in force.
    registry: Arc<Registry>,
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
    /// How many times a session closed under each message after its submit went out (`connection_lost`), for
    /// [`FREE_LINK_LOSSES`]. Bounded like `sent_at`: cleared past [`SENT_TIMES`] entries.
    link_losses: Mutex<HashMap<MessageId, u32>>,
}

/// An entry of [`Engine::sent_at`].
#[derive(Debug, Clone, Copy)]
struct SentAt {
    at: Timestamp,
    written: bool,
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

/// A change for the group-commit writer.
#[derive(Debug)]
enum Write {
    Transition(Transition),
    Receipt(ReceiptUpdate),
}

/// What a [`Write`] did.
#[derive(Debug)]
enum Written {
    /// Whether the transition moved its message.
    Moved(bool),
    /// The message the receipt moved, if any.
    Matched(Option<MessageId>),
}

/// Writes a group: the transitions and the receipts in it, in one [`Store::record`] (one transaction), and the
/// results back in the group's order.
/// Runs a store write, and again up to `retries` times while it fails, waiting a little longer each time. For
/// writes that fail whole (a rolled-back transaction changes nothing), so that trying again is safe: PostgreSQL
/// ends one of two transactions that wait on each other (groups written in parallel that change the same messages
/// in opposite orders), and a connection can drop. Each try sees the messages as they are then.
async fn with_retries<T, F, Fut>(retries: u32, mut write: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, smsgate_store::StoreError>>,
{
    let mut tries = 0;
    loop {
        match write().await {
            Ok(done) => return Ok(done),
            Err(e) if tries < retries => {
                tries += 1;
                warn!(error = %e, tries, "a store write failed; trying again");
                tokio::time::sleep(Duration::from_millis(10 << tries)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

async fn write_group(store: &dyn Store, group: Vec<Write>) -> Result<Vec<Written>, String> {
    // Sized at once: grown push by push, these were a tenth of the server's allocations under load.
    let receipts_in = group.iter().filter(|w| matches!(w, Write::Receipt(_))).count();
    let mut transitions = Vec::with_capacity(group.len() - receipts_in);
    let (mut receipts, mut kinds) = (Vec::with_capacity(receipts_in), Vec::with_capacity(group.len()));
    for w in group {
        kinds.push(matches!(w, Write::Transition(_)));
        match w {
            Write::Transition(t) => transitions.push(t),
            Write::Receipt(r) => receipts.push(r),
        }
    }
    let (moved, matched) = with_retries(WRITE_RETRIES, || store.record(&transitions, &receipts)).await?;
    let (mut moved, mut matched) = (moved.into_iter(), matched.into_iter());
    Ok(kinds
        .into_iter()
        .map(|is_transition| match is_transition {
            true => Written::Moved(moved.next().unwrap_or(false)),
            false => Written::Matched(matched.next().flatten()),
        })
        .collect())
}

/// The most status changes one group commit writes.
const GROUP_COMMIT: usize = 1000;

/// Groups of status changes written at once. One waits for its commit while the next forms: on PostgreSQL that
/// keeps the server busy (a quarter more messages a second than one at a time); SQLite's writer thread merges them.
const PARALLEL_GROUPS: usize = 3;

/// How often connectors and routes are read again from the store.
const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// How often messages that wait for their route are looked at ([`Engine::unpark_every`]), and how many go back on
/// the queue per write.
const UNPARK_EVERY: Duration = Duration::from_secs(1);
const UNPARK_CHUNK: u32 = 1000;

/// How many times a failed group is written again before its changes are reported failed.
const WRITE_RETRIES: u32 = 3;

/// The most sent times kept for latency metrics.
const SENT_TIMES: usize = 200_000;

/// How many times a session may close under a message after its submit went out before that costs the message
/// an attempt. A link that drops is the connector's fault, not the message's; but a message the carrier's SMSC
/// falls over on closes its session every time it is sent, and must not do so until its validity ends.
const FREE_LINK_LOSSES: u32 = 2;

/// How long a message a throttling carrier sent back stays back in the queue: a quarter of the time it has waited
/// so far, 250 ms to a minute, so that a carrier that throttles for long costs a message few journey lines.
fn waiting_pause(m: &Message) -> i64 {
    let waited = now().0 - m.send_at.unwrap_or(m.created_at).0;
    (waited / 4).clamp(250, 60_000)
}

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

fn seconds_between(from: Timestamp, to: Timestamp) -> f64 {
    (to.0 - from.0).max(0) as f64 / 1000.0
}

impl Engine {
    /// An engine that sends through the connectors and routes of `registry` (loaded when [`Engine::run`] starts).
    pub fn new(store: Arc<dyn Store>, registry: Arc<Registry>, config: Config) -> Engine {
        let (claimed_tx, claimed_rx) = mpsc::unbounded_channel();
        Engine(Arc::new(Shared {
            store,
            registry,
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
        }))
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
                registry::seed_defaults(self.store.as_ref(), now()).await?;
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
        let store = self.store.clone();
        let (recorder, writer) = group::Group::spawn_parallel(
            GROUP_COMMIT,
            PARALLEL_GROUPS,
            writer_stop.clone(),
            move |batch: Vec<Write>| {
                let store = store.clone();
                async move { write_group(store.as_ref(), batch).await }
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
        self.dispatch(shutdown).await;
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

    /// The connectors and routes in force.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Puts in force the connectors and routes the store holds now (after a change over the API).
    pub async fn reload(&self) -> Result<(), String> {
        self.registry.reload(self.store.as_ref()).await.map_err(|e| e.to_string())?;
        self.reloaded.notify_one();
        Ok(())
    }

    /// Reloads connectors and routes every [`RELOAD_EVERY`], so changes made on other nodes arrive.
    async fn reload_every(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(RELOAD_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.registry.reload(self.store.as_ref()).await {
                warn!(error = %e, "reloading connectors and routes failed; keeping those in force");
            }
        }
    }

    /// Writes through the group-commit writer: concurrent changes share one transaction (one disk sync).
    async fn write(&self, change: Write) -> Result<Written, String> {
        let recorder = self.recorder.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match recorder {
            Some(r) => r.submit(change).await,
            None => Err("the engine is not running".to_string()),
        }
    }

    /// Records a status change; returns whether the message moved.
    async fn record(&self, transition: Transition) -> Result<bool, String> {
        match self.write(Write::Transition(transition)).await? {
            Written::Moved(moved) => Ok(moved),
            Written::Matched(_) => Err("the writer answered a transition with a receipt's result".to_string()),
        }
    }

    async fn dispatch(&self, shutdown: CancellationToken) {
        let Some(mut handed) = self.claimed_rx.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            warn!("the dispatcher was started twice; the second does nothing");
            return;
        };
        self.running.store(true, std::sync::atomic::Ordering::Release);
        let permits = self.permits.clone();
        let mut sends = JoinSet::new();
        let lease_ms = i64::try_from(self.config.lease.as_millis()).unwrap_or(i64::MAX);
        // An interval, not a sleep per turn: a steady stream of handed messages must not keep the poll from coming.
        let mut poll = tokio::time::interval(self.config.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Made once: a `cancelled()` made per turn takes the token's lock twice for every message handed.
        let stopped = shutdown.cancelled();
        tokio::pin!(stopped);
        'outer: loop {
            tokio::select! {
                _ = &mut stopped => break,
                // A handed message needs no claim: send it and wait again.
                Some((m, permit)) = handed.recv() => {
                    self.spawn_send(&mut sends, m, permit);
                    while sends.try_join_next().is_some() {}
                    continue;
                }
                _ = self.wake.notified() => {}
                _ = poll.tick() => {}
            }
            loop {
                while sends.try_join_next().is_some() {}
                // Messages stored claimed for this node come with their own slots.
                while let Ok((m, permit)) = handed.try_recv() {
                    self.spawn_send(&mut sends, m, permit);
                }
                // Claim no more than can be sent now, so claimed messages do not wait out their lease.
                let free = permits.available_permits();
                if free == 0 {
                    // Wait for a slot: a send ending, a handed message (whose slot a reservation held), or the
                    // next poll (a reservation given back).
                    tokio::select! {
                        _ = shutdown.cancelled() => break 'outer,
                        Some((m, permit)) = handed.recv() => {
                            self.spawn_send(&mut sends, m, permit);
                        }
                        Some(_) = sends.join_next(), if !sends.is_empty() => {}
                        _ = poll.tick() => {}
                    }
                    continue;
                }
                // The slots first, then the claim: waiting for a slot with claimed messages in hand would stop
                // this loop from taking the handed messages whose slots it waits for.
                let mut slots = Vec::new();
                while slots.len() < free.min(self.config.batch as usize) {
                    match permits.clone().try_acquire_owned() {
                        Ok(p) => slots.push(p),
                        Err(_) => break,
                    }
                }
                if slots.is_empty() {
                    continue;
                }
                let limit = u32::try_from(slots.len()).unwrap_or(u32::MAX);
                let claimed = match self.store.claim_due(&self.config.node, now(), lease_ms, limit).await {
                    Ok(claimed) => claimed,
                    Err(e) => {
                        warn!(error = %e, "claiming due messages failed; trying again at the next poll");
                        break;
                    }
                };
                if claimed.is_empty() {
                    break;
                }
                // Slots left over go back when `slots` drops.
                for (m, permit) in claimed.into_iter().zip(slots.drain(..)) {
                    self.spawn_send(&mut sends, m, permit);
                }
                if shutdown.is_cancelled() {
                    break 'outer;
                }
            }
        }
        // Stop taking handed messages; send those already handed, then wait for every submission under way.
        self.running.store(false, std::sync::atomic::Ordering::Release);
        handed.close();
        while let Some((m, permit)) = handed.recv().await {
            self.spawn_send(&mut sends, m, permit);
        }
        while sends.join_next().await.is_some() {}
    }

    /// Starts sending one claimed message, in its slot, among the sends the dispatcher waits for.
    fn spawn_send(&self, sends: &mut JoinSet<()>, m: Message, permit: OwnedSemaphorePermit) {
        let engine = self.clone();
        // Boxed: the send's state is over 3 KB, and a task's future is copied whole when it is spawned and again
        // when its output is taken.
        sends.spawn(Box::pin(async move { engine.send_one(m, permit).await }));
    }

    /// Hands one claimed message to the connector and records the outcome, fenced by this node's lease. The permit
    /// bounds submissions to the carrier, so it is returned when the carrier has answered, not when the outcome is
    /// on disk: the dispatcher claims the next messages while the group commit writes this one.
    async fn send_one(&self, m: Message, permit: tokio::sync::OwnedSemaphorePermit) {
        let fence = || Changes { lease_owner: Some(self.config.node.clone()), ..Changes::default() };
        let record = |to: Status, detail: String, changes: Changes| async move {
            let transition = Transition { id: m.id, to, at: now(), detail, changes };
            if let Err(e) = self.record(transition).await {
                warn!(id = %m.id, error = %e, "recording {to} failed; the message is retried when its lease ends");
            }
        };
        if m.expires_at.is_some_and(|e| e <= now()) {
            drop(permit);
            metrics::counter!(metric::SUBMISSIONS, "outcome" => "expired").increment(1);
            record(Status::Expired, "validity ended before it could be sent".into(), fence()).await;
            return;
        }
        // The route, and within it the connector.
        let (live, price) = match self.registry.resolve_message(&m).decision {
            Decision::Connector { connector, price_micros, .. } => match self.registry.connector(&connector) {
                Some(live) => (live, price_micros),
                None => {
                    // Removed between the choice and now.
                    drop(permit);
                    let detail = format!("connector {connector:?} was removed");
                    self.retry_or_fail(&m, None, "no_connector_up".into(), detail).await;
                    return;
                }
            },
            Decision::NoRoute => {
                drop(permit);
                metrics::counter!(metric::SUBMISSIONS, "outcome" => "failed").increment(1);
                let detail = format!("no route matches {} from {}", m.to, m.from);
                let changes = Changes { error_code: Some("no_route".into()), ..fence() };
                record(Status::Failed, detail, changes).await;
                return;
            }
            Decision::Unavailable { route } => {
                // An outage of the route's carriers is not the message's failure: it waits for one to come back
                // (its validity bounds the wait), without spending an attempt, off the queue: not claimed again
                // until a connector of its route is up ([`Engine::unpark_every`]).
                drop(permit);
                metrics::counter!(metric::SUBMISSIONS, "outcome" => "waiting").increment(1);
                let detail = format!("no connector of route {route:?} is up: waiting for one");
                let changes = Changes { wait_for_route: Some(route), attempt_undone: true, ..fence() };
                record(Status::Queued, detail, changes).await;
                return;
            }
        };
        let name = live.record.name.clone();
        let runtime = live.runtime.clone();
        // A place in the connector's window: wait for one if the sends already waiting leave one within a second,
        // else step back into the queue, in line, until about when there will be one (a full window of a slow
        // carrier must not hold this node's submission slots, which every connector shares).
        let entered = match runtime.window_line(std::time::Instant::now()) {
            None => tokio::time::timeout(WINDOW_HOLD * 2, runtime.enter())
                .await
                .map_err(|_| runtime.line_turn(std::time::Instant::now())),
            Some(back) => Err(back),
        };
        let window = match entered {
            Ok(window) => window,
            Err(back) => {
                drop(permit);
                runtime.probe_unused();
                runtime.counters.put_back.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                metrics::counter!(metric::CONNECTOR_SUBMISSIONS, "connector" => name.clone(), "outcome" => "put_back")
                    .increment(1);
                let size = runtime.limits().window.unwrap_or(0);
                let detail = format!(
                    "waiting for a place in {name}'s window ({size} under way): back in {} ms",
                    back.as_millis()
                );
                let changes = Changes { retry_at: Some(from_now(back)), attempt_undone: true, ..fence() };
                record(Status::Queued, detail, changes).await;
                return;
            }
        };
        // The connector's pace: go now, wait a little, or step back into the queue until its turn.
        match runtime.turn(std::time::Instant::now()) {
            Turn::Now => {}
            Turn::Wait(w) => tokio::time::sleep(w).await,
            Turn::Later(wait) => {
                drop(window);
                drop(permit);
                runtime.probe_unused();
                metrics::counter!(metric::CONNECTOR_SUBMISSIONS, "connector" => name.clone(), "outcome" => "put_back")
                    .increment(1);
                let rate = runtime.limits().throughput.unwrap_or(0.0);
                let detail = format!("waiting for {name}'s pace ({rate}/s): back in {} ms", wait.as_millis());
                let changes = Changes { retry_at: Some(from_now(wait)), attempt_undone: true, ..fence() };
                record(Status::Queued, detail, changes).await;
                return;
            }
        }
        runtime.counters.submitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let started = std::time::Instant::now();
        let submitted = live.connector.submit(&m).await;
        drop(window);
        drop(permit);
        runtime.answered(started.elapsed());
        metrics::histogram!(metric::CONNECTOR_SUBMIT_SECONDS, "connector" => name.clone())
            .record(started.elapsed().as_secs_f64());
        let outcome = match &submitted {
            Ok(_) => "accepted",
            Err(SubmitError::Permanent { .. }) => "rejected",
            Err(SubmitError::Temporary { .. }) => "temporary_error",
        };
        metrics::counter!(metric::CONNECTOR_SUBMISSIONS, "connector" => name.clone(), "outcome" => outcome)
            .increment(1);
        match &submitted {
            // A refusal for the message's own sake (a bad number), or a request to slow down, says the carrier
            // works.
            Ok(_) | Err(SubmitError::Permanent { .. }) => runtime.succeeded(),
            Err(e) if e.is_throttling() => runtime.succeeded(),
            Err(SubmitError::Temporary { code, .. }) => {
                metrics::counter!(metric::CONNECTOR_ERRORS, "connector" => name.clone(), "code" => code.clone())
                    .increment(1);
                if runtime.failed(std::time::Instant::now()) {
                    warn!(connector = %name, code = %code, "connector down after repeated temporary errors");
                }
            }
        }
        let counter = match &submitted {
            Ok(_) => &runtime.counters.accepted,
            Err(SubmitError::Permanent { .. }) => &runtime.counters.rejected,
            Err(SubmitError::Temporary { .. }) => &runtime.counters.temporary_errors,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match submitted {
            Ok(carrier_ids) => {
                let at = now();
                let Some(carrier_id) = carrier_ids.first().cloned() else {
                    // A connector that took a message must say under which id; treat it as a carrier error.
                    let detail = format!("{name} answered without a carrier id");
                    self.retry_or_fail(&m, Some(name), "no_carrier_id".into(), detail).await;
                    return;
                };
                metrics::counter!(metric::SUBMISSIONS, "outcome" => "sent").increment(1);
                metrics::histogram!(metric::SUBMIT_TO_SENT)
                    .record(seconds_between(m.send_at.unwrap_or(m.created_at), at));
                {
                    let mut sent = self.sent_at.lock().unwrap_or_else(|e| e.into_inner());
                    if sent.len() >= SENT_TIMES {
                        sent.clear();
                    }
                    sent.insert(carrier_id.clone(), SentAt { at, written: false });
                }
                let written = carrier_id.clone();
                let detail = match carrier_ids.len() {
                    1 => format!("{name} accepted it: carrier id {carrier_id}"),
                    n => format!("{name} accepted its {n} parts: carrier ids {}", carrier_ids.join(", ")),
                };
                let price_micros = price.map(|p| p.saturating_mul(i64::from(m.segments)));
                let parts = if carrier_ids.len() > 1 { carrier_ids } else { Vec::new() };
                let changes =
                    Changes { connector: Some(name), carrier_id: Some(carrier_id), price_micros, parts, ..fence() };
                record(Status::Sent, detail, changes).await;
                // Written (or given up on): receipts that came first may look for their message now.
                if let Some(s) = self.sent_at.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&written) {
                    s.written = true;
                }
                self.sent_written.notify_waiters();
            }
            Err(SubmitError::Permanent { code, detail }) => {
                metrics::counter!(metric::SUBMISSIONS, "outcome" => "failed").increment(1);
                let detail = format!("{name} refused it, {code}: {detail}");
                let changes = Changes { connector: Some(name), error_code: Some(code), ..fence() };
                record(Status::Failed, detail, changes).await;
            }
            // Throttled: back in the queue without spending an attempt (a carrier that keeps throttling holds the
            // message until its validity ends, never fails it).
            Err(e @ SubmitError::Temporary { .. }) if e.is_throttling() => {
                let SubmitError::Temporary { code, detail } = e else { return };
                metrics::counter!(metric::SUBMISSIONS, "outcome" => "waiting").increment(1);
                let pause = waiting_pause(&m);
                let detail = format!("{name} asked to slow down, {code}: {detail}; back in {pause} ms");
                let changes = Changes {
                    connector: Some(name),
                    error_code: Some(code),
                    retry_at: Some(now().plus_millis(pause)),
                    attempt_undone: true,
                    ..fence()
                };
                record(Status::Queued, detail, changes).await;
            }
            // The link went down under it: the connector's failure, not the message's. Back in the queue without
            // spending an attempt (else everything under way when a link drops spends one, and a link that keeps
            // dropping fails messages that were never at fault); by then the connector may be down, and the
            // message waits for its route. A message under which the session closed more than FREE_LINK_LOSSES
            // times spends attempts again, so one that makes its carrier fall over fails in the end.
            Err(e @ SubmitError::Temporary { .. }) if e.is_link_down() && self.link_loss_is_free(&m, &e) => {
                let SubmitError::Temporary { code, detail } = e else { return };
                metrics::counter!(metric::SUBMISSIONS, "outcome" => "retry").increment(1);
                let delay = self.config.retry_base;
                let detail =
                    format!("{name}: link down, {code}: {detail}; tried again in {delay:?}, the attempt not counted");
                let changes = Changes {
                    connector: Some(name),
                    error_code: Some(code),
                    retry_at: Some(from_now(delay)),
                    attempt_undone: true,
                    ..fence()
                };
                record(Status::Queued, detail, changes).await;
            }
            Err(SubmitError::Temporary { code, mut detail }) => {
                if code == smsgate_connectors::CONNECTION_LOST {
                    detail.push_str(&format!(
                        " (the session closed under this message more than {FREE_LINK_LOSSES} times: it counts)"
                    ));
                }
                self.retry_or_fail(&m, Some(name), code, detail).await
            }
        }
    }

    /// Whether a link-down `error` of `m`'s submission goes without spending an attempt: always when no session
    /// was bound (nothing went out), and for the first [`FREE_LINK_LOSSES`] times a session closed under it.
    fn link_loss_is_free(&self, m: &Message, error: &SubmitError) -> bool {
        if !error.is_connection_lost() {
            return true;
        }
        let mut losses = self.link_losses.lock().unwrap_or_else(|e| e.into_inner());
        if losses.len() >= SENT_TIMES {
            losses.clear();
        }
        let n = losses.entry(m.id).or_default();
        *n += 1;
        *n <= FREE_LINK_LOSSES
    }

    /// A temporary failure: the message is queued again after a backoff, or fails once it has had its attempts.
    async fn retry_or_fail(&self, m: &Message, connector: Option<String>, code: String, detail: String) {
        let fence = Changes { lease_owner: Some(self.config.node.clone()), ..Changes::default() };
        // Each attempt's event names the connector, what happened and the code.
        let detail = match &connector {
            Some(c) => format!("{c}: temporary error, {code}: {detail}"),
            None => format!("{code}: {detail}"),
        };
        let (to, detail, changes) = if m.attempts >= self.config.max_attempts {
            metrics::counter!(metric::SUBMISSIONS, "outcome" => "failed").increment(1);
            let detail = match m.attempts {
                1 => format!("{detail}; giving up after 1 attempt"),
                n => format!("{detail}; giving up after {n} attempts"),
            };
            (Status::Failed, detail, Changes { connector, error_code: Some(code), ..fence })
        } else {
            metrics::counter!(metric::SUBMISSIONS, "outcome" => "retry").increment(1);
            let delay = self.retry_delay(m.attempts);
            let retry_at = from_now(delay);
            let detail = format!("{detail}; attempt {} of {} in {delay:?}", m.attempts + 1, self.config.max_attempts);
            (Status::Queued, detail, Changes { connector, error_code: Some(code), retry_at: Some(retry_at), ..fence })
        };
        let transition = Transition { id: m.id, to, at: now(), detail, changes };
        if let Err(e) = self.record(transition).await {
            warn!(id = %m.id, error = %e, "recording {to} failed; the message is retried when its lease ends");
        }
    }

    fn retry_delay(&self, attempts: u32) -> Duration {
        let factor = 1u32 << attempts.saturating_sub(1).min(16);
        self.config.retry_base.saturating_mul(factor).min(Duration::from_secs(300))
    }

    async fn handle_events(self, mut events: mpsc::Receiver<ConnectorEvent>, shutdown: CancellationToken) {
        let mut tasks = JoinSet::new();
        let stopped = shutdown.cancelled();
        tokio::pin!(stopped);
        loop {
            let event = tokio::select! {
                _ = &mut stopped => break,
                e = events.recv() => match e { Some(e) => e, None => break },
            };
            let engine = self.clone();
            tasks.spawn(Box::pin(async move { engine.apply_event(event, None).await }));
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Applies a connector's event, telling `kept` (when the carrier waits for it) whether it was kept: written,
    /// or settled for good.
    async fn apply_event(&self, event: ConnectorEvent, mut kept: Option<tokio::sync::oneshot::Sender<bool>>) {
        let done = match event {
            ConnectorEvent::Receipt(r) => self.apply_receipt(r, &mut kept).await,
            ConnectorEvent::Inbound(i) => self.store_inbound(i).await,
            ConnectorEvent::Durable(event, waiting) => return Box::pin(self.apply_event(*event, Some(waiting))).await,
        };
        if let Some(kept) = kept {
            let _ = kept.send(done);
        }
    }

    /// Applies a receipt: it moves the message the carrier's id names, in the same group commit as other changes.
    /// A receipt can overtake the `sent` it follows (the carrier answers before the write lands); one that moves
    /// nothing is tried again, with growing pauses, until the message is final or [`Config::receipt_wait`] passes.
    /// Returns false only when the store kept failing: the carrier should send it again. A receipt that overtook
    /// its `sent` is held here, in memory, while it waits; its carrier is told at once that it is kept (it may be
    /// holding the submit's answer until then), so a crash during that wait loses it.
    async fn apply_receipt(&self, r: Receipt, kept: &mut Option<tokio::sync::oneshot::Sender<bool>>) -> bool {
        let to = match r.state {
            ReceiptState::Delivered => Status::Delivered,
            ReceiptState::Undelivered | ReceiptState::Rejected => Status::Undelivered,
            ReceiptState::Expired => Status::Expired,
        };
        let update = ReceiptUpdate {
            connector: r.connector.clone(),
            carrier_id: r.carrier_id.clone(),
            to,
            at: r.at,
            detail: r.detail.clone(),
            error_code: r.error_code.clone(),
        };
        // The id as the connector reads it first, then the other forms it may have been given in.
        let forms: Vec<&String> = std::iter::once(&r.carrier_id).chain(&r.alternatives).collect();
        let deadline = tokio::time::Instant::now() + self.config.receipt_wait;
        self.wait_for_sent(&forms, deadline).await;
        let mut pause = Duration::from_millis(10);
        loop {
            // Whether this round could not reach the store.
            let mut failed = false;
            for carrier_id in &forms {
                let update = ReceiptUpdate { carrier_id: carrier_id.to_string(), ..update.clone() };
                match self.write(Write::Receipt(update)).await {
                    Ok(Written::Matched(Some(_))) => {
                        metrics::counter!(metric::RECEIPTS, "status" => to.as_str()).increment(1);
                        let sent = self.sent_at.lock().unwrap_or_else(|e| e.into_inner()).remove(*carrier_id);
                        if let Some(sent) = sent {
                            metrics::histogram!(metric::SENT_TO_DELIVERED).record(seconds_between(sent.at, r.at));
                        }
                        return true;
                    }
                    // Nothing moved: the message is final already (a late or duplicate receipt, which changes
                    // nothing), or its `sent` is not recorded yet; only the latter is worth waiting for.
                    Ok(_) => match self.store.message_by_carrier_id(&r.connector, carrier_id).await {
                        Ok(Some(id)) => match self.store.message_status(id).await {
                            Ok(Some(s)) if s.is_final() => {
                                debug!(%id, receipt = %r.detail, "receipt for a message that can no longer move; ignored");
                                return true;
                            }
                            Ok(_) => {}
                            Err(e) => {
                                failed = true;
                                warn!(error = %e, "reading a receipt's message failed; trying again");
                            }
                        },
                        Ok(None) => {}
                        Err(e) => {
                            failed = true;
                            warn!(error = %e, "looking up a receipt's message failed; trying again");
                        }
                    },
                    Err(e) => {
                        failed = true;
                        warn!(error = %e, "recording a receipt failed; trying again");
                    }
                }
            }
            if !failed && let Some(kept) = kept.take() {
                let _ = kept.send(true);
            }
            if tokio::time::Instant::now() >= deadline {
                if failed {
                    warn!(connector = %r.connector, carrier_id = %r.carrier_id, "receipt not recorded: the store failed");
                    return false;
                }
                metrics::counter!(metric::RECEIPTS, "status" => "unmatched").increment(1);
                warn!(connector = %r.connector, carrier_id = %r.carrier_id, receipt = %r.detail, "unmatched receipt");
                return true;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// Waits (until `deadline` at most) while the `sent` of a message this node submitted under one of `ids` is
    /// being written. A receipt can overtake that write (the carrier answers the submit, then sends the receipt
    /// while the group commit is under way); trying it first cost a write that moved nothing, a look at the message,
    /// and a pause that doubles, which on PostgreSQL held most receipts back for hundreds of milliseconds.
    async fn wait_for_sent(&self, ids: &[&String], deadline: tokio::time::Instant) {
        loop {
            let notified = self.sent_written.notified();
            tokio::pin!(notified);
            // Listening before looking, so a write that finishes in between is not missed.
            notified.as_mut().enable();
            let pending = {
                let sent = self.sent_at.lock().unwrap_or_else(|e| e.into_inner());
                ids.iter().any(|id| sent.get(id.as_str()).is_some_and(|s| !s.written))
            };
            if !pending || tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    /// Stores an inbound message for the account that last wrote to its sender; whether it was kept (false only
    /// when the store failed: the carrier should send it again).
    async fn store_inbound(&self, i: Inbound) -> bool {
        let account = match self.store.account_for_reply(&i.from, &i.to).await {
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
        match self.store.insert_messages(&[NewMessage::new(message, detail)]).await {
            Ok(_) => {
                metrics::counter!(metric::INBOUND).increment(1);
                true
            }
            Err(e) => {
                warn!(error = %e, "storing an inbound message failed");
                false
            }
        }
    }

    /// Every [`UNPARK_EVERY`] (and at once after [`Engine::reload`]), puts back on the queue the messages that wait
    /// for a route ([`Changes::wait_for_route`]) that has a connector up again (all of them, a chunk at a time), or
    /// one whose connector's cool-down is over (one message, to be its probe). When the routes in force change,
    /// and when the engine starts, every waiting message goes back (twice, a tick apart), for routing to decide
    /// afresh: the route it waits for may be gone, or another may now match it.
    async fn unpark_every(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(UNPARK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The routes in force when all waiting messages last went back, and whether to do it once more: a message
        // routed by the routes before may be set waiting just after (its write was under way).
        let mut routed_by = None;
        let mut again = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
                _ = self.reloaded.notified() => {}
            }
            let version = self.registry.routing_version();
            if (routed_by != Some(version) || again) && self.unpark(None, UNPARK_CHUNK).await {
                again = routed_by != Some(version);
                routed_by = Some(version);
            }
            for (route, readiness) in self.registry.route_readiness(std::time::Instant::now()) {
                match readiness {
                    Readiness::Up => self.unpark(Some(&route), UNPARK_CHUNK).await,
                    Readiness::Probe => self.unpark(Some(&route), 1).await,
                    Readiness::Down => continue,
                };
            }
        }
    }

    /// Puts waiting messages of `route` (any, if `None`) back on the queue, `chunk` at a time (all of them unless
    /// `chunk` is 1), waking the dispatcher for each chunk. Those set waiting again meanwhile stay, as do those
    /// accepted since it began: each chunk goes on from where the last stopped. False if the store failed.
    async fn unpark(&self, route: Option<&str>, chunk: u32) -> bool {
        let (mut after, at) = (None, now());
        loop {
            match self.store.unpark(route, after.as_ref(), at, chunk).await {
                Ok(None) => return true,
                Ok(Some(at)) => {
                    debug!(route = ?route, up_to = %at.id, "waiting messages back on the queue");
                    self.wake();
                    if chunk == 1 {
                        return true;
                    }
                    after = Some(at);
                }
                Err(e) => {
                    warn!(route = ?route, error = %e, "putting waiting messages back failed; trying again next tick");
                    return false;
                }
            }
        }
    }

    async fn sweep_expired(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.config.expiry_interval) => {}
            }
            loop {
                match self.store.expire_due(now(), 1000).await {
                    Ok(ids) if ids.len() == 1000 => continue,
                    Ok(_) => break,
                    Err(e) => {
                        warn!(error = %e, "expiring messages failed");
                        break;
                    }
                }
            }
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
        created_at: i.at,
        updated_at: i.at,
    }
}

/// The time `wait` from now.
fn from_now(wait: Duration) -> Timestamp {
    now().plus_millis(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX))
}

/// Now, for callers that build messages (the API).
pub fn timestamp_now() -> Timestamp {
    now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_write_is_tried_again_then_reported() {
        let calls = std::cell::Cell::new(0);
        let failing_twice = || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move { if n <= 2 { Err(smsgate_store::StoreError::Commit("deadlock".into())) } else { Ok(n) } }
        };
        assert_eq!(with_retries(3, failing_twice).await, Ok(3));
        calls.set(0);
        let always = || async { Err::<(), _>(smsgate_store::StoreError::Commit("disk full".into())) };
        assert_eq!(with_retries(2, always).await, Err("commit failed: disk full".to_string()));
        assert_eq!(with_retries(0, failing_twice).await, Err("commit failed: deadlock".to_string()));
    }
}
