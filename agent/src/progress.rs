//! Progress of a transfer: a bar on a terminal, a periodic one-line log otherwise; and,
//! for the sidecar's state file, the counters of the transfers a piece of work starts
//! ([`watched`] collects them without the transfer code knowing) published while it runs
//! ([`publish_while`], driven by any stream of ticks, so that it is tested with a fake
//! clock).

use std::future::Future;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};

tokio::task_local! {
    /// Where the counters of transfers started by the current task's work go, when a
    /// caller watches it ([`watched`]).
    static WATCH: Watch;
}

/// How far a transfer (or several, summed) is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Files finished.
    pub files_done: u64,
    /// Files to move.
    pub files_total: u64,
    /// Bytes moved.
    pub bytes_done: u64,
    /// Bytes to move.
    pub bytes_total: u64,
}

impl std::ops::Add for Counts {
    type Output = Counts;
    fn add(self, o: Counts) -> Counts {
        Counts {
            files_done: self.files_done + o.files_done,
            files_total: self.files_total + o.files_total,
            bytes_done: self.bytes_done + o.bytes_done,
            bytes_total: self.bytes_total + o.bytes_total,
        }
    }
}

/// The counters of every [`Progress`] created while a watched future runs.
#[derive(Clone, Debug, Default)]
pub struct Watch(Arc<Mutex<Vec<Arc<Progress>>>>);

impl Watch {
    /// The sum of the counters seen so far; `None` before any transfer started.
    pub fn counts(&self) -> Option<Counts> {
        let all = crate::sync::lock(&self.0);
        all.iter().map(|p| p.counts()).reduce(|a, b| a + b)
    }
}

/// Runs `work` with `watch` collecting the counters of the transfers it starts (in this
/// task: [`Progress::new`] looks for the watch of the task that calls it).
pub async fn watched<F: Future>(watch: Watch, work: F) -> F::Output {
    WATCH.scope(watch, work).await
}

/// Ticks every `every`, the first one `every` from now (late ticks are not caught up).
pub fn ticks(every: Duration) -> impl Stream<Item = ()> + Unpin {
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    Box::pin(futures::stream::unfold(interval, |mut i| async move {
        i.tick().await;
        Some(((), i))
    }))
}

/// Runs `work` to its end; at each of `ticks`, calls `publish` with `watch`'s counts when
/// they changed since the last call (nothing before a transfer started, nothing when
/// nothing moved). Ticks and work share this task: publishing ends with the work, and
/// ticks queued when the work wakes are handled first.
pub async fn publish_while<F, T>(
    watch: &Watch,
    mut ticks: T,
    work: F,
    mut publish: impl FnMut(Counts),
) -> F::Output
where
    F: Future,
    T: Stream<Item = ()> + Unpin,
{
    tokio::pin!(work);
    let mut last = None;
    let mut ticking = true;
    loop {
        tokio::select! {
            biased;
            tick = ticks.next(), if ticking => {
                if tick.is_none() {
                    ticking = false;
                    continue;
                }
                if let Some(now) = watch.counts().filter(|c| Some(*c) != last) {
                    last = Some(now);
                    publish(now);
                }
            }
            out = &mut work => return out,
        }
    }
}

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
    /// When the calling task's work is [`watched`], the watch gets these counters too.
    pub fn new(what: &'static str, files_total: u64, bytes_total: u64) -> Arc<Self> {
        let me = Arc::new(Self {
            what,
            files_total,
            bytes_total,
            files_done: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            started: Instant::now(),
        });
        // Outside a watched future there is nobody to tell (`try_with` fails): fine.
        let _ = WATCH.try_with(|w| crate::sync::lock(&w.0).push(me.clone()));
        me
    }

    /// A transfer already over: `files` files of `bytes` bytes in place (a mount, whose
    /// bytes are fetched when read; its watch sees them all done).
    pub fn complete(what: &'static str, files: u64, bytes: u64) -> Arc<Self> {
        let me = Self::new(what, files, bytes);
        me.files_done.store(files, Ordering::Relaxed);
        me.bytes_done.store(bytes, Ordering::Relaxed);
        me
    }

    /// The counters now.
    pub fn counts(&self) -> Counts {
        Counts {
            files_done: self.files_done.load(Ordering::Relaxed),
            files_total: self.files_total,
            bytes_done: self.bytes_done.load(Ordering::Relaxed),
            bytes_total: self.bytes_total,
        }
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

    /// A fake clock: the test sends each tick itself.
    #[tokio::test]
    async fn publishes_changed_counts_at_each_tick_and_ends_with_the_work() {
        let (tick, ticks) = futures::channel::mpsc::unbounded::<()>();
        let seen = std::cell::RefCell::new(Vec::new());
        let watch = Watch::default();
        let work = watched(watch.clone(), async {
            // A tick before any transfer: nothing to say.
            tick.unbounded_send(()).unwrap();
            tokio::task::yield_now().await;
            let p = Progress::new("download", 2, 100);
            p.add_bytes(40);
            tick.unbounded_send(()).unwrap();
            tokio::task::yield_now().await;
            // Nothing moved since: nothing written.
            tick.unbounded_send(()).unwrap();
            tokio::task::yield_now().await;
            p.add_bytes(60);
            p.add_file();
            p.add_file();
            tick.unbounded_send(()).unwrap();
            tokio::task::yield_now().await;
            7
        });
        let out = publish_while(&watch, ticks, work, |c| seen.borrow_mut().push(c)).await;
        assert_eq!(out, 7);
        let c = |files_done, bytes_done| Counts {
            files_done,
            files_total: 2,
            bytes_done,
            bytes_total: 100,
        };
        assert_eq!(*seen.borrow(), [c(0, 40), c(2, 100)]);
        assert_eq!(watch.counts(), Some(c(2, 100)));
        // A tick after the work ended reaches nobody: the publisher is gone with it.
        assert!(
            tick.unbounded_send(()).is_err(),
            "the ticks' receiver must be dropped"
        );
    }

    #[test]
    fn counters_outside_a_watch_and_sums_inside() {
        // Outside a watched future: no watch, no panic.
        let p = Progress::new("upload", 1, 10);
        p.add_bytes(10);
        assert_eq!(p.counts().bytes_done, 10);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let watch = Watch::default();
        assert_eq!(watch.counts(), None);
        rt.block_on(watched(watch.clone(), async {
            Progress::new("download", 1, 10).add_bytes(4);
            Progress::new("download", 2, 20).add_file();
        }));
        assert_eq!(
            watch.counts(),
            Some(Counts {
                files_done: 1,
                files_total: 3,
                bytes_done: 4,
                bytes_total: 30
            })
        );
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
