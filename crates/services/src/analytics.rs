//! [`Analytics`]: an account's numbers over time — sent, delivered, failed, delivery rate, latency, cost, replies,
//! clicks, opt-outs — by hour or day, for all its messages or by campaign, connector, country or sender. Read from
//! the rollups the store keeps as statuses change ([`smsgate_store::rollups`]), never from the messages; and the
//! worker that folds the rollups' deltas in.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use smsgate_core::{AccountId, Timestamp};
use smsgate_store::rollups::{LATENCY_BOUNDS_MS, LATENCY_BUCKETS};
use smsgate_store::{Counters, Grouping, Store};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::error::{Result, ServiceError};

/// Every metric, in the order answers give them.
pub const METRICS: [&str; 12] = [
    "sent",
    "delivered",
    "undelivered",
    "failed",
    "delivery_rate",
    "latency_p50",
    "latency_p95",
    "cost",
    "replies",
    "clicks",
    "opt_outs",
    "expired",
];
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// The most points a series has (a quarter by hour; more than a year by day).
const MAX_POINTS: i64 = 24 * 92;
/// Deltas folded at once.
const FOLD: u32 = 10_000;

/// What an analytics query asks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Comma-separated metrics; all when none.
    pub metric: Option<String>,
    /// `hour` or `day` (UTC; `day` when none).
    pub by: Option<String>,
    /// `campaign`, `connector`, `country` or `sender`; one group, `all`, when none.
    pub group: Option<String>,
    /// From (inclusive; the week before `to` when none) to (exclusive; now when none).
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
}

/// One group's points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub group: String,
    /// Each bucket's start and its metrics, every bucket of the range (zeros where nothing happened).
    pub points: Vec<(Timestamp, Map<String, Value>)>,
}

fn invalid(code: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::invalid(code, message)
}

/// Analytics over the rollups.
#[derive(Debug, Clone)]
pub struct Analytics {
    store: Arc<dyn Store>,
    clock: Arc<dyn smsgate_core::clock::Clock>,
}

impl Analytics {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn smsgate_core::clock::Clock>) -> Analytics {
        Analytics { store, clock }
    }

    /// An account's series, one a group, each with a point a bucket of the range.
    pub async fn series(&self, account: AccountId, q: &Query) -> Result<Vec<Series>> {
        let metrics: Vec<&str> = match q.metric.as_deref() {
            None | Some("") => METRICS.to_vec(),
            Some(list) => {
                let mut out = Vec::new();
                for m in list.split(',').map(str::trim) {
                    let known = METRICS.iter().find(|k| **k == m).ok_or_else(|| {
                        invalid("invalid_metric", format!("{m:?} is not a metric: {}", METRICS.join(", ")))
                    })?;
                    out.push(*known);
                }
                out
            }
        };
        let bucket = match q.by.as_deref() {
            None | Some("day") => DAY,
            Some("hour") => HOUR,
            Some(other) => return Err(invalid("invalid_by", format!("by is hour or day, not {other:?}"))),
        };
        let group = match q.group.as_deref() {
            None | Some("all") => Grouping::All,
            Some("campaign") => Grouping::Campaign,
            Some("connector") => Grouping::Connector,
            Some("country") => Grouping::Country,
            Some("sender") => Grouping::Sender,
            Some(other) => {
                return Err(invalid(
                    "invalid_group",
                    format!("group is campaign, connector, country or sender, not {other:?}"),
                ));
            }
        };
        let to = q.to.unwrap_or_else(|| self.clock.now());
        let from = q.from.unwrap_or(to.plus_millis(-7 * DAY));
        // Whole buckets: from the start of `from`'s to the end of the one before `to`'s end.
        let start = from.0.div_euclid(bucket) * bucket;
        let end = to.0.div_euclid(bucket) * bucket + if to.0.rem_euclid(bucket) == 0 { 0 } else { bucket };
        if end <= start {
            return Err(invalid("invalid_range", "from is before to"));
        }
        if (end - start) / bucket > MAX_POINTS {
            return Err(invalid("invalid_range", format!("at most {MAX_POINTS} points: a shorter range, or by day")));
        }
        let points = self.store.rollup_points(account, Timestamp(start), Timestamp(end), bucket, group).await?;
        let mut groups: Vec<(String, Vec<(i64, Counters)>)> = Vec::new();
        for p in points {
            match groups.last_mut() {
                Some((g, list)) if *g == p.group => list.push((p.at, p.counts)),
                _ => groups.push((p.group.clone(), vec![(p.at, p.counts)])),
            }
        }
        if groups.is_empty() && group == Grouping::All {
            groups.push((String::new(), Vec::new()));
        }
        let name = |g: String| if group == Grouping::All { "all".to_string() } else { g };
        Ok(groups
            .into_iter()
            .map(|(g, list)| {
                let mut at = list.into_iter().peekable();
                let mut out = Vec::new();
                let mut t = start;
                while t < end {
                    let c = match at.peek() {
                        Some((when, _)) if *when == t => at.next().map(|(_, c)| c).unwrap_or_default(),
                        _ => Counters::default(),
                    };
                    out.push((Timestamp(t), metrics_of(&c, &metrics)));
                    t += bucket;
                }
                Series { group: name(g), points: out }
            })
            .collect())
    }

    /// Folds the rollups' deltas in until `shutdown`, every second (at once again after a full batch).
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let folded = match self.store.compact_rollups(FOLD).await {
                Ok(n) => n,
                Err(e) => {
                    warn!(error = %e, "folding the rollups' deltas failed; trying again in a second");
                    0
                }
            };
            if folded >= u64::from(FOLD) {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

/// The metrics asked of a bucket's counts: counts as numbers, the delivery rate as a fraction of the sent (null
/// with none sent), latencies in seconds as the upper bound of the bucket the percentile falls in (null with none
/// delivered; past the last bound, the last bound), the cost in the account's currency.
fn metrics_of(c: &Counters, metrics: &[&str]) -> Map<String, Value> {
    let mut m = Map::new();
    for name in metrics {
        let v = match *name {
            "sent" => json!(c.sent),
            "delivered" => json!(c.delivered),
            "undelivered" => json!(c.undelivered),
            "failed" => json!(c.failed),
            "expired" => json!(c.expired),
            #[allow(clippy::cast_precision_loss)] // Counts far below 2^53.
            "delivery_rate" => {
                if c.sent > 0 {
                    json!(c.delivered as f64 / c.sent as f64)
                } else {
                    Value::Null
                }
            }
            "latency_p50" => percentile(&c.latency, 0.50),
            "latency_p95" => percentile(&c.latency, 0.95),
            #[allow(clippy::cast_precision_loss)] // A cost in millionths fits a double for any real bill.
            "cost" => json!(c.cost_micros as f64 / 1_000_000.0),
            "replies" => json!(c.replies),
            "clicks" => json!(c.clicks),
            "opt_outs" => json!(c.opt_outs),
            _ => Value::Null,
        };
        m.insert((*name).to_string(), v);
    }
    m
}

/// The upper bound (seconds) of the latency bucket the `q` quantile of the counts falls in.
fn percentile(buckets: &[i64; LATENCY_BUCKETS], q: f64) -> Value {
    let total: i64 = buckets.iter().sum();
    if total == 0 {
        return Value::Null;
    }
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)] // Counts far below 2^53.
    let rank = ((total as f64) * q).ceil().max(1.0) as i64;
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            let bound = LATENCY_BOUNDS_MS.get(i).or(LATENCY_BOUNDS_MS.last()).copied().unwrap_or(0);
            return json!(bound / 1000);
        }
    }
    Value::Null
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_bucket_bounds() {
        let mut b = [0; LATENCY_BUCKETS];
        assert_eq!(percentile(&b, 0.5), Value::Null);
        b[0] = 50; // up to 1 s
        b[2] = 45; // up to 5 s
        b[6] = 5; // up to 2 min
        assert_eq!(percentile(&b, 0.5), json!(1));
        assert_eq!(percentile(&b, 0.95), json!(5));
        assert_eq!(percentile(&b, 0.99), json!(120));
        b[LATENCY_BUCKETS - 1] = 1000; // past an hour
        assert_eq!(percentile(&b, 0.95), json!(3600));
    }

    #[test]
    fn metrics_of_a_bucket() {
        let c = Counters { sent: 4, delivered: 3, cost_micros: 140_000, ..Counters::default() };
        let m = metrics_of(&c, &["sent", "delivery_rate", "cost", "latency_p50"]);
        assert_eq!(Value::Object(m), json!({"sent": 4, "delivery_rate": 0.75, "cost": 0.14, "latency_p50": null}));
        let none = metrics_of(&Counters::default(), &["delivery_rate"]);
        assert_eq!(none["delivery_rate"], Value::Null);
    }
}
