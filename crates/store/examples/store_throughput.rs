//! How fast the store moves messages through their whole journey, without HTTP or a connector: insert, claim,
//! `sent`, receipt, each in groups as the server writes them. Prints the time of each phase.
//!
//! cargo run --release -p smsgate-store --example store_throughput -- [DATABASE_URL] [MESSAGES] [GROUP]
//! (default: a SQLite file in the temp folder, 20,000 messages, groups of 500)

use std::time::Instant;

use smsgate_core::{AccountId, Direction, Message, MessageId, Status, Timestamp};
use smsgate_store::{Changes, NewMessage, ReceiptUpdate, Transition};

fn message(account: AccountId, i: usize, at: Timestamp) -> NewMessage {
    let message = Message {
        id: MessageId::generate(),
        account_id: account,
        direction: Direction::Outbound,
        to: format!("+4477009{:05}", i % 100_000),
        from: "Bench".into(),
        body: "benchmark message".into(),
        encoding: "gsm7".into(),
        segments: 1,
        price_micros: None,
        connector: None,
        carrier_id: None,
        status: Status::Queued,
        error_code: None,
        reference: None,
        callback_url: None,
        callback_statuses: None,
        send_at: None,
        expires_at: Some(at.plus_secs(48 * 3600)),
        attempts: 0,
        category: Default::default(),
        created_at: at,
        updated_at: at,
    };
    NewMessage::new(message, "accepted")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = std::env::temp_dir().join(format!("smsgate-throughput-{}.db", uuid::Uuid::now_v7().simple()));
    let url = args.get(1).cloned().unwrap_or_else(|| format!("sqlite://{}", path.display()));
    let n: usize = args.get(2).map_or(Ok(20_000), |s| s.parse())?;
    let group: usize = args.get(3).map_or(Ok(500), |s| s.parse())?;
    let store = smsgate_store::open(&url, 4).await?;
    let now = Timestamp(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64);
    let account = store.create_account("bench", false, now).await?.id;
    let phase = |name: &str, started: Instant| {
        let s = started.elapsed().as_secs_f64();
        println!("{name:>8}: {s:6.3} s  {:>9.0} msg/s", n as f64 / s);
    };

    let all = Instant::now();
    let t = Instant::now();
    let batch: Vec<NewMessage> = (0..n).map(|i| message(account, i, now)).collect();
    for chunk in batch.chunks(group) {
        store.insert_messages(chunk).await?;
    }
    phase("insert", t);

    let t = Instant::now();
    let mut claimed = Vec::new();
    loop {
        let got = store.claim_due("bench", now, 60_000, group as u32).await?;
        if got.is_empty() {
            break;
        }
        claimed.extend(got);
    }
    phase("claim", t);

    let t = Instant::now();
    let sent: Vec<Transition> = claimed
        .iter()
        .map(|m| Transition {
            id: m.id,
            to: Status::Sent,
            at: now,
            detail: "sim accepted it".into(),
            changes: Changes {
                connector: Some("sim".into()),
                carrier_id: Some(m.id.to_string()),
                lease_owner: Some("bench".into()),
                ..Changes::default()
            },
        })
        .collect();
    for chunk in sent.chunks(group) {
        store.record(chunk, &[]).await?;
    }
    phase("sent", t);

    let t = Instant::now();
    let receipts: Vec<ReceiptUpdate> = claimed
        .iter()
        .map(|m| ReceiptUpdate {
            connector: "sim".into(),
            carrier_id: m.id.to_string(),
            to: Status::Delivered,
            at: now,
            detail: "stat:DELIVRD".into(),
            error_code: None,
        })
        .collect();
    for chunk in receipts.chunks(group) {
        store.record(&[], chunk).await?;
    }
    phase("receipt", t);
    phase("all", all);
    store.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok(())
}
