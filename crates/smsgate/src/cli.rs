//! The command line of `smsgate`: clap subcommands over the library crates. Today it has the protocol tools:
//! `encode` (how a text is sent and what it costs) and `pdu` (SMPP PDUs to JSON and back).

use std::io::Read;
use std::process::ExitCode;

use crate::{bench, campaigns, client, config, contacts, encode, pdu, serve, sim, users};

use clap::{Parser, Subcommand};

/// smsgate: a self-hosted SMS server.
#[derive(Debug, Parser)]
#[command(name = "smsgate", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: REST API, store and dispatcher; by default on SQLite in ./smsgate-data with the simulated
    /// carrier network.
    Serve(config::Flags),
    /// Print the effective server configuration, each value with where it came from.
    Config(config::Flags),
    /// Send one text through a running server; prints its id (with --wait, its journey).
    Send(client::SendArgs),
    /// Look at messages on a running server.
    #[command(subcommand)]
    Messages(client::MessagesCommand),
    /// Contacts on a running server: import a CSV file.
    #[command(subcommand)]
    Contacts(contacts::Command),
    /// Campaigns on a running server: list, show, start, pause, resume, cancel.
    #[command(subcommand)]
    Campaigns(campaigns::Command),
    /// Dashboard users on a running server: add (the first owner with the admin key), list, remove.
    #[command(subcommand)]
    Users(users::Command),
    /// Show how a text is encoded and split into SMS segments: encoding, segment count, units left.
    Encode(encode::Args),
    /// Decode SMPP PDUs to JSON, or encode JSON to PDUs.
    #[command(subcommand)]
    Pdu(pdu::Command),
    /// Measure a running server: send load and report throughput and latency.
    #[command(subcommand)]
    Bench(bench::Command),
    /// Run a standalone SMSC simulator on an SMPP port: acks submits, sends receipts, plays carrier faults.
    Sim(sim::Args),
}

/// Parses the command line, runs the command, and prints any error as one line on standard error.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => {
            init_logging();
            serve::run(args)
        }
        Command::Config(flags) => flags.describe().map(|text| print!("{text}")),
        Command::Send(args) => match client::send(args) {
            Ok(0) => Ok(()),
            Ok(code) => return ExitCode::from(code),
            Err(e) => Err(e),
        },
        Command::Messages(cmd) => client::messages(cmd),
        Command::Contacts(cmd) => contacts::run(cmd),
        Command::Campaigns(cmd) => campaigns::run(cmd),
        Command::Users(cmd) => users::run(cmd),
        Command::Encode(args) => encode::run(args),
        Command::Pdu(cmd) => pdu::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Sim(args) => {
            init_logging();
            sim::run(args)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smsgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to standard error; `RUST_LOG` picks what (default: warnings, and smsgate's own info lines).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,smsgate=info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// The argument, or all of standard input when it is absent.
pub(crate) fn arg_or_stdin(arg: Option<String>) -> anyhow::Result<String> {
    use anyhow::Context;
    match arg {
        Some(a) => Ok(a),
        None => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).context("reading standard input")?;
            Ok(s)
        }
    }
}
