//! Progress of a transfer: a bar on a terminal, a periodic one-line log otherwise.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Counters that transfer tasks bump and the reporter reads.
#[derive(Debug)]
pub struct Progress {
    what: &'static str,
    files_total: u64,
    bytes_total: u64,
    files_done: AtomicU64,
    bytes_done: AtomicU64,
    started: Instant,
}

impl Progress {
    /// Counts `files_total` files of `bytes_total` bytes.
    pub fn new(what: &'static str, files_total: u64, bytes_total: u64) -> Arc<Self> {
        Arc::new(Self {
            what,
            files_total,
            bytes_total,
            files_done: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            started: Instant::now(),
        })
    }

    /// Records bytes moved.
    pub fn add_bytes(&self, n: u64) {
        self.bytes_done.fetch_add(n, Ordering::Relaxed);
    }

    /// Records a finished file.
    pub fn add_file(&self) {
        self.files_done.fetch_add(1, Ordering::Relaxed);
    }

    /// A one-line summary, e.g. `upload: 10/20 files, 1.0/2.0 GiB, 512.0 MiB/s`.
    pub fn line(&self) -> String {
        let bytes = self.bytes_done.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        format!(
            "{}: {}/{} files, {}/{}, {}/s",
            self.what,
            self.files_done.load(Ordering::Relaxed),
            self.files_total,
            human(bytes),
            human(self.bytes_total),
            human((bytes as f64 / secs) as u64)
        )
    }

    /// Reports until dropped: a progress bar when stderr is a terminal, else a log line
    /// every `every`.
    pub fn report(self: &Arc<Self>, every: Duration) -> Reporter {
        let me = self.clone();
        let handle = if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(me.bytes_total);
            let style = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style.progress_chars("=> "));
            tokio::spawn(async move {
                loop {
                    bar.set_position(me.bytes_done.load(Ordering::Relaxed));
                    bar.set_message(format!(
                        "{} {}/{} files",
                        me.what,
                        me.files_done.load(Ordering::Relaxed),
                        me.files_total
                    ));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        } else {
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    tracing::info!(target: "progress", "{}", me.line());
                }
            })
        };
        Reporter { handle }
    }
}

/// Stops reporting when dropped.
#[derive(Debug)]
pub struct Reporter {
    handle: tokio::task::JoinHandle<()>,
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// Bytes in binary units.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(human(12), "12 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
    }

    #[test]
    fn line_counts() {
        let p = Progress::new("upload", 2, 100);
        p.add_bytes(50);
        p.add_file();
        assert!(
            p.line().starts_with("upload: 1/2 files, 50 B/100 B"),
            "{}",
            p.line()
        );
    }
}
