//! Webhooks: each account's URLs and signing secret ([`WebhookStore`], cold-path SQL written once), and the
//! outbox of callbacks to deliver ([`CallbackOutbox`]: its claim and its bookkeeping are tuned per database, the
//! listing and the count are written once). A callback is written in the transaction of the status change it
//! reports, by the store that records the change ([`crate::effects`] says which and where).

use async_trait::async_trait;
use smsgate_core::{AccountId, Message, MessageId, Status, Timestamp};

use crate::Result;
use crate::schema::{corrupt, parse_attempts};
use crate::seal;
use crate::sql::{Database, Row, values};

/// An account's webhooks: where status and inbound callbacks go, and the secret that signs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhooks {
    pub account_id: AccountId,
    pub status_url: Option<String>,
    pub inbound_url: Option<String>,
    pub secret: String,
    /// The secret before the last rotation, and until when it still signs callbacks.
    pub previous_secret: Option<(String, Timestamp)>,
    pub updated_at: Timestamp,
}

/// A callback due to go out, with what sending it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueCallback {
    pub id: String,
    pub account_id: AccountId,
    pub message_id: MessageId,
    /// `status` or `inbound`.
    pub kind: String,
    pub url: String,
    /// The status it reports, and its time.
    pub status: Status,
    pub error_code: Option<String>,
    pub at: Timestamp,
    pub attempts: u32,
    pub created_at: Timestamp,
    /// The account's signing secret now (empty if the account has none yet).
    pub secret: String,
    /// The secret before the last rotation, while its grace period lasts.
    pub previous_secret: Option<String>,
    /// The message as it is now, for the body.
    pub message: Option<Message>,
    /// The body of a callback that is not a message's (an automation's webhook step; `message_id` is then its
    /// run's id), JSON.
    pub payload: Option<String>,
}

/// A callback that is not a message's (an automation's webhook step): `payload` POSTed to `url`, signed like a
/// status callback, in order of `seq` among those of `key` (the run's id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadCallback {
    pub id: String,
    pub account_id: AccountId,
    pub key: MessageId,
    pub seq: i64,
    pub url: String,
    /// JSON.
    pub payload: String,
}

/// One try at delivering a callback.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CallbackAttempt {
    pub at: Timestamp,
    /// `http_2xx`, `http_5xx`, `timeout`, `refused`, `blocked`, ...
    pub result: String,
    /// How long the receiver took, in milliseconds.
    pub ms: u64,
}

/// A callback of a message, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackRecord {
    pub id: String,
    /// The message it tells of.
    pub message_id: String,
    pub kind: String,
    pub url: String,
    pub status: Status,
    pub error_code: Option<String>,
    pub at: Timestamp,
    /// `pending`, `delivered` or `failed` (given up).
    pub state: String,
    pub attempts: Vec<CallbackAttempt>,
    pub next_attempt_at: Option<Timestamp>,
}

/// What became of a delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackNext {
    Delivered,
    /// Try again at this time.
    RetryAt(Timestamp),
    /// No more tries (its 24 hours are over).
    GiveUp,
}

impl CallbackNext {
    /// The callback's `state` and, while it is pending, its next attempt's time.
    pub(crate) fn state(&self) -> (&'static str, Option<i64>) {
        match self {
            CallbackNext::Delivered => ("delivered", None),
            CallbackNext::RetryAt(t) => ("pending", Some(t.0)),
            CallbackNext::GiveUp => ("failed", None),
        }
    }
}

/// A delivery attempt's outcome, for [`CallbackOutbox::finish_callbacks`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackResult {
    pub id: String,
    pub attempt: CallbackAttempt,
    pub next: CallbackNext,
}

/// Accounts' webhook settings.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Sets an account's webhook URLs (`None` removes one), keeping its secret, or giving it `new_secret` if it
    /// has none yet.
    async fn put_webhooks(
        &self,
        account: AccountId,
        status_url: Option<&str>,
        inbound_url: Option<&str>,
        new_secret: &str,
        now: Timestamp,
    ) -> Result<Webhooks>;

    /// An account's webhooks, if it set any.
    async fn webhooks(&self, account: AccountId) -> Result<Option<Webhooks>>;

    /// Gives an account its signing secret if it has none (no URLs), and returns the secret it has.
    async fn ensure_webhook_secret(&self, account: AccountId, new_secret: &str, now: Timestamp) -> Result<String>;

    /// The accounts with no signing secret yet (made before every account got one).
    async fn accounts_without_webhook_secret(&self) -> Result<Vec<AccountId>>;

    /// Replaces an account's signing secret, the old one still signing until `grace_until`; false if it has no
    /// secret.
    async fn rotate_webhook_secret(
        &self,
        account: AccountId,
        secret: &str,
        now: Timestamp,
        grace_until: Timestamp,
    ) -> Result<bool>;

    /// Seals the webhook secrets and connector passwords written before secrets were sealed ([`seal`]); how many
    /// rows changed. Nothing without a sealing key.
    async fn reseal_secrets(&self) -> Result<u64>;

    /// Queues a callback that is not a message's, unless one with its id is queued already (a step taken again
    /// after a crash).
    async fn enqueue_payload(&self, callback: &PayloadCallback, now: Timestamp) -> Result<()>;
}

#[async_trait]
impl<D: Database> WebhookStore for D {
    async fn put_webhooks(
        &self,
        account: AccountId,
        status_url: Option<&str>,
        inbound_url: Option<&str>,
        new_secret: &str,
        now: Timestamp,
    ) -> Result<Webhooks> {
        self.execute(
            "INSERT INTO webhooks (account_id, status_url, inbound_url, secret, updated_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (account_id) DO UPDATE SET status_url = excluded.status_url, \
             inbound_url = excluded.inbound_url, updated_at = excluded.updated_at",
            values![account, status_url, inbound_url, seal::seal(new_secret)?, now],
        )
        .await?;
        self.webhooks(account).await?.ok_or_else(|| corrupt("webhooks just written are gone"))
    }

    async fn webhooks(&self, account: AccountId) -> Result<Option<Webhooks>> {
        let sql = "SELECT status_url, inbound_url, secret, previous_secret, previous_until, updated_at FROM webhooks \
                   WHERE account_id = ?";
        let Some(r) = self.query_one(sql, values![account]).await? else { return Ok(None) };
        let previous: Option<String> = r.get("previous_secret")?;
        let until: Option<i64> = r.get("previous_until")?;
        Ok(Some(Webhooks {
            account_id: account,
            status_url: r.get("status_url")?,
            inbound_url: r.get("inbound_url")?,
            secret: seal::open(&r.get::<String>("secret")?)?,
            // A previous secret that no longer opens (a lost server secret) signs nothing.
            previous_secret: previous.map(|p| seal::open(&p)).and_then(Result::ok).zip(until.map(Timestamp)),
            updated_at: r.timestamp("updated_at")?,
        }))
    }

    async fn ensure_webhook_secret(&self, account: AccountId, new_secret: &str, now: Timestamp) -> Result<String> {
        self.execute(
            "INSERT INTO webhooks (account_id, secret, updated_at) VALUES (?, ?, ?) ON CONFLICT (account_id) DO NOTHING",
            values![account, seal::seal(new_secret)?, now],
        )
        .await?;
        let row = self.query_one("SELECT secret FROM webhooks WHERE account_id = ?", values![account]).await?;
        let kept: String = row.ok_or_else(|| corrupt("a webhook secret just written is gone"))?.get("secret")?;
        match seal::open(&kept) {
            Ok(secret) => Ok(secret),
            Err(_) => {
                // Sealed under a server secret since lost: the account gets a new one (its receivers take it from
                // GET /v1/webhooks), rather than no signed callback ever again.
                let sql = "UPDATE webhooks SET secret = ?, previous_secret = NULL, updated_at = ? WHERE account_id = ?";
                self.execute(sql, values![seal::seal(new_secret)?, now, account]).await?;
                Ok(new_secret.to_string())
            }
        }
    }

    async fn accounts_without_webhook_secret(&self) -> Result<Vec<AccountId>> {
        let sql =
            "SELECT id FROM accounts WHERE NOT EXISTS (SELECT 1 FROM webhooks w WHERE w.account_id = accounts.id)";
        self.query(sql, Vec::new()).await?.iter().map(|r| r.account_id("id")).collect()
    }

    async fn rotate_webhook_secret(
        &self,
        account: AccountId,
        secret: &str,
        now: Timestamp,
        grace_until: Timestamp,
    ) -> Result<bool> {
        let n = self.execute(
            "UPDATE webhooks SET previous_secret = secret, previous_until = ?, secret = ?, updated_at = ? \
             WHERE account_id = ?",
            values![grace_until, seal::seal(secret)?, now, account],
        );
        Ok(n.await? == 1)
    }

    async fn enqueue_payload(&self, c: &PayloadCallback, now: Timestamp) -> Result<()> {
        self.execute(
            "INSERT INTO callbacks (id, account_id, message_id, seq, kind, url, status, error_code, at, state, \
             attempts, next_attempt_at, created_at, payload) VALUES (?, ?, ?, ?, 'automation', ?, 'sent', NULL, ?, \
             'pending', 0, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            values![&c.id, c.account_id, c.key, c.seq, &c.url, now, now, now, &c.payload],
        )
        .await?;
        Ok(())
    }

    async fn reseal_secrets(&self) -> Result<u64> {
        if !seal::installed() {
            return Ok(0);
        }
        let mut n = 0;
        for r in self.query("SELECT account_id, secret, previous_secret FROM webhooks", Vec::new()).await? {
            let (secret, previous): (String, Option<String>) = (r.get("secret")?, r.get("previous_secret")?);
            if seal::is_sealed(&secret) && previous.as_deref().is_none_or(seal::is_sealed) {
                continue;
            }
            let previous = previous.map(|p| seal::seal(&p)).transpose()?;
            let sql = "UPDATE webhooks SET secret = ?, previous_secret = ? WHERE account_id = ?";
            n += self.execute(sql, values![seal::seal(&secret)?, previous, r.account_id("account_id")?]).await?;
        }
        for r in self.query("SELECT name, settings FROM connectors", Vec::new()).await? {
            let stored: String = r.get("settings")?;
            if !seal::settings_have_plain_secret(&stored) {
                continue;
            }
            let (name, sealed): (String, String) = (r.get("name")?, seal::settings(&stored, seal::seal)?);
            n += self.execute("UPDATE connectors SET settings = ? WHERE name = ?", values![sealed, name]).await?;
        }
        Ok(n)
    }
}

/// How a claim shares out between accounts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Share {
    /// The most of one account's a claim takes.
    pub per_account: u32,
    /// Accounts whose callbacks a claim leaves (they have enough under way).
    pub skip: Vec<AccountId>,
}

/// How many of the oldest due rows a fair claim looks at, for each one it may take: accounts with their share under
/// way are skipped before the window is cut, so it needs to be no wider than it takes to give a few accounts a
/// turn each; every row in it costs a look for an earlier pending callback of its message.
pub(crate) const FAIR_WINDOW: u32 = 2;

fn callback_of(r: &Row) -> Result<CallbackRecord> {
    let state: String = r.get("state")?;
    Ok(CallbackRecord {
        id: r.get("id")?,
        message_id: r.get("message_id")?,
        kind: r.get("kind")?,
        url: r.get("url")?,
        status: r.status("status")?,
        error_code: r.get("error_code")?,
        at: r.timestamp("at")?,
        attempts: parse_attempts(&r.get::<String>("attempt_log")?)?,
        next_attempt_at: (state == "pending").then(|| r.timestamp("next_attempt_at")).transpose()?,
        state,
    })
}

/// The outbox of callbacks: what the webhook deliverer claims and records.
#[async_trait]
pub trait CallbackOutbox: Database {
    /// Claims up to `limit` callbacks due at `now` for `owner` until `now + lease_ms`: for each message only its
    /// oldest undelivered callback, so a message's callbacks go out in order.
    async fn claim_callbacks(
        &self,
        owner: &str,
        now: Timestamp,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<DueCallback>> {
        self.claim_callbacks_fairly(owner, now, lease_ms, limit, &Share { per_account: limit, skip: Vec::new() }).await
    }

    /// [`CallbackOutbox::claim_callbacks`], taking turns between accounts: at most `share.per_account` of one
    /// account's (its oldest), none of the accounts in `share.skip` (those with enough under way), the accounts
    /// in turn; among the oldest due callbacks, so that a claim costs the same whatever the backlog.
    async fn claim_callbacks_fairly(
        &self,
        owner: &str,
        now: Timestamp,
        lease_ms: i64,
        limit: u32,
        share: &Share,
    ) -> Result<Vec<DueCallback>>;

    /// Records delivery attempts.
    async fn finish_callbacks(&self, results: &[CallbackResult]) -> Result<()>;

    /// A message's callbacks, oldest first (for the account that owns it).
    async fn callbacks(&self, account: AccountId, message: MessageId) -> Result<Vec<CallbackRecord>> {
        let rows = self.query(
            "SELECT id, message_id, kind, url, status, error_code, at, state, attempt_log, next_attempt_at \
             FROM callbacks WHERE message_id = ? AND account_id = ? ORDER BY seq, id",
            values![message, account],
        );
        rows.await?.iter().map(callback_of).collect()
    }

    /// An account's newest callbacks, newest first: at most `limit`, among the server's newest `scan` (callbacks
    /// are not indexed by account, which would cost every status change a write; their ids sort by time).
    async fn recent_callbacks(&self, account: AccountId, limit: u32, scan: u32) -> Result<Vec<CallbackRecord>> {
        let rows = self.query(
            "SELECT id, message_id, kind, url, status, error_code, at, state, attempt_log, next_attempt_at FROM \
             (SELECT * FROM callbacks ORDER BY id DESC LIMIT ?) newest WHERE account_id = ? ORDER BY id DESC LIMIT ?",
            values![i64::from(scan), account, i64::from(limit)],
        );
        rows.await?.iter().map(callback_of).collect()
    }

    /// Callbacks still to deliver, across all accounts.
    async fn count_pending_callbacks(&self) -> Result<i64> {
        let row = self.query_one("SELECT COUNT(*) AS n FROM callbacks WHERE state = 'pending'", Vec::new()).await?;
        row.map_or(Ok(0), |r| r.get("n"))
    }
}

/// The columns a claim of callbacks returns, for [`due_callback_of`].
pub(crate) const DUE_CALLBACK_COLUMNS: &str =
    "id, account_id, message_id, kind, url, status, error_code, at, attempts, created_at, payload";

/// A claimed callback from the [`DUE_CALLBACK_COLUMNS`] (and `secret`, where the claim read it), without its
/// message.
pub(crate) fn due_callback_of(r: &Row) -> Result<DueCallback> {
    Ok(DueCallback {
        id: r.get("id")?,
        account_id: r.account_id("account_id")?,
        message_id: r.message_id("message_id")?,
        kind: r.get("kind")?,
        url: r.get("url")?,
        status: r.status("status")?,
        error_code: r.get("error_code")?,
        at: r.timestamp("at")?,
        attempts: u32::try_from(r.get::<i64>("attempts")?).unwrap_or(u32::MAX),
        created_at: r.timestamp("created_at")?,
        secret: seal::open_or_empty(&r.get::<Option<String>>("secret").ok().flatten().unwrap_or_default()),
        previous_secret: r.get::<Option<String>>("previous_secret").ok().flatten().and_then(|p| seal::open(&p).ok()),
        message: None,
        payload: r.get("payload")?,
    })
}
