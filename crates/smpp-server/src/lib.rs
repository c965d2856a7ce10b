//! smsgate's SMPP 3.4 server for client applications (issue 5, first part): binds are checked against the
//! account's SMPP credentials (`smpp_credentials`: unknown `system_id` → `ESME_RINVSYSID`, wrong password →
//! `ESME_RINVPASWD`, an address outside the allowed ranges or a bind over `max_binds` → `ESME_RBINDFAIL`), and each
//! `submit_sm` goes through the same [`Ingress`] as REST: admitted, committed, and only then answered with
//! `submit_sm_resp`, whose `message_id` is the message's id. `query_sm` reads the account's messages.
//!
//! A long text may come as one `submit_sm` with `message_payload`, or in parts marked by a UDH or SAR TLVs: the
//! parts' responses wait until the last part has come and the whole message is stored, and all carry its one id
//! (a set not whole within [`PARTS_WAIT`], or [`SmppServer::parts_wait`], is refused, every part
//! `ESME_RSUBMITFAIL`, and nothing is stored).
//!
//! Not yet: `data_sm`, `submit_multi`, `cancel_sm`, `replace_sm`, receipts and inbound messages as `deliver_sm`,
//! per-credential throughput, TLS.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use smpp::pdu::{Bind, QuerySmResp, SubmitSm, SubmitSmResp};
use smpp::{Body, CommandStatus, Pdu};
use smpp_session::{BindKind, Binder, Handler, Session};
use sms_text::reassembly::{ExpiryPolicy, Pushed, Reassembler};
use sms_text::udh::Concat;
use smsgate_core::access::{IpRanges, verify_password};
use smsgate_core::admission::{ErrorCode, Request};
use smsgate_core::{AccountId, MessageId, Status};
use smsgate_engine::ingress::Ingress;
use smsgate_engine::timestamp_now;
use smsgate_store::{Inserted, Store};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The `system_id` the server answers binds with.
pub const SYSTEM_ID: &str = "smsgate";

/// How long the parts of a concatenated submit wait for the rest of their set, unless set otherwise.
pub const PARTS_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// A part's text and where its submit's answer goes.
type Part = (String, tokio::sync::oneshot::Sender<Result<String, CommandStatus>>);

/// Parts of concatenated submits by account, source and destination.
type Parts = Reassembler<(AccountId, String, String), Part>;

/// The SMPP server. Clones share it.
#[derive(Debug, Clone)]
pub struct SmppServer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    ingress: Ingress,
    config: smpp_session::Config,
    /// Binds open now, by `system_id`.
    binds: Mutex<HashMap<String, u32>>,
    /// Parts of concatenated submits until their sets are whole.
    parts: Mutex<Parts>,
    parts_wait: std::time::Duration,
}

impl SmppServer {
    pub fn new(store: Arc<dyn Store>, ingress: Ingress, config: smpp_session::Config) -> SmppServer {
        SmppServer::parts_wait(store, ingress, config, PARTS_WAIT)
    }

    /// A server whose concatenated submits wait `wait` for the rest of their set.
    pub fn parts_wait(
        store: Arc<dyn Store>,
        ingress: Ingress,
        config: smpp_session::Config,
        wait: std::time::Duration,
    ) -> SmppServer {
        let parts = Reassembler::new(sms_text::reassembly::Config {
            timeout: wait,
            policy: ExpiryPolicy::Drop,
            ..Default::default()
        });
        let parts = Mutex::new(parts);
        let binds = Mutex::new(HashMap::new());
        SmppServer { inner: Arc::new(Inner { store, ingress, config, binds, parts, parts_wait: wait }) }
    }

    /// Binds open now with `system_id`.
    pub fn binds(&self, system_id: &str) -> u32 {
        self.inner.binds.lock().unwrap_or_else(|e| e.into_inner()).get(system_id).copied().unwrap_or(0)
    }

    /// Takes connections until `shutdown`, then unbinds its sessions.
    pub async fn serve(&self, listener: TcpListener, shutdown: CancellationToken) {
        let binder: Arc<dyn Binder> = Arc::new(CredentialBinder { inner: self.inner.clone() });
        let stop = shutdown.clone();
        let bound = move |session: Session| {
            let stop = stop.clone();
            async move {
                info!(system_id = session.system_id(), bind = session.kind().as_str(), peer = ?session.peer(), "SMPP bind");
                tokio::select! {
                    _ = session.closed() => {}
                    _ = stop.cancelled() => session.unbind().await,
                }
            }
        };
        smpp_session::listen(listener, shutdown, SYSTEM_ID, self.inner.config.clone(), binder, bound).await;
    }
}

struct CredentialBinder {
    inner: Arc<Inner>,
}

#[async_trait]
impl Binder for CredentialBinder {
    async fn bind(
        &self,
        kind: BindKind,
        bind: &Bind,
        peer: Option<SocketAddr>,
    ) -> Result<Arc<dyn Handler>, CommandStatus> {
        let system_id = bind.system_id.to_str_lossy().into_owned();
        let credential = match self.inner.store.smpp_credential(&system_id).await {
            Ok(Some(c)) => c,
            Ok(None) => return Err(CommandStatus::ESME_RINVSYSID),
            Err(e) => {
                warn!(error = %e, "reading SMPP credentials failed");
                return Err(CommandStatus::ESME_RSYSERR);
            }
        };
        // Argon2 takes its time on purpose: off the async workers.
        let (password, hash) = (bind.password.to_str_lossy().into_owned(), credential.password_hash.clone());
        let good = tokio::task::spawn_blocking(move || verify_password(&password, &hash)).await.unwrap_or(false);
        if !good {
            return Err(CommandStatus::ESME_RINVPASWD);
        }
        if let Some(ranges) = &credential.allowed_ips {
            let allowed = IpRanges::parse(ranges).is_ok_and(|r| peer.is_some_and(|p| r.contains(p.ip())));
            if !allowed {
                info!(%system_id, ?peer, "SMPP bind from an address outside the allowed ranges");
                return Err(CommandStatus::ESME_RBINDFAIL);
            }
        }
        let slot = BindSlot::take(&self.inner, &system_id, credential.max_binds)?;
        Ok(Arc::new(Client { inner: self.inner.clone(), account: credential.account_id, kind, _slot: slot }))
    }
}

/// A place among a credential's binds, given back when the session (its handler) goes.
struct BindSlot {
    inner: Arc<Inner>,
    system_id: String,
}

impl BindSlot {
    fn take(inner: &Arc<Inner>, system_id: &str, max: Option<u32>) -> Result<BindSlot, CommandStatus> {
        let mut binds = inner.binds.lock().unwrap_or_else(|e| e.into_inner());
        let n = binds.entry(system_id.to_string()).or_default();
        if max.is_some_and(|m| *n >= m) {
            return Err(CommandStatus::ESME_RBINDFAIL);
        }
        *n += 1;
        Ok(BindSlot { inner: inner.clone(), system_id: system_id.to_string() })
    }
}

impl Drop for BindSlot {
    fn drop(&mut self) {
        let mut binds = self.inner.binds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = binds.get_mut(&self.system_id) {
            *n = n.saturating_sub(1);
        }
    }
}

/// One bound client's requests.
struct Client {
    inner: Arc<Inner>,
    account: AccountId,
    kind: BindKind,
    _slot: BindSlot,
}

/// The `command_status` for an admission refusal.
fn refused(code: ErrorCode) -> CommandStatus {
    match code {
        ErrorCode::InvalidDestination => CommandStatus::ESME_RINVDSTADR,
        ErrorCode::InvalidSender => CommandStatus::ESME_RINVSRCADR,
        ErrorCode::EmptyBody | ErrorCode::BodyTooLong => CommandStatus::ESME_RINVMSGLEN,
        ErrorCode::InvalidSendAt => CommandStatus::ESME_RINVSCHED,
        ErrorCode::InvalidValidity => CommandStatus::ESME_RINVEXPIRY,
        ErrorCode::InvalidCallbackUrl | ErrorCode::InvalidReference => CommandStatus::ESME_RSUBMITFAIL,
    }
}

/// An SMPP address as admission takes it: a number of TON 1 (international) gets its `+`; so does one of TON 0
/// (unknown) when the server reads no national numbers (no default region), as clients often send international
/// numbers with TON 0.
fn address(ton: u8, addr: &[u8], national_region: bool) -> String {
    let s = String::from_utf8_lossy(addr).into_owned();
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if digits && (ton == 1 || (ton == 0 && !national_region)) { format!("+{s}") } else { s }
}

impl Client {
    async fn submit(&self, s: &SubmitSm) -> Result<String, CommandStatus> {
        if !self.kind.can_submit() {
            return Err(CommandStatus::ESME_RINVBNDSTS);
        }
        let udhi = s.esm_class & 0x40 != 0;
        let payload = s.tlvs.0.iter().find_map(|t| match t {
            smpp::Tlv::MessagePayload(p) => Some(p.0.0.as_slice()),
            _ => None,
        });
        let octets = payload.unwrap_or(s.short_message.as_bytes());
        let decoded = sms_text::decode::decode_short_message(s.data_coding, udhi, octets)
            .map_err(|_| CommandStatus::ESME_RINVESMCLASS)?;
        // Binary data codings carry no text to admit.
        let Some(text) = decoded.text else { return Err(CommandStatus::ESME_RSUBMITFAIL) };
        let national = self.inner.ingress.policy().default_region.is_some();
        let to = address(s.dest_addr_ton, s.destination_addr.as_bytes(), national);
        let from = address(s.source_addr_ton, s.source_addr.as_bytes(), national);
        let concat = decoded
            .udh
            .as_ref()
            .and_then(|u| u.concat())
            .or_else(|| s.tlvs.sar().map(|(reference, total, seq)| Concat { reference, wide: true, total, seq }));
        match concat.filter(|c| c.total > 1) {
            None => self.store(to, from, text).await,
            Some(c) => self.part(to, from, text, c).await,
        }
    }

    /// Admits and stores one whole text; its id.
    async fn store(&self, to: String, from: String, body: String) -> Result<String, CommandStatus> {
        let request =
            Request { to, from, body, send_at: None, validity_secs: None, callback_url: None, reference: None };
        let now = timestamp_now();
        let prepared = self.inner.ingress.prepare(self.account, &request, now).map_err(|r| refused(r.code))?;
        match self.inner.ingress.submit(prepared, None, now).await {
            Ok((Inserted::New, m)) => Ok(m.id.to_string()),
            Ok((Inserted::Duplicate { id, .. }, _)) => Ok(id.to_string()),
            Err(e) => {
                warn!(error = %e, "storing an SMPP submit failed");
                Err(CommandStatus::ESME_RSYSERR)
            }
        }
    }

    /// One part of a concatenated text: held until its set is whole; then the whole text is stored and every part
    /// answered with its id.
    async fn part(&self, to: String, from: String, text: String, c: Concat) -> Result<String, CommandStatus> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let now = std::time::Instant::now();
        let pushed = {
            let mut parts = self.inner.parts.lock().unwrap_or_else(|e| e.into_inner());
            // Sets past their time are dropped; their parts' waiters hear it.
            drop(parts.expire(now));
            parts.push((self.account, to.clone(), from.clone()), c, (text.clone(), tx), now).0
        };
        match pushed {
            Pushed::Complete(set) => {
                let body: String = set.iter().map(|(t, _)| t.as_str()).collect();
                let stored = self.store(to, from, body).await;
                for (_, waiter) in set {
                    let _ = waiter.send(stored.clone());
                }
            }
            Pushed::Pending => {}
            // The same part again (a client's retry): the first one is answered when the set is.
            Pushed::Duplicate => return Err(CommandStatus::ESME_RSUBMITFAIL),
            // Numbers that make no sense: the part as a message of its own.
            Pushed::Invalid => return self.store(to, from, text).await,
        }
        match tokio::time::timeout(self.inner.parts_wait, rx).await {
            Ok(Ok(result)) => result,
            _ => Err(CommandStatus::ESME_RSUBMITFAIL),
        }
    }

    async fn query(&self, id: &[u8]) -> Result<QuerySmResp, CommandStatus> {
        let text = String::from_utf8_lossy(id);
        let id = MessageId::parse(text.trim()).ok_or(CommandStatus::ESME_RINVMSGID)?;
        let m = match self.inner.store.message(self.account, id).await {
            Ok(Some(m)) => m,
            Ok(None) => return Err(CommandStatus::ESME_RINVMSGID),
            Err(_) => return Err(CommandStatus::ESME_RSYSERR),
        };
        // message_state values of SMPP 3.4 5.2.28.
        let state = match m.status {
            Status::Scheduled | Status::Queued | Status::Sending | Status::Sent => 1,
            Status::Delivered => 2,
            Status::Expired => 3,
            Status::Canceled => 4,
            Status::Undelivered | Status::Failed => 5,
            _ => 7,
        };
        let final_date = if m.status.is_final() {
            smpp::time::AbsoluteTime::from_unix(m.updated_at.0.div_euclid(1000))
                .and_then(|t| {
                    let (y, mo, d, h, mi, s) = (t.year % 100, t.month, t.day, t.hour, t.minute, t.second);
                    smpp::TimeString::new(&format!("{y:02}{mo:02}{d:02}{h:02}{mi:02}{s:02}000+"))
                })
                .unwrap_or_default()
        } else {
            smpp::TimeString::default()
        };
        Ok(QuerySmResp { message_id: text.trim().into(), final_date, message_state: state, error_code: 0 })
    }
}

#[async_trait]
impl Handler for Client {
    async fn request(&self, request: Pdu) -> (CommandStatus, Body) {
        match request.body {
            Body::SubmitSm(s) => match self.submit(&s).await {
                Ok(id) => (
                    CommandStatus::ESME_ROK,
                    Body::SubmitSmResp(SubmitSmResp { message_id: id.as_str().into(), ..Default::default() }),
                ),
                Err(status) => (status, Body::SubmitSmResp(SubmitSmResp::default())),
            },
            Body::QuerySm(q) => match self.query(q.message_id.as_bytes()).await {
                Ok(r) => (CommandStatus::ESME_ROK, Body::QuerySmResp(r)),
                Err(status) => (status, Body::QuerySmResp(Default::default())),
            },
            Body::DeliverSmResp(_) => (CommandStatus::ESME_ROK, Body::GenericNack),
            _ => (CommandStatus::ESME_RINVCMDID, Body::GenericNack),
        }
    }
}
