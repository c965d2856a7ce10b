//! One runner for every outbox: rows written in the transaction of the change they carry (webhook callbacks,
//! deliver_sm for SMPP clients; campaign sends and automations next), then claimed with a lease, worked on, and
//! recorded. An [`Outbox`] says how to claim, work and record its rows; [`run`] does the rest the same way for
//! all: how many are under way at once, when to claim again, the pause when nothing is due, waking early,
//! upkeep (giving up what waited too long), metrics, and finishing what is under way at shutdown. [`Backoff`] is
//! the retry schedule outboxes share.
//!
//! A row stays claimed until its result is recorded, and a claim takes none of a message whose earlier row is
//! still pending, so each message's rows go out in order; a node that stops mid-work leaves its rows to be
//! claimed again when their lease runs out (at least once, never none).

use std::sync::Arc;
use std::time::Duration;

pub use async_trait::async_trait;
use smsgate_core::Timestamp;
use smsgate_core::clock::Clock;
use smsgate_store::StoreError;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Metric names the runner reports, labelled by the outbox's name.
pub mod metric {
    /// Rows claimed.
    pub const CLAIMED: &str = "smsgate_outbox_claimed_total";
    /// Claims, records and upkeep that failed (`step`: `claim`, `finish`, `upkeep`).
    pub const ERRORS: &str = "smsgate_outbox_errors_total";
}

/// A kind of outbox row, and how to claim, work on and record it.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// A claimed row.
    type Item: Send + 'static;
    /// What became of one.
    type Done: Send + 'static;

    /// Its name, for logs and metrics (`webhooks`, `smpp`).
    fn name(&self) -> &'static str;

    /// Claims up to `limit` due rows for `owner` at `now`, until `now + lease_ms`.
    async fn claim(
        &self,
        owner: &str,
        now: Timestamp,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<Self::Item>, StoreError>;

    /// Works on one row (a POST, a deliver_sm); what became of it.
    async fn work(&self, item: Self::Item) -> Self::Done;

    /// Records what became of rows.
    async fn finish(&self, done: &[Self::Done]) -> Result<(), StoreError>;

    /// Upkeep every [`Settings::upkeep_every`]: gives up what waited past its time. Returns how many.
    async fn upkeep(&self, now: Timestamp) -> Result<u64, StoreError> {
        let _ = now;
        Ok(0)
    }
}

/// How a runner works.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node's name, as leases record it.
    pub owner: String,
    /// How long a claim holds; rows a stopped node held are claimed again after this.
    pub lease: Duration,
    /// Rows worked on at once. The next claim goes out when half of this is free (a claim is a write, not one
    /// per finished row); results are recorded in groups of up to half of it.
    pub in_flight: usize,
    /// The pause before looking again when a claim found nothing.
    pub idle_poll: Duration,
    /// How often [`Outbox::upkeep`] runs.
    pub upkeep_every: Duration,
    /// The time claims and upkeep are made at.
    pub clock: Arc<dyn Clock>,
    /// Told when rows may be due before the next look (a receiver bound, a row written).
    pub wake: Option<Arc<Notify>>,
}

/// Claims, works on and records `outbox`'s rows until `shutdown`; then finishes the work under way and records it.
pub async fn run<O: Outbox>(outbox: Arc<O>, settings: Settings, shutdown: CancellationToken) {
    let lease_ms = i64::try_from(settings.lease.as_millis()).unwrap_or(i64::MAX);
    let in_flight = settings.in_flight.max(2);
    let name = outbox.name();
    let mut under_way: JoinSet<O::Done> = JoinSet::new();
    let mut done = Vec::new();
    let mut last_upkeep = tokio::time::Instant::now();
    let wake = settings.wake.clone().unwrap_or_default();
    loop {
        let room = in_flight.saturating_sub(under_way.len());
        let mut claimed = 0;
        if !shutdown.is_cancelled() && (under_way.is_empty() || room >= in_flight / 2) {
            let limit = u32::try_from(room).unwrap_or(u32::MAX);
            match outbox.claim(&settings.owner, settings.clock.now(), lease_ms, limit).await {
                Ok(items) => {
                    claimed = items.len();
                    metrics::counter!(metric::CLAIMED, "outbox" => name).increment(claimed as u64);
                    for item in items {
                        let outbox = outbox.clone();
                        under_way.spawn(async move { outbox.work(item).await });
                    }
                }
                Err(e) => {
                    metrics::counter!(metric::ERRORS, "outbox" => name, "step" => "claim").increment(1);
                    warn!(outbox = name, error = %e, "claiming failed; trying again shortly");
                }
            }
        }
        if last_upkeep.elapsed() >= settings.upkeep_every {
            last_upkeep = tokio::time::Instant::now();
            match outbox.upkeep(settings.clock.now()).await {
                Ok(0) => {}
                Ok(n) => warn!(outbox = name, given_up = n, "rows given up: they waited past their time"),
                Err(e) => {
                    metrics::counter!(metric::ERRORS, "outbox" => name, "step" => "upkeep").increment(1);
                    warn!(outbox = name, error = %e, "upkeep failed");
                }
            }
        }
        if under_way.is_empty() {
            finish(outbox.as_ref(), &mut done).await;
            if shutdown.is_cancelled() {
                return;
            }
            if claimed > 0 {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = wake.notified() => {}
                _ = tokio::time::sleep(settings.idle_poll) => {}
            }
            continue;
        }
        // Wait for one row (or a while), then gather every one that is done.
        if let Ok(Some(Ok(d))) = tokio::time::timeout(settings.idle_poll, under_way.join_next()).await {
            done.push(d);
        }
        while let Some(d) = under_way.try_join_next() {
            if let Ok(d) = d {
                done.push(d);
            }
        }
        if done.len() >= in_flight / 2 || under_way.is_empty() {
            finish(outbox.as_ref(), &mut done).await;
        }
    }
}

/// Records what is done, if anything; a failure leaves the rows to their lease (tried again, never lost).
async fn finish<O: Outbox>(outbox: &O, done: &mut Vec<O::Done>) {
    if done.is_empty() {
        return;
    }
    if let Err(e) = outbox.finish(done).await {
        metrics::counter!(metric::ERRORS, "outbox" => outbox.name(), "step" => "finish").increment(1);
        warn!(outbox = outbox.name(), error = %e, "recording results failed; the rows are tried again after their lease");
    }
    done.clear();
}

/// A retry schedule: `first` after the first failure, doubling after each, at most `max`, and spread by up to
/// `spread` either way so that rows that failed together do not come back together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    /// 0 to 1: the share of the wait it may move by, either way.
    pub spread: f64,
}

impl Backoff {
    /// The wait after a row's `attempts`-th failure (1 for its first), with `jitter` (0 to 1) placing it in its
    /// spread.
    pub fn wait(&self, attempts: u32, jitter: f64) -> Duration {
        let doubled = self.first.saturating_mul(1u32 << attempts.saturating_sub(1).min(20)).min(self.max);
        doubled.mul_f64(1.0 - self.spread + 2.0 * self.spread * jitter.clamp(0.0, 1.0))
    }

    /// When to try again after `attempts` failures, at `now`; `None` once `deadline` is passed (give up).
    pub fn next(&self, attempts: u32, jitter: f64, now: Timestamp, deadline: Timestamp) -> Option<Timestamp> {
        if now >= deadline {
            return None;
        }
        let wait = self.wait(attempts, jitter);
        Some(now.plus_millis(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)))
    }
}

/// A number from 0 to 1 for [`Backoff`]'s spread.
pub fn jitter() -> f64 {
    (uuid::Uuid::new_v4().as_u128() % 1000) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use smsgate_core::clock::ManualClock;

    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_within_its_spread() {
        let b = Backoff { first: Duration::from_secs(1), max: Duration::from_secs(60), spread: 0.0 };
        let waits: Vec<u64> = (1..=8).map(|a| b.wait(a, 0.5).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        let spread = Backoff { spread: 0.2, ..b };
        assert_eq!(spread.wait(3, 0.0), Duration::from_millis(3_200));
        assert_eq!(spread.wait(3, 1.0), Duration::from_millis(4_800));
        assert_eq!(spread.wait(3, 0.5), Duration::from_secs(4));
        let now = Timestamp(10_000);
        assert_eq!(b.next(1, 0.5, now, Timestamp(20_000)), Some(Timestamp(11_000)));
        assert_eq!(b.next(1, 0.5, now, now), None, "past its deadline: given up");
    }

    /// An outbox of numbers in memory: claims hand out what is pending, work doubles them, finish records.
    #[derive(Default)]
    struct Numbers {
        pending: Mutex<Vec<u32>>,
        claims: AtomicU32,
        recorded: Mutex<Vec<u32>>,
        claimed_at: Mutex<Vec<Timestamp>>,
        upkeeps: AtomicU32,
    }

    #[async_trait]
    impl Outbox for Numbers {
        type Item = u32;
        type Done = u32;

        fn name(&self) -> &'static str {
            "numbers"
        }

        async fn claim(&self, _: &str, now: Timestamp, _: i64, limit: u32) -> Result<Vec<u32>, StoreError> {
            self.claims.fetch_add(1, Ordering::SeqCst);
            self.claimed_at.lock().unwrap_or_else(|e| e.into_inner()).push(now);
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let n = pending.len().min(limit as usize);
            Ok(pending.drain(..n).collect())
        }

        async fn work(&self, item: u32) -> u32 {
            item * 2
        }

        async fn finish(&self, done: &[u32]) -> Result<(), StoreError> {
            self.recorded.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(done);
            Ok(())
        }

        async fn upkeep(&self, _: Timestamp) -> Result<u64, StoreError> {
            self.upkeeps.fetch_add(1, Ordering::SeqCst);
            Ok(0)
        }
    }

    #[tokio::test]
    async fn every_row_is_worked_on_and_recorded_once() {
        let outbox = Arc::new(Numbers { pending: Mutex::new((1..=100).collect()), ..Numbers::default() });
        let clock = ManualClock::new(Timestamp(42));
        let wake = Arc::new(Notify::new());
        let settings = Settings {
            owner: "node".into(),
            lease: Duration::from_secs(60),
            in_flight: 8,
            idle_poll: Duration::from_secs(3600),
            upkeep_every: Duration::ZERO,
            clock: Arc::new(clock),
            wake: Some(wake.clone()),
        };
        let shutdown = CancellationToken::new();
        let runner = tokio::spawn(run(outbox.clone(), settings, shutdown.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while outbox.recorded.lock().unwrap_or_else(|e| e.into_inner()).len() < 100 {
            assert!(tokio::time::Instant::now() < deadline, "not all recorded");
            tokio::task::yield_now().await;
        }
        // Idle now (its poll is an hour away): a row written and a wake bring it at once.
        outbox.pending.lock().unwrap_or_else(|e| e.into_inner()).push(500);
        wake.notify_one();
        while !outbox.recorded.lock().unwrap_or_else(|e| e.into_inner()).contains(&1000) {
            assert!(tokio::time::Instant::now() < deadline, "the wake was not heard");
            tokio::task::yield_now().await;
        }
        shutdown.cancel();
        runner.await.expect("the runner ends at shutdown");
        let mut recorded = outbox.recorded.lock().unwrap_or_else(|e| e.into_inner()).clone();
        recorded.sort_unstable();
        let expected: Vec<u32> = (1..=100).map(|n| n * 2).chain([1000]).collect();
        assert_eq!(recorded, expected, "each once");
        assert!(outbox.claimed_at.lock().unwrap_or_else(|e| e.into_inner()).iter().all(|t| *t == Timestamp(42)));
        assert!(outbox.upkeeps.load(Ordering::SeqCst) > 0);
        // Never more than the room: 100 rows in claims of at most 8 take at least 13 claims.
        assert!(outbox.claims.load(Ordering::SeqCst) >= 13);
    }
}
