//! The `smsgate` binary; everything it does lives in the library half of this crate.

fn main() -> std::process::ExitCode {
    smsgate::cli::main()
}
