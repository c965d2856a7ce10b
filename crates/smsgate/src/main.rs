//! The `smsgate` binary; everything it does lives in the library half of this crate.

// glibc's allocator spent a third of the server's time consolidating and splitting chunks under the many
// short-lived buffers of a busy server (SQL arguments, rows, JSON); mimalloc's per-thread pages do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    smsgate_api::webhooks::install_tls();
    smsgate::cli::main()
}
