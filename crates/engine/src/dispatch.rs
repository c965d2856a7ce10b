//! The dispatcher: claims due messages (or takes those stored already claimed for this node), hands each to its
//! connector within the node's submission slots and the connector's window and pace, and records what
//! [`crate::policy`] makes of the outcome, fenced by this node's lease.

use smsgate_connectors::SubmitError;
use smsgate_core::Message;
use smsgate_core::routing::Decision;
use smsgate_store::{Changes, Transition};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::policy::{self, Context, FREE_LINK_LOSSES, LinkLoss, Outcome};
use crate::runtime::{Turn, WAIT_FOR_TURN, WINDOW_HOLD};
use crate::{DomainEvent, Engine, SENT_TIMES, SentAt, metric, seconds_between};

impl Engine {
    pub(crate) async fn dispatch(&self, shutdown: CancellationToken) {
        let Some(mut handed) = self.claimed_rx.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            warn!("the dispatcher was started twice; the second does nothing");
            return;
        };
        self.running.store(true, std::sync::atomic::Ordering::Release);
        let permits = self.permits.clone();
        let mut sends = JoinSet::new();
        let lease_ms = i64::try_from(self.config.lease.as_millis()).unwrap_or(i64::MAX);
        // An interval, not a sleep per turn: a steady stream of handed messages must not keep the poll from coming.
        let mut poll = tokio::time::interval(self.config.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Made once: a `cancelled()` made per turn takes the token's lock twice for every message handed.
        let stopped = shutdown.cancelled();
        tokio::pin!(stopped);
        'outer: loop {
            tokio::select! {
                _ = &mut stopped => break,
                // A handed message needs no claim: send it and wait again.
                Some((m, permit)) = handed.recv() => {
                    self.spawn_send(&mut sends, m, permit);
                    while sends.try_join_next().is_some() {}
                    continue;
                }
                _ = self.wake.notified() => {}
                _ = poll.tick() => {}
            }
            loop {
                while sends.try_join_next().is_some() {}
                // Messages stored claimed for this node come with their own slots.
                while let Ok((m, permit)) = handed.try_recv() {
                    self.spawn_send(&mut sends, m, permit);
                }
                // Claim no more than can be sent now, so claimed messages do not wait out their lease.
                let free = permits.available_permits();
                if free == 0 {
                    // Wait for a slot: a send ending, a handed message (whose slot a reservation held), or the
                    // next poll (a reservation given back).
                    tokio::select! {
                        _ = shutdown.cancelled() => break 'outer,
                        Some((m, permit)) = handed.recv() => {
                            self.spawn_send(&mut sends, m, permit);
                        }
                        Some(_) = sends.join_next(), if !sends.is_empty() => {}
                        _ = poll.tick() => {}
                    }
                    continue;
                }
                // No more than the connectors' paces have turns for (a message claimed beyond them would be put
                // back): when every connector is paced out, wait until the first has turns again, for about half
                // of what it may give within its wait for a turn, rather than one by one.
                let mut wanted = free.min(self.config.batch as usize);
                let paced = self.registry.paced_room(std::time::Instant::now());
                if let Some((room, opens)) = paced {
                    if room == 0 {
                        self.hold(&mut sends, &mut handed, &shutdown, opens + WAIT_FOR_TURN / 2).await;
                        if shutdown.is_cancelled() {
                            break 'outer;
                        }
                        continue;
                    }
                    wanted = wanted.min(room);
                }
                // The slots first, then the claim: waiting for a slot with claimed messages in hand would stop
                // this loop from taking the handed messages whose slots it waits for.
                let mut slots = Vec::new();
                while slots.len() < wanted {
                    match permits.clone().try_acquire_owned() {
                        Ok(p) => slots.push(p),
                        Err(_) => break,
                    }
                }
                if slots.is_empty() {
                    continue;
                }
                let limit = u32::try_from(slots.len()).unwrap_or(u32::MAX);
                let claimed = match self.store.claim_due(&self.config.node, self.now(), lease_ms, limit).await {
                    Ok(claimed) => claimed,
                    Err(e) => {
                        warn!(error = %e, "claiming due messages failed; trying again at the next poll");
                        break;
                    }
                };
                if claimed.is_empty() {
                    break;
                }
                if self.events.listened() {
                    for m in &claimed {
                        let event = DomainEvent::StatusChanged { id: m.id, status: m.status, at: m.updated_at };
                        self.events.publish(event);
                    }
                }
                // Slots left over go back when `slots` drops.
                for (m, permit) in claimed.into_iter().zip(slots.drain(..)) {
                    self.spawn_send(&mut sends, m, permit);
                }
                // The paces' room is counted again once the messages just claimed have taken their turns.
                if paced.is_some() {
                    let at = std::time::Instant::now() + WAIT_FOR_TURN / 2;
                    self.hold(&mut sends, &mut handed, &shutdown, at).await;
                }
                if shutdown.is_cancelled() {
                    break 'outer;
                }
            }
        }
        // Stop taking handed messages; send those already handed, then wait for every submission under way.
        self.running.store(false, std::sync::atomic::Ordering::Release);
        handed.close();
        while let Some((m, permit)) = handed.recv().await {
            self.spawn_send(&mut sends, m, permit);
        }
        while sends.join_next().await.is_some() {}
    }

    /// Waits until `until` (or the shutdown) before claiming again, sending what is handed meanwhile.
    async fn hold(
        &self,
        sends: &mut JoinSet<()>,
        handed: &mut tokio::sync::mpsc::UnboundedReceiver<crate::Handed>,
        shutdown: &CancellationToken,
        until: std::time::Instant,
    ) {
        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(until));
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = &mut sleep => return,
                Some((m, permit)) = handed.recv() => self.spawn_send(sends, m, permit),
                Some(_) = sends.join_next(), if !sends.is_empty() => {}
            }
        }
    }

    /// Starts sending one claimed message, in its slot, among the sends the dispatcher waits for.
    fn spawn_send(&self, sends: &mut JoinSet<()>, m: Message, permit: OwnedSemaphorePermit) {
        let engine = self.clone();
        // Boxed: the send's state is over 3 KB, and a task's future is copied whole when it is spawned and again
        // when its output is taken.
        sends.spawn(Box::pin(async move { engine.send_one(m, permit).await }));
    }

    /// Hands one claimed message to the connector and records what [`policy::next`] makes of the outcome, fenced
    /// by this node's lease. The permit bounds submissions to the carrier, so it is returned when the carrier has
    /// answered, not when the outcome is on disk: the dispatcher claims the next messages while the group commit
    /// writes this one.
    async fn send_one(&self, m: Message, permit: OwnedSemaphorePermit) {
        let outcome = self.try_send(&m, permit).await;
        let accepted = match &outcome {
            Outcome::Accepted { carrier_ids, .. } => carrier_ids.first().cloned(),
            _ => None,
        };
        let cx = Context {
            now: self.now(),
            attempts: m.attempts,
            max_attempts: self.config.max_attempts,
            retry_base: self.config.retry_base,
            waiting_since: m.send_at.unwrap_or(m.created_at),
            segments: m.segments,
        };
        let next = policy::next(outcome, &cx);
        if let Some(counted) = next.counted {
            metrics::counter!(metric::SUBMISSIONS, "outcome" => counted).increment(1);
        }
        if let Some(carrier_id) = &accepted {
            metrics::histogram!(metric::SUBMIT_TO_SENT).record(seconds_between(cx.waiting_since, cx.now));
            let mut sent = self.sent_at.lock().unwrap_or_else(|e| e.into_inner());
            if sent.len() >= SENT_TIMES {
                sent.clear();
            }
            sent.insert(carrier_id.clone(), SentAt { at: cx.now, written: false });
        }
        let to = next.to;
        let changes = Changes { lease_owner: Some(self.config.node.clone()), ..next.changes };
        let transition = Transition { id: m.id, to, at: cx.now, detail: next.detail, changes };
        if let Err(e) = self.record(transition).await {
            warn!(id = %m.id, error = %e, "recording {to} failed; the message is retried when its lease ends");
        }
        if let Some(carrier_id) = accepted {
            // Written (or given up on): receipts that came first may look for their message now.
            if let Some(s) = self.sent_at.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&carrier_id) {
                s.written = true;
            }
            self.sent_written.notify_waiters();
        }
    }

    /// Tries to send one message: its validity, its route and connector, a place in the connector's window, the
    /// connector's pace, then the carrier. Gives the slot back as soon as the carrier has answered (or the message
    /// will not reach it), and keeps the connector's health and counters.
    async fn try_send(&self, m: &Message, permit: OwnedSemaphorePermit) -> Outcome {
        if m.expires_at.is_some_and(|e| e <= self.now()) {
            return Outcome::Expired;
        }
        // The route, and within it the connector.
        let (live, price_micros) = match self.registry.resolve_message(m).decision {
            Decision::Connector { connector, price_micros, .. } => match self.registry.connector(&connector) {
                Some(live) => (live, price_micros),
                // Removed between the choice and now.
                None => return Outcome::ConnectorGone { connector },
            },
            Decision::NoRoute => return Outcome::NoRoute { to: m.to.clone(), from: m.from.clone() },
            // Not claimed again until a connector of its route is up ([`Engine::unpark_every`]).
            Decision::Unavailable { route } => return Outcome::RouteDown { route },
        };
        let name = live.record.name.clone();
        let runtime = live.runtime.clone();
        let put_back = |detail: String, wait: std::time::Duration| {
            runtime.probe_unused();
            metrics::counter!(metric::CONNECTOR_SUBMISSIONS, "connector" => name.clone(), "outcome" => "put_back")
                .increment(1);
            Outcome::PutBack { detail, wait }
        };
        // A place in the connector's window: wait for one if the sends already waiting leave one within a second,
        // else step back into the queue, in line, until about when there will be one (a full window of a slow
        // carrier must not hold this node's submission slots, which every connector shares).
        let entered = match runtime.window_line(std::time::Instant::now()) {
            None => tokio::time::timeout(WINDOW_HOLD * 2, runtime.enter())
                .await
                .map_err(|_| runtime.line_turn(std::time::Instant::now())),
            Some(back) => Err(back),
        };
        let window = match entered {
            Ok(window) => window,
            Err(back) => {
                drop(permit);
                runtime.counters.put_back.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let size = runtime.limits().window.unwrap_or(0);
                let detail = format!(
                    "waiting for a place in {name}'s window ({size} under way): back in {} ms",
                    back.as_millis()
                );
                return put_back(detail, back);
            }
        };
        // The connector's pace: go now, wait a little, or step back into the queue until its turn.
        match runtime.turn(std::time::Instant::now()) {
            Turn::Now => {}
            Turn::Wait(w) => tokio::time::sleep(w).await,
            Turn::Later(wait) => {
                drop(window);
                drop(permit);
                let rate = runtime.limits().throughput.unwrap_or(0.0);
                return put_back(
                    format!("waiting for {name}'s pace ({rate}/s): back in {} ms", wait.as_millis()),
                    wait,
                );
            }
        }
        runtime.counters.submitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let started = std::time::Instant::now();
        let submitted = live.connector.submit(m).await;
        drop(window);
        drop(permit);
        runtime.answered(started.elapsed());
        metrics::histogram!(metric::CONNECTOR_SUBMIT_SECONDS, "connector" => name.clone())
            .record(started.elapsed().as_secs_f64());
        let (outcome, counter) = match &submitted {
            Ok(_) => ("accepted", &runtime.counters.accepted),
            Err(SubmitError::Permanent { .. }) => ("rejected", &runtime.counters.rejected),
            Err(_) => ("temporary_error", &runtime.counters.temporary_errors),
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!(metric::CONNECTOR_SUBMISSIONS, "connector" => name.clone(), "outcome" => outcome)
            .increment(1);
        match submitted {
            Ok(carrier_ids) => {
                runtime.succeeded();
                Outcome::Accepted { connector: name, carrier_ids, price_micros }
            }
            Err(error) => {
                // A refusal for the message's own sake (a bad number), or a request to slow down, says the carrier
                // works.
                if error.carrier_answered() {
                    runtime.succeeded();
                } else {
                    let code = error.code().to_string();
                    metrics::counter!(metric::CONNECTOR_ERRORS, "connector" => name.clone(), "code" => code.clone())
                        .increment(1);
                    if runtime.failed(std::time::Instant::now()) {
                        warn!(connector = %name, code = %code, "connector down after repeated temporary errors");
                    }
                }
                let link_loss = if error.is_link_down() && !self.link_loss_is_free(m, &error) {
                    LinkLoss::Counts
                } else {
                    LinkLoss::Free
                };
                Outcome::Refused { connector: name, error, link_loss }
            }
        }
    }
    /// Whether a link-down `error` of `m`'s submission goes without spending an attempt: always when no session
    /// was bound (nothing went out), and for the first [`FREE_LINK_LOSSES`] times a session closed under it.
    fn link_loss_is_free(&self, m: &Message, error: &SubmitError) -> bool {
        if !matches!(error, SubmitError::ConnectionLost { .. }) {
            return true;
        }
        let mut losses = self.link_losses.lock().unwrap_or_else(|e| e.into_inner());
        if losses.len() >= SENT_TIMES {
            losses.clear();
        }
        let n = losses.entry(m.id).or_default();
        *n += 1;
        *n <= FREE_LINK_LOSSES
    }
}
