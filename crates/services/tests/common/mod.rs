//! What the services' integration tests share: a store on SQLite or on PostgreSQL (a schema of its own), an engine
//! on the simulated network with a clock the test sets, the services on it, and an account that may send from any
//! number; `on_both!` runs each test on both databases.
#![allow(dead_code, clippy::unwrap_used)] // Each test file uses some of it; a failure is a test failure.

use std::sync::Arc;
use std::time::Duration;

use smsgate_connectors::Kit;
use smsgate_connectors::sim::SimNetwork;
use smsgate_core::admission::Request;
use smsgate_core::clock::ManualClock;
use smsgate_core::consent::Category;
use smsgate_core::{AccountId, Timestamp};
use smsgate_engine::ingress::Ingress;
use smsgate_engine::{Config, Engine, Registry};
use smsgate_services::{Admin, Contacts, Messages, ServiceError};
use smsgate_store::Store;
use tokio_util::sync::CancellationToken;

pub fn postgres_url() -> String {
    std::env::var("SMSGATE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub async fn on_server(sql: String) {
    let pool = sqlx::PgPool::connect(&postgres_url()).await.expect("PostgreSQL is up");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&pool).await.expect("statement");
    pool.close().await;
}

pub struct Setup {
    pub messages: Messages,
    pub contacts: Contacts,
    pub admin: Admin,
    pub engine: Engine,
    pub sim: Arc<SimNetwork>,
    pub clock: ManualClock,
    pub acme: AccountId,
    pub stop: CancellationToken,
    pub running: tokio::task::JoinHandle<()>,
    pub store: Arc<dyn Store>,
    pub backend: &'static str,
    pub name: String,
}

/// A store on `backend`, the engine and the services on it, the clock at `now`.
pub async fn setup_at(backend: &'static str, now: Timestamp) -> Setup {
    let name = format!("test_{}", uuid::Uuid::now_v7().simple());
    let url = match backend {
        "sqlite" => format!("sqlite://{}", std::env::temp_dir().join(format!("smsgate-{name}.db")).display()),
        _ => {
            on_server(format!("CREATE SCHEMA {name}")).await;
            format!("{}?options=-c%20search_path%3D{name}", postgres_url())
        }
    };
    let store = smsgate_store::open(&url, 4).await.unwrap();
    let clock = ManualClock::new(now);
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let sim = Arc::new(SimNetwork::new(Vec::new(), tx));
    let config =
        Config { clock: Arc::new(clock.clone()), poll_interval: Duration::from_millis(20), ..Config::default() };
    let engine = Engine::new(store.clone(), Arc::new(Registry::new(Kit::new(sim.clone()))), config);
    let stop = CancellationToken::new();
    let running = tokio::spawn(engine.clone().run(rx, stop.clone()));
    let ingress = Ingress::spawn(engine.clone(), store.clone(), Arc::default());
    let messages = Messages::new(ingress, store.clone());
    let admin = Admin::new(store.clone(), engine.clone());
    let acme = admin.create_account("Acme").await.unwrap().id;
    let operator = admin.admin_account().await.unwrap();
    admin.set_sender_policy(&operator, acme, smsgate_core::senders::SenderPolicy::Any).await.unwrap();
    let contacts = Contacts::new(messages.clone(), store.clone());
    Setup { messages, contacts, admin, engine, sim, clock, acme, stop, running, store, backend, name }
}

impl Setup {
    pub async fn finish(self) {
        self.stop.cancel();
        self.running.await.unwrap();
        self.store.close().await;
        match self.backend {
            "sqlite" => {
                for suffix in ["", "-wal", "-shm"] {
                    let path = std::env::temp_dir().join(format!("smsgate-{}.db{suffix}", self.name));
                    let _ = std::fs::remove_file(path);
                }
            }
            _ => on_server(format!("DROP SCHEMA {} CASCADE", self.name)).await,
        }
    }

    pub async fn send(&self, to: &str, category: Category) -> Result<smsgate_core::Message, ServiceError> {
        let request =
            Request { to: to.into(), from: "+13055550000".into(), body: "Sale".into(), category, ..Request::default() };
        self.messages.submit(self.acme, &request, None).await.map(|s| s.message().clone())
    }
}

/// Each test `name(&Setup)` as `on_sqlite::name` and `on_postgres::name`, on a fresh [`setup`] of the file's.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { let s = super::setup("sqlite").await; super::$name(&s).await; s.finish().await; }
        )* }
        mod on_postgres { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { let s = super::setup("postgres").await; super::$name(&s).await; s.finish().await; }
        )* }
    };
}
pub(crate) use on_both;
