//! What the writer thread keeps of accounts for status changes, and the rows a change makes for webhooks and SMPP
//! clients: [`Moved`] (what a change left of its message) and [`enqueue`], which asks [`crate::effects`] and
//! writes what it says.

use std::collections::HashMap;

use rusqlite::{Connection, Row, params};
use smsgate_core::{MessageId, Status, StatusMask, Timestamp};

use crate::effects::{AccountHooks, Change, effects};
use crate::rollups::Rollups;
use crate::schema::account_id_of;
use crate::{DeliveryMessage, DueDelivery, Result, SmppFeed, SmppReceipts};

/// Where accounts hear about their messages: webhook URLs by account id (status URL, inbound URL), and the
/// accounts with SMPP credentials (whose inbound messages go to their SMPP clients too).
struct Hooks {
    urls: HashMap<String, (Option<String>, Option<String>)>,
    smpp: std::collections::HashSet<String>,
}

thread_local! {
    /// On a store's writer thread: [`Hooks`], read from the database when first needed and forgotten when the
    /// writer changes them; `None` until read, and again after a rollback (which may have undone a change kept
    /// here). Status changes look their callback's URL up here instead of joining the `webhooks` table at every
    /// change, and with no URL at all they write nothing.
    static HOOKS: std::cell::RefCell<Option<Hooks>> = const { std::cell::RefCell::new(None) };

    /// On a store's writer thread: where deliver_sm for accounts bound on this node go at once
    /// ([`crate::SmppOutbox::feed_smpp_deliveries`]).
    pub(super) static FEED: std::cell::RefCell<Option<SmppFeed>> = const { std::cell::RefCell::new(None) };

    /// On a store's writer thread: the deliver_sm the transaction under way leased to this node, each with its
    /// room in the feed's channel; sent after the commit, dropped at a rollback.
    static FED: std::cell::RefCell<Vec<(FeedPermit, DueDelivery)>> = const { std::cell::RefCell::new(Vec::new()) };

    /// On a store's writer thread: what the transaction under way adds to the rollups, added up by row and written
    /// just before its commit ([`write_rollups`]); dropped at a rollback.
    static ROLLUPS: std::cell::RefCell<Rollups> = std::cell::RefCell::new(Rollups::default());
}

/// Before a commit: adds what the group's changes count into the rollups (a row a statement; a group of a thousand
/// changes is a few rows).
pub(super) fn write_rollups(conn: &Connection) -> rusqlite::Result<()> {
    let rollups = ROLLUPS.take();
    if rollups.is_empty() {
        return Ok(());
    }
    let mut st = conn.prepare_cached(&crate::rollups::upsert_sql())?;
    for (key, c) in rollups.rows() {
        let values = crate::rollups::row_values(key, c);
        st.execute(rusqlite::params_from_iter(values.into_iter().map(super::sqlite_value)))?;
    }
    Ok(())
}

type FeedPermit = tokio::sync::mpsc::OwnedPermit<DueDelivery>;

/// The deliver_sm a committed group leased to this node, to hand to the feed once the commit is durable.
pub(super) struct Fed(Vec<(FeedPermit, DueDelivery)>);

/// After a commit: takes the deliver_sm the group leased to this node, for [`Fed::send`].
pub(super) fn take_fed() -> Fed {
    Fed(FED.take())
}

impl Fed {
    /// Hands them to the feed.
    pub(super) fn send(self) {
        for (permit, due) in self.0 {
            permit.send(due);
        }
    }
}

/// Runs `f` on [`HOOKS`], reading them first if they are not held.
fn with_hooks<T>(conn: &Connection, f: impl FnOnce(&Hooks) -> T) -> Result<T> {
    HOOKS.with_borrow_mut(|hooks| {
        let held = match hooks {
            Some(held) => held,
            None => {
                let mut st = conn.prepare_cached("SELECT account_id, status_url, inbound_url FROM webhooks")?;
                let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, (r.get(1)?, r.get(2)?))))?;
                let urls = rows.collect::<rusqlite::Result<_>>()?;
                let mut st = conn.prepare_cached("SELECT DISTINCT account_id FROM smpp_credentials")?;
                let smpp = st.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<_>>()?;
                hooks.insert(Hooks { urls, smpp })
            }
        };
        Ok(f(held))
    })
}

/// Forgets what [`HOOKS`] holds (the next status change reads it again), and the deliver_sm of a transaction
/// rolled back.
pub(super) fn forget_hooks() {
    forget_accounts();
    FED.take();
    ROLLUPS.take();
}

/// Forgets what [`HOOKS`] holds: the next status change reads it again. Called after every write of what it
/// holds (webhook settings, SMPP credentials).
pub(super) fn forget_accounts() {
    HOOKS.with_borrow_mut(|h| *h = None);
}

/// A message as a status change left it: what its callback needs. The statements that change statuses read it
/// through [`HOOK_COLUMNS`] before the change and work out the rest ([`Moved::after`]); inserts and claims make
/// it from what they hold.
#[derive(Clone)]
pub(super) struct Moved {
    pub(super) id: String,
    pub(super) account: String,
    pub(super) callback_url: Option<String>,
    pub(super) callback_statuses: Option<StatusMask>,
    pub(super) error_code: Option<String>,
    /// The journey's length after the change: a callback's place among its message's.
    pub(super) seq: i64,
    /// The receipts the SMPP client that submitted it asked for.
    pub(super) smpp: Option<SmppReceipts>,
    /// What a deliver_sm says of it, when it is known (the addresses always; the text when an SMPP client
    /// submitted it).
    pub(super) message: Option<DeliveryMessage>,
    /// What the rollups count it by.
    pub(super) counted: CountedMessage,
}

/// What [`crate::rollups::counts`] asks of a message.
#[derive(Clone, Default)]
pub(super) struct CountedMessage {
    pub(super) inbound: bool,
    pub(super) to: String,
    pub(super) from: String,
    pub(super) campaign: Option<String>,
    pub(super) connector: Option<String>,
    pub(super) price_micros: Option<i64>,
    pub(super) created_at: i64,
}

impl CountedMessage {
    /// From a message as it is stored.
    pub(super) fn of(m: &smsgate_core::Message, campaign: Option<&str>) -> CountedMessage {
        CountedMessage {
            inbound: m.direction == smsgate_core::Direction::Inbound,
            to: m.to.clone(),
            from: m.from.clone(),
            campaign: campaign.map(String::from),
            connector: m.connector.clone(),
            price_micros: m.price_micros,
            created_at: m.created_at.0,
        }
    }
}

/// What a status change reads of its message for [`Moved`], in order.
pub(super) const HOOK_COLUMNS: &str = "id, account_id, callback_url, error_code, length(journey), smpp_receipts, smpp_parts, \
                            to_addr, from_addr, CASE WHEN smpp_receipts IS NOT NULL THEN body END, created_at, \
                            callback_statuses, direction, campaign_id, connector, price_micros";

impl Moved {
    /// What a change that appended `line` to the journey and set `error_code` (when given) makes of the message
    /// as it was read before the change: the values [`HOOK_COLUMNS`] would read after it.
    pub(super) fn after(mut self, line: &str, error_code: Option<&str>) -> Moved {
        // SQLite's `length` of a text counts its characters.
        self.seq += line.chars().count() as i64;
        if let Some(code) = error_code {
            self.error_code = Some(code.to_string());
        }
        self
    }

    /// The connector and price a change set, if it set them.
    pub(super) fn priced(mut self, connector: Option<&str>, price_micros: Option<i64>) -> Moved {
        if let Some(c) = connector {
            self.counted.connector = Some(c.to_string());
        }
        if price_micros.is_some() {
            self.counted.price_micros = price_micros;
        }
        self
    }

    /// From the [`HOOK_COLUMNS`] starting at column `at`.
    pub(super) fn from_row(r: &Row<'_>, at: usize) -> rusqlite::Result<Moved> {
        let id: String = r.get(at)?;
        // The text is read only for messages an SMPP client submitted: only their receipts need it.
        let message = match r.get::<_, Option<String>>(at + 9)? {
            Some(body) => MessageId::parse(&id)
                .map(|mid| -> rusqlite::Result<DeliveryMessage> {
                    Ok(DeliveryMessage {
                        id: mid,
                        to: r.get(at + 7)?,
                        from: r.get(at + 8)?,
                        body,
                        created_at: Timestamp(r.get(at + 10)?),
                    })
                })
                .transpose()?,
            None => None,
        };
        Ok(Moved {
            id,
            account: r.get(at + 1)?,
            callback_url: r.get(at + 2)?,
            callback_statuses: r.get::<_, Option<i64>>(at + 11)?.and_then(|v| u32::try_from(v).ok()).map(StatusMask),
            error_code: r.get(at + 3)?,
            seq: r.get(at + 4)?,
            smpp: smpp_receipts_of(r.get(at + 5)?, r.get(at + 6)?),
            message,
            counted: CountedMessage {
                inbound: r.get::<_, String>(at + 12)? == "inbound",
                to: r.get(at + 7)?,
                from: r.get(at + 8)?,
                campaign: r.get(at + 13)?,
                connector: r.get(at + 14)?,
                price_micros: r.get(at + 15)?,
                created_at: r.get(at + 10)?,
            },
        })
    }
}

/// [`SmppReceipts`] from the `smpp_receipts` and `smpp_parts` columns.
fn smpp_receipts_of(registered_delivery: Option<i64>, ids: Option<i64>) -> Option<SmppReceipts> {
    registered_delivery.map(|rd| SmppReceipts {
        registered_delivery: u8::try_from(rd).unwrap_or(0),
        ids: ids.and_then(|n| u32::try_from(n).ok()).unwrap_or(1).max(1),
    })
}

/// The feed's node, lease and a room in its channel, when a deliver_sm of `m` can go straight to a receiver bound
/// on this node: a feed is installed, the account has a receiver here, the message's text is at hand, and the
/// channel has room.
fn feed_room(m: &Moved) -> Option<(String, i64, FeedPermit)> {
    m.message.as_ref()?;
    let account = account_id_of(&m.account).ok()?;
    FEED.with_borrow(|feed| {
        let feed = feed.as_ref()?;
        if !(feed.bound)(account) {
            return None;
        }
        let permit = feed.tx.clone().try_reserve_owned().ok()?;
        Some((feed.node.clone(), feed.lease_ms, permit))
    })
}

/// Writes what a change to `status` makes of `m` ([`effects`]): its webhook callback and its deliver_sm, each a
/// single-row insert in the change's transaction.
pub(super) fn enqueue(conn: &Connection, m: &Moved, status: Status, at: Timestamp) -> Result<()> {
    let c = &m.counted;
    let (handset, address) = if c.inbound { (&c.from, &c.to) } else { (&c.to, &c.from) };
    let counted = crate::rollups::Counted {
        account_id: &m.account,
        inbound: c.inbound,
        handset,
        address,
        campaign: c.campaign.as_deref(),
        connector: c.connector.as_deref(),
        price_micros: c.price_micros,
        created_at: Timestamp(c.created_at),
    };
    ROLLUPS.with_borrow_mut(|r| r.count(&counted, status, at));
    // The account's settings are looked up only when the message alone does not decide.
    let needs_account = status == Status::Received || (m.callback_url.is_none() && crate::effects::notifies(status));
    let change = Change {
        status,
        callback_url: m.callback_url.as_deref(),
        callback_statuses: m.callback_statuses,
        smpp: m.smpp,
    };
    let written = |hooks: Option<&Hooks>| -> Result<()> {
        let account = hooks.map_or_else(AccountHooks::default, |h| {
            let urls = h.urls.get(&m.account);
            AccountHooks {
                status_url: urls.and_then(|(s, _)| s.as_deref()),
                inbound_url: urls.and_then(|(_, i)| i.as_deref()),
                smpp_clients: h.smpp.contains(&m.account),
            }
        });
        let made = effects(&change, &account);
        if let Some(d) = made.deliveries {
            insert_deliveries(conn, m, status, at, &d)?;
        }
        if let Some(c) = made.callback {
            conn.prepare_cached(
                "INSERT INTO callbacks (id, account_id, message_id, seq, kind, url, status, error_code, at, state, \
                 next_attempt_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', ?9, ?9)",
            )?
            .execute(params![
                uuid::Uuid::now_v7().hyphenated().to_string(),
                m.account,
                m.id,
                m.seq,
                c.kind,
                c.url,
                status.as_str(),
                m.error_code,
                at.0
            ])?;
        }
        Ok(())
    };
    if needs_account { with_hooks(conn, |h| written(Some(h)))? } else { written(None) }
}

/// Writes the deliver_sm [`effects`] asked for, one per part; those alone of their message go straight to a
/// receiver bound on this node when there is one ([`feed_room`]).
fn insert_deliveries(
    conn: &Connection,
    m: &Moved,
    status: Status,
    at: Timestamp,
    d: &crate::effects::Deliveries,
) -> Result<()> {
    for part in d.parts.clone() {
        let expires_at = Timestamp(at.0 + crate::SMPP_DELIVERY_TTL_MS);
        let fed = if d.alone { feed_room(m) } else { None };
        // Fed: leased to this node already, and out of the due range until its lease ends.
        let (owner, lease_until) = match &fed {
            Some((node, lease_ms, _)) => (Some(node.as_str()), Some(at.plus_millis(*lease_ms).0)),
            None => (None, None),
        };
        conn.prepare_cached(
            "INSERT INTO smpp_outbox (account_id, message_id, seq, part, kind, status, error_code, at, state, \
             next_attempt_at, expires_at, created_at, lease_owner, lease_until) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', COALESCE(?11, ?8), ?9, ?8, ?10, ?11)",
        )?
        .execute(params![
            m.account,
            m.id,
            m.seq,
            i64::from(part),
            d.kind,
            status.as_str(),
            m.error_code,
            at.0,
            expires_at.0,
            owner,
            lease_until
        ])?;
        let id = conn.last_insert_rowid().to_string();
        if let (Some((_, _, permit)), Some(message)) = (fed, &m.message) {
            let due = DueDelivery {
                id,
                account_id: account_id_of(&m.account)?,
                message_id: message.id,
                kind: d.kind.to_string(),
                part,
                status,
                error_code: m.error_code.clone(),
                at,
                attempts: 0,
                expires_at,
                message: Some(message.clone()),
            };
            FED.with_borrow_mut(|fed| fed.push((permit, due)));
        }
    }
    Ok(())
}
