//! What the engine does on a timer: reloading connectors and routes, putting back messages that wait for their
//! route, ending messages whose validity passed, purging the history accounts keep for a set time, and deleting
//! the server's history past `history_days`.

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::runtime::Readiness;
use smsgate_core::Status;

use crate::{DomainEvent, Engine, RELOAD_EVERY, UNPARK_CHUNK, UNPARK_EVERY};

impl Engine {
    /// Reloads connectors and routes every [`RELOAD_EVERY`], so changes made on other nodes arrive.
    pub(crate) async fn reload_every(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(RELOAD_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.registry.reload(self.store.as_ref()).await {
                warn!(error = %e, "reloading connectors and routes failed; keeping those in force");
            }
        }
    }

    /// Every [`UNPARK_EVERY`] (and at once after [`Engine::reload`]), puts back on the queue the messages that wait
    /// for a route ([`Changes::wait_for_route`]) that has a connector up again (all of them, a chunk at a time), or
    /// one whose connector's cool-down is over (one message, to be its probe). When the routes in force change,
    /// and when the engine starts, every waiting message goes back (twice, a tick apart), for routing to decide
    /// afresh: the route it waits for may be gone, or another may now match it.
    pub(crate) async fn unpark_every(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(UNPARK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The routes in force when all waiting messages last went back, and whether to do it once more: a message
        // routed by the routes before may be set waiting just after (its write was under way).
        let mut routed_by = None;
        let mut again = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
                _ = self.reloaded.notified() => {}
            }
            let version = self.registry.routing_version();
            if (routed_by != Some(version) || again) && self.unpark(None, UNPARK_CHUNK).await {
                again = routed_by != Some(version);
                routed_by = Some(version);
                if !again {
                    self.rerouted.store(version, std::sync::atomic::Ordering::Release);
                }
            }
            for (route, readiness) in self.registry.route_readiness(std::time::Instant::now()) {
                match readiness {
                    Readiness::Up => self.unpark(Some(&route), UNPARK_CHUNK).await,
                    Readiness::Probe => self.unpark(Some(&route), 1).await,
                    Readiness::Down => continue,
                };
            }
        }
    }

    /// Puts waiting messages of `route` (any, if `None`) back on the queue, `chunk` at a time (all of them unless
    /// `chunk` is 1), waking the dispatcher for each chunk. Those set waiting again meanwhile stay, as do those
    /// accepted since it began: each chunk goes on from where the last stopped. False if the store failed.
    async fn unpark(&self, route: Option<&str>, chunk: u32) -> bool {
        let (mut after, at) = (None, self.now());
        loop {
            match self.store.unpark(route, after.as_ref(), at, chunk).await {
                Ok(None) => return true,
                Ok(Some(at)) => {
                    debug!(route = ?route, up_to = %at.id, "waiting messages back on the queue");
                    self.wake();
                    if chunk == 1 {
                        return true;
                    }
                    after = Some(at);
                }
                Err(e) => {
                    warn!(route = ?route, error = %e, "putting waiting messages back failed; trying again next tick");
                    return false;
                }
            }
        }
    }

    /// Every [`crate::Config::expiry_interval`], ends the messages whose validity passed.
    pub(crate) async fn sweep_expired(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.config.expiry_interval) => {}
            }
            loop {
                let now = self.now();
                let expired = self.store.expire_due(now, 1000).await;
                if let Ok(ids) = &expired {
                    for &id in ids {
                        self.events.publish(DomainEvent::StatusChanged { id, status: Status::Expired, at: now });
                    }
                }
                match expired {
                    Ok(ids) if ids.len() == 1000 => continue,
                    Ok(_) => break,
                    Err(e) => {
                        warn!(error = %e, "expiring messages failed");
                        break;
                    }
                }
            }
        }
    }

    /// Every [`RETENTION_EVERY`], purges the history of the accounts that keep it for `retention_days`: bodies and
    /// numbers of final messages older than that removed, [`RETENTION_BATCH`] at a time with a pause between, so
    /// that live traffic never waits behind a long write.
    pub(crate) async fn purge_history_every(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(RETENTION_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.purge_history(&shutdown).await {
                Ok(0) => {}
                Ok(n) => debug!(purged = n, "message history past its retention purged"),
                Err(e) => warn!(error = %e, "purging message history failed; trying again later"),
            }
        }
    }

    /// One pass of [`Engine::purge_history_every`]; how many messages were purged. Each account's history is
    /// walked by id from where the last pass stopped; every [`RETENTION_REWALK`] from the start again, for the
    /// messages that were not final yet when a pass went by.
    pub async fn purge_history(&self, shutdown: &CancellationToken) -> Result<u64, smsgate_store::StoreError> {
        let mut purged = 0;
        {
            let mut walked = self.purge_walked.lock().unwrap_or_else(|e| e.into_inner());
            if walked.0.is_none_or(|at: std::time::Instant| at.elapsed() >= RETENTION_REWALK) {
                *walked = (Some(std::time::Instant::now()), std::collections::HashMap::new());
            }
        }
        for (account, json) in self.store.all_compliance().await? {
            let Ok(settings) = serde_json::from_str::<smsgate_core::consent::Compliance>(&json) else { continue };
            let Some(days) = settings.retention_days else { continue };
            let before = self.now().plus_secs(-i64::from(days) * 86_400);
            // Conversations quiet since are their messages' index: they go with them.
            self.store.purge_conversations(account, before).await?;
            for direction in [smsgate_core::Direction::Outbound, smsgate_core::Direction::Inbound] {
                let key = (account, direction);
                let mut after = self.purge_walked.lock().unwrap_or_else(|e| e.into_inner()).1.get(&key).copied();
                loop {
                    let (n, last) =
                        self.store.purge_messages(account, direction, before, after, RETENTION_BATCH).await?;
                    purged += n;
                    let Some(last) = last else { break };
                    after = Some(last);
                    self.purge_walked.lock().unwrap_or_else(|e| e.into_inner()).1.insert(key, last);
                    if shutdown.is_cancelled() {
                        return Ok(purged);
                    }
                    tokio::time::sleep(RETENTION_PAUSE).await;
                }
            }
        }
        Ok(purged)
    }
}

impl Engine {
    /// Every [`HISTORY_EVERY`], deletes the history past [`crate::Config::history`] and the callbacks done for
    /// longer than [`crate::Config::callback_log`] ([`Engine::delete_history`]).
    pub(crate) async fn delete_history_every(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(HISTORY_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.delete_history(&shutdown).await {
                Ok(d) if d == Deleted::default() => {}
                Ok(d) => debug!(messages = d.messages, callbacks = d.callbacks, pages = d.pages, "history deleted"),
                Err(e) => warn!(error = %e, "deleting history failed; trying again later"),
            }
        }
    }

    /// One pass: final messages made before the history span deleted with their parts and callbacks, callbacks
    /// done before their span deleted, [`HISTORY_BATCH`] at a time with a pause between so that live traffic never
    /// waits behind a long write; then the space they held given back to the file system (SQLite), beyond
    /// [`SPACE_KEPT_PAGES`] kept for new rows, [`SPACE_STEP_PAGES`] at a time.
    pub async fn delete_history(&self, shutdown: &CancellationToken) -> Result<Deleted, smsgate_store::StoreError> {
        let mut deleted = Deleted::default();
        let now = self.now();
        if let Some(history) = self.config.history {
            let before = now.plus_secs(-i64::try_from(history.as_secs()).unwrap_or(i64::MAX / 2000));
            // Deleted messages are gone from the walk: it starts over each pass and steps over what stays (messages
            // not final yet, ids made before their time).
            let mut after = None;
            loop {
                let (n, last) = self.store.delete_history(before, after, HISTORY_BATCH).await?;
                deleted.messages += n;
                let Some(last) = last else { break };
                after = Some(last);
                if shutdown.is_cancelled() {
                    return Ok(deleted);
                }
                tokio::time::sleep(HISTORY_PAUSE).await;
            }
        }
        let logged = now.plus_secs(-i64::try_from(self.config.callback_log.as_secs()).unwrap_or(i64::MAX / 2000));
        loop {
            let n = self.store.delete_done_callbacks(logged, HISTORY_BATCH).await?;
            deleted.callbacks += n;
            if n < u64::from(HISTORY_BATCH) || shutdown.is_cancelled() {
                break;
            }
            tokio::time::sleep(HISTORY_PAUSE).await;
        }
        loop {
            let n = self.store.reclaim_space(SPACE_KEPT_PAGES, SPACE_STEP_PAGES).await?;
            deleted.pages += n;
            if n < u64::from(SPACE_STEP_PAGES) || shutdown.is_cancelled() {
                break;
            }
            tokio::time::sleep(HISTORY_PAUSE).await;
        }
        Ok(deleted)
    }
}

/// What a pass of [`Engine::delete_history`] deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    pub messages: u64,
    pub callbacks: u64,
    /// Pages given back to the file system.
    pub pages: u64,
}

/// How often history past its span is looked for.
pub const HISTORY_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// Messages (or callbacks) one delete takes.
pub const HISTORY_BATCH: u32 = 500;
/// The pause between two deletes.
const HISTORY_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);
/// Free pages SQLite keeps for new rows (16 MB of 4 KiB pages); more are given back.
pub const SPACE_KEPT_PAGES: u64 = 4096;
/// Pages given back at a time.
pub const SPACE_STEP_PAGES: u32 = 256;

/// How often the history purge walks each account from the start again.
pub const RETENTION_REWALK: std::time::Duration = std::time::Duration::from_secs(3600);
/// How often history past its retention is looked for.
pub const RETENTION_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// Messages one purge statement changes.
pub const RETENTION_BATCH: u32 = 500;
/// The pause between two purge statements.
const RETENTION_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);
