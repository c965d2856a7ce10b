//! The `smsgate` binary; everything it does lives in the library half of this crate.

// glibc's allocator spent a third of the server's time consolidating and splitting chunks under the many
// short-lived buffers of a busy server (SQL arguments, rows, JSON); mimalloc's per-thread pages do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[allow(unsafe_code)]
fn main() -> std::process::ExitCode {
    // SQLite's page cache without its needless sweeps at commit (smsgate-sqlite-pcache), put in place before
    // anything uses SQLite. If it cannot be, SQLite's own serves, only slower.
    // SAFETY: the first thing the process does; no other thread exists yet.
    if let Err(e) = unsafe { smsgate_sqlite_pcache::install() } {
        eprintln!("smsgate: SQLite's page cache kept as it is: {e}");
    }
    smsgate_api::webhooks::install_tls();
    smsgate::cli::main()
}
