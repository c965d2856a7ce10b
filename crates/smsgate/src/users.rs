//! `smsgate users`: the dashboard's users on a running server — add one (the first owner of an account, with the
//! admin key), list them, remove one — over the REST API.

use std::io::{BufRead, IsTerminal};

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::{Api, Connection, block_on};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add a user who signs in to the dashboard. The password is read from standard input with --password-stdin,
    /// or asked for on the terminal (twice, not shown).
    Add {
        /// The account the user belongs to; the API key's own by default (the admin key may name any).
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        email: String,
        /// owner, admin, member or viewer.
        #[arg(long, default_value = "member")]
        role: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Print the API's JSON instead.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connection: Connection,
    },
    /// List the users of the API key's account.
    List {
        /// Print the API's JSON instead.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connection: Connection,
    },
    /// Remove a user by id; their sessions end.
    Remove {
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
}

/// The password: the first line of standard input, or asked for twice on the terminal.
fn password(from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("reading the password from standard input")?;
        let password = line.trim_end_matches(['\r', '\n']).to_string();
        if password.is_empty() {
            bail!("standard input held no password");
        }
        return Ok(password);
    }
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to ask for the password on: give it with --password-stdin");
    }
    let first = rpassword::prompt_password("Password: ").context("reading the password")?;
    let again = rpassword::prompt_password("Again: ").context("reading the password")?;
    if first != again {
        bail!("the two passwords differ");
    }
    Ok(first)
}

fn line(u: &Value) -> String {
    let text = |k: &str| u[k].as_str().unwrap_or("").to_string();
    format!(
        "{}  {:<6}  {}  (last sign-in {})",
        text("id"),
        text("role"),
        text("email"),
        u["last_sign_in_at"].as_str().unwrap_or("never")
    )
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    // The password is asked for before anything is sent, on the terminal, outside the runtime.
    let secret = match &cmd {
        Command::Add { password_stdin, .. } => Some(password(*password_stdin)?),
        _ => None,
    };
    block_on(async {
        match cmd {
            Command::Add { account, email, role, json, connection, .. } => {
                let mut body = json!({"email": email, "role": role, "password": secret.unwrap_or_default()});
                if let Some(account) = account {
                    body["account_id"] = json!(account);
                }
                let v = Api::new(&connection)?.call(reqwest::Method::POST, "/v1/users", Some(body)).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    println!("added {}", line(&v));
                }
            }
            Command::List { json, connection } => {
                let v = Api::new(&connection)?.call(reqwest::Method::GET, "/v1/users", None).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    for u in v["data"].as_array().into_iter().flatten() {
                        println!("{}", line(u));
                    }
                }
            }
            Command::Remove { id, connection } => {
                let api = Api::new(&connection)?;
                api.call_empty(reqwest::Method::DELETE, &format!("/v1/users/{id}")).await?;
                println!("removed {id}");
            }
        }
        Ok(())
    })
}
