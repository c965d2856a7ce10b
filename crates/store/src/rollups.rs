//! Rollups: what analytics read instead of the messages. Each status change that counts adds, in the change's own
//! transaction, to five rows of its account and hour: the account's (`all`) and those of its campaign, connector,
//! country and sender, so the rollups are always what a count over the messages would say, and a query by one of
//! them reads only that one's rows (a month by hour for 20 campaigns is 14,400 rows, whatever the traffic). [`counts`] is the one place that decides what a change adds;
//! [`Rollups`] adds a group's changes up before they are written (a group of a thousand changes is a few rows).
//!
//! SQLite, with its one writer, adds into `rollups` directly. PostgreSQL's nodes would wait on each other's locks on
//! the same rows, so they append to `rollup_deltas`, which [`RollupStore::compact_rollups`] folds into `rollups`
//! a batch at a time; reads add both up.

use std::collections::HashMap;

use async_trait::async_trait;
use smsgate_core::{AccountId, Status, Timestamp};

use crate::Result;
use crate::sql::{Database, Value, values};

/// The upper bounds (milliseconds) of the buckets delivery latencies are counted in; a last bucket holds the
/// rest.
pub const LATENCY_BOUNDS_MS: [i64; 11] =
    [1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000, 1_800_000, 3_600_000];
/// How many latency buckets a row has.
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// What a row of the rollups is about: an account's hour, for one value of one dimension.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RollupKey {
    pub account_id: String,
    /// `all`, `campaign`, `connector`, `country` or `sender`.
    pub dimension: &'static str,
    /// The hour's start (UTC, milliseconds).
    pub hour: i64,
    /// The campaign's id, the connector's name, the country (ISO 3166: `GB`), the account's address (what an
    /// outbound text was sent from, what an inbound one was sent to); `""` for none or unknown, and for `all`.
    pub value: String,
}

/// What is counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub sent: i64,
    pub delivered: i64,
    pub undelivered: i64,
    pub failed: i64,
    pub expired: i64,
    pub cost_micros: i64,
    pub replies: i64,
    pub clicks: i64,
    pub opt_outs: i64,
    /// Delivered messages by the time from acceptance to the receipt ([`LATENCY_BOUNDS_MS`]).
    pub latency: [i64; LATENCY_BUCKETS],
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.sent += o.sent;
        self.delivered += o.delivered;
        self.undelivered += o.undelivered;
        self.failed += o.failed;
        self.expired += o.expired;
        self.cost_micros += o.cost_micros;
        self.replies += o.replies;
        self.clicks += o.clicks;
        self.opt_outs += o.opt_outs;
        for (a, b) in self.latency.iter_mut().zip(o.latency) {
            *a += b;
        }
    }

    /// The values in the order of [`COUNTER_COLUMNS`].
    pub fn values(&self) -> Vec<i64> {
        let mut v = vec![
            self.sent,
            self.delivered,
            self.undelivered,
            self.failed,
            self.expired,
            self.cost_micros,
            self.replies,
            self.clicks,
            self.opt_outs,
        ];
        v.extend(self.latency);
        v
    }

    /// From values in the order of [`COUNTER_COLUMNS`].
    pub fn from_values(v: &[i64]) -> Counters {
        let at = |i: usize| v.get(i).copied().unwrap_or(0);
        let mut latency = [0; LATENCY_BUCKETS];
        for (i, l) in latency.iter_mut().enumerate() {
            *l = at(9 + i);
        }
        Counters {
            sent: at(0),
            delivered: at(1),
            undelivered: at(2),
            failed: at(3),
            expired: at(4),
            cost_micros: at(5),
            replies: at(6),
            clicks: at(7),
            opt_outs: at(8),
            latency,
        }
    }
}

/// The counter columns of `rollups` and `rollup_deltas`, in order.
pub fn counter_columns() -> Vec<String> {
    let mut c: Vec<String> =
        ["sent", "delivered", "undelivered", "failed", "expired", "cost_micros", "replies", "clicks", "opt_outs"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    c.extend((0..LATENCY_BUCKETS).map(|i| format!("lat_{i}")));
    c
}

/// The key columns, in the order of [`RollupKey`]'s fields.
pub const KEY_COLUMNS: &str = "account_id, dimension, hour, value";

/// What a message is, as far as rollups ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted<'a> {
    pub account_id: &'a str,
    pub inbound: bool,
    /// The handset's number (`to` of an outbound message, `from` of an inbound one).
    pub handset: &'a str,
    /// The account's address.
    pub address: &'a str,
    pub campaign: Option<&'a str>,
    pub connector: Option<&'a str>,
    pub price_micros: Option<i64>,
    pub created_at: Timestamp,
}

/// The start of the hour of `at`.
pub fn hour_of(at: Timestamp) -> i64 {
    at.0.div_euclid(3_600_000) * 3_600_000
}

/// What a change of a message to `status` at `at` adds (to each of [`keys_of`]); `None` when it counts for nothing
/// (`queued`, `scheduled`, `sending`, `canceled`). A text counts as `sent` when its carrier took it, with its
/// price; `delivered`, `undelivered`, `failed`, `expired` when it ends so (a delivered one with the time since it
/// was accepted); an inbound message as a reply.
pub fn counts(m: &Counted<'_>, status: Status, at: Timestamp) -> Option<Counters> {
    let mut c = Counters::default();
    match status {
        Status::Sent => {
            c.sent = 1;
            c.cost_micros = m.price_micros.unwrap_or(0);
        }
        Status::Delivered => {
            c.delivered = 1;
            let ms = at.0.saturating_sub(m.created_at.0);
            let bucket = LATENCY_BOUNDS_MS.iter().position(|b| ms <= *b).unwrap_or(LATENCY_BOUNDS_MS.len());
            c.latency[bucket] = 1;
        }
        Status::Undelivered => c.undelivered = 1,
        Status::Failed => c.failed = 1,
        Status::Expired => c.expired = 1,
        Status::Received if m.inbound => c.replies = 1,
        _ => return None,
    }
    Some(c)
}

/// The rows a message's change at `at` counts in: the account's, its campaign's, connector's, country's and
/// sender's.
pub fn keys_of(m: &Counted<'_>, at: Timestamp) -> [RollupKey; 5] {
    let key = |dimension, value: &str| RollupKey {
        account_id: m.account_id.to_string(),
        dimension,
        hour: hour_of(at),
        value: value.to_string(),
    };
    [
        key("all", ""),
        key("campaign", m.campaign.unwrap_or("")),
        key("connector", m.connector.unwrap_or("")),
        key("country", &country_of(m.handset)),
        key("sender", m.address),
    ]
}

/// A number's country (`""` when it says none).
pub fn country_of(number: &str) -> String {
    smsgate_core::quiet::country_of(number).unwrap_or_default()
}

/// Changes added up by row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rollups(pub HashMap<RollupKey, Counters>);

impl Rollups {
    /// What one event of a message adds (a click, an opt-out), in each of its rows.
    pub fn of(m: &Counted<'_>, at: Timestamp, c: Counters) -> Rollups {
        let mut r = Rollups::default();
        for key in keys_of(m, at) {
            r.add(key, &c);
        }
        r
    }

    pub fn add(&mut self, key: RollupKey, c: &Counters) {
        self.0.entry(key).or_default().add(c);
    }

    /// Adds what a change adds, if anything.
    pub fn count(&mut self, m: &Counted<'_>, status: Status, at: Timestamp) {
        if let Some(c) = counts(m, status, at) {
            for key in keys_of(m, at) {
                self.add(key, &c);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The rows in a stable order (by key), for writing.
    pub fn rows(&self) -> Vec<(&RollupKey, &Counters)> {
        let mut rows: Vec<_> = self.0.iter().collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        rows
    }
}

/// The statement that adds one row of counts into `rollups` (SQLite's way: its one writer never waits on a lock).
pub fn upsert_sql() -> String {
    let counters = counter_columns();
    let marks = vec!["?"; 4 + counters.len()].join(", ");
    let sets: Vec<String> = counters.iter().map(|c| format!("{c} = rollups.{c} + excluded.{c}")).collect();
    format!(
        "INSERT INTO rollups ({KEY_COLUMNS}, {}) VALUES ({marks}) ON CONFLICT ({KEY_COLUMNS}) DO UPDATE SET {}",
        counters.join(", "),
        sets.join(", ")
    )
}

/// A row's parameters for [`upsert_sql`] (and the deltas' insert): the key, then the counters.
pub fn row_values(key: &RollupKey, c: &Counters) -> Vec<Value> {
    let mut v = values![&key.account_id, key.dimension, key.hour, &key.value];
    v.extend(c.values().into_iter().map(Value::from));
    v
}

/// How analytics group their points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    All,
    Campaign,
    Connector,
    Country,
    Sender,
}

impl Grouping {
    /// The rows' `dimension`.
    fn dimension(self) -> &'static str {
        match self {
            Grouping::All => "all",
            Grouping::Campaign => "campaign",
            Grouping::Connector => "connector",
            Grouping::Country => "country",
            Grouping::Sender => "sender",
        }
    }
}

/// One point of a series: a group's counts in a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    pub group: String,
    /// The bucket's start (UTC, milliseconds).
    pub at: i64,
    pub counts: Counters,
}

/// Rollups, read and written.
#[async_trait]
pub trait RollupStore: Send + Sync {
    /// Adds counts from outside the message paths (clicks, opt-outs), in a transaction of their own.
    async fn add_rollups(&self, rows: &Rollups) -> Result<()>;

    /// Folds up to `limit` of the deltas PostgreSQL's nodes appended into the rollups; how many it folded.
    async fn compact_rollups(&self, limit: u32) -> Result<u64>;

    /// An account's counts from `from` to `to` (hours whose start is in it), by `bucket_ms` (an hour or a day) and
    /// group, ordered by group and time.
    async fn rollup_points(
        &self,
        account: AccountId,
        from: Timestamp,
        to: Timestamp,
        bucket_ms: i64,
        group: Grouping,
    ) -> Result<Vec<Point>>;
}

/// The statements that append `rows` to the deltas, for a transaction of the caller's.
pub(crate) fn delta_statements(rows: &Rollups) -> Vec<crate::sql::Statement> {
    let counters = counter_columns();
    let marks = vec!["?"; 4 + counters.len()].join(", ");
    let sql = format!("INSERT INTO rollup_deltas ({KEY_COLUMNS}, {}) VALUES ({marks})", counters.join(", "));
    rows.rows().into_iter().map(|(k, c)| crate::sql::Statement { sql: sql.clone(), params: row_values(k, c) }).collect()
}

#[async_trait]
impl<D: Database> RollupStore for D {
    async fn add_rollups(&self, rows: &Rollups) -> Result<()> {
        // Deltas on both databases (SQLite's are folded as PostgreSQL's are, a moment later): the rollup rows are
        // the message paths' to write.
        if !rows.is_empty() {
            self.transaction(delta_statements(rows)).await?;
        }
        Ok(())
    }

    async fn compact_rollups(&self, limit: u32) -> Result<u64> {
        // A read first: with nothing to fold (SQLite's message paths write no deltas), no write, no fsync.
        if self.query_one("SELECT id FROM rollup_deltas WHERE claimed_by IS NULL LIMIT 1", Vec::new()).await?.is_none()
        {
            return Ok(0);
        }
        let counters = counter_columns();
        let sums: Vec<String> = counters.iter().map(|c| format!("SUM({c})")).collect();
        let sets: Vec<String> = counters.iter().map(|c| format!("{c} = rollups.{c} + excluded.{c}")).collect();
        let token = uuid::Uuid::now_v7().to_string();
        // Claimed, added into the rollups and deleted in one transaction: a node that dies half-way folds nothing,
        // and of two folding at once each folds the deltas it claimed (the claim's condition is checked again on
        // a row another claim had locked, and fails).
        let claim = format!(
            "UPDATE rollup_deltas SET claimed_by = ? WHERE claimed_by IS NULL AND id IN \
             (SELECT id FROM rollup_deltas WHERE claimed_by IS NULL ORDER BY id LIMIT {limit})"
        );
        let fold = format!(
            "INSERT INTO rollups ({KEY_COLUMNS}, {}) SELECT {KEY_COLUMNS}, {} FROM rollup_deltas \
             WHERE claimed_by = ? GROUP BY {KEY_COLUMNS} ON CONFLICT ({KEY_COLUMNS}) DO UPDATE SET {}",
            counters.join(", "),
            sums.join(", "),
            sets.join(", ")
        );
        let changed = self
            .transaction(vec![
                crate::sql::Statement { sql: claim, params: values![&token] },
                crate::sql::Statement { sql: fold, params: values![&token] },
                crate::sql::Statement {
                    sql: "DELETE FROM rollup_deltas WHERE claimed_by = ?".into(),
                    params: values![&token],
                },
            ])
            .await?;
        Ok(changed.first().copied().unwrap_or(0))
    }

    async fn rollup_points(
        &self,
        account: AccountId,
        from: Timestamp,
        to: Timestamp,
        bucket_ms: i64,
        group: Grouping,
    ) -> Result<Vec<Point>> {
        let counters = counter_columns();
        // PostgreSQL sums BIGINTs as NUMERIC: cast back.
        let sums: Vec<String> = counters.iter().map(|c| format!("CAST(SUM({c}) AS BIGINT) AS {c}")).collect();
        let bucket = format!("(hour - (hour % {bucket_ms}))");
        let rows = "WHERE account_id = ? AND dimension = ? AND hour >= ? AND hour < ?";
        let both = format!(
            "SELECT hour, value, {c} FROM rollups {rows} UNION ALL SELECT hour, value, {c} FROM rollup_deltas {rows}",
            c = counters.join(", ")
        );
        let sql = format!(
            "SELECT value AS grp, {bucket} AS at, {} FROM ({both}) picked GROUP BY value, {bucket} ORDER BY grp, at",
            sums.join(", ")
        );
        let d = group.dimension();
        let params = values![account, d, hour_of(from), to, account, d, hour_of(from), to];
        let mut out = Vec::new();
        for r in self.query(&sql, params).await? {
            let mut v = Vec::with_capacity(counters.len());
            for c in &counters {
                v.push(r.get::<Option<i64>>(c)?.unwrap_or(0));
            }
            out.push(Point { group: r.get("grp")?, at: r.get("at")?, counts: Counters::from_values(&v) });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(inbound: bool) -> Counted<'static> {
        Counted {
            account_id: "a",
            inbound,
            handset: "+447700900123",
            address: "Shop",
            campaign: Some("c1"),
            connector: Some("sim"),
            price_micros: Some(35_000),
            created_at: Timestamp(3_600_000),
        }
    }

    #[test]
    fn what_each_change_counts() {
        let at = Timestamp(3_600_000 + 90_000);
        let check = |status, inbound: bool, expected: Option<Counters>| {
            assert_eq!(counts(&message(inbound), status, at), expected, "{status:?}");
        };
        check(Status::Sent, false, Some(Counters { sent: 1, cost_micros: 35_000, ..Counters::default() }));
        let mut delivered = Counters { delivered: 1, ..Counters::default() };
        delivered.latency[6] = 1; // 90 s: up to two minutes
        check(Status::Delivered, false, Some(delivered));
        check(Status::Undelivered, false, Some(Counters { undelivered: 1, ..Counters::default() }));
        check(Status::Failed, false, Some(Counters { failed: 1, ..Counters::default() }));
        check(Status::Expired, false, Some(Counters { expired: 1, ..Counters::default() }));
        check(Status::Received, true, Some(Counters { replies: 1, ..Counters::default() }));
        for nothing in [Status::Queued, Status::Scheduled, Status::Sending, Status::Canceled] {
            check(nothing, false, None);
        }
        let keys = keys_of(&message(false), at).map(|k| (k.dimension, k.value, k.hour));
        let hour = 3_600_000;
        assert_eq!(
            keys,
            [
                ("all", String::new(), hour),
                ("campaign", "c1".into(), hour),
                ("connector", "sim".into(), hour),
                ("country", "GB".into(), hour),
                ("sender", "Shop".into(), hour)
            ]
        );
    }

    #[test]
    fn a_group_adds_up_by_row() {
        let mut r = Rollups::default();
        for _ in 0..3 {
            r.count(&message(false), Status::Sent, Timestamp(3_600_001));
        }
        r.count(&message(false), Status::Sent, Timestamp(7_200_001));
        r.count(&message(false), Status::Queued, Timestamp(7_200_001));
        let rows = r.rows();
        assert_eq!(rows.len(), 10, "five rows an hour");
        let all: Vec<_> = rows.iter().filter(|(k, _)| k.dimension == "all").collect();
        assert_eq!((all[0].1.sent, all[0].1.cost_micros, all[1].1.sent), (3, 105_000, 1));
        assert_eq!(Counters::from_values(&rows[0].1.values()), *rows[0].1);
    }
}
