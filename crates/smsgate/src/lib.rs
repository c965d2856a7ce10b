//! smsgate, the binary crate: the command line and the wiring of the library crates. Only this crate knows about
//! the command line, configuration files, environment variables, standard input and output, and exit codes.

pub mod bench;
pub mod bench_http;
pub mod bench_smpp;
pub mod campaigns;
pub mod cli;
pub mod client;
pub mod config;
pub mod contacts;
pub mod encode;
pub mod pdu;
pub mod serve;
pub mod sim;
pub mod users;
