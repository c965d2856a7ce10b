//! [`SqliteStore`]: the [`Store`] on an embedded SQLite file, through rusqlite.
//!
//! One **writer thread** owns the only connection that writes. Every write call becomes a job on its channel; the
//! thread takes every job waiting, runs them all in one transaction (a job that fails is taken out and the rest
//! run again, so one job's error does not undo the others), commits once — one fsync for the whole group — and
//! only then answers each caller. Group commit is therefore built in: inserts from the API, the dispatcher's claims, status changes and
//! receipts that arrive together share a disk sync, and no write waits for another's lock.
//!
//! Reads run on a small pool of reader connections on tokio's blocking threads; WAL lets them read the last
//! commit while the writer works.
//!
//! Why not sqlx here, as for PostgreSQL: sqlx's SQLite driver runs each statement on a worker thread and sends
//! every row across a channel, which cost more than SQLite's own work on the server's hot path (BENCHMARKS.md).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use smsgate_core::routing::Route;
use smsgate_core::{AccountId, Direction, Event, Message, MessageId, Status, StatusMask, Timestamp};
use tokio::sync::oneshot;

use crate::schema::{
    MESSAGE_COLUMNS, MIGRATIONS, Param, account_id_of, claim_lines, corrupt, expiry_lines, first_journey, journey_line,
    list_query, may_become, message_id_of, next_attempt, parse_journey, status_of, unpark_from, waiting,
};
use crate::schema::{attempt_line, parse_attempts, route_json, route_of, routes_json, routes_of};
use crate::{
    Account, ApiKey, Changes, ConnectorRecord, Inserted, ListFilter, NewMessage, ReceiptUpdate, Result, Store,
    StoreError, Transition, WaitingAt,
};
use crate::{CallbackNext, CallbackRecord, CallbackResult, DueCallback, SmppCredential, Webhooks};
use crate::{DeliveryMessage, DeliveryNext, DueDelivery, SmppFeed, SmppReceipts};

/// A write the writer thread runs inside a group transaction. It may run more than once: when another job of
/// its group fails, the group is rolled back and run again without the failed one.
trait Job: Send {
    /// Runs the write on the writer's connection; false if it failed (the error is kept for its answer).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the group's fate is known: its own error if it failed, else its result if the
    /// commit succeeded.
    fn answer(self: Box<Self>, committed: std::result::Result<(), String>);
}

/// A [`Job`] made of a closure, with the statuses it recorded (counted in the metrics after the commit).
struct WriteJob<T, F> {
    write: F,
    result: Option<Result<T>>,
    changed: Vec<Status>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Job for WriteJob<T, F>
where
    T: Send,
    F: FnMut(&Connection, &mut Vec<Status>) -> Result<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        self.changed.clear();
        let result = (self.write)(conn, &mut self.changed);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, committed: std::result::Result<(), String>) {
        let result = match (self.result, committed) {
            (None, _) => Err(StoreError::Stopped("the write did not run".into())),
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(_)), Err(e)) => Err(StoreError::Commit(e)),
            (Some(Ok(value)), Ok(())) => {
                crate::count_status_changes(&self.changed);
                Ok(value)
            }
        };
        let _ = self.reply.send(result);
    }
}

/// Reader connections kept open between reads.
const READERS: usize = 4;

/// The most jobs one transaction takes; more wait for the next.
const GROUP: usize = 4096;

/// The SQLite store. Cheap to clone: clones share the writer and the readers.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    jobs: Mutex<Option<mpsc::Sender<Box<dyn Job>>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    checkpointer: Mutex<Option<(mpsc::Sender<()>, JoinHandle<()>)>>,
    /// Idle reader connections; at most [`READERS`] exist, one per permit of `reading`.
    readers: Mutex<Vec<Connection>>,
    reading: tokio::sync::Semaphore,
}

/// Every connection's page cache, in KiB (SQLite's default). SQLite allocates with the C library's malloc, which
/// keeps what a thread's arena once held: with a 16 MB cache the writer's arena stayed at 18.5 MB after a burst,
/// `PRAGMA shrink_memory` or not; with 2 MB it is 2.4 MB, and end-to-end throughput measured no different. A
/// reader's cache is dropped whenever another connection has written since its last read, so under load a larger
/// one would save nothing either.
const CACHE_KIB: u32 = 2_048;

/// The most of its WAL file SQLite keeps once the WAL starts over. Without a limit the file stays as large as it
/// ever grew: 960 MB beside a 212 MB database after 200,000 messages accepted at 45,000 a second.
const WAL_KEEP_BYTES: u64 = 64 << 20;

/// Opens a connection with the settings every connection needs: WAL lets readers run beside the writer; FULL makes
/// every commit durable when it returns; the busy timeout makes another process's writer wait rather than fail;
/// statement journals stay in memory. No connection checkpoints on its own: the checkpointer thread does. A WAL
/// that grew while writes outran the checkpoints is cut back to [`WAL_KEEP_BYTES`] when it starts over.
fn connect(path: &PathBuf) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000; \
         PRAGMA foreign_keys = ON; PRAGMA cache_size = -{CACHE_KIB}; PRAGMA temp_store = MEMORY; \
         PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {WAL_KEEP_BYTES};"
    ))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )?;
    for m in MIGRATIONS {
        let (version, sql) = (m.version, m.sqlite);
        let done: Option<i64> = conn
            .query_row("SELECT version FROM schema_migrations WHERE version = ?1", [version], |r| r.get(0))
            .optional()?;
        if done.is_some() {
            continue;
        }
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?1, 0)", [version])?;
        tx.commit()?;
    }
    Ok(())
}

/// Runs one group: every job in one transaction, then the commit, then the answers. A job that fails rolls the
/// group back; it gets its error and the others run again without it. Jobs do not get savepoints of their own: a
/// savepoint kept open across many statements makes SQLite walk its whole in-memory statement journal at the end
/// of every statement, which cost a tenth of the server's CPU. Failures are rare (a full disk, a bug), so running a
/// group again is cheap. For the same reason the writer's updates are `UPDATE OR FAIL`: an update that may fail a
/// constraint halfway keeps a statement journal (a copy of every page it touches) to undo its own rows, which a
/// failed job never needs, as its whole group is rolled back (3–4 % of the server's CPU).
fn run_group(conn: &Connection, mut jobs: Vec<Box<dyn Job>>) {
    while !jobs.is_empty() {
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            tracing::warn!(error = %e, "SQLite could not begin a transaction; {} writes fail", jobs.len());
            for job in jobs {
                job.answer(Err(format!("could not begin a transaction: {e}")));
            }
            return;
        }
        let failed = jobs.iter_mut().position(|job| !job.run(conn));
        match failed {
            None => {
                let committed = conn.execute_batch("COMMIT").map_err(|e| e.to_string());
                if committed.is_err() {
                    let _ = conn.execute_batch("ROLLBACK");
                    forget_hooks();
                } else {
                    send_fed();
                }
                for job in jobs {
                    job.answer(committed.clone());
                }
                return;
            }
            Some(i) => {
                let _ = conn.execute_batch("ROLLBACK");
                forget_hooks();
                jobs.remove(i).answer(Ok(()));
            }
        }
    }
}

/// How often the checkpointer copies the WAL back into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Copies committed pages from the WAL into the database file, on its own connection and thread, until `stop`
/// speaks or closes. SQLite's automatic checkpoint would run inside a commit on the writer thread, and its fsync
/// of the database file held every write waiting behind it for tens to hundreds of milliseconds. A PASSIVE
/// checkpoint runs beside the writer; SQLite starts the WAL over once a checkpoint has caught up.
fn checkpointer_loop(conn: Connection, stop: mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "SQLite checkpoint failed; trying again");
        }
    }
    // A last full checkpoint, so a clean stop leaves the database file whole.
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

fn writer_loop(conn: Connection, jobs: mpsc::Receiver<Box<dyn Job>>) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        run_group(&conn, group);
    }
}

impl SqliteStore {
    /// Opens (creating it if needed) the SQLite file named by `url` (`sqlite://PATH` or `sqlite:PATH`; a query
    /// string such as `?mode=rwc` is accepted and ignored) and runs the migrations.
    pub async fn open(url: &str) -> Result<SqliteStore> {
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| StoreError::UnsupportedUrl(url.to_string()))?;
        let path = rest.split('?').next().unwrap_or_default();
        if path.is_empty() || path == ":memory:" {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        }
        let path = PathBuf::from(path);
        let opened = tokio::task::spawn_blocking(move || -> Result<SqliteStore> {
            let mut conn = connect(&path)?;
            migrate(&mut conn)?;
            let (tx, rx) = mpsc::channel();
            let writer = std::thread::Builder::new()
                .name("sqlite-writer".into())
                .spawn(move || writer_loop(conn, rx))
                .map_err(|e| StoreError::Stopped(format!("could not start the writer thread: {e}")))?;
            let checkpoints = connect(&path)?;
            let (stop, stopped) = mpsc::channel();
            let checkpointer = std::thread::Builder::new()
                .name("sqlite-checkpoint".into())
                .spawn(move || checkpointer_loop(checkpoints, stopped))
                .map_err(|e| StoreError::Stopped(format!("could not start the checkpoint thread: {e}")))?;
            Ok(SqliteStore {
                inner: Arc::new(Inner {
                    path,
                    jobs: Mutex::new(Some(tx)),
                    writer: Mutex::new(Some(writer)),
                    checkpointer: Mutex::new(Some((stop, checkpointer))),
                    readers: Mutex::new(Vec::new()),
                    reading: tokio::sync::Semaphore::new(READERS),
                }),
            })
        });
        opened.await.map_err(|e| StoreError::Stopped(e.to_string()))?
    }

    /// Runs `f` on the writer's connection in the next group transaction and answers once that commit is durable.
    /// `f` may run more than once (see [`run_group`]); the statuses it pushes on `changed` are counted in the
    /// metrics after the commit.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&Connection, &mut Vec<Status>) -> Result<T> + Send + 'static,
    {
        let (reply, answered) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(WriteJob { write: f, result: None, changed: Vec::new(), reply });
        let sender = self.inner.jobs.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let stopped = || StoreError::Stopped("the store is closed".into());
        sender.ok_or_else(stopped)?.send(job).map_err(|_| stopped())?;
        answered.await.map_err(|_| StoreError::Stopped("the writer stopped before answering".into()))?
    }

    /// Runs `f` on a reader connection, on a blocking thread. Readers are few and kept: opening one costs far
    /// more than a read (the file, the WAL index, the schema), so a read waits for a free one instead.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let permit = self.inner.reading.acquire().await.map_err(|e| StoreError::Stopped(e.to_string()))?;
        let inner = self.inner.clone();
        let task = tokio::task::spawn_blocking(move || {
            let pooled = inner.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let conn = match pooled {
                Some(c) => c,
                None => connect(&inner.path)?,
            };
            let result = f(&conn);
            inner.readers.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
            result
        });
        let result = task.await.map_err(|e| StoreError::Stopped(e.to_string()))?;
        drop(permit);
        result
    }
}

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
    /// ([`Store::feed_smpp_deliveries`]).
    static FEED: std::cell::RefCell<Option<SmppFeed>> = const { std::cell::RefCell::new(None) };

    /// On a store's writer thread: the deliver_sm the transaction under way leased to this node, each with its
    /// room in the feed's channel; sent after the commit, dropped at a rollback.
    static FED: std::cell::RefCell<Vec<(FeedPermit, DueDelivery)>> = const { std::cell::RefCell::new(Vec::new()) };
}

type FeedPermit = tokio::sync::mpsc::OwnedPermit<DueDelivery>;

/// After a commit: hands the deliver_sm the group leased to this node to the feed.
fn send_fed() {
    for (permit, due) in FED.take() {
        permit.send(due);
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
fn forget_hooks() {
    HOOKS.with_borrow_mut(|h| *h = None);
    FED.take();
}

/// The URL a callback for `status` of message `m` goes to: `received` to the account's inbound URL, any other
/// status the message asks to hear of (`callback_statuses`) to its own callback URL, else the account's status URL.
fn hook_url(conn: &Connection, m: &Moved, status: Status) -> Result<Option<String>> {
    if status != Status::Received {
        if m.callback_statuses.is_some_and(|c| !c.contains(status)) {
            return Ok(None);
        }
        if let Some(url) = &m.callback_url {
            return Ok(Some(url.clone()));
        }
    }
    with_hooks(conn, |hooks| {
        hooks.urls.get(&m.account).and_then(|(status_url, inbound_url)| {
            if status == Status::Received { inbound_url.clone() } else { status_url.clone() }
        })
    })
}

/// A message as a status change left it: what its callback needs. The statements that change statuses read it
/// through [`HOOK_COLUMNS`] before the change and work out the rest ([`Moved::after`]); inserts and claims make
/// it from what they hold.
#[derive(Clone)]
struct Moved {
    id: String,
    account: String,
    callback_url: Option<String>,
    callback_statuses: Option<StatusMask>,
    error_code: Option<String>,
    /// The journey's length after the change: a callback's place among its message's.
    seq: i64,
    /// The receipts the SMPP client that submitted it asked for.
    smpp: Option<SmppReceipts>,
    /// What a deliver_sm says of it, when it is known (the addresses always; the text when an SMPP client
    /// submitted it).
    message: Option<DeliveryMessage>,
}

/// What a status change reads of its message for [`Moved`], in order.
const HOOK_COLUMNS: &str = "id, account_id, callback_url, error_code, length(journey), smpp_receipts, smpp_parts, \
                            to_addr, from_addr, CASE WHEN smpp_receipts IS NOT NULL THEN body END, created_at, \
                            callback_statuses";

impl Moved {
    /// What a change that appended `line` to the journey and set `error_code` (when given) makes of the message
    /// as it was read before the change: the values [`HOOK_COLUMNS`] would read after it.
    fn after(mut self, line: &str, error_code: Option<&str>) -> Moved {
        // SQLite's `length` of a text counts its characters.
        self.seq += line.chars().count() as i64;
        if let Some(code) = error_code {
            self.error_code = Some(code.to_string());
        }
        self
    }

    /// From the [`HOOK_COLUMNS`] starting at column `at`.
    fn from_row(r: &Row<'_>, at: usize) -> rusqlite::Result<Moved> {
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

/// Writes the deliver_sm a change makes for the account's SMPP clients: the receipts the submitting client asked
/// for (one per id it was given), or an inbound message for an account with SMPP credentials.
fn enqueue_smpp(conn: &Connection, m: &Moved, status: Status, at: Timestamp) -> Result<()> {
    let (kind, parts) = match (status, m.smpp) {
        (Status::Received, _) => {
            if !with_hooks(conn, |h| h.smpp.contains(&m.account))? {
                return Ok(());
            }
            ("inbound", 0..=0)
        }
        (_, Some(r)) if r.wants(status) => ("receipt", if r.ids > 1 { 1..=r.ids } else { 0..=0 }),
        _ => return Ok(()),
    };
    // Alone of its message (no intermediate receipt before it can be pending): it may skip the claim.
    let alone = m.smpp.is_none_or(|r| r.registered_delivery & 0x10 == 0);
    for part in parts {
        let expires_at = Timestamp(at.0 + crate::SMPP_DELIVERY_TTL_MS);
        let fed = if alone { feed_room(m) } else { None };
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
            kind,
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
                kind: kind.to_string(),
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

/// Writes the callback a status change makes, if the message (or its account) has a webhook for it: one
/// single-row insert, in the change's transaction.
fn enqueue_callback(conn: &Connection, m: &Moved, status: Status, at: Timestamp) -> Result<()> {
    enqueue_smpp(conn, m, status, at)?;
    if !crate::notifies(status) {
        return Ok(());
    }
    let Some(url) = hook_url(conn, m, status)? else { return Ok(()) };
    let kind = if status == Status::Received { "inbound" } else { "status" };
    conn.prepare_cached(
        "INSERT INTO callbacks (id, account_id, message_id, seq, kind, url, status, error_code, at, state, \
         next_attempt_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', ?9, ?9)",
    )?
    .execute(params![
        uuid::Uuid::now_v7().hyphenated().to_string(),
        m.account,
        m.id,
        m.seq,
        kind,
        url,
        status.as_str(),
        m.error_code,
        at.0
    ])?;
    Ok(())
}

/// The columns [`smpp_credential_from_row`] reads, in order.
const SMPP_COLUMNS: &str = "system_id, account_id, password_hash, allowed_ips, max_binds, throughput, created_at";

fn smpp_credential_from_row(r: &Row<'_>) -> Result<SmppCredential> {
    let ips: Option<String> = r.get(3)?;
    Ok(SmppCredential {
        system_id: r.get(0)?,
        account_id: account_id_of(&r.get::<_, String>(1)?)?,
        password_hash: r.get(2)?,
        allowed_ips: ips
            .map(|j| serde_json::from_str(&j))
            .transpose()
            .map_err(|e| corrupt(format!("allowed_ips: {e}")))?,
        max_binds: r.get::<_, Option<i64>>(4)?.map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        throughput: r.get(5)?,
        created_at: Timestamp(r.get(6)?),
    })
}

fn account_from_row(row: &Row<'_>) -> Result<Account> {
    Ok(Account {
        id: account_id_of(&row.get::<_, String>(0)?)?,
        name: row.get(1)?,
        is_admin: row.get::<_, i64>(2)? != 0,
        created_at: Timestamp(row.get(3)?),
        routes: routes_of(row.get(4)?)?,
    })
}

/// A [`Message`] from the columns of [`MESSAGE_COLUMNS`], in order.
fn message_from_row(row: &Row<'_>) -> Result<Message> {
    let count = |i: usize| -> Result<u32> {
        let v: i64 = row.get(i)?;
        u32::try_from(v).map_err(|_| corrupt(format!("count {v} in column {i}")))
    };
    let direction: String = row.get(2)?;
    Ok(Message {
        id: message_id_of(&row.get::<_, String>(0)?)?,
        account_id: account_id_of(&row.get::<_, String>(1)?)?,
        direction: Direction::parse(&direction).ok_or_else(|| corrupt(format!("direction {direction:?}")))?,
        to: row.get(3)?,
        from: row.get(4)?,
        body: row.get(5)?,
        encoding: row.get(6)?,
        segments: count(7)?,
        price_micros: row.get(8)?,
        connector: row.get(9)?,
        carrier_id: row.get(10)?,
        status: status_of(&row.get::<_, String>(11)?)?,
        error_code: row.get(12)?,
        reference: row.get(13)?,
        callback_url: row.get(14)?,
        send_at: row.get::<_, Option<i64>>(15)?.map(Timestamp),
        expires_at: row.get::<_, Option<i64>>(16)?.map(Timestamp),
        attempts: count(17)?,
        created_at: Timestamp(row.get(18)?),
        updated_at: Timestamp(row.get(19)?),
        callback_statuses: mask_of(row.get(20)?)?,
    })
}

/// A `callback_statuses` column's value.
fn mask_of(v: Option<i64>) -> Result<Option<StatusMask>> {
    v.map(|v| u32::try_from(v).map(StatusMask).map_err(|_| corrupt(format!("callback_statuses {v}")))).transpose()
}

/// Moves the message of rowid `?1` to `to` (`?2`) from a status that may become it, fenced by the lease owner
/// (`?9`) when one is given, appending the journey line `?10`. No `RETURNING`: SQLite runs an `UPDATE ...
/// RETURNING` in two passes with a statement journal, which cost twice the update itself; the row is read first
/// ([`moved_by`]) and what the change makes of it worked out ([`Moved::after`]).
fn transition_sql(to: Status) -> String {
    let from = may_become("status", to);
    format!(
        "UPDATE OR FAIL messages SET status = ?2, updated_at = ?3, \
         connector = COALESCE(?4, connector), carrier_id = COALESCE(?5, carrier_id), \
         error_code = COALESCE(?6, error_code), price_micros = COALESCE(?7, price_micros), \
         next_attempt_at = COALESCE(?8, next_attempt_at), waiting_route = ?12, \
         lease_owner = CASE WHEN ?2 = 'sending' THEN lease_owner END, \
         lease_until = CASE WHEN ?2 = 'sending' THEN lease_until END, \
         journey = journey || ?10, attempts = attempts - ?11 \
         WHERE rowid = ?1 AND {from} AND (?9 IS NULL OR lease_owner = ?9)"
    )
}

/// The rowid of a message by id, and what a change needs of it ([`HOOK_COLUMNS`]) as it is before the change.
fn moved_by(conn: &Connection, id: &str) -> Result<Option<(i64, Moved)>> {
    let sql = format!("SELECT rowid, {HOOK_COLUMNS} FROM messages WHERE id = ?1");
    Ok(conn.prepare_cached(&sql)?.query_row([id], |r| Ok((r.get(0)?, Moved::from_row(r, 1)?))).optional()?)
}

/// Moves one message by id if the state machine (and, when fenced, the lease) allows, with its journey line.
fn apply_transition(conn: &Connection, t: &Transition) -> Result<bool> {
    if may_become("status", t.to).is_empty() {
        return Ok(false);
    }
    let c = &t.changes;
    let Some((rowid, before)) = moved_by(conn, &t.id.to_string())? else { return Ok(false) };
    let line = journey_line(t.to, t.at, &t.detail);
    let changed = conn.prepare_cached(&transition_sql(t.to))?.execute(params![
        rowid,
        t.to.as_str(),
        t.at.0,
        c.connector,
        c.carrier_id,
        c.error_code,
        c.price_micros,
        next_attempt(c),
        c.lease_owner,
        line,
        i64::from(c.attempt_undone),
        c.wait_for_route,
    ])?;
    if changed == 0 {
        return Ok(false);
    }
    let moved = before.after(&line, c.error_code.as_deref());
    enqueue_callback(conn, &moved, t.to, t.at)?;
    {
        let id = moved.id;
        if let Some(connector) = c.connector.as_deref().filter(|_| c.parts.len() > 1) {
            for (i, carrier_id) in c.parts.iter().enumerate() {
                conn.prepare_cached(
                    "INSERT INTO message_parts (message_id, part, connector, carrier_id, status) \
                     VALUES (?1, ?2, ?3, ?4, 'sent') ON CONFLICT DO NOTHING",
                )?
                .execute(params![id, i as i64 + 1, connector, carrier_id])?;
            }
        }
    }
    Ok(true)
}

/// The messages a connector (`?1`) gave a carrier id (`?2`) that may become `to`, each sent whole: their rowids
/// and [`HOOK_COLUMNS`].
fn receipt_match_sql(to: Status) -> String {
    let from = may_become("status", to);
    format!(
        "SELECT rowid, {HOOK_COLUMNS} FROM messages WHERE connector = ?1 AND carrier_id = ?2 AND {from} \
         AND NOT EXISTS (SELECT 1 FROM message_parts p WHERE p.message_id = messages.id)"
    )
}

/// Moves the message of rowid `?1` to `to` (`?2`) from a status that may become it, appending the journey line
/// `?5` (without `RETURNING`, as [`transition_sql`]).
fn receipt_sql(to: Status) -> String {
    let from = may_become("status", to);
    format!(
        "UPDATE OR FAIL messages SET status = ?2, updated_at = ?3, error_code = COALESCE(?4, error_code), \
         lease_owner = NULL, lease_until = NULL, journey = journey || ?5 WHERE rowid = ?1 AND {from}"
    )
}

/// Moves the messages a receipt's carrier id names; returns the newest it moved. A receipt that moves none may be
/// for a part of a message sent part by part: [`apply_part_receipt`].
fn apply_receipt(conn: &Connection, r: &ReceiptUpdate) -> Result<Option<MessageId>> {
    if may_become("status", r.to).is_empty() {
        return Ok(None);
    }
    let found: Vec<(i64, Moved)> = conn
        .prepare_cached(&receipt_match_sql(r.to))?
        .query_map(params![r.connector, r.carrier_id], |row| Ok((row.get(0)?, Moved::from_row(row, 1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    // A carrier that reuses an id moves every message still waiting under it; report the newest.
    let mut newest = None;
    let line = journey_line(r.to, r.at, &r.detail);
    for (rowid, before) in found {
        let changed = conn.prepare_cached(&receipt_sql(r.to))?.execute(params![
            rowid,
            r.to.as_str(),
            r.at.0,
            r.error_code,
            line
        ])?;
        if changed == 0 {
            continue;
        }
        let m = before.after(&line, r.error_code.as_deref());
        enqueue_callback(conn, &m, r.to, r.at)?;
        newest = newest.max(Some(message_id_of(&m.id)?));
    }
    if newest.is_some() {
        return Ok(newest);
    }
    // Nothing moved: a part's receipt, or a late one (which changes nothing).
    apply_part_receipt(conn, r)
}

/// A receipt for a part of a message sent part by part: records the part and returns its message, which moves once
/// its parts decide it (delivered when all are, otherwise at the first part that is not).
fn apply_part_receipt(conn: &Connection, r: &ReceiptUpdate) -> Result<Option<MessageId>> {
    let part: Option<(String, i64)> = conn
        .prepare_cached(
            "UPDATE OR FAIL message_parts SET status = ?3 WHERE connector = ?1 AND carrier_id = ?2 AND status = 'sent' \
             RETURNING message_id, part",
        )?
        .query_row(params![r.connector, r.carrier_id, r.to.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    if let Some((message, part)) = part {
        let (left, total): (i64, i64) = conn
            .prepare_cached(
                "SELECT COUNT(*) FILTER (WHERE status <> 'delivered'), COUNT(*) FROM message_parts WHERE message_id = ?1",
            )?
            .query_row([&message], |row| Ok((row.get(0)?, row.get(1)?)))?;
        let id = message_id_of(&message)?;
        if r.to != Status::Delivered || left == 0 {
            let changes = Changes { error_code: r.error_code.clone(), ..Changes::default() };
            let detail = format!("part {part} of {total}: {}", r.detail);
            apply_transition(conn, &Transition { id, to: r.to, at: r.at, detail, changes })?;
        }
        return Ok(Some(id));
    }
    Ok(None)
}

/// The largest power of two not above `n` (at least 1, at most 1,024): the `LIMIT` a statement takes as a literal.
/// A `LIMIT` given as a parameter makes SQLite prepare an `IN (SELECT ... LIMIT ?)` statement again at every
/// execution (it plans with the value); literals from a handful of sizes keep each shape prepared once.
fn limit_literal(n: u32) -> u32 {
    let n = n.clamp(1, 1024);
    1 << (u32::BITS - 1 - n.leading_zeros())
}

/// What the claims take, in order: messages whose holder's lease ran out, then what is due at `?1`; each through
/// the partial index of its `WHERE` term in index order, so a claim costs the same with a backlog of a million.
/// Each row: [`MESSAGE_COLUMNS`] as they are, the journey's length, the rowid; [`CLAIM_ONE`] then claims it.
fn claim_sql(limit: u32) -> [String; 2] {
    let pick = |waiting: &str, order: &str| {
        format!(
            "SELECT {MESSAGE_COLUMNS}, length(journey), rowid FROM messages WHERE {waiting} \
             ORDER BY {order} LIMIT {limit}"
        )
    };
    [
        pick("status = 'sending' AND lease_until < ?1", "lease_until"),
        pick(&format!("{} AND next_attempt_at <= ?1", waiting::QUEUE), "next_attempt_at"),
    ]
}

/// Claims the message of rowid `?1` for `?2` until `?3`, at `?4`, with the journey line `?5`: one single-row
/// update, as a multi-row `UPDATE ... RETURNING` costs twice as much (see [`transition_sql`]).
const CLAIM_ONE: &str = "UPDATE OR FAIL messages SET status = 'sending', lease_owner = ?2, lease_until = ?3, \
     attempts = CASE WHEN status = 'sending' THEN attempts ELSE attempts + 1 END, updated_at = ?4, \
     journey = journey || ?5 WHERE rowid = ?1";

/// Ends what waited past its validity, at most `limit` (a [`limit_literal`]). A message being sent is left to its
/// dispatcher, which checks the validity before it submits. Parameters: now, and the journey lines for a message
/// that was scheduled, queued, sent.
fn expire_sql(limit: u32) -> String {
    format!(
        "UPDATE OR FAIL messages SET claimed_from = status, status = 'expired', updated_at = ?1, \
         journey = journey || CASE status WHEN 'scheduled' THEN ?2 WHEN 'queued' THEN ?3 ELSE ?4 END \
         WHERE id IN (SELECT id FROM messages WHERE {} AND expires_at <= ?1 LIMIT {limit}) \
         RETURNING {HOOK_COLUMNS}",
        waiting::EXPIRING
    )
}

/// Claims due callbacks: the oldest pending one of each message whose time has come. A claim moves its callbacks'
/// next attempt to the lease's end, so what is under way leaves the due range (a claim does not walk past it) and
/// comes due again only if its lease runs out unrecorded. Parameters: owner, lease end, now.
fn claim_callbacks_sql(limit: u32) -> String {
    format!(
        "UPDATE OR FAIL callbacks SET lease_owner = ?1, lease_until = ?2, next_attempt_at = ?2 WHERE id IN ( \
         SELECT c.id FROM callbacks c WHERE c.state = 'pending' AND c.next_attempt_at <= ?3 \
         AND NOT EXISTS (SELECT 1 FROM callbacks p WHERE p.message_id = c.message_id AND p.state = 'pending' \
         AND p.seq < c.seq) ORDER BY c.next_attempt_at LIMIT {limit}) \
         RETURNING id, account_id, message_id, kind, url, status, error_code, at, attempts, created_at"
    )
}

/// What a deliver_sm says of a message, by id.
fn delivery_message(conn: &Connection, id: MessageId) -> Result<Option<DeliveryMessage>> {
    let mut st = conn.prepare_cached("SELECT to_addr, from_addr, body, created_at FROM messages WHERE id = ?1")?;
    let mut rows = st.query([id.to_string()])?;
    let Some(r) = rows.next()? else { return Ok(None) };
    Ok(Some(DeliveryMessage { id, to: r.get(0)?, from: r.get(1)?, body: r.get(2)?, created_at: Timestamp(r.get(3)?) }))
}

/// A message by id, whoever owns it.
fn message_by_id(conn: &Connection, id: MessageId) -> Result<Option<Message>> {
    let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1");
    let mut st = conn.prepare_cached(&sql)?;
    let mut rows = st.query([id.to_string()])?;
    rows.next()?.map(message_from_row).transpose()
}

/// Claims an account's due deliver_sm: the oldest pending ones of each message whose time has come, their next
/// attempt moved to the lease's end as [`claim_callbacks_sql`] does. Parameters: owner, lease end, now, account.
fn claim_smpp_sql(limit: u32) -> String {
    format!(
        "UPDATE OR FAIL smpp_outbox SET lease_owner = ?1, lease_until = ?2, next_attempt_at = ?2 WHERE id IN ( \
         SELECT c.id FROM smpp_outbox c WHERE c.state = 'pending' AND c.account_id = ?4 AND c.next_attempt_at <= ?3 \
         AND NOT EXISTS (SELECT 1 FROM smpp_outbox p WHERE p.message_id = c.message_id AND p.state = 'pending' \
         AND p.seq < c.seq) ORDER BY c.next_attempt_at LIMIT {limit}) \
         RETURNING id, account_id, message_id, kind, part, status, error_code, at, attempts, expires_at"
    )
}

/// A [`DueDelivery`] from the columns [`claim_smpp_sql`] returns (the message is read after).
fn due_delivery_from_row(r: &Row<'_>) -> Result<DueDelivery> {
    Ok(DueDelivery {
        id: r.get::<_, i64>(0)?.to_string(),
        account_id: account_id_of(&r.get::<_, String>(1)?)?,
        message_id: message_id_of(&r.get::<_, String>(2)?)?,
        kind: r.get(3)?,
        part: u32::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
        status: status_of(&r.get::<_, String>(5)?)?,
        error_code: r.get(6)?,
        at: Timestamp(r.get(7)?),
        attempts: u32::try_from(r.get::<_, i64>(8)?).unwrap_or(u32::MAX),
        expires_at: Timestamp(r.get(9)?),
        message: None,
    })
}

fn webhooks_row(conn: &Connection, account: AccountId) -> Result<Option<Webhooks>> {
    let mut st =
        conn.prepare_cached("SELECT status_url, inbound_url, secret, updated_at FROM webhooks WHERE account_id = ?1")?;
    let mut rows = st.query([account.to_string()])?;
    let Some(r) = rows.next()? else { return Ok(None) };
    Ok(Some(Webhooks {
        account_id: account,
        status_url: r.get(0)?,
        inbound_url: r.get(1)?,
        secret: r.get(2)?,
        updated_at: Timestamp(r.get(3)?),
    }))
}

/// Counts of what waits, through the partial indexes, so the cost follows the backlog, not the history: by status
/// for what can expire, and what is being sent.
fn pending_sql() -> [String; 2] {
    [
        format!("SELECT status, COUNT(*) FROM messages WHERE {} GROUP BY status", waiting::EXPIRING),
        "SELECT COUNT(*) FROM messages WHERE status = 'sending'".to_string(),
    ]
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_account(&self, name: &str, is_admin: bool, now: Timestamp) -> Result<Account> {
        let account =
            Account { id: AccountId::generate(), name: name.to_string(), is_admin, created_at: now, routes: None };
        let row = account.clone();
        self.write(move |conn, _| {
            conn.prepare_cached("INSERT INTO accounts (id, name, is_admin, created_at) VALUES (?1, ?2, ?3, ?4)")?
                .execute(params![row.id.to_string(), row.name, i64::from(row.is_admin), row.created_at.0])?;
            Ok(())
        })
        .await?;
        Ok(account)
    }

    async fn account(&self, id: AccountId) -> Result<Option<Account>> {
        self.read(move |conn| {
            let mut st =
                conn.prepare_cached("SELECT id, name, is_admin, created_at, routes FROM accounts WHERE id = ?1")?;
            let mut rows = st.query([id.to_string()])?;
            rows.next()?.map(account_from_row).transpose()
        })
        .await
    }

    async fn admin_account(&self) -> Result<Option<Account>> {
        self.read(|conn| {
            let mut st = conn.prepare_cached(
                "SELECT id, name, is_admin, created_at, routes FROM accounts WHERE is_admin = 1 ORDER BY created_at LIMIT 1",
            )?;
            let mut rows = st.query([])?;
            rows.next()?.map(account_from_row).transpose()
        })
        .await
    }

    async fn create_api_key(&self, account: AccountId, key_hash: &str, prefix: &str, now: Timestamp) -> Result<ApiKey> {
        let key = ApiKey {
            id: uuid::Uuid::now_v7().hyphenated().to_string(),
            account_id: account,
            prefix: prefix.to_string(),
            created_at: now,
        };
        let (row, hash) = (key.clone(), key_hash.to_string());
        self.write(move |conn, _| {
            conn.prepare_cached(
                "INSERT INTO api_keys (id, account_id, key_hash, prefix, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![row.id, row.account_id.to_string(), hash, row.prefix, row.created_at.0])?;
            Ok(())
        })
        .await?;
        Ok(key)
    }

    async fn key_count(&self, account: AccountId) -> Result<i64> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT COUNT(*) FROM api_keys WHERE account_id = ?1 AND revoked_at IS NULL")?
                .query_row([account.to_string()], |r| r.get(0))?)
        })
        .await
    }

    async fn account_by_key_hash(&self, key_hash: &str) -> Result<Option<Account>> {
        let hash = key_hash.to_string();
        self.read(move |conn| {
            let mut st = conn.prepare_cached(
                "SELECT a.id, a.name, a.is_admin, a.created_at, a.routes FROM api_keys k JOIN accounts a ON a.id = k.account_id \
                 WHERE k.key_hash = ?1 AND k.revoked_at IS NULL",
            )?;
            let mut rows = st.query([hash])?;
            rows.next()?.map(account_from_row).transpose()
        })
        .await
    }

    async fn insert_messages(&self, messages: &[NewMessage]) -> Result<Vec<Inserted>> {
        let messages = messages.to_vec();
        self.write(move |conn, changed| {
            let mut out = Vec::with_capacity(messages.len());
            for new in &messages {
                let m = &new.message;
                let id = m.id.to_string();
                let (status, attempts) = match new.claim {
                    Some(_) => (Status::Sending, m.attempts + 1),
                    None => (m.status, m.attempts),
                };
                let (idem_key, idem_hash) = match &new.idempotency {
                    Some((k, h)) => (Some(k.as_str()), Some(h.as_str())),
                    None => (None, None),
                };
                let journey = first_journey(new);
                let inserted = conn
                    .prepare_cached(
                        "INSERT INTO messages (id, account_id, direction, to_addr, from_addr, body, encoding, \
                         segments, price_micros, connector, carrier_id, status, error_code, reference, callback_url, \
                         send_at, expires_at, attempts, next_attempt_at, idempotency_key, request_hash, created_at, \
                         updated_at, journey, lease_owner, lease_until, smpp_receipts, smpp_parts, \
                         callback_statuses) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
                         ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29) ON CONFLICT DO NOTHING",
                    )?
                    .execute(params![
                        id,
                        m.account_id.to_string(),
                        m.direction.as_str(),
                        m.to,
                        m.from,
                        m.body,
                        m.encoding,
                        i64::from(m.segments),
                        m.price_micros,
                        m.connector,
                        m.carrier_id,
                        status.as_str(),
                        m.error_code,
                        m.reference,
                        m.callback_url,
                        m.send_at.map(|t| t.0),
                        m.expires_at.map(|t| t.0),
                        i64::from(attempts),
                        m.send_at.unwrap_or(m.created_at).0,
                        idem_key,
                        idem_hash,
                        m.created_at.0,
                        m.updated_at.0,
                        journey,
                        new.claim.as_ref().map(|c| c.owner.as_str()),
                        new.claim.as_ref().map(|c| c.until.0),
                        new.smpp.map(|r| i64::from(r.registered_delivery)),
                        new.smpp.map(|r| i64::from(r.ids)),
                        m.callback_statuses.map(|c| i64::from(c.0)),
                    ])?;
                if inserted == 1 {
                    changed.push(m.status);
                    let moved = Moved {
                        id: id.clone(),
                        account: m.account_id.to_string(),
                        callback_url: m.callback_url.clone(),
                        callback_statuses: m.callback_statuses,
                        error_code: m.error_code.clone(),
                        seq: journey.chars().count() as i64,
                        smpp: new.smpp,
                        message: Some(DeliveryMessage::from(m)),
                    };
                    enqueue_callback(conn, &moved, m.status, m.created_at)?;
                    if new.claim.is_some() {
                        changed.push(Status::Sending);
                        enqueue_callback(conn, &moved, Status::Sending, m.created_at)?;
                    }
                    out.push(Inserted::New);
                    continue;
                }
                // Only the idempotency index can make a fresh UUIDv7 conflict.
                let Some(key) = idem_key else {
                    return Err(corrupt(format!("message id {id} exists already")));
                };
                let (existing, hash): (String, Option<String>) = conn
                    .prepare_cached(
                        "SELECT id, request_hash FROM messages WHERE account_id = ?1 AND idempotency_key = ?2",
                    )?
                    .query_row(params![m.account_id.to_string(), key], |r| Ok((r.get(0)?, r.get(1)?)))?;
                out.push(Inserted::Duplicate {
                    id: message_id_of(&existing)?,
                    same_request: hash.as_deref() == idem_hash,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn message(&self, account: AccountId, id: MessageId) -> Result<Option<Message>> {
        self.read(move |conn| {
            let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1 AND account_id = ?2");
            let mut st = conn.prepare_cached(&sql)?;
            let mut rows = st.query([id.to_string(), account.to_string()])?;
            rows.next()?.map(message_from_row).transpose()
        })
        .await
    }

    async fn events(&self, id: MessageId) -> Result<Vec<Event>> {
        self.read(move |conn| {
            let journey: Option<String> = conn
                .prepare_cached("SELECT journey FROM messages WHERE id = ?1")?
                .query_row([id.to_string()], |r| r.get(0))
                .optional()?;
            journey.map_or(Ok(Vec::new()), |j| parse_journey(&j))
        })
        .await
    }

    async fn list_messages(
        &self,
        account: AccountId,
        filter: &ListFilter,
        cursor: Option<MessageId>,
        limit: u32,
    ) -> Result<Vec<Message>> {
        let (sql, params) = list_query(account, filter, cursor, limit);
        let values: Vec<rusqlite::types::Value> = params
            .into_iter()
            .map(|p| match p {
                Param::Text(t) => rusqlite::types::Value::Text(t),
                Param::Int(n) => rusqlite::types::Value::Integer(n),
            })
            .collect();
        self.read(move |conn| {
            let mut st = conn.prepare_cached(&sql)?;
            let mut rows = st.query(rusqlite::params_from_iter(values))?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(message_from_row(r)?);
            }
            Ok(out)
        })
        .await
    }

    async fn claim_due(&self, owner: &str, now: Timestamp, lease_ms: i64, limit: u32) -> Result<Vec<Message>> {
        let [scheduled, taken_over, queued] = claim_lines(owner, now);
        let owner = owner.to_string();
        self.write(move |conn, changed| {
            let mut out = Vec::new();
            let mut claimed = Vec::new();
            for kind in 0..2 {
                // In steps of the literal limits, until the room is full or nothing more waits.
                loop {
                    let room = limit.saturating_sub(u32::try_from(out.len()).unwrap_or(u32::MAX));
                    if room == 0 {
                        break;
                    }
                    let step = limit_literal(room);
                    // Read first, then claim each: no update under a read still walking the index it changes.
                    let picked: Vec<(Message, i64, i64)> = conn
                        .prepare_cached(&claim_sql(step)[kind])?
                        .query_map([now.0], |r| Ok((message_from_row(r), r.get(21)?, r.get(22)?)))?
                        .map(|row| {
                            let (m, length, rowid) = row?;
                            Ok((m?, length, rowid))
                        })
                        .collect::<Result<_>>()?;
                    let got = picked.len();
                    let lease_end = now.plus_millis(lease_ms).0;
                    for (mut m, length, rowid) in picked {
                        let line = match m.status {
                            Status::Scheduled => &scheduled,
                            Status::Sending => &taken_over,
                            _ => &queued,
                        };
                        conn.prepare_cached(CLAIM_ONE)?.execute(params![rowid, owner, lease_end, now.0, line])?;
                        if m.status == Status::Scheduled {
                            changed.push(Status::Queued);
                        }
                        changed.push(Status::Sending);
                        if m.status != Status::Sending {
                            m.attempts += 1;
                        }
                        m.status = Status::Sending;
                        m.updated_at = now;
                        claimed.push(Moved {
                            id: m.id.to_string(),
                            account: m.account_id.to_string(),
                            callback_url: m.callback_url.clone(),
                            callback_statuses: m.callback_statuses,
                            error_code: m.error_code.clone(),
                            seq: length + line.chars().count() as i64,
                            smpp: None,
                            message: None,
                        });
                        out.push(m);
                    }
                    if got < step as usize {
                        break;
                    }
                }
            }
            for m in &claimed {
                enqueue_callback(conn, m, Status::Sending, now)?;
            }
            out.sort_by_key(|m| m.id);
            Ok(out)
        })
        .await
    }

    async fn unpark(
        &self,
        route: Option<&str>,
        after: Option<&WaitingAt>,
        now: Timestamp,
        limit: u32,
    ) -> Result<Option<WaitingAt>> {
        // Two statements, each seeking the index by its whole key (`?1 IS NULL OR` would keep SQLite from it):
        // `?1` is the route, or where to go on from.
        let which = if route.is_some() { "waiting_route = ?1 AND id > ?3" } else { "(waiting_route, id) > (?1, ?3)" };
        let sql = format!(
            "SELECT rowid, waiting_route, id FROM messages WHERE {} AND {which} AND id < ?4 \
             ORDER BY waiting_route, id LIMIT ?2",
            waiting::FOR_ROUTE
        );
        let (key, from_id) = unpark_from(route, after);
        let before = MessageId::first_at(now).to_string();
        let found: Vec<(i64, String, String)> = self
            .read(move |conn| {
                let mut st = conn.prepare_cached(&sql)?;
                let rows =
                    st.query_map(params![key, limit, from_id, before], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            })
            .await?;
        // Found on a reader, so that a look that finds none costs the writer nothing; each put back only if it
        // still waits.
        let Some((_, route, id)) = found.last() else { return Ok(None) };
        let last = WaitingAt { route: route.clone(), id: message_id_of(id)? };
        let sql = format!(
            "UPDATE OR FAIL messages SET next_attempt_at = ?2, waiting_route = NULL WHERE rowid = ?1 AND {}",
            waiting::FOR_ROUTE
        );
        self.write(move |conn, _| {
            for (rowid, _, _) in &found {
                conn.prepare_cached(&sql)?.execute(params![rowid, now.0])?;
            }
            Ok(())
        })
        .await?;
        Ok(Some(last))
    }

    async fn release_leases(&self, owner: &str) -> Result<u64> {
        let owner = owner.to_string();
        self.write(move |conn, _| {
            let n = conn
                .prepare_cached(
                    "UPDATE messages SET lease_until = 0 WHERE status = 'sending' AND lease_owner = ?1 AND lease_until > 0",
                )?
                .execute([&owner])?;
            Ok(n as u64)
        })
        .await
    }

    async fn record(
        &self,
        transitions: &[Transition],
        receipts: &[ReceiptUpdate],
    ) -> Result<(Vec<bool>, Vec<Option<MessageId>>)> {
        if transitions.is_empty() && receipts.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let (transitions, receipts) = (transitions.to_vec(), receipts.to_vec());
        self.write(move |conn, changed| {
            let mut moved = Vec::with_capacity(transitions.len());
            for t in &transitions {
                let m = apply_transition(conn, t)?;
                if m {
                    changed.push(t.to);
                }
                moved.push(m);
            }
            let mut matched = Vec::with_capacity(receipts.len());
            for r in &receipts {
                let m = apply_receipt(conn, r)?;
                if m.is_some() {
                    changed.push(r.to);
                }
                matched.push(m);
            }
            Ok((moved, matched))
        })
        .await
    }

    async fn replace_message(
        &self,
        account: AccountId,
        id: MessageId,
        r: &Message,
        now: Timestamp,
        detail: &str,
    ) -> Result<bool> {
        let r = r.clone();
        let lines = [journey_line(Status::Scheduled, now, detail), journey_line(Status::Queued, now, detail)];
        self.write(move |conn, _| {
            let n = conn
                .prepare_cached(
                    "UPDATE messages SET body = ?3, encoding = ?4, segments = ?5, price_micros = ?6, send_at = ?7, \
                     expires_at = ?8, next_attempt_at = COALESCE(?7, next_attempt_at), updated_at = ?9, \
                     waiting_route = CASE WHEN ?7 IS NULL THEN waiting_route END, \
                     journey = journey || CASE status WHEN 'scheduled' THEN ?10 ELSE ?11 END \
                     WHERE id = ?1 AND account_id = ?2 AND status IN ('scheduled', 'queued')",
                )?
                .execute(params![
                    id.to_string(),
                    account.to_string(),
                    r.body,
                    r.encoding,
                    i64::from(r.segments),
                    r.price_micros,
                    r.send_at.map(|t| t.0),
                    r.expires_at.map(|t| t.0),
                    now.0,
                    lines[0],
                    lines[1],
                ])?;
            Ok(n == 1)
        })
        .await
    }

    async fn expire_due(&self, now: Timestamp, limit: u32) -> Result<Vec<MessageId>> {
        let [scheduled, queued, sent] = expiry_lines(now);
        self.write(move |conn, changed| {
            let mut out = Vec::new();
            loop {
                let room = limit.saturating_sub(u32::try_from(out.len()).unwrap_or(u32::MAX));
                if room == 0 {
                    break;
                }
                let step = limit_literal(room);
                let mut st = conn.prepare_cached(&expire_sql(step))?;
                let mut rows = st.query(params![now.0, scheduled, queued, sent])?;
                let mut got = 0;
                let mut ids = Vec::new();
                while let Some(r) = rows.next()? {
                    ids.push(Moved::from_row(r, 0)?);
                    changed.push(Status::Expired);
                    got += 1;
                }
                drop(rows);
                for m in ids {
                    enqueue_callback(conn, &m, Status::Expired, now)?;
                    out.push(message_id_of(&m.id)?);
                }
                if got < step {
                    break;
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    async fn message_by_carrier_id(&self, connector: &str, carrier_id: &str) -> Result<Option<MessageId>> {
        let (connector, carrier_id) = (connector.to_string(), carrier_id.to_string());
        self.read(move |conn| {
            let id: Option<String> = conn
                .prepare_cached(
                    "SELECT id FROM messages WHERE connector = ?1 AND carrier_id = ?2 ORDER BY id DESC LIMIT 1",
                )?
                .query_row([connector, carrier_id], |r| r.get(0))
                .optional()?;
            id.map(|id| message_id_of(&id)).transpose()
        })
        .await
    }

    async fn message_status(&self, id: MessageId) -> Result<Option<Status>> {
        self.read(move |conn| {
            let s: Option<String> = conn
                .prepare_cached("SELECT status FROM messages WHERE id = ?1")?
                .query_row([id.to_string()], |r| r.get(0))
                .optional()?;
            s.map(|s| status_of(&s)).transpose()
        })
        .await
    }

    async fn account_for_reply(&self, handset: &str, sender: &str) -> Result<Option<AccountId>> {
        let (handset, sender) = (handset.to_string(), sender.to_string());
        self.read(move |conn| {
            let a: Option<String> = conn
                .prepare_cached(
                    "SELECT account_id FROM messages WHERE direction = 'outbound' AND to_addr = ?1 \
                     AND from_addr = ?2 ORDER BY id DESC LIMIT 1",
                )?
                .query_row([handset, sender], |r| r.get(0))
                .optional()?;
            a.map(|a| account_id_of(&a)).transpose()
        })
        .await
    }

    async fn count_pending(&self) -> Result<Vec<(Status, i64)>> {
        self.read(|conn| {
            let [waiting, sending] = pending_sql();
            let mut st = conn.prepare_cached(&waiting)?;
            let mut rows = st.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push((status_of(&r.get::<_, String>(0)?)?, r.get(1)?));
            }
            drop(rows);
            let sending: i64 = conn.prepare_cached(&sending)?.query_row([], |r| r.get(0))?;
            if sending > 0 {
                out.push((Status::Sending, sending));
            }
            out.sort_by_key(|(s, _)| s.as_str());
            Ok(out)
        })
        .await
    }

    async fn connectors(&self) -> Result<Vec<ConnectorRecord>> {
        self.read(|conn| {
            let mut st = conn
                .prepare_cached("SELECT name, kind, settings, created_at, updated_at FROM connectors ORDER BY name")?;
            let rows = st.query_map([], |r| {
                Ok(ConnectorRecord {
                    name: r.get(0)?,
                    kind: r.get(1)?,
                    settings: r.get(2)?,
                    created_at: Timestamp(r.get(3)?),
                    updated_at: Timestamp(r.get(4)?),
                })
            })?;
            Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn insert_connector(&self, c: &ConnectorRecord) -> Result<bool> {
        let c = c.clone();
        self.write(move |conn, _| {
            let n = conn
                .prepare_cached(
                    "INSERT INTO connectors (name, kind, settings, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT DO NOTHING",
                )?
                .execute(params![c.name, c.kind, c.settings, c.created_at.0, c.updated_at.0])?;
            Ok(n == 1)
        })
        .await
    }

    async fn update_connector(&self, c: &ConnectorRecord) -> Result<bool> {
        let c = c.clone();
        self.write(move |conn, _| {
            let n = conn
                .prepare_cached("UPDATE connectors SET kind = ?2, settings = ?3, updated_at = ?4 WHERE name = ?1")?
                .execute(params![c.name, c.kind, c.settings, c.updated_at.0])?;
            Ok(n == 1)
        })
        .await
    }

    async fn delete_connector(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.write(move |conn, _| {
            Ok(conn.prepare_cached("DELETE FROM connectors WHERE name = ?1")?.execute([&name])? == 1)
        })
        .await
    }

    async fn routes(&self) -> Result<Vec<Route>> {
        self.read(|conn| {
            let mut st = conn.prepare_cached("SELECT name, position, matches, connectors FROM routes")?;
            let mut rows = st.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(route_of(r.get(0)?, r.get(1)?, &r.get::<_, String>(2)?, &r.get::<_, String>(3)?)?);
            }
            Ok(out)
        })
        .await
    }

    async fn insert_route(&self, route: &Route, now: Timestamp) -> Result<bool> {
        let (r, (matches, connectors)) = (route.clone(), route_json(route));
        self.write(move |conn, _| {
            let n = conn
                .prepare_cached(
                    "INSERT INTO routes (name, position, matches, connectors, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT DO NOTHING",
                )?
                .execute(params![r.name, r.position, matches, connectors, now.0])?;
            Ok(n == 1)
        })
        .await
    }

    async fn update_route(&self, route: &Route, now: Timestamp) -> Result<bool> {
        let (r, (matches, connectors)) = (route.clone(), route_json(route));
        self.write(move |conn, _| {
            let n = conn
                .prepare_cached(
                    "UPDATE routes SET position = ?2, matches = ?3, connectors = ?4, updated_at = ?5 WHERE name = ?1",
                )?
                .execute(params![r.name, r.position, matches, connectors, now.0])?;
            Ok(n == 1)
        })
        .await
    }

    async fn delete_route(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.write(move |conn, _| Ok(conn.prepare_cached("DELETE FROM routes WHERE name = ?1")?.execute([&name])? == 1))
            .await
    }

    async fn do_once(&self, name: &str, now: Timestamp) -> Result<bool> {
        let name = name.to_string();
        self.write(move |conn, _| {
            let n = conn
                .prepare_cached("INSERT INTO done_once (name, at) VALUES (?1, ?2) ON CONFLICT DO NOTHING")?
                .execute(params![name, now.0])?;
            Ok(n == 1)
        })
        .await
    }

    async fn route_limits(&self) -> Result<Vec<(AccountId, Vec<String>)>> {
        self.read(|conn| {
            let mut st = conn.prepare_cached("SELECT id, routes FROM accounts WHERE routes IS NOT NULL")?;
            let mut rows = st.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let routes = routes_of(r.get(1)?)?.unwrap_or_default();
                out.push((account_id_of(&r.get::<_, String>(0)?)?, routes));
            }
            Ok(out)
        })
        .await
    }

    async fn set_account_routes(&self, account: AccountId, routes: Option<&[String]>) -> Result<bool> {
        let json = routes_json(routes);
        self.write(move |conn, _| {
            let n = conn
                .prepare_cached("UPDATE accounts SET routes = ?2 WHERE id = ?1")?
                .execute(params![account.to_string(), json])?;
            Ok(n == 1)
        })
        .await
    }

    async fn put_webhooks(
        &self,
        account: AccountId,
        status_url: Option<&str>,
        inbound_url: Option<&str>,
        new_secret: &str,
        now: Timestamp,
    ) -> Result<Webhooks> {
        let (status_url, inbound_url, secret) =
            (status_url.map(String::from), inbound_url.map(String::from), new_secret.to_string());
        self.write(move |conn, _| {
            conn.prepare_cached(
                "INSERT INTO webhooks (account_id, status_url, inbound_url, secret, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (account_id) DO UPDATE SET status_url = excluded.status_url, \
                 inbound_url = excluded.inbound_url, updated_at = excluded.updated_at",
            )?
            .execute(params![account.to_string(), status_url, inbound_url, secret, now.0])?;
            forget_hooks();
            webhooks_row(conn, account)?.ok_or_else(|| corrupt("webhooks just written are gone"))
        })
        .await
    }

    async fn webhooks(&self, account: AccountId) -> Result<Option<Webhooks>> {
        self.read(move |conn| webhooks_row(conn, account)).await
    }

    async fn rotate_webhook_secret(&self, account: AccountId, secret: &str, now: Timestamp) -> Result<bool> {
        let secret = secret.to_string();
        self.write(move |conn, _| {
            let n = conn
                .prepare_cached("UPDATE webhooks SET secret = ?2, updated_at = ?3 WHERE account_id = ?1")?
                .execute(params![account.to_string(), secret, now.0])?;
            Ok(n == 1)
        })
        .await
    }

    async fn create_smpp_credential(&self, c: &SmppCredential) -> Result<bool> {
        let c = c.clone();
        self.write(move |conn, _| {
            let n = conn
                .prepare_cached(
                    "INSERT INTO smpp_credentials (system_id, account_id, password_hash, allowed_ips, max_binds, \
                     throughput, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (system_id) DO NOTHING",
                )?
                .execute(params![
                    c.system_id,
                    c.account_id.to_string(),
                    c.password_hash,
                    c.allowed_ips.as_ref().map(|a| serde_json::json!(a).to_string()),
                    c.max_binds.map(i64::from),
                    c.throughput,
                    c.created_at.0
                ])?;
            forget_hooks();
            Ok(n == 1)
        })
        .await
    }

    async fn smpp_credentials(&self, account: AccountId) -> Result<Vec<SmppCredential>> {
        self.read(move |conn| {
            let sql = format!("SELECT {SMPP_COLUMNS} FROM smpp_credentials WHERE account_id = ?1 ORDER BY system_id");
            let mut st = conn.prepare_cached(&sql)?;
            let mut rows = st.query([account.to_string()])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(smpp_credential_from_row(r)?);
            }
            Ok(out)
        })
        .await
    }

    async fn smpp_credential(&self, system_id: &str) -> Result<Option<SmppCredential>> {
        let system_id = system_id.to_string();
        self.read(move |conn| {
            let sql = format!("SELECT {SMPP_COLUMNS} FROM smpp_credentials WHERE system_id = ?1");
            let mut st = conn.prepare_cached(&sql)?;
            let mut rows = st.query([system_id])?;
            rows.next()?.map(smpp_credential_from_row).transpose()
        })
        .await
    }

    async fn delete_smpp_credential(&self, account: AccountId, system_id: &str) -> Result<bool> {
        let system_id = system_id.to_string();
        self.write(move |conn, _| {
            let n = conn
                .prepare_cached("DELETE FROM smpp_credentials WHERE account_id = ?1 AND system_id = ?2")?
                .execute(params![account.to_string(), system_id])?;
            forget_hooks();
            Ok(n == 1)
        })
        .await
    }

    async fn claim_callbacks(
        &self,
        owner: &str,
        now: Timestamp,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<DueCallback>> {
        let owner = owner.to_string();
        let sql = claim_callbacks_sql(limit_literal(limit));
        let mut claimed = self
            .write(move |conn, _| {
                let mut st = conn.prepare_cached(&sql)?;
                let mut rows = st.query(params![owner, now.plus_millis(lease_ms).0, now.0])?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    out.push(DueCallback {
                        id: r.get(0)?,
                        account_id: account_id_of(&r.get::<_, String>(1)?)?,
                        message_id: message_id_of(&r.get::<_, String>(2)?)?,
                        kind: r.get(3)?,
                        url: r.get(4)?,
                        status: status_of(&r.get::<_, String>(5)?)?,
                        error_code: r.get(6)?,
                        at: Timestamp(r.get(7)?),
                        attempts: u32::try_from(r.get::<_, i64>(8)?).unwrap_or(u32::MAX),
                        created_at: Timestamp(r.get(9)?),
                        secret: String::new(),
                        message: None,
                    });
                }
                Ok(out)
            })
            .await?;
        if claimed.is_empty() {
            return Ok(claimed);
        }
        // Their messages and secrets from a reader, in one go: the writer thread is what callbacks keep busy.
        // One read transaction for them all: each statement on its own would start one, and starting one behind a
        // busy writer re-reads the WAL index and drops the page cache.
        self.read(move |conn| {
            let read = conn.unchecked_transaction()?;
            for c in &mut claimed {
                c.secret = conn
                    .prepare_cached("SELECT secret FROM webhooks WHERE account_id = ?1")?
                    .query_row([c.account_id.to_string()], |r| r.get(0))
                    .optional()?
                    .unwrap_or_default();
                c.message = message_by_id(conn, c.message_id)?;
            }
            read.finish()?;
            Ok(claimed)
        })
        .await
    }

    async fn finish_callbacks(&self, results: &[CallbackResult]) -> Result<()> {
        let results = results.to_vec();
        self.write(move |conn, _| {
            for r in &results {
                let (state, next) = match r.next {
                    CallbackNext::Delivered => ("delivered", None),
                    CallbackNext::RetryAt(t) => ("pending", Some(t.0)),
                    CallbackNext::GiveUp => ("failed", None),
                };
                conn.prepare_cached(
                    "UPDATE OR FAIL callbacks SET state = ?2, attempts = attempts + 1, \
                     next_attempt_at = COALESCE(?3, next_attempt_at), lease_owner = NULL, lease_until = NULL, \
                     attempt_log = attempt_log || ?4 WHERE id = ?1",
                )?
                .execute(params![r.id, state, next, attempt_line(&r.attempt)])?;
            }
            Ok(())
        })
        .await
    }

    async fn callbacks(&self, account: AccountId, message: MessageId) -> Result<Vec<CallbackRecord>> {
        self.read(move |conn| {
            let mut st = conn.prepare_cached(
                "SELECT id, kind, url, status, error_code, at, state, attempt_log, next_attempt_at FROM callbacks \
                 WHERE message_id = ?1 AND account_id = ?2 ORDER BY seq, id",
            )?;
            let mut rows = st.query([message.to_string(), account.to_string()])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let state: String = r.get(6)?;
                out.push(CallbackRecord {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    url: r.get(2)?,
                    status: status_of(&r.get::<_, String>(3)?)?,
                    error_code: r.get(4)?,
                    at: Timestamp(r.get(5)?),
                    attempts: parse_attempts(&r.get::<_, String>(7)?)?,
                    next_attempt_at: (state == "pending").then(|| r.get(8).map(Timestamp)).transpose()?,
                    state,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn feed_smpp_deliveries(&self, feed: SmppFeed) -> Result<bool> {
        self.write(move |conn, _| {
            conn.prepare_cached(
                "UPDATE OR FAIL smpp_outbox SET lease_owner = NULL, lease_until = NULL, next_attempt_at = at \
                 WHERE lease_owner = ?1",
            )?
            .execute([&feed.node])?;
            FEED.set(Some(feed.clone()));
            Ok(true)
        })
        .await
    }

    async fn claim_smpp_deliveries(
        &self,
        owner: &str,
        accounts: &[AccountId],
        now: Timestamp,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<DueDelivery>> {
        if accounts.is_empty() {
            return Ok(Vec::new());
        }
        let owner = owner.to_string();
        let accounts: Vec<String> = accounts.iter().map(|a| a.to_string()).collect();
        let sql = claim_smpp_sql(limit_literal(limit));
        let mut claimed = self
            .write(move |conn, _| {
                let mut st = conn.prepare_cached(&sql)?;
                let mut out = Vec::new();
                for account in &accounts {
                    let mut rows = st.query(params![owner, now.plus_millis(lease_ms).0, now.0, account])?;
                    while let Some(r) = rows.next()? {
                        out.push(due_delivery_from_row(r)?);
                    }
                }
                Ok(out)
            })
            .await?;
        if claimed.is_empty() {
            return Ok(claimed);
        }
        // Their messages from a reader, in one read transaction (as for callbacks).
        self.read(move |conn| {
            let read = conn.unchecked_transaction()?;
            for d in &mut claimed {
                d.message = delivery_message(conn, d.message_id)?;
            }
            read.finish()?;
            Ok(claimed)
        })
        .await
    }

    async fn finish_smpp_deliveries(&self, results: &[(String, DeliveryNext)]) -> Result<()> {
        let results = results.to_vec();
        self.write(move |conn, _| {
            for (id, next) in &results {
                // Ids are rowids here; one that is not was never handed out by this store.
                let Ok(id) = id.parse::<i64>() else { continue };
                match next {
                    DeliveryNext::RetryAt(t) => conn
                        .prepare_cached(
                            "UPDATE OR FAIL smpp_outbox SET attempts = attempts + 1, next_attempt_at = ?2, \
                             lease_owner = NULL, lease_until = NULL WHERE id = ?1",
                        )?
                        .execute(params![id, t.0])?,
                    // Taken, or given up: nothing more to keep.
                    DeliveryNext::Delivered | DeliveryNext::Expired => {
                        conn.prepare_cached("DELETE FROM smpp_outbox WHERE id = ?1")?.execute([id])?
                    }
                };
            }
            Ok(())
        })
        .await
    }

    async fn expire_smpp_deliveries(&self, now: Timestamp) -> Result<u64> {
        self.write(move |conn, _| {
            let n = conn
                .prepare_cached("DELETE FROM smpp_outbox WHERE state = 'pending' AND expires_at <= ?1")?
                .execute([now.0])?;
            Ok(n as u64)
        })
        .await
    }

    async fn count_pending_smpp_deliveries(&self) -> Result<i64> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached("SELECT COUNT(*) FROM smpp_outbox WHERE state = 'pending'")?
                .query_row([], |r| r.get(0))?)
        })
        .await
    }

    async fn count_pending_callbacks(&self) -> Result<i64> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached("SELECT COUNT(*) FROM callbacks WHERE state = 'pending'")?
                .query_row([], |r| r.get(0))?)
        })
        .await
    }

    async fn close(&self) {
        let sender = self.inner.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(sender);
        let writer = self.inner.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = writer {
            // The writer finishes the jobs already sent, then sees the channel closed.
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
        let checkpointer = self.inner.checkpointer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((stop, thread)) = checkpointer {
            drop(stop);
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        self.inner.readers.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database file for one test, removed with its WAL when the test ends (after the connections made from it,
    /// which are declared later and so dropped first).
    struct TempDb(PathBuf);

    impl TempDb {
        fn new(name: &str) -> TempDb {
            TempDb(std::env::temp_dir().join(format!("smsgate-{name}-{}.db", uuid::Uuid::now_v7().simple())))
        }

        /// A connection to it, migrated.
        fn migrated(&self) -> Connection {
            let mut conn = connect(&self.0).unwrap();
            migrate(&mut conn).unwrap();
            conn
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
            }
        }
    }

    /// A job that fails leaves nothing behind, and the jobs of its group still commit, each once.
    #[test]
    fn a_failed_job_is_taken_out_of_its_group() {
        let db = TempDb::new("group");
        let conn = db.migrated();
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut answers = Vec::new();
        let mut jobs: Vec<Box<dyn Job>> = Vec::new();
        for name in ["a", "b", "c"] {
            let (reply, answered) = oneshot::channel();
            let runs = runs.clone();
            let write = move |conn: &Connection, changed: &mut Vec<Status>| -> Result<()> {
                runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                conn.execute("INSERT INTO accounts (id, name, created_at) VALUES (?1, ?1, 0)", [name])?;
                changed.push(Status::Queued);
                if name == "b" {
                    conn.execute("INSERT INTO no_such_table VALUES (1)", [])?;
                }
                Ok(())
            };
            jobs.push(Box::new(WriteJob { write, result: None, changed: Vec::new(), reply }));
            answers.push(answered);
        }
        run_group(&conn, jobs);
        let results: Vec<bool> = answers.into_iter().map(|mut a| a.try_recv().unwrap().is_ok()).collect();
        assert_eq!(results, [true, false, true]);
        let names: Vec<String> = conn
            .prepare("SELECT name FROM accounts ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        assert_eq!(names, ["a", "c"]);
        // a and b ran, b failed; then a and c ran again and committed.
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 4);
    }

    /// The outbox keyed by rowid (migration 10) keeps the rows written before it, in order, with their leases.
    #[test]
    fn outbox_rows_survive_the_rowid_key() {
        let db = TempDb::new("outbox");
        let mut conn = connect(&db.0).unwrap();
        conn.execute_batch("CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
            .unwrap();
        for m in MIGRATIONS.iter().filter(|m| m.version < 10) {
            conn.execute_batch(m.sqlite).unwrap();
            conn.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?1, 0)", [m.version]).unwrap();
        }
        for (id, created, owner) in [("b-uuid", 2, None), ("a-uuid", 1, Some("node"))] {
            conn.execute(
                "INSERT INTO smpp_outbox (id, account_id, message_id, seq, part, kind, status, at, state, \
                 next_attempt_at, lease_owner, expires_at, created_at) \
                 VALUES (?1, 'acct', 'msg', ?2, 0, 'receipt', 'delivered', 5, 'pending', 5, ?3, 99, ?2)",
                params![id, created, owner],
            )
            .unwrap();
        }
        migrate(&mut conn).unwrap();
        let rows: Vec<(i64, i64, Option<String>)> = conn
            .prepare("SELECT id, created_at, lease_owner FROM smpp_outbox ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        assert_eq!(rows, [(1, 1, Some("node".into())), (2, 2, None)]);
    }

    /// Deliver_sm written by a group that is rolled back are not fed; those of the group that commits are, once.
    #[test]
    fn a_rolled_back_group_feeds_nothing() {
        let db = TempDb::new("feed");
        let conn = db.migrated();
        let (tx, mut fed) = tokio::sync::mpsc::channel(8);
        FEED.set(Some(SmppFeed { node: "node".into(), lease_ms: 1000, bound: Arc::new(|_| true), tx }));
        let id = MessageId::generate();
        let moved = Moved {
            id: id.to_string(),
            account: AccountId::generate().to_string(),
            callback_url: None,
            callback_statuses: None,
            error_code: None,
            seq: 3,
            smpp: Some(SmppReceipts { registered_delivery: 1, ids: 1 }),
            message: Some(DeliveryMessage {
                id,
                to: "+447700900001".into(),
                from: "Acme".into(),
                body: "hi".into(),
                created_at: Timestamp(1),
            }),
        };
        let mut answers = Vec::new();
        let mut jobs: Vec<Box<dyn Job>> = Vec::new();
        for fails in [false, true] {
            let (reply, answered) = oneshot::channel();
            let moved = moved.clone();
            let write = move |conn: &Connection, _: &mut Vec<Status>| -> Result<()> {
                if fails {
                    conn.execute("INSERT INTO no_such_table VALUES (1)", [])?;
                }
                enqueue_smpp(conn, &moved, Status::Delivered, Timestamp(2))
            };
            jobs.push(Box::new(WriteJob { write, result: None, changed: Vec::new(), reply }));
            answers.push(answered);
        }
        run_group(&conn, jobs);
        assert!(answers.into_iter().map(|mut a| a.try_recv().unwrap().is_ok()).eq([true, false]));
        let d = fed.try_recv().unwrap();
        assert_eq!((d.message_id, d.status), (id, Status::Delivered));
        assert!(fed.try_recv().is_err());
        let rows: i64 =
            conn.query_row("SELECT COUNT(*) FROM smpp_outbox WHERE lease_owner = 'node'", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 1);
        FEED.set(None);
    }

    /// The plans SQLite picks for the queue's statements: each through its partial index, never a scan of the
    /// table, whose size is the whole history.
    #[test]
    fn queue_statements_use_the_partial_indexes() {
        let db = TempDb::new("plans");
        let conn = db.migrated();
        let plan = |sql: &str| -> String {
            let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let mut rows = st.raw_query();
            let mut steps = Vec::new();
            while let Some(r) = rows.next().unwrap() {
                steps.push(r.get::<_, String>(3).unwrap());
            }
            steps.join("; ")
        };
        let [lease, due] = claim_sql(512);
        let [waiting, sending] = pending_sql();
        for (sql, index) in [
            (lease.as_str(), "messages_lease"),
            (due.as_str(), "messages_queue"),
            (expire_sql(512).as_str(), "messages_expiring"),
            (waiting.as_str(), "messages_expiring"),
            (sending.as_str(), "messages_lease"),
        ] {
            let p = plan(sql);
            assert!(p.contains(index), "{sql}\n  plan: {p}");
            assert!(!p.contains("SCAN messages ") || p.contains("USING"), "{sql}\n  plan: {p}");
        }
        // Run with new values, each statement stays prepared: none of them plans with a parameter's value.
        let statements =
            [lease, due, expire_sql(512), transition_sql(Status::Sent), receipt_match_sql(Status::Delivered)];
        for sql in statements {
            let mut st = conn.prepare(&sql).unwrap();
            for round in 0..3i64 {
                for p in 1..=st.parameter_count() {
                    st.raw_bind_parameter(p, round).unwrap();
                }
                let mut rows = st.raw_query();
                while rows.next().unwrap().is_some() {}
            }
            assert_eq!(st.get_status(rusqlite::StatementStatus::RePrepare), 0, "{sql}");
        }
        assert!(plan(&transition_sql(Status::Sent)).contains("(rowid=?)"));
        assert!(plan("SELECT rowid FROM messages WHERE id = ?1").contains("sqlite_autoindex_messages_1 (id=?)"));
        assert!(
            plan(&receipt_match_sql(Status::Delivered)).contains("messages_carrier (connector=? AND carrier_id=?)")
        );
    }
}
