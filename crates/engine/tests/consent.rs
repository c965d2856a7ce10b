#![allow(clippy::unwrap_used)] // Test helpers; a failure is a test failure.
//! Admission's copy of opt-outs against the store, while a change of consent is being written: an opt-out holds
//! from before it is durable (so whoever can read it in the store finds admission refusing), an opt-in lifts
//! nothing until it is, and a write that fails leaves the copy as it was. The write is held back by another
//! connection holding SQLite's write lock on the same file; waits are bounded polls.

use std::sync::Arc;
use std::time::Duration;

use smsgate_core::consent::Source;
use smsgate_core::{AccountId, Timestamp};
use smsgate_engine::consent::ConsentBook;
use smsgate_store::{ConsentEvent, Store};

const TO: &str = "+447700900555";
const FROM: &str = "+447700900900";

struct Setup {
    store: Arc<dyn Store>,
    book: Arc<ConsentBook>,
    account: AccountId,
    path: std::path::PathBuf,
}

async fn setup() -> Setup {
    let path = std::env::temp_dir().join(format!("smsgate-consent-{}.db", uuid::Uuid::now_v7().simple()));
    let store = smsgate_store::open(&format!("sqlite://{}", path.display()), 2).await.unwrap();
    let account = store.create_account("acme", false, Timestamp::now()).await.unwrap().id;
    let book = Arc::new(ConsentBook::new(b"a test secret"));
    // Loaded before anything is recorded, as a running engine's is.
    assert!(!book.opted_out(store.as_ref(), account, TO, FROM, Timestamp::now()).await.unwrap());
    Setup { store, book, account, path }
}

impl Setup {
    fn event(&self, opted_out: bool) -> ConsentEvent {
        ConsentEvent {
            id: uuid::Uuid::now_v7().to_string(),
            account_id: self.account,
            phone_hash: self.book.hash(TO),
            phone: Some(TO.to_string()),
            scope: String::new(),
            opted_out,
            source: Source::Api,
            evidence: "{}".into(),
            at: Timestamp::now(),
        }
    }

    fn remove(&self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
        }
    }

    async fn admission_refuses(&self) -> bool {
        self.book.opted_out(self.store.as_ref(), self.account, TO, FROM, Timestamp::now()).await.unwrap()
    }

    async fn stored(&self) -> Vec<String> {
        self.store.opt_out_scopes(self.account, &self.book.hash(TO)).await.unwrap()
    }

    /// Records `event` while another connection holds the write lock; `during` runs once the record is under way
    /// (given a moment to reach the writer), then the lock is let go and the record's answer returned.
    async fn record_held<F: std::future::Future<Output = ()>>(
        &self,
        event: ConsentEvent,
        during: impl FnOnce() -> F,
    ) -> bool {
        let blocker = rusqlite::Connection::open(&self.path).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        let (store, book) = (self.store.clone(), self.book.clone());
        let recording = tokio::spawn(async move { book.record(store.as_ref(), &event).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!recording.is_finished(), "the write went through while the lock was held");
        during().await;
        blocker.execute_batch("ROLLBACK").unwrap();
        tokio::time::timeout(Duration::from_secs(10), recording).await.unwrap().unwrap().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opt_out_holds_before_it_is_durable_and_an_opt_in_only_after() {
    let s = setup().await;
    let changed = s
        .record_held(s.event(true), || async {
            assert!(s.stored().await.is_empty(), "not yet in the store");
            assert!(s.admission_refuses().await, "admission lets a text through while the STOP is being written");
        })
        .await;
    assert!(changed);
    assert_eq!(s.stored().await, [""]);
    assert!(s.admission_refuses().await);

    let changed = s
        .record_held(s.event(false), || async {
            assert_eq!(s.stored().await, [""], "the opt-in is not yet in the store");
            assert!(s.admission_refuses().await, "admission lifted the opt-out before the opt-in was written");
        })
        .await;
    assert!(changed);
    assert!(s.stored().await.is_empty());
    assert!(!s.admission_refuses().await);
    s.store.close().await;
    s.remove();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opt_out_that_is_not_written_does_not_hold() {
    let s = setup().await;
    s.store.close().await;
    assert!(s.book.record(s.store.as_ref(), &s.event(true)).await.is_err());
    assert!(!s.admission_refuses().await, "an opt-out the store refused still holds");
    s.remove();
}
