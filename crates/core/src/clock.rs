//! The time, as everything that decides by it reads it: [`Clock`], with [`SystemClock`] for the real time and
//! [`ManualClock`] for tests that set and move it. Code that stamps or compares times takes a clock rather than
//! reading the system's, so a test of what happens when a validity ends or a retry comes due moves the clock
//! instead of waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::Timestamp;

/// Where the time comes from.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> Timestamp;

    /// The time `wait` from now.
    fn after(&self, wait: Duration) -> Timestamp {
        self.now().plus_millis(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX))
    }
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that stands still until told to move. Clones share the time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock showing `at`.
    pub fn new(at: Timestamp) -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(at.0)))
    }

    /// Sets the time.
    pub fn set(&self, at: Timestamp) {
        self.0.store(at.0, Ordering::SeqCst);
    }

    /// Moves the time on by `by`.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(i64::try_from(by.as_millis()).unwrap_or(i64::MAX), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

/// The system's clock, shared.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(Timestamp(1_000));
        let shared: Arc<dyn Clock> = Arc::new(clock.clone());
        assert_eq!(shared.now(), Timestamp(1_000));
        clock.advance(Duration::from_millis(250));
        assert_eq!(shared.now(), Timestamp(1_250));
        assert_eq!(shared.after(Duration::from_secs(2)), Timestamp(3_250));
        clock.set(Timestamp(7));
        assert_eq!(shared.now(), Timestamp(7));
    }

    #[test]
    fn the_system_clock_reads_the_time() {
        let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let now = SystemClock.now().0;
        assert!(i128::from(now) >= before as i128, "{now} < {before}");
        assert!(now > 1_700_000_000_000, "a time after 2023: {now}");
    }
}
