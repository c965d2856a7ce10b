//! What becomes of a message after a try at sending it: one pure function, [`next`], from the try's [`Outcome`]
//! to the message's next transition — sent, failed, tried again after a backoff, put back without spending an
//! attempt, or set waiting for its route. The dispatcher gathers the outcome (routing, the connector's window and
//! pace, the carrier's answer), asks [`next`], and records what it says, fenced by its lease.

use std::time::Duration;

use smsgate_connectors::{CONNECTION_LOST, SubmitError};
use smsgate_core::{Status, Timestamp};
use smsgate_store::Changes;

/// How many times a session may close under a message after its submit went out before that costs the message
/// an attempt. A link that drops is the connector's fault, not the message's; but a message the carrier's SMSC
/// falls over on closes its session every time it is sent, and must not do so until its validity ends.
pub const FREE_LINK_LOSSES: u32 = 2;

/// The longest a retry waits: the backoff doubles up to this.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

/// What happened when the dispatcher tried to send a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its validity ended before it could be sent.
    Expired,
    /// No route matches it (sent to `to`, from `from`).
    NoRoute { to: String, from: String },
    /// Its route has no connector up.
    RouteDown { route: String },
    /// The connector routing chose was removed before the message reached it.
    ConnectorGone { connector: String },
    /// The connector's window or pace sent it back to wait its turn, `wait` from now.
    PutBack { detail: String, wait: Duration },
    /// The carrier took it, with its id for each part (none: a connector that did not say).
    Accepted { connector: String, carrier_ids: Vec<String>, price_micros: Option<i64> },
    /// The carrier refused it, or the submission failed.
    Refused { connector: String, error: SubmitError, link_loss: LinkLoss },
}

/// For a submission whose link went down: whether that costs the message an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkLoss {
    /// Free: no session was bound (nothing went out), or one of the first [`FREE_LINK_LOSSES`] closed under it.
    Free,
    /// Its session closed under it more than [`FREE_LINK_LOSSES`] times: it counts.
    Counts,
}

/// What the policy needs to know of the message and the engine's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    pub now: Timestamp,
    /// Attempts so far, this one included.
    pub attempts: u32,
    pub max_attempts: u32,
    /// The first retry's delay; each later one doubles, up to [`MAX_RETRY_DELAY`].
    pub retry_base: Duration,
    /// Since when the message has waited to go (its `send_at`, or its acceptance).
    pub waiting_since: Timestamp,
    /// Its parts, which its price is per.
    pub segments: u32,
}

/// The transition [`next`] decides on, without its fence (the dispatcher adds its lease).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Next {
    pub to: Status,
    pub detail: String,
    pub changes: Changes,
    /// The outcome `smsgate_submissions_total` counts (`sent`, `failed`, `retry`, `expired`, `waiting`); `None`
    /// for a message put back to wait its connector's turn, which is not a submission.
    pub counted: Option<&'static str>,
}

/// The message's next transition after `outcome`.
pub fn next(outcome: Outcome, cx: &Context) -> Next {
    let queued = |detail: String, changes: Changes, counted| Next { to: Status::Queued, detail, changes, counted };
    match outcome {
        Outcome::Expired => Next {
            to: Status::Expired,
            detail: "validity ended before it could be sent".into(),
            changes: Changes::default(),
            counted: Some("expired"),
        },
        Outcome::NoRoute { to, from } => Next {
            to: Status::Failed,
            detail: format!("no route matches {to} from {from}"),
            changes: Changes { error_code: Some("no_route".into()), ..Changes::default() },
            counted: Some("failed"),
        },
        // An outage of the route's carriers is not the message's failure: it waits off the queue for one to come
        // back (its validity bounds the wait), without spending an attempt.
        Outcome::RouteDown { route } => {
            let detail = format!("no connector of route {route:?} is up: waiting for one");
            let changes = Changes { wait_for_route: Some(route), attempt_undone: true, ..Changes::default() };
            queued(detail, changes, Some("waiting"))
        }
        Outcome::ConnectorGone { connector } => {
            let detail = format!("connector {connector:?} was removed");
            retry_or_fail(None, "no_connector_up".into(), detail, cx)
        }
        Outcome::PutBack { detail, wait } => {
            let changes = Changes { retry_at: Some(later(cx.now, wait)), attempt_undone: true, ..Changes::default() };
            queued(detail, changes, None)
        }
        Outcome::Accepted { connector, carrier_ids, price_micros } => {
            let Some(carrier_id) = carrier_ids.first().cloned() else {
                // A connector that took a message must say under which id; treat it as a carrier error.
                let detail = format!("{connector} answered without a carrier id");
                return retry_or_fail(Some(connector), "no_carrier_id".into(), detail, cx);
            };
            let detail = match carrier_ids.len() {
                1 => format!("{connector} accepted it: carrier id {carrier_id}"),
                n => format!("{connector} accepted its {n} parts: carrier ids {}", carrier_ids.join(", ")),
            };
            let parts = if carrier_ids.len() > 1 { carrier_ids } else { Vec::new() };
            let changes = Changes {
                connector: Some(connector),
                carrier_id: Some(carrier_id),
                price_micros: price_micros.map(|p| p.saturating_mul(i64::from(cx.segments))),
                parts,
                ..Changes::default()
            };
            Next { to: Status::Sent, detail, changes, counted: Some("sent") }
        }
        Outcome::Refused { connector, error, link_loss } => refused(connector, error, link_loss, cx),
    }
}

fn refused(connector: String, error: SubmitError, link_loss: LinkLoss, cx: &Context) -> Next {
    let code = error.code().to_string();
    match error {
        SubmitError::Permanent { detail, .. } => Next {
            to: Status::Failed,
            detail: format!("{connector} refused it, {code}: {detail}"),
            changes: Changes { connector: Some(connector), error_code: Some(code), ..Changes::default() },
            counted: Some("failed"),
        },
        // Back in the queue without spending an attempt: a carrier that keeps throttling holds the message until
        // its validity ends, never fails it.
        SubmitError::Throttled { detail, .. } => {
            let pause = throttle_pause(cx);
            Next {
                to: Status::Queued,
                detail: format!("{connector} asked to slow down, {code}: {detail}; back in {pause} ms"),
                changes: Changes {
                    connector: Some(connector),
                    error_code: Some(code),
                    retry_at: Some(cx.now.plus_millis(pause)),
                    attempt_undone: true,
                    ..Changes::default()
                },
                counted: Some("waiting"),
            }
        }
        // The link went down under it: the connector's failure, not the message's. Back in the queue without
        // spending an attempt (else everything under way when a link drops spends one, and a link that keeps
        // dropping fails messages that were never at fault); by then the connector may be down, and the message
        // waits for its route.
        ref e @ (SubmitError::NotBound { .. } | SubmitError::ConnectionLost { .. }) if link_loss == LinkLoss::Free => {
            let delay = cx.retry_base;
            let detail = format!(
                "{connector}: link down, {code}: {}; tried again in {delay:?}, the attempt not counted",
                e.detail()
            );
            let changes = Changes {
                connector: Some(connector),
                error_code: Some(code),
                retry_at: Some(later(cx.now, delay)),
                attempt_undone: true,
                ..Changes::default()
            };
            Next { to: Status::Queued, detail, changes, counted: Some("retry") }
        }
        e => {
            let mut detail = e.detail().to_string();
            if code == CONNECTION_LOST {
                detail.push_str(&format!(
                    " (the session closed under this message more than {FREE_LINK_LOSSES} times: it counts)"
                ));
            }
            retry_or_fail(Some(connector), code, detail, cx)
        }
    }
}

/// A temporary failure: queued again after a backoff, or failed once the message has had its attempts.
fn retry_or_fail(connector: Option<String>, code: String, detail: String, cx: &Context) -> Next {
    // Each attempt's event names the connector, what happened and the code.
    let detail = match &connector {
        Some(c) => format!("{c}: temporary error, {code}: {detail}"),
        None => format!("{code}: {detail}"),
    };
    if cx.attempts >= cx.max_attempts {
        let detail = match cx.attempts {
            1 => format!("{detail}; giving up after 1 attempt"),
            n => format!("{detail}; giving up after {n} attempts"),
        };
        let changes = Changes { connector, error_code: Some(code), ..Changes::default() };
        return Next { to: Status::Failed, detail, changes, counted: Some("failed") };
    }
    let delay = retry_delay(cx.retry_base, cx.attempts);
    let detail = format!("{detail}; attempt {} of {} in {delay:?}", cx.attempts + 1, cx.max_attempts);
    let changes =
        Changes { connector, error_code: Some(code), retry_at: Some(later(cx.now, delay)), ..Changes::default() };
    Next { to: Status::Queued, detail, changes, counted: Some("retry") }
}

/// The wait before the attempt after `attempts`: `base`, doubling each time, at most [`MAX_RETRY_DELAY`].
pub fn retry_delay(base: Duration, attempts: u32) -> Duration {
    let factor = 1u32 << attempts.saturating_sub(1).min(16);
    base.saturating_mul(factor).min(MAX_RETRY_DELAY)
}

/// How long a message a throttling carrier sent back stays back in the queue, in milliseconds: a quarter of the
/// time it has waited so far, 250 ms to a minute, so that a carrier that throttles for long costs a message few
/// journey lines.
fn throttle_pause(cx: &Context) -> i64 {
    ((cx.now.0 - cx.waiting_since.0) / 4).clamp(250, 60_000)
}

/// `wait` after `now`.
pub fn later(now: Timestamp, wait: Duration) -> Timestamp {
    now.plus_millis(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp(1_000_000);

    fn cx(attempts: u32) -> Context {
        Context {
            now: NOW,
            attempts,
            max_attempts: 3,
            retry_base: Duration::from_secs(1),
            waiting_since: Timestamp(NOW.0 - 10_000),
            segments: 2,
        }
    }

    fn refused(error: SubmitError, link_loss: LinkLoss) -> Outcome {
        Outcome::Refused { connector: "main".into(), error, link_loss }
    }

    fn temporary(code: &str) -> SubmitError {
        SubmitError::Temporary { code: code.into(), detail: "oops".into() }
    }

    /// The transition's status, error code, retry time (ms from now), whether the attempt is undone, and the
    /// outcome counted.
    type Row = (Status, Option<&'static str>, Option<i64>, bool, Option<&'static str>);

    fn check(outcome: Outcome, attempts: u32, expected: Row) {
        let n = next(outcome.clone(), &cx(attempts));
        let got = (
            n.to,
            n.changes.error_code.as_deref(),
            n.changes.retry_at.map(|t| t.0 - NOW.0),
            n.changes.attempt_undone,
            n.counted,
        );
        let (to, code, retry, undone, counted) = expected;
        assert_eq!(
            (got.0, got.1, got.2, got.3, got.4),
            (to, code, retry, undone, counted),
            "{outcome:?} after {attempts} attempts: {}",
            n.detail
        );
    }

    #[test]
    fn each_outcome_has_its_transition() {
        use Status::*;
        let link = |e| refused(e, LinkLoss::Free);
        let table: Vec<(Outcome, u32, Row)> = vec![
            (Outcome::Expired, 1, (Expired, None, None, false, Some("expired"))),
            (
                Outcome::NoRoute { to: "+15550100".into(), from: "Acme".into() },
                1,
                (Failed, Some("no_route"), None, false, Some("failed")),
            ),
            (Outcome::RouteDown { route: "eu".into() }, 1, (Queued, None, None, true, Some("waiting"))),
            (
                Outcome::PutBack { detail: "its pace".into(), wait: Duration::from_millis(300) },
                1,
                (Queued, None, Some(300), true, None),
            ),
            (
                Outcome::Accepted { connector: "main".into(), carrier_ids: vec!["c1".into()], price_micros: Some(5) },
                1,
                (Sent, None, None, false, Some("sent")),
            ),
            // A permanent refusal fails at once, whatever the attempts left.
            (
                refused(
                    SubmitError::Permanent { code: "invalid_destination".into(), detail: "x".into() },
                    LinkLoss::Free,
                ),
                1,
                (Failed, Some("invalid_destination"), None, false, Some("failed")),
            ),
            // Throttling: a quarter of the 10 s waited, the attempt not counted, even at the last attempt.
            (
                refused(SubmitError::Throttled { code: "esme_rthrottled".into(), detail: "x".into() }, LinkLoss::Free),
                3,
                (Queued, Some("esme_rthrottled"), Some(2_500), true, Some("waiting")),
            ),
            // A link down: again after the base delay, the attempt not counted.
            (
                link(SubmitError::NotBound { detail: "x".into() }),
                3,
                (Queued, Some("not_bound"), Some(1_000), true, Some("retry")),
            ),
            (
                link(SubmitError::ConnectionLost { detail: "x".into() }),
                1,
                (Queued, Some("connection_lost"), Some(1_000), true, Some("retry")),
            ),
            // ... until the session closed under it too often: then it counts like any temporary error.
            (
                refused(SubmitError::ConnectionLost { detail: "x".into() }, LinkLoss::Counts),
                1,
                (Queued, Some("connection_lost"), Some(1_000), false, Some("retry")),
            ),
            (
                refused(SubmitError::ConnectionLost { detail: "x".into() }, LinkLoss::Counts),
                3,
                (Failed, Some("connection_lost"), None, false, Some("failed")),
            ),
            // Temporary errors back off, doubling, and fail after the last attempt.
            (
                refused(temporary("timeout"), LinkLoss::Free),
                1,
                (Queued, Some("timeout"), Some(1_000), false, Some("retry")),
            ),
            (
                refused(temporary("timeout"), LinkLoss::Free),
                2,
                (Queued, Some("timeout"), Some(2_000), false, Some("retry")),
            ),
            (refused(temporary("timeout"), LinkLoss::Free), 3, (Failed, Some("timeout"), None, false, Some("failed"))),
            // A connector removed under it, or one that took it without an id: temporary errors of their own.
            (
                Outcome::ConnectorGone { connector: "old".into() },
                1,
                (Queued, Some("no_connector_up"), Some(1_000), false, Some("retry")),
            ),
            (
                Outcome::Accepted { connector: "main".into(), carrier_ids: vec![], price_micros: None },
                3,
                (Failed, Some("no_carrier_id"), None, false, Some("failed")),
            ),
        ];
        for (outcome, attempts, expected) in table {
            check(outcome, attempts, expected);
        }
    }

    #[test]
    fn what_a_sent_message_records() {
        let n = next(
            Outcome::Accepted {
                connector: "main".into(),
                carrier_ids: vec!["a1".into(), "a2".into()],
                price_micros: Some(5_000),
            },
            &cx(1),
        );
        assert_eq!(n.detail, "main accepted its 2 parts: carrier ids a1, a2");
        assert_eq!(n.changes.carrier_id.as_deref(), Some("a1"));
        assert_eq!(n.changes.parts, ["a1", "a2"], "a receipt comes per part");
        assert_eq!(n.changes.price_micros, Some(10_000), "the price is per part");
        let one = next(
            Outcome::Accepted { connector: "main".into(), carrier_ids: vec!["a1".into()], price_micros: None },
            &cx(1),
        );
        assert_eq!(one.detail, "main accepted it: carrier id a1");
        assert!(one.changes.parts.is_empty());
    }

    #[test]
    fn journeys_say_why() {
        let detail = |o, attempts| next(o, &cx(attempts)).detail;
        assert_eq!(
            detail(refused(temporary("timeout"), LinkLoss::Free), 1),
            "main: temporary error, timeout: oops; attempt 2 of 3 in 1s"
        );
        assert_eq!(
            detail(refused(temporary("timeout"), LinkLoss::Free), 3),
            "main: temporary error, timeout: oops; giving up after 3 attempts"
        );
        let once = Context { max_attempts: 1, ..cx(1) };
        assert!(next(refused(temporary("timeout"), LinkLoss::Free), &once).detail.ends_with("after 1 attempt"));
        assert!(
            detail(refused(SubmitError::ConnectionLost { detail: "closed".into() }, LinkLoss::Counts), 1)
                .contains("more than 2 times: it counts")
        );
        assert_eq!(
            detail(Outcome::RouteDown { route: "eu".into() }, 1),
            "no connector of route \"eu\" is up: waiting for one"
        );
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let base = Duration::from_secs(1);
        let delays: Vec<u64> = (1..=12).map(|a| retry_delay(base, a).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(retry_delay(base, 0), base);
        assert_eq!(retry_delay(Duration::from_secs(3600), 40), MAX_RETRY_DELAY);
    }
}
