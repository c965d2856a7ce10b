//! What this node keeps per connector while it sends: the pace its throughput allows, the window of submissions
//! waiting for the carrier, its health, and its counters. Kept by name across reloads, so a change of settings
//! (a mode, a rate) keeps the connector's history.
//!
//! **Pace.** A connector limited to `r` messages a second starts a submission at most every `1/r` seconds (with a
//! two-percent margin, so that the carrier never counts more than `r` in any second even when a submission is
//! a little late). A message whose turn is near
//! waits for it; one whose turn is far off is put back in the queue until then ([`Pace::defer`] hands out those
//! times in order), so that it does not hold one of the dispatcher's slots that other connectors' messages need.
//!
//! **Health.** After [`FAILURES_TO_DOWN`] temporary failures in a row a connector is down for a cool-down (five
//! seconds, doubling at each failed probe up to a minute): routes pass it over. When the cool-down ends, one message
//! is let through as a probe; its success brings the connector back, its failure starts a longer cool-down.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::registry::Limits;

/// Temporary failures in a row that take a connector down.
pub const FAILURES_TO_DOWN: u32 = 5;

/// The first cool-down; each failed probe doubles it, up to [`MAX_COOL_DOWN`].
pub const COOL_DOWN: Duration = Duration::from_secs(5);

/// The longest cool-down.
pub const MAX_COOL_DOWN: Duration = Duration::from_secs(60);

/// Submissions are this much further apart than the rate: 20 ms a second of room for a submission that reaches
/// the carrier late while the next is on time.
const PACE_MARGIN: f64 = 1.02;

/// How long a message waits for its turn before it is put back in the queue instead.
pub const WAIT_FOR_TURN: Duration = Duration::from_millis(100);

/// The answer time assumed before a connector has answered once: short, for a line planned too short costs a
/// few messages a second look, one planned too long leaves the window idle while they wait.
pub const FIRST_ANSWER: Duration = Duration::from_millis(20);

/// How much of the window's work may wait for it in memory, holding the node's submission slots; the rest of a
/// backlog waits in the queue ([`Runtime::window_line`]).
pub const WINDOW_HOLD: Duration = Duration::from_secs(1);

/// A connector's pace: when the next submission may start, and up to when put-back messages are spread.
#[derive(Debug)]
struct Pace {
    next: Option<Instant>,
    backlog: Option<Instant>,
}

/// What a message gets from [`Runtime::turn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Go now.
    Now,
    /// Wait this long, then go.
    Wait(Duration),
    /// Too far off: put the message back until this long from now.
    Later(Duration),
}

#[derive(Debug)]
struct Health {
    failures: u32,
    down_until: Option<Instant>,
    cool_down: Duration,
    probing: bool,
}

/// Counters since this node started.
#[derive(Debug, Default)]
pub struct Counters {
    pub submitted: AtomicU64,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub temporary_errors: AtomicU64,
    pub put_back: AtomicU64,
    pub in_flight: AtomicU64,
}

/// How the window drains: how long a submission waits for the carrier's answer (a moving average), and up to when
/// the messages put back for a place in it have been given their times.
#[derive(Debug, Default)]
struct Drain {
    answer: Option<Duration>,
    backlog: Option<Instant>,
}

/// A connector's state on this node.
#[derive(Debug)]
pub struct Runtime {
    pub name: String,
    limits: Mutex<Limits>,
    pace: Mutex<Pace>,
    drain: Mutex<Drain>,
    /// Sends waiting for a place in the window.
    waiting: AtomicU64,
    health: Mutex<Health>,
    window: tokio::sync::Notify,
    pub counters: Counters,
}

/// Whether a connector can take messages that wait for it ([`Runtime::readiness`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Readiness {
    /// Cooling down, or its probe is out.
    Down,
    /// Its cool-down is over: one message may go, as the probe.
    Probe,
    /// Healthy: all may go.
    Up,
}

/// A snapshot of a connector's health, for the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthView {
    pub up: bool,
    pub consecutive_failures: u32,
    /// How long until the next probe, when down.
    pub down_for: Option<Duration>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A send waiting for a place in the window, counted while it waits (even when its wait is given up).
struct Waiting<'a>(&'a AtomicU64);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicU64) -> Waiting<'a> {
        count.fetch_add(1, Ordering::AcqRel);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A submission in the window; leaving it frees its place.
#[derive(Debug)]
pub struct InWindow<'a> {
    runtime: &'a Runtime,
}

impl Drop for InWindow<'_> {
    fn drop(&mut self) {
        self.runtime.counters.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.runtime.window.notify_one();
    }
}

impl Runtime {
    pub fn new(name: &str, limits: Limits) -> Runtime {
        Runtime {
            name: name.to_string(),
            limits: Mutex::new(limits),
            pace: Mutex::new(Pace { next: None, backlog: None }),
            drain: Mutex::new(Drain::default()),
            waiting: AtomicU64::new(0),
            health: Mutex::new(Health { failures: 0, down_until: None, cool_down: COOL_DOWN, probing: false }),
            window: tokio::sync::Notify::new(),
            counters: Counters::default(),
        }
    }

    /// Takes the connector's new limits (after its settings changed).
    pub fn set_limits(&self, limits: Limits) {
        *lock(&self.limits) = limits;
        self.window.notify_waiters();
    }

    pub fn limits(&self) -> Limits {
        *lock(&self.limits)
    }

    /// The gap between submissions its throughput allows, with the margin.
    fn gap(&self) -> Option<Duration> {
        lock(&self.limits).throughput.map(|r| Duration::from_secs_f64(PACE_MARGIN / r))
    }

    /// When a message may be submitted through this connector, at `now`. A turn given as [`Turn::Now`] or
    /// [`Turn::Wait`] is taken; one given as [`Turn::Later`] is reserved among the put-back messages.
    pub fn turn(&self, now: Instant) -> Turn {
        let Some(gap) = self.gap() else { return Turn::Now };
        let mut pace = lock(&self.pace);
        let next = pace.next.map_or(now, |n| n.max(now));
        let wait = next - now;
        if wait <= WAIT_FOR_TURN {
            pace.next = Some(next + gap);
            return if wait.is_zero() { Turn::Now } else { Turn::Wait(wait) };
        }
        // Put back: spread after the turns already handed out, one gap apart.
        let at = pace.backlog.map_or(next, |b| b.max(next)) + gap;
        pace.backlog = Some(at);
        self.counters.put_back.fetch_add(1, Ordering::Relaxed);
        Turn::Later(at - now)
    }

    /// How many turns this connector's pace has left within [`WAIT_FOR_TURN`] of `now` (turns [`Runtime::turn`]
    /// would give as now or after a short wait), and when the next one comes within it if there are none; `None`
    /// when it has no throughput limit. The dispatcher claims no more messages than its connectors have turns for:
    /// a message claimed beyond them would only be put back, a write to take it and one to give it back.
    pub fn room(&self, now: Instant) -> Option<(usize, Instant)> {
        let gap = self.gap()?;
        let next = lock(&self.pace).next.map_or(now, |n| n.max(now));
        let horizon = now + WAIT_FOR_TURN;
        if next > horizon {
            return Some((0, next - WAIT_FOR_TURN));
        }
        let turns = (horizon - next).as_nanos() / gap.as_nanos().max(1) + 1;
        Some((usize::try_from(turns).unwrap_or(usize::MAX), now))
    }

    /// A submission's answer took `took`: the moving average of answer times moves an eighth of the way to it.
    pub fn answered(&self, took: Duration) {
        let mut d = lock(&self.drain);
        d.answer = Some(d.answer.map_or(took, |a| (a * 7 + took) / 8));
    }

    /// Whether a message about to enter the window should step back into the queue, and for how long. When
    /// there is a place, or the sends already waiting for one would fill it within [`WINDOW_HOLD`] (the window
    /// freeing a place every answer time divided by its size), it waits here: `None`. Otherwise it is put back
    /// ([`Runtime::line_turn`]).
    pub fn window_line(&self, now: Instant) -> Option<Duration> {
        let window = lock(&self.limits).window?.max(1);
        if self.counters.in_flight.load(Ordering::Acquire) < u64::from(window) {
            return None;
        }
        let waiting = u32::try_from(self.waiting.load(Ordering::Acquire)).unwrap_or(u32::MAX);
        let gap = self.window_gap(window);
        if gap.saturating_mul(waiting.saturating_add(1)) <= WINDOW_HOLD {
            return None;
        }
        Some(self.line_turn(now))
    }

    /// How long a message put back for a place in the window stays back: until its place in the line of such
    /// messages comes, behind the sends that wait here ([`WINDOW_HOLD`] of them) and one window gap behind the
    /// message put back before it. So a backlog for a slow carrier comes back about as the window can take it,
    /// each message once, rather than all of it again and again.
    pub fn line_turn(&self, now: Instant) -> Duration {
        let window = lock(&self.limits).window.unwrap_or(1).max(1);
        let gap = self.window_gap(window);
        let mut d = lock(&self.drain);
        let at = d.backlog.unwrap_or(now).max(now + WINDOW_HOLD) + gap;
        d.backlog = Some(at);
        at - now
    }

    /// How often the window frees a place: the answer time over its size.
    fn window_gap(&self, window: u32) -> Duration {
        lock(&self.drain).answer.unwrap_or(FIRST_ANSWER) / window
    }

    /// A place in the window (waiting for one if the window is full).
    pub async fn enter(&self) -> InWindow<'_> {
        let mut waits = None;
        loop {
            let notified = self.window.notified();
            let window = lock(&self.limits).window.map_or(u64::MAX, u64::from);
            let taken = self
                .counters
                .in_flight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < window).then_some(n + 1));
            if taken.is_ok() {
                return InWindow { runtime: self };
            }
            waits.get_or_insert_with(|| Waiting::new(&self.waiting));
            notified.await;
        }
    }

    /// Whether routes may send through it at `now`. When a cool-down has ended, the first asker gets the probe.
    pub fn is_up(&self, now: Instant) -> bool {
        let mut h = lock(&self.health);
        match h.down_until {
            None => true,
            Some(until) if now >= until && !h.probing => {
                h.probing = true;
                true
            }
            Some(_) => false,
        }
    }

    /// Whether messages that wait for this connector may go at `now`, without taking the probe.
    pub fn readiness(&self, now: Instant) -> Readiness {
        let h = lock(&self.health);
        match h.down_until {
            None => Readiness::Up,
            Some(until) if now >= until && !h.probing => Readiness::Probe,
            Some(_) => Readiness::Down,
        }
    }

    /// A message that may have taken the probe went back to the queue before it reached the carrier: the probe is
    /// free again for the next asker (else the connector would wait for a probe that never comes back).
    pub fn probe_unused(&self) {
        lock(&self.health).probing = false;
    }

    /// Whether it is up, without taking the probe.
    pub fn health(&self, now: Instant) -> HealthView {
        let h = lock(&self.health);
        HealthView {
            up: h.down_until.is_none(),
            consecutive_failures: h.failures,
            down_for: h.down_until.map(|u| u.saturating_duration_since(now)),
        }
    }

    /// The carrier took a message (or refused it for a reason of the message's own): the connector works.
    pub fn succeeded(&self) {
        let mut h = lock(&self.health);
        *h = Health { failures: 0, down_until: None, cool_down: COOL_DOWN, probing: false };
    }

    /// A temporary failure; true if it took the connector down.
    pub fn failed(&self, now: Instant) -> bool {
        let mut h = lock(&self.health);
        h.failures = h.failures.saturating_add(1);
        if h.probing {
            h.probing = false;
            h.cool_down = (h.cool_down * 2).min(MAX_COOL_DOWN);
            h.down_until = Some(now + h.cool_down);
            return true;
        }
        if h.down_until.is_none() && h.failures >= FAILURES_TO_DOWN {
            h.cool_down = COOL_DOWN;
            h.down_until = Some(now + COOL_DOWN);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_the_turns_that_would_not_be_put_back() {
        let start = Instant::now();
        assert_eq!(Runtime::new("free", Limits { throughput: None, window: None }).room(start), None);
        let r = Runtime::new("a", Limits { throughput: Some(50.0), window: None });
        let (room, _) = r.room(start).unwrap();
        assert_eq!(room, 5, "20.4 ms apart within 100 ms");
        for _ in 0..room {
            assert!(matches!(r.turn(start), Turn::Now | Turn::Wait(_)));
        }
        // None left: the room opens when the next turn comes within 100 ms, and a turn now is put back.
        let (none, opens) = r.room(start).unwrap();
        assert_eq!(none, 0);
        assert!(opens > start && opens - start <= Duration::from_millis(3), "{:?}", opens - start);
        assert_eq!(r.room(opens).unwrap().0, 1);
        assert!(matches!(r.turn(start), Turn::Later(_)));
    }

    #[test]
    fn paces_to_the_rate_and_puts_back_what_is_far_off() {
        let r = Runtime::new("a", Limits { throughput: Some(50.0), window: None });
        let start = Instant::now();
        assert_eq!(r.turn(start), Turn::Now);
        // 20.4 ms apart: the next few wait, within 100 ms.
        let mut waits = Vec::new();
        loop {
            match r.turn(start) {
                Turn::Wait(w) => waits.push(w),
                Turn::Later(l) => {
                    assert!(l > WAIT_FOR_TURN);
                    break;
                }
                Turn::Now => panic!("only one goes now"),
            }
        }
        assert_eq!(waits.len(), 4, "{waits:?}");
        assert!(waits.windows(2).all(|w| w[1] - w[0] == Duration::from_secs_f64(PACE_MARGIN / 50.0)));
        // Put-back messages get later and later turns, one gap apart.
        let (Turn::Later(a), Turn::Later(b)) = (r.turn(start), r.turn(start)) else { panic!("put back") };
        assert_eq!(b - a, Duration::from_secs_f64(PACE_MARGIN / 50.0));
        // In any second, at most the rate: 50 turns span more than a second.
        let r = Runtime::new("b", Limits { throughput: Some(50.0), window: None });
        let mut at = Instant::now();
        let mut times = Vec::new();
        while times.len() < 51 {
            match r.turn(at) {
                Turn::Now => times.push(at),
                Turn::Wait(w) => {
                    at += w;
                    times.push(at);
                }
                Turn::Later(_) => at += Duration::from_millis(5),
            }
        }
        assert!(times[50] - times[0] > Duration::from_secs(1));
        // No limit: always now.
        let free = Runtime::new("c", Limits::default());
        assert!((0..1000).all(|_| free.turn(Instant::now()) == Turn::Now));
    }

    #[test]
    fn goes_down_after_failures_and_comes_back_after_a_probe() {
        let r = Runtime::new("a", Limits::default());
        let t = Instant::now();
        for _ in 0..FAILURES_TO_DOWN - 1 {
            assert!(!r.failed(t));
        }
        assert!(r.is_up(t));
        assert!(r.failed(t), "the fifth failure takes it down");
        assert!(!r.is_up(t));
        // After the cool-down, one probe goes; others wait for its result.
        let later = t + COOL_DOWN;
        assert!(r.is_up(later));
        assert!(!r.is_up(later));
        assert!(r.failed(later), "a failed probe: down again, for longer");
        assert_eq!(r.health(later).down_for, Some(COOL_DOWN * 2));
        assert_eq!(r.readiness(later), Readiness::Down);
        let probe = later + COOL_DOWN * 2;
        assert_eq!(r.readiness(probe), Readiness::Probe, "looking takes no probe");
        assert!(r.is_up(probe) && !r.is_up(probe));
        assert_eq!(r.readiness(probe), Readiness::Down, "its probe is out");
        // A probe that went back to the queue unsent leaves the probe to the next asker.
        r.probe_unused();
        assert_eq!(r.readiness(probe), Readiness::Probe);
        assert!(r.is_up(probe));
        r.succeeded();
        assert!(r.is_up(probe) && r.is_up(probe));
        assert_eq!(r.readiness(probe), Readiness::Up);
        assert_eq!(r.health(probe), HealthView { up: true, consecutive_failures: 0, down_for: None });
    }

    #[tokio::test]
    async fn a_full_window_holds_a_second_of_work_and_lines_up_the_rest() {
        let r = Runtime::new("a", Limits { throughput: None, window: Some(4) });
        let t = Instant::now();
        // Answers of 200 ms: four at once, a place every 50 ms.
        r.answered(Duration::from_millis(200));
        let held: Vec<_> = futures_held(&r, 4).await;
        assert_eq!(r.window_line(t), None, "a place may come within the second: wait for it");
        // Twenty waiting fill the next second; the next message goes back to the queue, behind them, and each
        // after it one gap later.
        let mut waiting: Vec<_> = (0..20).map(|_| Box::pin(r.enter())).collect();
        for w in &mut waiting {
            // Polled once (a timeout polls what it times first): pending, and counted.
            assert!(tokio::time::timeout(Duration::ZERO, w.as_mut()).await.is_err());
        }
        assert_eq!(r.window_line(t), Some(WINDOW_HOLD + Duration::from_millis(50)));
        assert_eq!(r.window_line(t), Some(WINDOW_HOLD + Duration::from_millis(100)));
        // Waits given up are not counted.
        drop(waiting);
        assert_eq!(r.window_line(t), None);
        // Once the line has gone by, the next starts again behind what the window holds.
        let later = t + Duration::from_secs(10);
        assert_eq!(r.line_turn(later), WINDOW_HOLD + Duration::from_millis(50));
        // The answer time is a moving average.
        for _ in 0..50 {
            r.answered(Duration::from_millis(40));
        }
        let gap = r.window_gap(4);
        assert!(gap >= Duration::from_millis(10) && gap < Duration::from_millis(11), "{gap:?}");
        drop(held);
    }

    async fn futures_held(r: &Runtime, n: usize) -> Vec<InWindow<'_>> {
        let mut held = Vec::new();
        for _ in 0..n {
            held.push(r.enter().await);
        }
        held
    }

    #[tokio::test]
    async fn the_window_bounds_submissions_under_way() {
        let r = std::sync::Arc::new(Runtime::new("a", Limits { throughput: None, window: Some(2) }));
        let first = r.enter().await;
        let _second = r.enter().await;
        let r2 = r.clone();
        let third = tokio::spawn(async move {
            let _w = r2.enter().await;
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!third.is_finished(), "the window is full");
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), third).await.unwrap().unwrap();
        assert_eq!(r.counters.in_flight.load(Ordering::Acquire), 1);
    }
}
