#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions; a failure is a test failure.
//! SQLite's files: the WAL stays under its bound while writes never pause and readers never stop reading (the
//! writer starts it over when it reaches the bound, instead of leaving that to passive checkpoints, which never catch
//! up with a writer that never pauses: the WAL then grows with everything written); and the space deleted rows held
//! is given back to the file system; a database from before the chains of messages by number is upgraded; and no
//! write is answered before the WAL holding it is synced.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use smsgate_store::sql::{Database, Statement, Value};
use smsgate_store::{SqliteStore, Store};

/// The file and its WAL and shared memory, removed when the test ends.
struct Files(PathBuf);

impl Drop for Files {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

fn wal_bytes(db: &std::path::Path) -> u64 {
    std::fs::metadata(format!("{}-wal", db.display())).map(|m| m.len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_wal_stays_under_its_bound_under_writes_and_reads() {
    const LIMIT_MB: u64 = 4;
    let files = Files(std::env::temp_dir().join(format!("smsgate-wal-{}.db", uuid::Uuid::now_v7().simple())));
    let store =
        Arc::new(SqliteStore::open(&format!("sqlite://{}?wal_limit_mb={LIMIT_MB}", files.0.display())).await.unwrap());

    // Readers that never stop: each read holds a snapshot of the WAL while it runs.
    let writing = Arc::new(AtomicBool::new(true));
    let mut readers = Vec::new();
    for _ in 0..3 {
        let (store, writing) = (store.clone(), writing.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0u64;
            while writing.load(Ordering::Relaxed) {
                store.query("SELECT COUNT(*) AS n, MAX(length(name)) AS l FROM accounts", Vec::new()).await.unwrap();
                reads += 1;
            }
            reads
        }));
    }

    // The WAL file's size, watched while it all runs (the file only shrinks when the WAL starts over).
    let watcher = tokio::spawn({
        let (writing, path) = (writing.clone(), files.0.clone());
        async move {
            let mut largest = 0;
            while writing.load(Ordering::Relaxed) {
                largest = largest.max(wal_bytes(&path));
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            largest
        }
    });

    // Writers that never pause: 50 MB of rows written and rewritten, twelve times the bound.
    let name = "x".repeat(2_000);
    for round in 0..200u32 {
        let mut writes = Vec::new();
        for batch in 0..8u32 {
            let store = store.clone();
            let name = name.clone();
            writes.push(tokio::spawn(async move {
                let mut statements = Vec::new();
                for i in 0..16u32 {
                    let id = format!("a-{}", (batch * 16 + i) * 7919 % 4096 + round % 2 * 4096);
                    statements.push(Statement {
                        sql: "INSERT INTO accounts (id, name, created_at) VALUES (?, ?, ?) \
                              ON CONFLICT (id) DO UPDATE SET name = excluded.name, created_at = excluded.created_at"
                            .into(),
                        params: vec![
                            Value::Text(Some(id)),
                            Value::Text(Some(format!("{round}{name}"))),
                            Value::Int(Some(i64::from(round))),
                        ],
                    });
                }
                store.transaction(statements).await.unwrap();
            }));
        }
        for w in writes {
            w.await.unwrap();
        }
    }
    writing.store(false, Ordering::Relaxed);
    let largest = watcher.await.unwrap().max(wal_bytes(&files.0));
    let mut reads = 0;
    for r in readers {
        reads += r.await.unwrap();
    }
    assert!(reads > 100, "the readers kept reading ({reads} reads)");
    // The bound, and what one group (here up to 256 KB of rows and their pages) may add before the writer sees it.
    let bound = 2 * (LIMIT_MB << 20);
    assert!(largest <= bound, "the WAL reached {largest} bytes, over {bound}");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_rows_give_their_space_back() {
    let files = Files(std::env::temp_dir().join(format!("smsgate-space-{}.db", uuid::Uuid::now_v7().simple())));
    let store = SqliteStore::open(&format!("sqlite://{}", files.0.display())).await.unwrap();
    let name = "y".repeat(3_000);
    for batch in 0..20 {
        let statements = (0..100)
            .map(|i| Statement {
                sql: "INSERT INTO accounts (id, name, created_at) VALUES (?, ?, 0)".into(),
                params: vec![Value::Text(Some(format!("b-{batch}-{i}"))), Value::Text(Some(name.clone()))],
            })
            .collect();
        store.transaction(statements).await.unwrap();
    }
    let pages = |store: SqliteStore| async move {
        let rows = store.query("SELECT page_count AS n FROM pragma_page_count()", Vec::new()).await.unwrap();
        rows[0].get::<i64>("n").unwrap()
    };
    let full = pages(store.clone()).await;
    store
        .transaction(vec![Statement { sql: "DELETE FROM accounts WHERE id LIKE 'b-%'".into(), params: Vec::new() }])
        .await
        .unwrap();
    assert_eq!(pages(store.clone()).await, full, "deleting alone keeps the pages, free, in the file");
    // Given back a step at a time, beyond the pages kept for new rows.
    assert_eq!(store.reclaim_space(100, 500).await.unwrap(), 500);
    let step = pages(store.clone()).await;
    assert_eq!(step, full - 500);
    let mut given = 500;
    loop {
        let n = store.reclaim_space(100, 500).await.unwrap();
        given += n;
        if n < 500 {
            break;
        }
    }
    let left = pages(store.clone()).await;
    // (Pointer-map pages that are no longer needed go too.)
    assert!(left <= full - i64::try_from(given).unwrap(), "{left} pages left of {full}, {given} given back");
    let free = store.query("SELECT freelist_count AS n FROM pragma_freelist_count()", Vec::new()).await.unwrap();
    assert_eq!(free[0].get::<i64>("n").unwrap(), 100, "the pages kept");
    assert!(given > 1_000, "2,000 rows of 3 KB held more than 1,000 pages ({given} given back)");
    store.close().await;
    // After the last checkpoint, the file is no larger than its pages.
    let bytes = std::fs::metadata(&files.0).unwrap().len();
    assert!(i64::try_from(bytes).unwrap() <= left * 4096, "{bytes} bytes for {left} pages");
}

/// A data folder from before the chains (messages indexed by number): opened by this version, its messages are
/// chained by number and the index is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_chains_the_messages_already_stored() {
    use smsgate_core::{Message, MessageId, Status, Timestamp};
    use smsgate_store::{ListFilter, MessageStore, NewMessage, TenancyStore};
    let files = Files(std::env::temp_dir().join(format!("smsgate-chains-{}.db", uuid::Uuid::now_v7().simple())));
    let url = format!("sqlite://{}", files.0.display());
    let (handset, at) = ("+15550000001", Timestamp(1_700_000_000_000));
    let text = |account, to: &str, from: &str, ms: i64| Message {
        id: MessageId::first_at(at.plus_millis(ms)),
        from: from.into(),
        body: format!("at {ms}"),
        ..common::message(account, to, Status::Delivered, at.plus_millis(ms))
    };
    let store = SqliteStore::open(&url).await.unwrap();
    let acme = store.create_account("acme", false, at).await.unwrap().id;
    let texts = [text(acme, handset, "A", 1), text(acme, handset, "A", 2), text(acme, handset, "B", 3)];
    let other = text(acme, "+15550000002", "A", 4);
    let new = |m: &Message| NewMessage::new(m.clone(), "accepted");
    store.insert_messages(&texts.iter().chain([&other]).map(new).collect::<Vec<_>>()).await.unwrap();
    store.close().await;
    // As the version before left it: no chains, the index of numbers.
    let conn = rusqlite::Connection::open(&files.0).unwrap();
    conn.execute_batch(
        "DROP TABLE recipients; ALTER TABLE messages DROP COLUMN prev_to; \
         CREATE INDEX messages_to ON messages (to_addr, id); DELETE FROM schema_migrations WHERE version = 26;",
    )
    .unwrap();
    drop(conn);

    let store = SqliteStore::open(&url).await.unwrap();
    let to = ListFilter { to: Some(handset.into()), ..Default::default() };
    let listed: Vec<MessageId> =
        store.list_messages(acme, &to, None, 10).await.unwrap().into_iter().map(|m| m.id).collect();
    assert_eq!(listed, [texts[2].id, texts[1].id, texts[0].id]);
    let from_a = ListFilter { from: Some("A".into()), ..to };
    assert_eq!(store.list_messages(acme, &from_a, None, 10).await.unwrap().len(), 2, "both from A, chained");
    assert_eq!(store.account_for_reply(handset, "A").await.unwrap(), Some(acme));
    // A new text goes on the chain the upgrade made.
    let later = text(acme, handset, "A", 5);
    store.insert_messages(&[new(&later)]).await.unwrap();
    assert_eq!(store.list_messages(acme, &from_a, None, 10).await.unwrap().len(), 3);
    let left = store.query("SELECT name FROM sqlite_master WHERE name = 'messages_to'", Vec::new()).await.unwrap();
    assert!(left.is_empty(), "the index of numbers is gone");
    store.close().await;
}

/// A write is answered once the WAL file that holds it is synced; if the WAL SQLite writes is no longer the file
/// at its path (here removed under the server), writes fail instead of being answered unsynced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_answered_only_from_a_synced_wal() {
    let files = Files(std::env::temp_dir().join(format!("smsgate-sync-{}.db", uuid::Uuid::now_v7().simple())));
    let store = SqliteStore::open(&format!("sqlite://{}", files.0.display())).await.unwrap();
    let insert = |id: &str| Statement {
        sql: "INSERT INTO accounts (id, name, created_at) VALUES (?, 'x', 0)".into(),
        params: vec![Value::Text(Some(id.into()))],
    };
    store.transaction(vec![insert("a-1")]).await.unwrap();
    assert!(wal_bytes(&files.0) > 0, "the write went through the WAL");
    std::fs::remove_file(format!("{}-wal", files.0.display())).unwrap();
    for id in ["a-2", "a-3"] {
        let failed = store.transaction(vec![insert(id)]).await.map(|_| ()).map_err(|e| e.to_string());
        let e = failed.expect_err("a write was answered with its WAL gone");
        assert!(e.contains("WAL could not be synced"), "{e}");
    }
    store.close().await;
}
