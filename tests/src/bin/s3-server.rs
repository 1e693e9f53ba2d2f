//! `s3-server ROOT [PORT]`: the test S3 server as a process, for the demo and benchmarks.
//! Prints its endpoint on stdout, then serves until it is terminated (SIGTERM, SIGINT).

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let root = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: s3-server ROOT [PORT]"))?;
    let port: u16 = args.next().map(|p| p.parse()).transpose()?.unwrap_or(0);
    let server = datamon_e2e::s3::S3Server::start(std::path::Path::new(&root), port)?;
    println!("{}", server.endpoint());
    // The server runs on its own threads; the default signal dispositions end the process.
    loop {
        std::thread::park();
    }
}
