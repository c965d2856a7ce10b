#![allow(clippy::unwrap_used)] // Test code; a failure is a test failure.
//! Contacts through the real binary: `smsgate contacts import` uploads a file and prints the report; an import
//! killed (`kill -9`) half-way resumes at the next start and ends with every row imported once. Bounded: 60 s each.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{data_dir, on_server, postgres_url, start, stop};
use serde_json::Value;

const KEY: &str = "sk_contacts_0123456789abcdef";

async fn get(client: &reqwest::Client, base: &str, path: &str) -> Value {
    client.get(format!("{base}{path}")).bearer_auth(KEY).send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_imports_a_file_and_reports_each_refused_row() {
    let data = data_dir("contacts-cli");
    let server = start(&data, [] as [&str; 0], Some(KEY));
    let file = data.join("patients.csv");
    std::fs::write(
        &file,
        "Mobile,Full name,Next visit,Tags\n\
         +14155550101,Ann Lee,2026-12-09T10:00:00Z,vip\n\
         not a number,Bob,,\n\
         +14155550102,\"Cy, Jr.\",,\n\
         +14155550101,Ann again,,\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_smsgate"))
        .args(["contacts", "import"])
        .arg(&file)
        .args([
            "--list",
            "Patients",
            "--map",
            "Mobile=phone",
            "--map",
            "Full name=name",
            "--map",
            "Next visit=next_visit",
        ])
        .env("SMSGATE_URL", &server.base)
        .env("SMSGATE_API_KEY", KEY)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("rows 4, created 2, updated 0, skipped 2"), "{stdout}");
    assert!(stdout.contains("row 3 (Mobile): invalid_phone"), "{stdout}");
    assert!(stdout.contains("row 5 (Mobile): duplicate_in_file"), "{stdout}");
    let client = common::http_client(Duration::from_secs(10));
    let lists = get(&client, &server.base, "/v1/lists").await;
    assert_eq!((lists["data"][0]["name"].as_str(), lists["data"][0]["members"].as_u64()), (Some("Patients"), Some(2)));
    let page = get(&client, &server.base, "/v1/contacts?q=Cy").await;
    let cy = &page["data"][0];
    assert_eq!((cy["name"].as_str(), cy["time_zone"].as_str()), (Some("Cy, Jr."), Some("America/Los_Angeles")), "{cy}");
    let page = get(&client, &server.base, "/v1/contacts?tag=vip").await;
    assert_eq!(page["data"][0]["fields"]["next_visit"], "2026-12-09T10:00:00Z", "{page}");
    // A file larger than any JSON body may be (3 MiB and more), uploaded as a multipart form.
    let big = data.join("big.csv");
    let mut rows = String::from("Mobile,Note\n");
    for i in 0..80_000 {
        rows.push_str(&format!("+4477009{i:05},{}\n", "x".repeat(30)));
    }
    assert!(rows.len() > 3 << 20);
    std::fs::write(&big, rows).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_smsgate"))
        .args(["contacts", "import"])
        .arg(&big)
        .args(["--map", "Mobile=phone", "--json"])
        .env("SMSGATE_URL", &server.base)
        .env("SMSGATE_API_KEY", KEY)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let job: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((job["rows"].as_u64(), job["created"].as_u64()), (Some(80_000), Some(80_000)), "{job}");
    stop(server);
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_killed_half_way_resumes_and_imports_each_row_once_on_sqlite() {
    an_import_killed_half_way_resumes_and_imports_each_row_once(Vec::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_killed_half_way_resumes_and_imports_each_row_once_on_postgres() {
    let schema = format!("test_import_{}", std::process::id());
    on_server(format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
    on_server(format!("CREATE SCHEMA {schema}")).await;
    let url = format!("{}?options=-c%20search_path%3D{schema}", postgres_url());
    an_import_killed_half_way_resumes_and_imports_each_row_once(vec!["--database".into(), url]).await;
    on_server(format!("DROP SCHEMA {schema} CASCADE")).await;
}

async fn an_import_killed_half_way_resumes_and_imports_each_row_once(args: Vec<String>) {
    const ROWS: usize = 60_000;
    let data = data_dir(&format!("contacts-crash-{}", args.len()));
    let mut server = start(&data, &args, Some(KEY));
    let mut csv = String::from("phone,name,visits\n");
    for i in 0..ROWS {
        csv.push_str(&format!("+4477009{:05},Person {i},{}\n", i, i % 7));
    }
    let client = common::http_client(Duration::from_secs(30));
    let job: Value = client
        .post(format!("{}/v1/contacts/import?list=Everyone", server.base))
        .bearer_auth(KEY)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    // Kill it once some batches are in and before the last.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j = get(&client, &server.base, &format!("/v1/jobs/{id}")).await;
        let rows = j["rows"].as_u64().unwrap();
        if rows > 0 {
            assert!(rows < ROWS as u64, "the import ended before it could be killed: make the file longer");
            break;
        }
        assert!(Instant::now() < deadline, "the import never started: {j}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let mut before = None;
    let server = start(&data, &args, Some(KEY));
    assert!(server.lines.iter().any(|l| l.contains("resuming 1 contact import")), "{:?}", server.lines);
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let j = get(&client, &server.base, &format!("/v1/jobs/{id}")).await;
        before.get_or_insert(j["rows"].as_u64().unwrap());
        if j["state"] != "running" {
            break j;
        }
        assert!(Instant::now() < deadline, "the import did not finish: {j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done["state"], "completed", "{done}");
    assert!(before.unwrap() < ROWS as u64, "it resumed part-way");
    assert_eq!(
        (done["rows"].as_u64(), done["created"].as_u64(), done["updated"].as_u64(), done["skipped"].as_u64()),
        (Some(ROWS as u64), Some(ROWS as u64), Some(0), Some(0)),
        "every row once, none twice: {done}"
    );
    let lists = get(&client, &server.base, "/v1/lists").await;
    assert_eq!(lists["data"][0]["members"].as_u64(), Some(ROWS as u64));
    // The upload is removed once the job is done.
    let left: Vec<_> = std::fs::read_dir(data.join("imports")).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    stop(server);
    let _ = std::fs::remove_dir_all(&data);
}
