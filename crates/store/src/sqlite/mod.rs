//! [`SqliteStore`]: the [`Store`] on an embedded SQLite file, through rusqlite.
//!
//! One **writer thread** owns the only connection that writes. Every write call becomes a job on its channel; the
//! thread takes every job waiting, runs them all in one transaction (a job that fails is taken out and the rest
//! run again, so one job's error does not undo the others) and commits once. A **sync thread** then syncs the WAL
//! once for every group committed meanwhile and only then answers each caller, while the writer goes on to its
//! next group. Group commit is therefore built in: inserts from the API, the dispatcher's claims, status changes
//! and receipts that arrive together share a disk sync, and no write waits for another's lock.
//!
//! Reads run on a small pool of reader connections on tokio's blocking threads; WAL lets them read the last
//! commit while the writer works.
//!
//! Why not sqlx here, as for PostgreSQL: sqlx's SQLite driver runs each statement on a worker thread and sends
//! every row across a channel, which cost more than SQLite's own work on the server's hot path (BENCHMARKS.md).

mod hooks;
mod messages;
mod outbox;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension};
use smsgate_core::Status;
use tokio::sync::oneshot;

use crate::schema::MIGRATIONS;
use crate::sql::{Database, Row, Statement, Value};
use crate::{Result, Store, StoreError};
use hooks::{Fed, forget_hooks, take_fed};

/// A write the writer thread runs inside a group transaction. It may run more than once: when another job of
/// its group fails, the group is rolled back and run again without the failed one.
trait Job: Send {
    /// Runs the write on the writer's connection; false if it failed (the error is kept for its answer).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the group's fate is known: its own error if it failed, else its result if the
    /// commit succeeded.
    fn answer(self: Box<Self>, committed: Fate);
}

/// A group's fate, for each of its jobs: committed and durable, or why not.
type Fate = std::result::Result<(), Arc<str>>;

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

    fn answer(self: Box<Self>, committed: Fate) {
        let result = match (self.result, committed) {
            (None, _) => Err(StoreError::Stopped("the write did not run".into())),
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(_)), Err(e)) => Err(StoreError::Commit(e.as_ref().into())),
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
    /// The WAL's bound, in bytes.
    wal_limit: u64,
    jobs: Mutex<Option<mpsc::Sender<Box<dyn Job>>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    checkpointer: Mutex<Option<(mpsc::Sender<()>, JoinHandle<()>)>>,
    /// Idle reader connections; at most [`READERS`] exist, one per permit of `reading`.
    readers: Mutex<Vec<Connection>>,
    reading: tokio::sync::Semaphore,
}

/// Every reader's and the checkpointer's page cache, in KiB (SQLite's default). SQLite allocates with the C
/// library's malloc, which keeps what a thread's arena once held (a burst's 16 MB cache stayed resident,
/// `PRAGMA shrink_memory` or not). A reader's cache is dropped whenever another connection has written since its
/// last read, so under load a larger one would save nothing. The writer's is larger ([`WRITER_CACHE_KIB`]): a
/// short burst measured no different with 2 MB, a long run did.
const CACHE_KIB: u32 = 2_048;

/// The writer's page cache, in KiB. The pages every write touches at random — each recipient's place in the index
/// of numbers, the rows a receipt moves — outgrow SQLite's default 2 MB within a minute of load: at 10,000
/// messages a second the writer then read them back through the file system and spilled dirty pages into the WAL
/// mid-transaction, and fell behind (p99 from 0.1 s to 5.8 s in three minutes); with 64 MB it kept up (0.11 to 0.18 s).
/// The cache fills only as it is used.
const WRITER_CACHE_KIB: u32 = 65_536;

/// The WAL's bound unless the database URL names another (`?wal_limit_mb=`): once a commit leaves the WAL this
/// large, the writer starts it over (see [`restart_wal`]), and SQLite cuts the file back to this size when it
/// does. Without a bound the WAL never started over under continuous load (the passive checkpoints never caught up
/// with a writer that never paused), and every read and commit paid for its length: 727 MB of WAL beside 361 MB of
/// database after 400,000 messages, and a submit p99 from 28 ms to over a second.
pub const WAL_LIMIT_MB: u64 = 64;

/// Opens a connection with the settings every connection needs: WAL lets readers run beside the writer; FULL makes
/// every commit durable when it returns (the writer's own commits are made durable by the sync thread instead); the
/// busy timeout makes another process's writer wait rather than fail; statement journals stay in memory. A new
/// database is made with incremental auto-vacuum, so that the pages deleted history frees can be given back
/// ([`Store::reclaim_space`]); one made before keeps them for its next rows. No connection checkpoints on its own:
/// the checkpointer thread and the writer do. A WAL that grew past `wal_limit` is cut back to that size when it
/// starts over.
fn connect(path: &PathBuf, wal_limit: u64) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.execute_batch(&format!(
        "PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = {BUSY_MS}; \
         PRAGMA foreign_keys = ON; PRAGMA cache_size = -{CACHE_KIB}; PRAGMA temp_store = MEMORY; \
         PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {wal_limit};"
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

/// Runs one group: every job in one transaction, then the commit; a committed group goes to the syncer, which
/// answers it once the commit is durable. A job that fails rolls the group back; it gets its error and the others
/// run again without it. Jobs do not get savepoints of their own: a savepoint kept open across many statements
/// makes SQLite walk its whole in-memory statement journal at the end of every statement, which cost a tenth of the
/// server's CPU. Failures are rare (a full disk, a bug), so running a group again is cheap. For the same reason the
/// writer's updates are `UPDATE OR FAIL`: an update that may fail a constraint halfway keeps a statement journal (a
/// copy of every page it touches) to undo its own rows, which a failed job never needs, as its whole group is
/// rolled back (3–4 % of the server's CPU).
fn run_group(conn: &Connection, mut jobs: Vec<Box<dyn Job>>, syncer: &mpsc::Sender<Committed>) {
    let began = std::time::Instant::now();
    while !jobs.is_empty() {
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            tracing::warn!(error = %e, "SQLite could not begin a transaction; {} writes fail", jobs.len());
            return fail(jobs, &e);
        }
        let failed = jobs.iter_mut().position(|job| !job.run(conn));
        match failed {
            None => {
                // The group's counts go in last, added up by rollup row.
                match hooks::write_rollups(conn).and_then(|()| conn.execute_batch("COMMIT")) {
                    Ok(()) => {
                        let committed = Committed { jobs, fed: take_fed(), began };
                        if let Err(mpsc::SendError(c)) = syncer.send(committed) {
                            c.answer(Err("the WAL's syncer stopped".into()));
                        }
                    }
                    Err(e) => {
                        let _ = conn.execute_batch("ROLLBACK");
                        forget_hooks();
                        fail(jobs, &e);
                    }
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

/// Answers every job of a group that was not committed with why.
fn fail(jobs: Vec<Box<dyn Job>>, e: &rusqlite::Error) {
    let e: Arc<str> = e.to_string().into();
    for job in jobs {
        job.answer(Err(e.clone()));
    }
}

/// The WAL file beside the database file `db` (its name with `-wal` added, as SQLite names it, whatever bytes the
/// name is made of).
fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    name.into()
}

/// A group committed, waiting for the WAL's sync.
struct Committed {
    jobs: Vec<Box<dyn Job>>,
    /// The deliver_sm it leased to this node, handed on once it is durable.
    fed: Fed,
    began: std::time::Instant,
}

impl Committed {
    fn answer(self, fate: Fate) {
        metrics::histogram!(crate::metric::SQLITE_GROUP).record(self.began.elapsed());
        if fate.is_ok() {
            self.fed.send();
        }
        for job in self.jobs {
            job.answer(fate.clone());
        }
    }
}

/// Makes the writer's commits durable and answers them, on its own thread: the writer commits without syncing
/// (`synchronous = NORMAL`) and goes on to its next group, while this thread syncs the WAL file once for every
/// group committed meanwhile and then answers them. A sync covers every commit whose frames were written before it
/// began, so no caller hears of a commit before it is on disk — as with a sync inside each commit, which kept the
/// writer waiting for the disk (and its kernel work, 12 % of its time) before it could start the next group.
///
/// The WAL file is opened on the first sync and checked at each (its device and inode against the path's): a WAL
/// that is not the file SQLite writes (deleted or replaced under the server) fails the groups rather than answer
/// them unsynced.
fn syncer_loop(wal: PathBuf, committed: mpsc::Receiver<Committed>) {
    let mut file: Option<std::fs::File> = None;
    while let Ok(first) = committed.recv() {
        let mut groups = vec![first];
        groups.extend(committed.try_iter());
        let began = std::time::Instant::now();
        let fate = sync_wal(&wal, &mut file).map_err(|e| {
            tracing::error!(error = %e, path = %wal.display(), "SQLite's WAL could not be synced; its writes fail");
            file = None;
            Arc::<str>::from(format!("the WAL could not be synced: {e}"))
        });
        metrics::histogram!(crate::metric::SQLITE_SYNC).record(began.elapsed());
        for group in groups {
            group.answer(fate.clone());
        }
    }
}

fn sync_wal(path: &Path, file: &mut Option<std::fs::File>) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let f = match file {
        Some(f) => f,
        None => file.insert(std::fs::File::open(path)?),
    };
    let (open, named) = (f.metadata()?, std::fs::metadata(path)?);
    if (open.dev(), open.ino()) != (named.dev(), named.ino()) || open.nlink() == 0 {
        return Err(std::io::Error::other("the WAL file was replaced or removed"));
    }
    f.sync_data()
}

/// How often the checkpointer copies the WAL back into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// How long a connection waits for another's lock (another process's writer, a checkpoint).
const BUSY_MS: u64 = 10_000;

/// How long the writer waits for readers to leave the WAL when it starts it over; a reader that stays longer
/// (a long export) makes it try again later rather than hold every write.
const RESTART_PATIENCE: std::time::Duration = std::time::Duration::from_millis(200);

/// Copies committed pages from the WAL into the database file, on its own connection and thread, every
/// [`CHECKPOINT_EVERY`] and whenever the writer nudges it, until every sender of `nudges` is gone. SQLite's automatic
/// checkpoint would run inside a commit on the writer thread, and its fsync of the database file held every write
/// waiting behind it for tens to hundreds of milliseconds. A PASSIVE checkpoint runs beside the writer, and copies
/// all but what was committed while it ran; the writer starts the WAL over as it nears its bound
/// ([`WalBound::after_commit`]).
fn checkpointer_loop(conn: Connection, nudges: mpsc::Receiver<()>, passes: &Passes) {
    while let Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) = nudges.recv_timeout(CHECKPOINT_EVERY) {
        let pass = passes.started.fetch_add(1, Ordering::SeqCst) + 1;
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "SQLite checkpoint failed; trying again");
        }
        passes.finished.store(pass, Ordering::SeqCst);
    }
    // A last full checkpoint, so a clean stop leaves the database file whole.
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

/// The checkpointer's passes, numbered from 1: the last one begun and the last one finished.
#[derive(Debug, Default)]
struct Passes {
    started: AtomicU64,
    finished: AtomicU64,
}

thread_local! {
    /// The frames in the WAL after the writer's last commit, as SQLite's WAL hook tells it.
    static WAL_FRAMES: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

fn count_wal_frames(_: &rusqlite::hooks::Wal, frames: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_FRAMES.set(i64::from(frames));
    Ok(())
}

/// The writer's watch over the WAL's length.
struct WalBound {
    /// The bound, in frames (pages).
    limit: i64,
    /// Frames at which to try again after readers kept the WAL from starting over.
    retry_at: i64,
    /// Told to copy the WAL at once when it nears its bound.
    checkpointer: mpsc::Sender<()>,
    passes: Arc<Passes>,
    /// The checkpointer's pass the writer waits for as the WAL nears its bound, and how many it has asked for, that
    /// one included.
    awaited: Option<(u64, u32)>,
}

/// The checkpointer's passes the writer asks for, one after another, as the WAL nears its bound: the first copies
/// what the regular passes left (up to [`CHECKPOINT_EVERY`] of commits), the second what was committed while the
/// first ran, and the restart what was committed while the second ran.
const NUDGES: u32 = 2;

impl WalBound {
    fn new(
        conn: &Connection,
        limit_bytes: u64,
        checkpointer: mpsc::Sender<()>,
        passes: Arc<Passes>,
    ) -> Result<WalBound> {
        conn.wal_hook(Some(count_wal_frames));
        let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let limit = i64::try_from(limit_bytes).unwrap_or(i64::MAX) / page.max(512);
        Ok(WalBound { limit: limit.max(1), retry_at: 0, checkpointer, passes, awaited: None })
    }

    /// Where to try again after a restart at `frames` did not happen: at the bound if it was early, else an eighth
    /// of the bound further.
    fn retry_after(&self, frames: i64) -> i64 {
        if frames < self.limit { self.limit } else { frames + (self.limit / 8).max(1) }
    }

    /// Asks the checkpointer for a pass begun after now.
    fn nudge(&mut self, asked: u32) {
        self.awaited = Some((self.passes.started.load(Ordering::SeqCst) + 1, asked + 1));
        // A checkpointer that has stopped leaves the bound alone to decide.
        let _ = self.checkpointer.send(());
    }

    /// After a commit: starts the WAL over once it has reached its bound, or earlier, once the checkpointer's
    /// passes asked for from seven eighths of it ([`NUDGES`]) have finished. The restart copies what the
    /// checkpointer has not and syncs the database file while every write waits: at the bound alone that was up to
    /// one checkpoint interval of commits (5-10 ms of copying and syncing at 8,000 messages a second, about once a
    /// second), after the passes asked for only what was committed while the last of them ran.
    fn after_commit(&mut self, conn: &Connection) {
        let frames = WAL_FRAMES.get();
        if frames < self.retry_at {
            return;
        }
        if frames < self.limit {
            match self.awaited {
                None if frames >= self.limit - self.limit / 8 => return self.nudge(0),
                Some((pass, asked)) if self.passes.finished.load(Ordering::SeqCst) >= pass => {
                    if asked < NUDGES {
                        return self.nudge(asked);
                    }
                }
                _ => return,
            }
        }
        self.awaited = None;
        match restart_wal(conn) {
            Ok(true) => {
                WAL_FRAMES.set(0);
                self.retry_at = 0;
            }
            Ok(false) => {
                // A reader is still on an old snapshot: try again at the bound, or past it once the WAL has grown by
                // another eighth.
                self.retry_at = self.retry_after(frames);
                tracing::debug!(frames, "SQLite WAL past its bound, readers in the way; trying again later");
            }
            Err(e) => {
                self.retry_at = self.retry_after(frames);
                tracing::warn!(error = %e, "SQLite could not start its WAL over; trying again later");
            }
        }
    }
}

/// Starts the WAL over, on the writer's connection between two groups (so no write is under way): a RESTART
/// checkpoint copies what the checkpointer has not yet copied, waits at most [`RESTART_PATIENCE`] for readers still
/// on older snapshots, and then the next commit writes the WAL from its start again. True if it did; false if
/// readers or the checkpointer were in the way.
fn restart_wal(conn: &Connection) -> Result<bool> {
    conn.busy_timeout(RESTART_PATIENCE)?;
    let began = std::time::Instant::now();
    let checkpoint = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0));
    metrics::histogram!(crate::metric::SQLITE_WAL_RESTART).record(began.elapsed());
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_MS))?;
    Ok(checkpoint? == 0)
}

/// Runs groups until the job channel closes; then lets the syncer answer what is left and waits for it.
fn writer_loop(
    conn: Connection,
    jobs: mpsc::Receiver<Box<dyn Job>>,
    mut wal: WalBound,
    (committed, syncer): (mpsc::Sender<Committed>, JoinHandle<()>),
) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        run_group(&conn, group, &committed);
        wal.after_commit(&conn);
    }
    // The syncer answers what is left, then sees its channel closed.
    drop(committed);
    let _ = syncer.join();
}

impl SqliteStore {
    /// Opens (creating it if needed) the SQLite file named by `url` (`sqlite://PATH` or `sqlite:PATH`) and runs
    /// the migrations. The query string may give the WAL's bound in MB (`?wal_limit_mb=64`, [`WAL_LIMIT_MB`] when
    /// not); other parameters (`mode=rwc`) are accepted and ignored.
    pub async fn open(url: &str) -> Result<SqliteStore> {
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| StoreError::UnsupportedUrl(url.to_string()))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if path.is_empty() || path == ":memory:" {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        }
        let mut wal_limit_mb = WAL_LIMIT_MB;
        for (key, value) in query.split('&').filter_map(|pair| pair.split_once('=')) {
            if key == "wal_limit_mb" {
                wal_limit_mb = value.parse().ok().filter(|mb| (1..=65_536).contains(mb)).ok_or_else(|| {
                    StoreError::UnsupportedUrl(format!("{url}: wal_limit_mb must be a number of MB, 1 to 65536"))
                })?;
            }
        }
        let wal_limit = wal_limit_mb << 20;
        let path = PathBuf::from(path);
        let opened = tokio::task::spawn_blocking(move || -> Result<SqliteStore> {
            let mut conn = connect(&path, wal_limit)?;
            conn.execute_batch(&format!("PRAGMA cache_size = -{WRITER_CACHE_KIB}"))?;
            migrate(&mut conn)?;
            // From here the writer's commits do not sync the WAL; the syncer does, before they are answered.
            conn.execute_batch("PRAGMA synchronous = NORMAL")?;
            let (nudge, nudges) = mpsc::channel();
            let passes = Arc::new(Passes::default());
            let wal = WalBound::new(&conn, wal_limit, nudge.clone(), passes.clone())?;
            let (committed, to_sync) = mpsc::channel();
            let wal_file = wal_path(&path);
            let syncer = std::thread::Builder::new()
                .name("sqlite-sync".into())
                .spawn(move || syncer_loop(wal_file, to_sync))
                .map_err(|e| StoreError::Stopped(format!("could not start the sync thread: {e}")))?;
            let sync = (committed, syncer);
            let (tx, rx) = mpsc::channel();
            let writer = std::thread::Builder::new()
                .name("sqlite-writer".into())
                .spawn(move || writer_loop(conn, rx, wal, sync))
                .map_err(|e| StoreError::Stopped(format!("could not start the writer thread: {e}")))?;
            let checkpoints = connect(&path, wal_limit)?;
            let checkpointer = std::thread::Builder::new()
                .name("sqlite-checkpoint".into())
                .spawn(move || checkpointer_loop(checkpoints, nudges, &passes))
                .map_err(|e| StoreError::Stopped(format!("could not start the checkpoint thread: {e}")))?;
            Ok(SqliteStore {
                inner: Arc::new(Inner {
                    path,
                    wal_limit,
                    jobs: Mutex::new(Some(tx)),
                    writer: Mutex::new(Some(writer)),
                    checkpointer: Mutex::new(Some((nudge, checkpointer))),
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
                None => connect(&inner.path, inner.wal_limit)?,
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

/// A row of `rusqlite`'s as a [`Row`], under the statement's column names.
fn row_of(columns: &Arc<[String]>, r: &rusqlite::Row<'_>) -> Result<Row> {
    let mut values = Vec::with_capacity(columns.len());
    for i in 0..columns.len() {
        values.push(match r.get_ref(i)? {
            rusqlite::types::ValueRef::Null => Value::Text(None),
            rusqlite::types::ValueRef::Integer(n) => Value::Int(Some(n)),
            rusqlite::types::ValueRef::Real(x) => Value::Real(Some(x)),
            rusqlite::types::ValueRef::Text(t) => Value::Text(Some(String::from_utf8_lossy(t).into_owned())),
            rusqlite::types::ValueRef::Blob(_) => return Err(crate::schema::corrupt("a blob")),
        });
    }
    Ok(Row::new(columns.clone(), values))
}

/// The rows a statement answers with `params`, as [`Row`]s.
fn rows_of(st: &mut rusqlite::CachedStatement<'_>, params: impl rusqlite::Params) -> Result<Vec<Row>> {
    let columns: Arc<[String]> = st.column_names().into_iter().map(String::from).collect();
    let mut rows = st.query(params)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(row_of(&columns, r)?);
    }
    Ok(out)
}

/// A [`Value`] as `rusqlite` binds it.
pub(super) fn sqlite_value(v: Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match v {
        Value::Int(Some(n)) => V::Integer(n),
        Value::Real(Some(x)) => V::Real(x),
        Value::Text(Some(t)) => V::Text(t),
        Value::Int(None) | Value::Real(None) | Value::Text(None) => V::Null,
    }
}

#[async_trait]
impl Database for SqliteStore {
    async fn query(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>> {
        let sql = sql.to_string();
        self.read(move |conn| {
            let mut st = conn.prepare_cached(&sql)?;
            rows_of(&mut st, rusqlite::params_from_iter(params.into_iter().map(sqlite_value)))
        })
        .await
    }

    /// In the writer's next group. What these statements write may be what status changes read of accounts
    /// (webhook URLs, SMPP credentials), so the writer reads that again after them.
    async fn transaction(&self, statements: Vec<Statement>) -> Result<Vec<u64>> {
        self.write(move |conn, _| {
            let mut changed = Vec::with_capacity(statements.len());
            for s in &statements {
                let params = s.params.iter().cloned().map(sqlite_value);
                changed.push(conn.prepare_cached(&s.sql)?.execute(rusqlite::params_from_iter(params))? as u64);
            }
            hooks::forget_accounts();
            Ok(changed)
        })
        .await
    }
}

#[async_trait]
impl Store for SqliteStore {
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

    /// `PRAGMA incremental_vacuum`, in the writer's next group: each step moves a page from the end of the file into
    /// a free one and gives the last page back. A database made without auto-vacuum gives nothing back.
    async fn reclaim_space(&self, keep: u64, at_most: u32) -> Result<u64> {
        self.write(move |conn, _| {
            let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
            let pages = u64::try_from(free).unwrap_or(0).saturating_sub(keep).min(u64::from(at_most));
            if pages == 0 {
                return Ok(0);
            }
            let mut st = conn.prepare_cached(&format!("PRAGMA incremental_vacuum({pages})"))?;
            let mut steps = st.query([])?;
            let mut n = 0;
            while steps.next()?.is_some() {
                n += 1;
            }
            Ok(n)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::params;
    use smsgate_core::{AccountId, MessageId, Timestamp};

    use super::hooks::{FEED, Moved, enqueue};
    use super::messages::{claim_sql, expire_sql, receipt_match_sql, transition_sql};
    use super::*;
    use crate::{DeliveryMessage, SmppFeed, SmppReceipts};

    /// A database file for one test, removed with its WAL when the test ends (after the connections made from it,
    /// which are declared later and so dropped first).
    struct TempDb(PathBuf);

    impl TempDb {
        fn new(name: &str) -> TempDb {
            TempDb(std::env::temp_dir().join(format!("smsgate-{name}-{}.db", uuid::Uuid::now_v7().simple())))
        }

        /// Runs `jobs` as the writer does, and syncs and answers them as the syncer does.
        fn run_group(&self, conn: &Connection, jobs: Vec<Box<dyn Job>>) {
            let (committed, to_sync) = mpsc::channel();
            run_group(conn, jobs, &committed);
            drop(committed);
            syncer_loop(wal_path(&self.0), to_sync);
        }

        /// A connection to it, migrated.
        fn migrated(&self) -> Connection {
            let mut conn = connect(&self.0, WAL_LIMIT_MB << 20).unwrap();
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

    /// As the WAL nears its bound the writer asks the checkpointer for passes, one after another, and starts the WAL
    /// over once they have finished, before the bound; a WAL that reaches the bound starts over whatever the
    /// checkpointer has done.
    #[test]
    fn the_wal_starts_over_after_the_passes_it_asked_for() {
        let db = TempDb::new("nudges");
        let conn = connect(&db.0, WAL_LIMIT_MB << 20).unwrap();
        conn.execute_batch("CREATE TABLE t (v BLOB)").unwrap();
        let checkpointer = connect(&db.0, WAL_LIMIT_MB << 20).unwrap();
        let (nudge, nudges) = mpsc::channel();
        let passes = Arc::new(Passes::default());
        let mut bound = WalBound::new(&conn, 256 * 4096, nudge, passes.clone()).unwrap();
        // One small commit, as the writer's, then the bound's look at the WAL; the WAL's frames after it.
        let mut commit = || {
            conn.execute("INSERT INTO t (v) VALUES (randomblob(100))", []).unwrap();
            let frames = WAL_FRAMES.get();
            bound.after_commit(&conn);
            (frames, WAL_FRAMES.get(), bound.retry_at)
        };
        // Commits until one starts the WAL over, which must come by the bound: the frames before that one.
        fn until_restart(commit: &mut impl FnMut() -> (i64, i64, i64)) -> i64 {
            loop {
                let (frames, after, _) = commit();
                if after == 0 {
                    return frames;
                }
                assert!(frames < 256, "{frames} frames and no restart");
            }
        }
        // A pass of the checkpointer's, as its thread makes one.
        let pass = || {
            let n = passes.started.fetch_add(1, Ordering::SeqCst) + 1;
            checkpointer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())).unwrap();
            passes.finished.store(n, Ordering::SeqCst);
        };
        loop {
            let (frames, after, _) = commit();
            assert_eq!(frames, after, "no restart before the bound's seven eighths and a pass");
            if frames >= 224 {
                break;
            }
            assert!(nudges.try_recv().is_err(), "asked for a pass at {frames} frames");
        }
        assert!(nudges.try_recv().is_ok(), "a pass asked for at seven eighths of the bound");
        // Until the pass asked for has finished: no other asked for, no restart.
        for _ in 0..5 {
            let (frames, after, _) = commit();
            assert_eq!(frames, after);
        }
        assert!(nudges.try_recv().is_err());
        pass();
        let (frames, after, _) = commit();
        assert_eq!(frames, after, "a second pass before the restart");
        assert!(nudges.try_recv().is_ok(), "the second pass asked for");
        pass();
        let (frames, after, _) = commit();
        assert!(frames < 256, "started over before the bound ({frames} frames)");
        assert_eq!(after, 0, "started over after the second pass");
        let (frames, ..) = commit();
        assert!(frames < 8, "the next commit writes the WAL from its start ({frames} frames)");
        // No pass this time: at the bound the WAL starts over all the same.
        let frames = until_restart(&mut commit);
        assert!(frames >= 256, "started over at {frames} frames without the passes");
        assert!(nudges.try_recv().is_ok(), "a pass was asked for on the way");
        // A reader on an older snapshot keeps an early restart from happening: the next try is at the bound.
        let reader = connect(&db.0, WAL_LIMIT_MB << 20).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        reader.query_row("SELECT count(*) FROM t", [], |_| Ok(())).unwrap();
        while commit().0 < 224 {}
        pass();
        commit();
        pass();
        let (frames, after, retry) = commit();
        assert!(frames < 256 && after == frames, "no restart with a reader in the way ({frames} -> {after} frames)");
        assert_eq!(retry, 256, "tried again at the bound");
        reader.execute_batch("COMMIT").unwrap();
        let frames = until_restart(&mut commit);
        assert!(frames >= 256, "started over at the bound, not before ({frames} frames)");
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
        db.run_group(&conn, jobs);
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
        let mut conn = connect(&db.0, WAL_LIMIT_MB << 20).unwrap();
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
            counted: super::hooks::CountedMessage::default(),
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
                enqueue(conn, &moved, Status::Delivered, Timestamp(2))
            };
            jobs.push(Box::new(WriteJob { write, result: None, changed: Vec::new(), reply }));
            answers.push(answered);
        }
        db.run_group(&conn, jobs);
        assert!(answers.into_iter().map(|mut a| a.try_recv().unwrap().is_ok()).eq([true, false]));
        let d = fed.try_recv().unwrap();
        assert_eq!((d.message_id, d.status), (id, Status::Delivered));
        assert!(fed.try_recv().is_err());
        let rows: i64 =
            conn.query_row("SELECT COUNT(*) FROM smpp_outbox WHERE lease_owner = 'node'", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 1);
        // The rollups count the committed group's delivery once, not the one rolled back.
        let delivered: i64 =
            conn.query_row("SELECT SUM(delivered) FROM rollups WHERE dimension = 'all'", [], |r| r.get(0)).unwrap();
        assert_eq!(delivered, 1);
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
        let pending = crate::messages::pending_sql();
        for (sql, index) in [
            (lease.as_str(), "messages_lease"),
            (due.as_str(), "messages_queue"),
            (expire_sql(512).as_str(), "messages_expiring"),
            (pending.as_str(), "messages_expiring"),
            (pending.as_str(), "messages_lease"),
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
