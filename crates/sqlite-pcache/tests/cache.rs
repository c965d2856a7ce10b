//! The page cache in use on real SQLite files: commits of a small database stop sweeping the cache, and the data
//! stays what was written through growth, rollbacks that drop pages past the end, incremental vacuum and a second
//! connection reading beside the writer.
//!
//! One test function: the cache is installed once, before this process's first use of SQLite, and the counts it
//! keeps are the process's.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rusqlite::{Connection, params};

/// A small deterministic generator (xorshift64*), so that a failure can be run again.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A row's value: `len` bytes that depend on its key and version, so that a stale page shows as a wrong value.
fn value(key: i64, version: u32, len: usize) -> Vec<u8> {
    let mut rng = Rng((key as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(version) ^ 1);
    (0..len).map(|_| rng.next() as u8).collect()
}

struct TempDb(PathBuf);

impl TempDb {
    fn new(name: &str) -> TempDb {
        let dir = std::env::temp_dir().join(format!("smsgate-pcache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDb(dir)
    }

    fn open(&self) -> Connection {
        let conn = Connection::open(self.0.join("test.db")).expect("open");
        conn.execute_batch(
            "PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF; \
             PRAGMA cache_size = -65536;",
        )
        .expect("pragmas");
        conn
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every row as the connection sees it, against the model.
fn check(conn: &Connection, model: &BTreeMap<i64, (u32, usize)>, when: &str) {
    let mut st = conn.prepare("SELECT k, v FROM t ORDER BY k").expect("prepare");
    let rows: Vec<(i64, Vec<u8>)> =
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).expect("query").collect::<Result<_, _>>().expect("rows");
    assert_eq!(rows.len(), model.len(), "{when}: row count");
    for ((k, v), (mk, (version, len))) in rows.iter().zip(model) {
        assert_eq!(k, mk, "{when}: keys");
        assert!(*v == value(*k, *version, *len), "{when}: the value of row {k} is not what was written");
    }
    let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("integrity_check");
    assert_eq!(ok, "ok", "{when}");
}

#[test]
fn the_cache_skips_sweeps_and_keeps_every_page_right() {
    // SAFETY: the first thing this test binary does with SQLite, and its only test, so no other thread uses SQLite.
    unsafe { smsgate_sqlite_pcache::install() }.expect("installed before SQLite's first use");
    // SAFETY: as above (now too late, and said so).
    assert_eq!(unsafe { smsgate_sqlite_pcache::install() }, Err(smsgate_sqlite_pcache::Error::TooLate));

    let db = TempDb::new("cache");
    let writer = db.open();
    writer
        .execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL); CREATE INDEX t_v ON t (v);")
        .expect("schema");
    let mut model = BTreeMap::new();
    let mut rng = Rng(0x5eed);

    // Growth: keys at random, so the table's and the index's pages split and are put in order by swapping numbers.
    let before = smsgate_sqlite_pcache::stats();
    let commits = 300;
    for _ in 0..commits {
        let tx = writer.unchecked_transaction().expect("begin");
        for _ in 0..50 {
            let k = rng.below(1 << 40) as i64;
            let len = 20 + rng.below(300) as usize;
            tx.execute("INSERT OR REPLACE INTO t (k, v) VALUES (?1, ?2)", params![k, value(k, 0, len)])
                .expect("insert");
            model.insert(k, (0, len));
        }
        tx.commit().expect("commit");
    }
    let grown = smsgate_sqlite_pcache::stats();
    assert!(grown.parked > before.parked, "the workload never parked a page at the lock page: {grown:?}");
    assert!(grown.asked - before.asked >= commits, "every commit asks for a truncation: {before:?} -> {grown:?}");
    assert!(
        (grown.forwarded - before.forwarded) * 10 < commits,
        "commits of a database under 1 GiB still swept the cache: {before:?} -> {grown:?}"
    );
    check(&writer, &model, "after growth");

    // Rollbacks of transactions that grew the file (their pages past the old end must go), updates, deletes,
    // incremental vacuum (pages moved down, the file cut), and a reader beside the writer throughout.
    let reader = db.open();
    check(&reader, &model, "the reader, at first");
    for round in 1..=40u32 {
        let tx = writer.unchecked_transaction().expect("begin");
        let mut changed = BTreeMap::new();
        for _ in 0..40 {
            let k = rng.below(1 << 40) as i64;
            let len = 500 + rng.below(3_000) as usize;
            tx.execute("INSERT OR REPLACE INTO t (k, v) VALUES (?1, ?2)", params![k, value(k, round, len)])
                .expect("insert");
            changed.insert(k, (round, len));
        }
        let keys: Vec<i64> = model.keys().copied().collect();
        for _ in 0..30 {
            let k = keys[rng.below(keys.len() as u64) as usize];
            if rng.below(2) == 0 {
                tx.execute("DELETE FROM t WHERE k = ?1", [k]).expect("delete");
                changed.insert(k, (u32::MAX, 0));
            } else {
                let len = 10 + rng.below(200) as usize;
                // A row deleted earlier in the round stays deleted.
                if tx.execute("UPDATE t SET v = ?2 WHERE k = ?1", params![k, value(k, round, len)]).expect("update") > 0
                {
                    changed.insert(k, (round, len));
                }
            }
        }
        if round % 3 == 0 {
            tx.rollback().expect("rollback");
        } else {
            tx.commit().expect("commit");
            for (k, v) in changed {
                match v.0 {
                    u32::MAX => model.remove(&k),
                    _ => model.insert(k, v),
                };
            }
        }
        if round % 5 == 0 {
            writer.execute_batch("PRAGMA incremental_vacuum").expect("vacuum");
        }
        check(&reader, &model, &format!("the reader, round {round}"));
        check(&writer, &model, &format!("the writer, round {round}"));
    }
    let end = smsgate_sqlite_pcache::stats();
    assert!(end.forwarded > grown.forwarded, "rollbacks and vacuum need truncations, none went through: {end:?}");
    let free: i64 = writer.query_row("PRAGMA freelist_count", [], |r| r.get(0)).expect("freelist");
    writer.execute_batch("PRAGMA incremental_vacuum").expect("vacuum");
    let after: i64 = writer.query_row("PRAGMA freelist_count", [], |r| r.get(0)).expect("freelist");
    assert!(free == 0 || after < free, "incremental vacuum gave nothing back ({free} free pages)");
    check(&reader, &model, "the reader, at the end");
    drop(reader);
    drop(writer);
    check(&db.open(), &model, "a new connection");
}
