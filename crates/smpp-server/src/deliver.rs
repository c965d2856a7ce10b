//! Receipts and inbound messages to SMPP clients. Status changes (and inbound messages) write their deliver_sm to
//! the store's `smpp_outbox` in their own transaction; here the server claims those of the accounts that have a
//! receiver (or transceiver) bound to this node and sends each through one of the account's sessions, round robin.
//! A deliver_sm is done when the client's `deliver_sm_resp` says OK; any other answer, a timeout or a lost session
//! tries again later (after 1 s, doubling to a minute), until [`smsgate_store::SMPP_DELIVERY_TTL_MS`] has passed.
//!
//! A deliver_sm written while a receiver of its account is bound here does not wait for a claim: the store writes
//! it leased to this node and hands it over a channel after its commit ([`smsgate_store::SmppFeed`]); the claim
//! takes it only if it is not sent in its lease.
//!
//! The client can see one twice: an answer lost with its session leaves the deliver_sm to be sent again.
//!
//! Accounts take turns: an account has at most its share ([`Receivers::share`]) of deliver_sm under way, fed or
//! claimed; past it, what the store feeds it is left to the claim, and the claim leaves it out. So a client that
//! never answers holds its own deliver_sm, never another account's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use smpp::pdu::SubmitSm;
use smpp::receipt::{MessageState, Receipt, ReceiptDate};
use smpp::{Body, CommandStatus, ShortMessage, Tlv, Tlvs};
use smpp_session::Session;
use smsgate_core::clock::Clock;
use smsgate_core::{AccountId, MessageId, Status, Timestamp};
use smsgate_engine::outbox::{self, Backoff, Outbox};
use smsgate_store::{DeliveryMessage, DeliveryNext, DueDelivery, SmppFeed, Store, StoreError};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The most deliver_sm claimed at once.
const BATCH: u32 = 1024;

/// How long a claim holds: a node that stops mid-send leaves its claims to be taken again after this.
const LEASE_MS: i64 = 60_000;

/// How often the outbox is looked at when the last look found nothing.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// Fed deliver_sm that may wait in the channel: beyond, the store writes them for the claim.
const FEED_ROOM: usize = 65_536;

/// The deliver_sm one account may have under way at once, unless set otherwise: as many as four claims' worth, as
/// the rounds of one busy client had before accounts took turns.
pub const PER_ACCOUNT: usize = 4 * BATCH as usize;

/// Rounds of fed deliver_sm that hold the feed at once: while they are under way, what the store feeds gathers
/// into larger rounds (fewer writes of their results). A round that has waited this long for its answers stops
/// holding the feed, so a client that never answers does not hold another account's rounds.
const FEED_ROUNDS: usize = 4;
const ROUND_HOLDS_FOR: Duration = Duration::from_secs(1);

/// The wait before a deliver_sm goes again: a second, doubling to a minute.
const BACKOFF: Backoff = Backoff { first: Duration::from_secs(1), max: Duration::from_secs(60), spread: 0.0 };

/// How often deliver_sm that waited past their time are given up.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);

/// The sessions of each account that can take deliver_sm (receivers and transceivers), on this node.
#[derive(Debug)]
pub(crate) struct Receivers {
    sessions: Mutex<HashMap<AccountId, Vec<Session>>>,
    next: AtomicUsize,
    /// Told when a receiver binds: what waited for it goes at once.
    bound: Arc<Notify>,
    /// Deliver_sm under way, by account, fed and claimed together.
    under_way: Mutex<HashMap<AccountId, usize>>,
    /// The most one account may have under way.
    share: AtomicUsize,
}

impl Default for Receivers {
    /// Each account with the default share ([`PER_ACCOUNT`]).
    fn default() -> Self {
        Receivers::with_share(PER_ACCOUNT)
    }
}

impl Receivers {
    /// Receivers whose accounts may each have `share` deliver_sm under way.
    pub(crate) fn with_share(share: usize) -> Receivers {
        Receivers {
            sessions: Mutex::default(),
            next: AtomicUsize::new(0),
            bound: Arc::default(),
            under_way: Mutex::default(),
            share: AtomicUsize::new(share.max(1)),
        }
    }

    /// Whether the account has its share under way.
    fn busy(&self, account: AccountId) -> bool {
        let share = self.share.load(Ordering::Relaxed).max(1);
        self.under_way.lock().unwrap_or_else(|e| e.into_inner()).get(&account).is_some_and(|n| *n >= share)
    }

    fn started(&self, account: AccountId, n: usize) {
        *self.under_way.lock().unwrap_or_else(|e| e.into_inner()).entry(account).or_default() += n;
    }

    fn finished(&self, account: AccountId, n: usize) {
        let mut under_way = self.under_way.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(left) = under_way.get_mut(&account) {
            *left = left.saturating_sub(n);
            if *left == 0 {
                under_way.remove(&account);
            }
        }
    }

    pub(crate) fn add(&self, account: AccountId, session: Session) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let list = sessions.entry(account).or_default();
        list.retain(|s| !s.is_closed());
        list.push(session);
        drop(sessions);
        self.bound.notify_one();
    }

    /// The accounts with an open receiver, forgetting closed sessions.
    fn accounts(&self) -> Vec<AccountId> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, list| {
            list.retain(|s| !s.is_closed());
            !list.is_empty()
        });
        sessions.keys().copied().collect()
    }

    /// Whether the account has an open receiver here.
    fn has(&self, account: AccountId) -> bool {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.get(&account).is_some_and(|list| list.iter().any(|s| !s.is_closed()))
    }

    /// One of the account's open receivers, in turn.
    fn pick(&self, account: AccountId) -> Option<Session> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let open = || sessions.get(&account).into_iter().flatten().filter(|s| !s.is_closed());
        let n = open().count();
        if n == 0 {
            return None;
        }
        open().nth(self.next.fetch_add(1, Ordering::Relaxed) % n).cloned()
    }

    /// Every session, for the shutdown.
    pub(crate) fn all(&self) -> Vec<Session> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).values().flatten().cloned().collect()
    }
}

/// Sends the outbox's deliver_sm to the clients bound here until `shutdown`.
pub(crate) async fn run(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    node: String,
    receivers: Arc<Receivers>,
    shutdown: CancellationToken,
) {
    let (tx, fed) = mpsc::channel(FEED_ROOM);
    let bound = receivers.clone();
    let feed = SmppFeed { node: node.clone(), lease_ms: LEASE_MS, bound: Arc::new(move |a| bound.has(a)), tx };
    let feeding = match store.feed_smpp_deliveries(feed).await {
        Ok(true) => Some(tokio::spawn(run_fed(store.clone(), clock.clone(), receivers.clone(), fed, shutdown.clone()))),
        Ok(false) => None,
        Err(e) => {
            warn!(error = %e, "the store could not feed deliver_sm; they are claimed");
            None
        }
    };
    let settings = outbox::Settings {
        owner: node,
        lease: Duration::from_millis(LEASE_MS as u64),
        in_flight: IN_FLIGHT,
        idle_poll: IDLE_POLL,
        upkeep_every: EXPIRE_EVERY,
        clock: clock.clone(),
        wake: Some(receivers.bound.clone()),
    };
    outbox::run(Arc::new(Claimed { store, clock, receivers }), settings, shutdown).await;
    if let Some(feeding) = feeding {
        let _ = feeding.await;
    }
}

/// Sends what the store feeds, in rounds, until `shutdown`.
async fn run_fed(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    receivers: Arc<Receivers>,
    mut fed: mpsc::Receiver<DueDelivery>,
    shutdown: CancellationToken,
) {
    let rounds = Arc::new(tokio::sync::Semaphore::new(FEED_ROUNDS));
    let mut under_way = JoinSet::new();
    let stopped = shutdown.cancelled();
    tokio::pin!(stopped);
    loop {
        let mut due = Vec::with_capacity(fed.len().clamp(1, BATCH as usize));
        let n = tokio::select! {
            _ = &mut stopped => break,
            n = fed.recv_many(&mut due, BATCH as usize) => n,
        };
        if n == 0 {
            break;
        }
        // One that waited for half its lease is left to the claim, which takes it when the lease ends; so is one
        // of an account with its share under way.
        let now = clock.now();
        due.retain(|d| now.0 < d.at.0.saturating_add(LEASE_MS / 2));
        let mut by_account: HashMap<AccountId, Vec<DueDelivery>> = HashMap::new();
        for d in due {
            by_account.entry(d.account_id).or_default().push(d);
        }
        // Each account's round waits for its own answers only, then records them in one write.
        for (account, round) in by_account {
            if receivers.busy(account) {
                continue;
            }
            let Ok(permit) = rounds.clone().acquire_owned().await else { break };
            receivers.started(account, round.len());
            let (store, receivers) = (store.clone(), receivers.clone());
            under_way.spawn(async move {
                let n = round.len();
                let sending = join_all(round.into_iter().map(|d| deliver(&receivers, d, now)));
                tokio::pin!(sending);
                let results = tokio::select! {
                    results = &mut sending => results,
                    () = tokio::time::sleep(ROUND_HOLDS_FOR) => {
                        drop(permit);
                        sending.await
                    }
                };
                if let Err(e) = store.finish_smpp_deliveries(&results).await {
                    warn!(error = %e, "recording deliver_sm results failed; they are sent again after their lease");
                }
                receivers.finished(account, n);
            });
        }
        while under_way.try_join_next().is_some() {}
    }
    while under_way.join_next().await.is_some() {}
}

/// Claimed deliver_sm under way at once: several claims' worth, so the next claim goes out while earlier ones
/// wait for their answers and their results' write (on PostgreSQL one batch at a time drained under 10,000 a
/// second, each claim, send and record a round of its own). Order holds: a claimed deliver_sm stays pending until
/// recorded, and a claim takes none with an earlier pending one of its message.
const IN_FLIGHT: usize = 8 * BATCH as usize;

/// The outbox of deliver_sm for the accounts with a receiver bound here, for the engine's outbox runner.
struct Claimed {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    receivers: Arc<Receivers>,
}

#[outbox::async_trait]
impl Outbox for Claimed {
    type Item = DueDelivery;
    type Done = (String, DeliveryNext);

    fn name(&self) -> &'static str {
        "smpp"
    }

    async fn claim(
        &self,
        owner: &str,
        now: Timestamp,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let mut accounts = self.receivers.accounts();
        accounts.retain(|a| !self.receivers.busy(*a));
        if accounts.is_empty() {
            return Ok(Vec::new());
        }
        let claimed = self.store.claim_smpp_deliveries(owner, &accounts, now, lease_ms, limit.min(BATCH)).await?;
        for d in &claimed {
            self.receivers.started(d.account_id, 1);
        }
        Ok(claimed)
    }

    async fn work(&self, d: DueDelivery) -> (String, DeliveryNext) {
        let account = d.account_id;
        let done = deliver(&self.receivers, d, self.clock.now()).await;
        self.receivers.finished(account, 1);
        done
    }

    async fn finish(&self, done: &[(String, DeliveryNext)]) -> Result<(), StoreError> {
        self.store.finish_smpp_deliveries(done).await
    }

    /// Gives up the deliver_sm whose account bound no receiver in time.
    async fn upkeep(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.store.expire_smpp_deliveries(now).await
    }
}

/// Sends one claimed deliver_sm (a long inbound message in parts, one after the other); what became of it.
async fn deliver(receivers: &Receivers, d: DueDelivery, now: Timestamp) -> (String, DeliveryNext) {
    let retry = || match BACKOFF.next(d.attempts + 1, 0.5, now, d.expires_at) {
        Some(at) => DeliveryNext::RetryAt(at),
        None => DeliveryNext::Expired,
    };
    let Some(message) = d.message.as_ref() else {
        // The message is gone (erased): nothing to say about it.
        return (d.id, DeliveryNext::Expired);
    };
    let pdus = if d.kind == "inbound" { inbound_pdus(message) } else { vec![receipt_pdu(&d, message)] };
    let Some(session) = receivers.pick(d.account_id) else { return (d.id.clone(), retry()) };
    for pdu in pdus {
        match session.request(Body::DeliverSm(pdu)).await {
            Ok(r) if r.command_status == CommandStatus::ESME_ROK => {}
            Ok(r) => {
                debug!(id = %d.id, status = ?r.command_status, "the client refused a deliver_sm; tried again later");
                return (d.id.clone(), retry());
            }
            Err(e) => {
                debug!(id = %d.id, error = %e, "a deliver_sm went unanswered; tried again later");
                return (d.id.clone(), retry());
            }
        }
    }
    (d.id, DeliveryNext::Delivered)
}

/// The id the client was given for a message, or for one of its parts when it asked for a receipt per part.
pub fn part_id(id: MessageId, part: u32) -> String {
    if part == 0 { id.to_string() } else { format!("{id}.{part}") }
}

/// A message id the client holds, its part suffix (if any) taken off.
pub fn parse_part_id(id: &str) -> Option<MessageId> {
    let id = id.trim();
    let whole = match id.rsplit_once('.') {
        Some((whole, part)) if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) => whole,
        _ => id,
    };
    MessageId::parse(whole)
}

/// An address as SMPP writes it: an international number without its `+` (TON 1, NPI 1), other digits as they are
/// (TON 0, NPI 1), anything else alphanumeric (TON 5, NPI 0).
fn address(addr: &str) -> (u8, u8, &str) {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match addr.strip_prefix('+') {
        Some(n) if digits(n) => (1, 1, n),
        _ if digits(addr) => (0, 1, addr),
        _ => (5, 0, addr),
    }
}

/// The `message_state` a status reports.
fn state(status: Status) -> MessageState {
    match status {
        Status::Delivered => MessageState::Delivered,
        Status::Undelivered => MessageState::Undeliverable,
        Status::Failed => MessageState::Rejected,
        Status::Expired => MessageState::Expired,
        Status::Canceled => MessageState::Deleted,
        Status::Sent | Status::Sending | Status::Queued | Status::Scheduled => MessageState::Enroute,
        Status::Received => MessageState::Unknown,
    }
}

/// The receipt's `err:`: the error code's last field when it is a number of up to three digits, else `000`.
fn err_digits(code: Option<&str>) -> String {
    let last = code.and_then(|c| c.rsplit([':', ' ']).next()).unwrap_or("");
    if !last.is_empty() && last.len() <= 3 && last.bytes().all(|b| b.is_ascii_digit()) {
        format!("{last:0>3}")
    } else {
        "000".into()
    }
}

/// The deliver_sm of a receipt: the Appendix B text, `receipted_message_id` and `message_state`, from the handset
/// to the sender, as SMSCs write them.
pub fn receipt_pdu(d: &DueDelivery, m: &DeliveryMessage) -> SubmitSm {
    let id = part_id(m.id, d.part);
    let stat = state(d.status);
    let date = |t: Timestamp| ReceiptDate::from_unix(t.0.div_euclid(1000));
    // The text's first characters, in what every client reads (the receipt goes as data_coding 0).
    let text: String =
        m.body.chars().take(20).map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect();
    let body = Receipt {
        id: id.clone(),
        sub: 1,
        dlvrd: u32::from(d.status == Status::Delivered),
        submit_date: date(m.created_at),
        done_date: date(d.at),
        err: err_digits(d.error_code.as_deref()),
        text,
        stat: stat.clone(),
    }
    .format();
    let mut tlvs = vec![Tlv::ReceiptedMessageId(id.as_str().into())];
    if let Some(v) = stat.to_tlv() {
        tlvs.push(Tlv::MessageState(v));
    }
    let (source_ton, source_npi, source) = address(&m.to);
    let (dest_ton, dest_npi, dest) = address(&m.from);
    SubmitSm {
        source_addr_ton: source_ton,
        source_addr_npi: source_npi,
        source_addr: source.into(),
        dest_addr_ton: dest_ton,
        dest_addr_npi: dest_npi,
        destination_addr: dest.into(),
        // SMSC delivery receipt for a final state, intermediate delivery notification otherwise.
        esm_class: if stat.is_final() { 0x04 } else { 0x20 },
        short_message: ShortMessage::new(body.into_bytes()),
        tlvs: Tlvs(tlvs),
        ..Default::default()
    }
}

/// The deliver_sm of an inbound message: one, or a part each with a concatenation UDH, from the handset to the
/// number it wrote to; GSM 7-bit (unpacked) where the text allows it, else UCS-2.
pub fn inbound_pdus(m: &DeliveryMessage) -> Vec<SubmitSm> {
    // The concatenation reference: a byte of the message's id, so parts of two messages rarely share one.
    let reference = m.id.to_string().bytes().fold(0u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
    let options = sms_text::Options { reference: sms_text::Reference::Eight(reference), ..Default::default() };
    let (source_ton, source_npi, source) = address(&m.from);
    let (dest_ton, dest_npi, dest) = address(&m.to);
    let pdu = |data_coding, udh: bool, octets: Vec<u8>| SubmitSm {
        source_addr_ton: source_ton,
        source_addr_npi: source_npi,
        source_addr: source.into(),
        dest_addr_ton: dest_ton,
        dest_addr_npi: dest_npi,
        destination_addr: dest.into(),
        esm_class: if udh { 0x40 } else { 0 },
        data_coding,
        short_message: ShortMessage::new(octets),
        ..Default::default()
    };
    match sms_text::plan(&m.body, &options) {
        Ok(plan) => plan
            .segments
            .iter()
            .map(|s| pdu(plan.encoding.data_coding(), !s.udh.is_empty(), s.short_message()))
            .collect(),
        // Longer than any concatenated SMS: whole, as UCS-2 in message_payload.
        Err(_) => {
            let octets: Vec<u8> = m.body.encode_utf16().flat_map(u16::to_be_bytes).collect();
            let mut whole = pdu(0x08, false, Vec::new());
            whole.tlvs = Tlvs(vec![Tlv::MessagePayload(smpp::tlv::Bounded(smpp::Octets(octets)))]);
            vec![whole]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_ids_read_back() {
        let id = MessageId::generate();
        assert_eq!(parse_part_id(&part_id(id, 0)), Some(id));
        assert_eq!(parse_part_id(&part_id(id, 3)), Some(id));
        assert_eq!(parse_part_id(&format!(" {id}.12 ")), Some(id));
        assert_eq!(parse_part_id("nonsense.1"), None);
        assert_eq!(parse_part_id(&format!("{id}.x")), None);
    }

    #[test]
    fn receipt_err_fields() {
        assert_eq!(err_digits(None), "000");
        assert_eq!(err_digits(Some("sim:1")), "001");
        assert_eq!(err_digits(Some("carrier:0x0000000b")), "000");
        assert_eq!(err_digits(Some("carrier:1234")), "000");
    }

    #[test]
    fn addresses() {
        assert_eq!(address("+447700900123"), (1, 1, "447700900123"));
        assert_eq!(address("12345"), (0, 1, "12345"));
        assert_eq!(address("Acme"), (5, 0, "Acme"));
        assert_eq!(address("+"), (5, 0, "+"));
    }
}
