//! Webhooks: the deliverer that takes callbacks from the store's outbox and POSTs them, signed, to the senders'
//! systems ([`Deliverer`]), and the routes that set them up (`PUT`/`GET /v1/webhooks`,
//! `POST /v1/webhooks/rotate-secret`, `GET /v1/messages/{id}/callbacks`).
//!
//! Each POST carries `Smsgate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`. A callback
//! that fails (not 2xx, a timeout, a refused connection) is tried again with exponential backoff and jitter for
//! up to [`GIVE_UP_AFTER`]; callbacks of one message go out one at a time, in order (the store hands out only
//! the oldest pending one of each message).
//!
//! Requests go only where [`Destinations`] allows: every address a name resolves to is checked before it is
//! connected to (so DNS rebinding gets nowhere), a literal address in the URL before anything is sent; no proxy
//! and no redirect is followed. A tenant sees an attempt's outcome as a class (`http_2xx`, `http_4xx`, `timeout`,
//! `refused`, `blocked`, ...), never a connection error's text: a webhook is not a port scanner.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use hmac::{KeyInit, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use smsgate_core::clock::Clock;
use smsgate_core::netguard::Destinations;
use smsgate_core::{MessageId, Timestamp};
use smsgate_engine::outbox::{self, Backoff, Outbox};
use smsgate_store::{CallbackAttempt, CallbackNext, CallbackResult, DueCallback, Store, StoreError, Webhooks};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::json::{message_view, time_json};
use crate::views::ErrorView;
use crate::{AppState, Caller};

/// How long a callback is tried before it is given up.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The longest wait between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// How long a receiver has to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Callbacks under way at once.
const IN_FLIGHT: usize = 128;

/// The most of one account's callbacks a claim takes; an account with this many under way is left out of the next
/// claims until some finish. So one account's backlog (or a receiver that never answers) holds at most a share of
/// the slots, and another account's callbacks are claimed at once.
pub const PER_ACCOUNT: u32 = 32;

/// How often the outbox is looked at when it had nothing due.
const POLL: Duration = Duration::from_millis(100);

/// The signature header.
pub const SIGNATURE_HEADER: &str = "Smsgate-Signature";

/// Metric names.
pub mod metric {
    /// Delivery attempts by result: `delivered`, `retry`, `gave_up`.
    pub const DELIVERIES: &str = "smsgate_webhook_deliveries_total";
    /// Callbacks waiting to be delivered (a gauge, set when `/metrics` is read).
    pub const OUTBOX: &str = "smsgate_webhook_outbox";
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &str, unix_seconds: i64, body: &str) -> String {
    signatures(&[secret], unix_seconds, body)
}

/// `t=<unix seconds>,v1=<signature with the first secret>,v1=<with the second>...`: while a rotated secret's
/// grace period lasts, callbacks carry a signature with each, and a receiver accepts any that it can verify.
pub fn signatures(secrets: &[&str], unix_seconds: i64, body: &str) -> String {
    let mut header = format!("t={unix_seconds}");
    for secret in secrets {
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
        mac.update(unix_seconds.to_string().as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        header.push_str(&format!(",v1={}", hex::encode(mac.finalize().into_bytes())));
    }
    header
}

pub use smsgate_services::admin::new_secret;

/// The wait before the next try: doubling from a second, up to an hour, with a fifth of jitter either way.
const BACKOFF: Backoff = Backoff { first: Duration::from_secs(1), max: MAX_BACKOFF, spread: 0.2 };

/// Makes TLS available to every HTTP client of this process (webhooks to `https://` URLs; the CLI's client):
/// rustls with ring's cryptography. Once per process; later calls do nothing. Call it before building a
/// `reqwest::Client`, which refuses to be built without it.
pub fn install_tls() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Another part of the process may have installed one first; that one serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The client callbacks go out with: no redirects or proxies followed, a timeout, http and https, and names
/// resolved only to addresses `destinations` allows.
fn client(destinations: &Destinations) -> reqwest::Client {
    install_tls();
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver { destinations: destinations.clone() }))
        .user_agent(concat!("smsgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// Resolves with the system's resolver, then keeps only the addresses requests may go to; none left is an error,
/// and the connection is never tried.
#[derive(Debug)]
struct GuardedResolver {
    destinations: Destinations,
}

/// A name that resolved only to addresses requests may not go to.
#[derive(Debug, thiserror::Error)]
#[error("{0} resolves only to addresses webhooks may not reach")]
struct Blocked(String);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let destinations = self.destinations.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<std::net::SocketAddr> =
                found.into_iter().filter(|a| destinations.allows(a.ip())).collect();
            if allowed.is_empty() {
                return Err(Box::new(Blocked(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether an error (or what caused it) is the resolver's refusal.
fn blocked(e: &reqwest::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<Blocked>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// What a tenant is shown of an answer: its class.
fn http_class(status: u16) -> &'static str {
    match status {
        200..=299 => "http_2xx",
        300..=399 => "http_3xx",
        400..=499 => "http_4xx",
        500..=599 => "http_5xx",
        _ => "http_other",
    }
}

/// A callback's JSON body, in the order its fields are written.
#[derive(serde::Serialize)]
struct CallbackBody<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    message_id: String,
    status: &'static str,
    error_code: Option<&'a str>,
    at: Value,
    message: crate::views::MessageView,
}

/// Receivers' URLs, parsed once each (parsing one is a good part of a POST's cost); at most this many are kept.
const URLS_KEPT: usize = 1024;

/// Takes due callbacks from the outbox and delivers them.
#[derive(Debug, Clone)]
pub struct Deliverer {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    client: reqwest::Client,
    destinations: Destinations,
    node: String,
    urls: Arc<std::sync::Mutex<std::collections::HashMap<String, reqwest::Url>>>,
    /// Callbacks under way, by account.
    under_way: Arc<std::sync::Mutex<std::collections::HashMap<smsgate_core::AccountId, u32>>>,
}

impl Deliverer {
    /// A deliverer for this `node`, deciding by `clock` (the engine's), sending only where `destinations` allows.
    pub fn new(store: Arc<dyn Store>, node: &str, clock: Arc<dyn Clock>, destinations: Destinations) -> Deliverer {
        let client = client(&destinations);
        Deliverer {
            store,
            clock,
            client,
            destinations,
            node: node.to_string(),
            urls: Arc::default(),
            under_way: Arc::default(),
        }
    }

    /// `url` parsed, from the ones kept when it was seen before.
    fn url(&self, url: &str) -> Result<reqwest::Url, url::ParseError> {
        let mut urls = self.urls.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(u) = urls.get(url) {
            return Ok(u.clone());
        }
        let parsed = reqwest::Url::parse(url)?;
        if urls.len() >= URLS_KEPT {
            urls.clear();
        }
        urls.insert(url.to_string(), parsed.clone());
        Ok(parsed)
    }

    /// Delivers until `shutdown`, then lets the deliveries under way finish (the engine's outbox runner).
    pub async fn run(self, shutdown: CancellationToken) {
        let settings = outbox::Settings {
            owner: self.node.clone(),
            lease: TIMEOUT * 3,
            in_flight: IN_FLIGHT,
            idle_poll: POLL,
            upkeep_every: Duration::MAX,
            clock: self.clock.clone(),
            wake: None,
        };
        outbox::run(Arc::new(self), settings, shutdown).await;
    }

    /// One POST; what became of it.
    async fn deliver(&self, c: DueCallback) -> CallbackResult {
        let body = match (&c.payload, c.message.as_ref()) {
            // An automation's webhook step: its body was made when the step was taken.
            (Some(payload), _) => payload.clone(),
            (None, Some(message)) => {
                let body = CallbackBody {
                    id: &c.id,
                    kind: if c.kind == "inbound" { "message.inbound" } else { "message.status" },
                    message_id: c.message_id.to_string(),
                    status: c.status.as_str(),
                    error_code: c.error_code.as_deref(),
                    at: time_json(c.at),
                    message: message_view(message, None),
                };
                serde_json::to_string(&body).unwrap_or_default()
            }
            // The store reads the message with the claim; one that is gone (erased) has nothing left to report.
            (None, None) => {
                let attempt = CallbackAttempt { at: self.clock.now(), result: "message gone".into(), ms: 0 };
                return CallbackResult { id: c.id, attempt, next: CallbackNext::GiveUp };
            }
        };
        let now = self.clock.now();
        let started = Instant::now();
        let url = match self.url(&c.url) {
            Ok(url) => url,
            Err(_) => {
                // Stored URLs were checked when set; one that no longer parses will never be deliverable.
                let attempt = CallbackAttempt { at: now, result: "bad_url".into(), ms: 0 };
                return CallbackResult { id: c.id, attempt, next: CallbackNext::GiveUp };
            }
        };
        // A literal address is connected to without the resolver: checked here. (A URL set before the rule, or
        // while the operator allowed a range since taken back.)
        if self.destinations.check_parsed(&url).is_err() {
            metrics::counter!(metric::DELIVERIES, "result" => "gave_up").increment(1);
            let attempt = CallbackAttempt { at: now, result: "blocked".into(), ms: 0 };
            return CallbackResult { id: c.id, attempt, next: CallbackNext::GiveUp };
        }
        // Never signed with an empty secret: an account that has none yet (made by an older version on another
        // node) gets one now.
        let secret = match c.secret.as_str() {
            "" => match self.store.ensure_webhook_secret(c.account_id, &new_secret(), now).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "giving an account its webhook secret failed");
                    let attempt = CallbackAttempt { at: now, result: "error".into(), ms: 0 };
                    let next = CallbackNext::RetryAt(now.plus_millis(1000));
                    return CallbackResult { id: c.id, attempt, next };
                }
            },
            s => s.to_string(),
        };
        let mut secrets = vec![secret.as_str()];
        secrets.extend(c.previous_secret.as_deref());
        let sent = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signatures(&secrets, now.0.div_euclid(1000), &body))
            .body(body)
            .send()
            .await;
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (ok, result) = match sent {
            Ok(r) => (r.status().is_success(), http_class(r.status().as_u16())),
            Err(e) if blocked(&e) => (false, "blocked"),
            Err(e) if e.is_timeout() => (false, "timeout"),
            Err(e) if e.is_connect() => (false, "refused"),
            Err(e) => {
                tracing::debug!(callback = %c.id, error = %e, "a webhook request failed");
                (false, "error")
            }
        };
        let result = result.to_string();
        let give_up_at = c.created_at.plus_millis(i64::try_from(GIVE_UP_AFTER.as_millis()).unwrap_or(i64::MAX));
        let next = match (ok, BACKOFF.next(c.attempts + 1, outbox::jitter(), now, give_up_at)) {
            (true, _) => CallbackNext::Delivered,
            (false, Some(at)) => CallbackNext::RetryAt(at),
            (false, None) => CallbackNext::GiveUp,
        };
        let outcome = match next {
            CallbackNext::Delivered => "delivered",
            CallbackNext::RetryAt(_) => "retry",
            CallbackNext::GiveUp => "gave_up",
        };
        metrics::counter!(metric::DELIVERIES, "result" => outcome).increment(1);
        CallbackResult { id: c.id, attempt: CallbackAttempt { at: now, result, ms }, next }
    }
}

#[outbox::async_trait]
impl Outbox for Deliverer {
    type Item = DueCallback;
    type Done = CallbackResult;

    fn name(&self) -> &'static str {
        "webhooks"
    }

    async fn claim(
        &self,
        owner: &str,
        now: Timestamp,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<DueCallback>, StoreError> {
        // Accounts with a claim's worth under way sit this claim out (so none goes past twice that).
        let skip = {
            let under_way = self.under_way.lock().unwrap_or_else(|e| e.into_inner());
            under_way.iter().filter(|(_, n)| **n >= PER_ACCOUNT).map(|(a, _)| *a).collect()
        };
        let share = smsgate_store::Share { per_account: PER_ACCOUNT, skip };
        let claimed = self.store.claim_callbacks_fairly(owner, now, lease_ms, limit, &share).await?;
        let mut under_way = self.under_way.lock().unwrap_or_else(|e| e.into_inner());
        for c in &claimed {
            *under_way.entry(c.account_id).or_default() += 1;
        }
        Ok(claimed)
    }

    async fn work(&self, c: DueCallback) -> CallbackResult {
        let account = c.account_id;
        let done = self.deliver(c).await;
        let mut under_way = self.under_way.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = under_way.get_mut(&account) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                under_way.remove(&account);
            }
        }
        done
    }

    /// A message's next callback is claimable only after its previous one is recorded.
    async fn finish(&self, done: &[CallbackResult]) -> Result<(), StoreError> {
        self.store.finish_callbacks(done).await
    }
}

/// `PUT /v1/webhooks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhooksBody {
    /// Where status callbacks go (unless a message names its own `callback_url`); absent or null: none.
    status_url: Option<String>,
    /// Where inbound messages go; absent or null: none.
    inbound_url: Option<String>,
}

fn webhooks_view(w: &Webhooks) -> Value {
    json!({
        "status_url": w.status_url,
        "inbound_url": w.inbound_url,
        "secret": w.secret,
        "previous_secret_valid_until": w.previous_secret.as_ref().map(|(_, until)| time_json(*until)),
        "updated_at": time_json(w.updated_at),
    })
}

/// Set the account's webhook URLs; the first time also makes its signing secret.
#[utoipa::path(put, path = "/v1/webhooks", request_body = WebhooksBody,
    responses((status = OK, body = Object), (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn put_webhooks(
    State(state): State<AppState>,
    Caller(caller): Caller,
    crate::json::JsonBody { value: body, .. }: crate::json::JsonBody<WebhooksBody>,
) -> Result<impl IntoResponse, ApiError> {
    let w = state.admin.put_webhooks(caller.id, body.status_url, body.inbound_url).await?;
    Ok(Json(webhooks_view(&w)))
}

/// The account's webhook URLs (null when not set) and signing secret (every account has one from its creation).
#[utoipa::path(get, path = "/v1/webhooks", responses((status = OK, body = Object)))]
pub(crate) async fn get_webhooks(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<impl IntoResponse, ApiError> {
    let w = state.admin.webhooks(caller.id).await?;
    Ok(Json(webhooks_view(&w)))
}

/// Replace the signing secret: callbacks carry a signature with the new one, and for 24 hours one with the old
/// one as well (`previous_secret_valid_until`).
#[utoipa::path(post, path = "/v1/webhooks/rotate-secret", responses((status = OK, body = Object)))]
pub(crate) async fn rotate_secret(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<impl IntoResponse, ApiError> {
    let w = state.admin.rotate_webhook_secret(caller.id).await?;
    Ok(Json(webhooks_view(&w)))
}

/// A callback as the API shows it, with its attempts.
fn callback_json(c: &smsgate_store::CallbackRecord) -> Value {
    let attempts: Vec<Value> =
        c.attempts.iter().map(|a| json!({"at": time_json(a.at), "result": a.result, "ms": a.ms})).collect();
    json!({"id": c.id, "message_id": c.message_id, "kind": c.kind, "url": c.url, "status": c.status.as_str(),
           "error_code": c.error_code, "at": time_json(c.at), "state": c.state, "attempts": attempts,
           "next_attempt_at": c.next_attempt_at.map(time_json)})
}

/// Query of `GET /v1/webhooks/deliveries`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeliveriesQuery {
    /// 1 to 200; 50 when not given.
    limit: Option<u32>,
}

/// The account's newest webhook callbacks, newest first, each with its delivery attempts and their results
/// (looked for among the server's newest 20,000 callbacks).
#[utoipa::path(get, path = "/v1/webhooks/deliveries", params(DeliveriesQuery),
    responses((status = OK, body = Object), (status = UNPROCESSABLE_ENTITY, body = ErrorView)))]
pub(crate) async fn recent_deliveries(
    State(state): State<AppState>,
    Caller(caller): Caller,
    query: Result<axum::extract::Query<DeliveriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let axum::extract::Query(q) = query.map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::invalid("invalid_limit", "limit must be 1 to 200"));
    }
    let all = state.messages.recent_callbacks(caller.id, limit).await?;
    Ok(Json(json!({"data": all.iter().map(callback_json).collect::<Vec<_>>()})))
}

/// A message's callbacks, oldest first, with every delivery attempt and its result.
#[utoipa::path(get, path = "/v1/messages/{id}/callbacks", params(("id" = String, Path)),
    responses((status = OK, body = Object), (status = NOT_FOUND, body = ErrorView)))]
pub(crate) async fn list_callbacks(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such message");
    let id = MessageId::parse(&id).ok_or_else(not_found)?;
    let all = state.messages.callbacks(caller.id, id).await?;
    Ok(Json(json!({"data": all.iter().map(callback_json).collect::<Vec<_>>()})))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An https URL is tried like an http one: the connection is what fails here (nothing listens), not the scheme.
    #[tokio::test]
    async fn https_urls_are_tried() {
        let e = client(&Destinations::default()).post("https://127.0.0.1:1/hook").body("{}").send().await.unwrap_err();
        assert!(e.is_connect(), "{e:?}");
    }

    /// A name that resolves only to addresses not allowed is refused before any connection; allowed, it resolves.
    #[tokio::test]
    async fn names_resolve_only_to_allowed_addresses() {
        use reqwest::dns::Resolve;
        use std::str::FromStr;
        let strict = GuardedResolver { destinations: Destinations::default() };
        let e = strict.resolve(reqwest::dns::Name::from_str("localhost").unwrap()).await.err().expect("refused");
        assert!(e.is::<Blocked>(), "{e:?}");
        let ranges = smsgate_core::access::IpRanges::parse(&["127.0.0.0/8", "::1/128"]).unwrap();
        let local = GuardedResolver { destinations: Destinations::new(ranges) };
        let found: Vec<_> = local.resolve(reqwest::dns::Name::from_str("localhost").unwrap()).await.unwrap().collect();
        assert!(!found.is_empty() && found.iter().all(|a| a.ip().is_loopback()), "{found:?}");
        // Through the client: the refusal is told apart from a refused connection.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let e = client(&Destinations::default())
            .post(format!("http://localhost:{port}/hook"))
            .body("{}")
            .send()
            .await
            .unwrap_err();
        assert!(blocked(&e), "{e:?}");
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "nothing connected to the private address");
    }

    #[test]
    fn signatures_and_backoff() {
        // HMAC-SHA256 of "1700000000.{}" under "whsec_test", computed independently (Python's hmac module).
        assert_eq!(
            signature("whsec_test", 1_700_000_000, "{}"),
            "t=1700000000,v1=35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91"
        );
        // After the first failed try, a second; after the fourth, eight.
        assert_eq!(BACKOFF.wait(1, 0.5), Duration::from_secs(1));
        assert_eq!(BACKOFF.wait(4, 0.5), Duration::from_secs(8));
        assert_eq!(BACKOFF.wait(31, 0.5), MAX_BACKOFF);
        assert!(
            BACKOFF.wait(5, 0.0) >= Duration::from_millis(12_800)
                && BACKOFF.wait(5, 1.0) <= Duration::from_millis(19_200)
        );
    }
}
