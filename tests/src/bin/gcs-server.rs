//! `gcs-server ROOT BUCKET...`: the tests' GCS server as a process, for benchmarks: the
//! emulator (fake-gcs-server) over ROOT, one directory per bucket, behind the loopback
//! proxy that supplies the calls the emulator lacks (`datamon_e2e::gcs`). Prints the
//! proxy's `host:port` (for `STORAGE_EMULATOR_HOST`) on stdout, then serves until it is
//! terminated (SIGTERM, SIGINT), and stops the emulator with it.

use nix::sys::signal::{SigSet, Signal};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let root = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: gcs-server ROOT BUCKET..."))?;
    let buckets: Vec<String> = args.collect();
    // Blocked before any thread starts, so every thread inherits the mask and the signal
    // waits for `wait` below instead of ending the process with the emulator left behind.
    let signals: SigSet = [Signal::SIGTERM, Signal::SIGINT].into_iter().collect();
    signals.thread_block()?;
    let root = std::path::PathBuf::from(root);
    let names: Vec<&str> = buckets.iter().map(String::as_str).collect();
    let server = datamon_e2e::gcs::GcsServer::start(&root, &names, &root.join("emulator.log"))?;
    println!("{}", server.host());
    let got = signals.wait()?;
    eprintln!("gcs-server: {got:?}, stopping");
    drop(server);
    Ok(())
}
