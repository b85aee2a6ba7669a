//! The progress bar: bytes and rate on stderr for work that runs longer than a moment, drawn
//! from the library's [`Progress`] counter by a thread of its own. Nothing is drawn when stderr
//! is not a terminal or `-q` is given. `SNAPSTORE_PROGRESS_DELAY` (a duration, default `1s`)
//! says how long work runs before its bar appears.

use std::io::IsTerminal;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use snapstore::{LocalFile, Progress, parse_duration};

use super::Output;

/// How often the bar is redrawn from the counter.
const TICK: Duration = Duration::from_millis(100);

/// A bar being drawn from a counter until dropped.
pub(crate) struct Bar {
    progress: Progress,
    drawer: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

impl Bar {
    /// Starts a bar labelled `what`, or a silent counter when no bar belongs on stderr.
    pub(crate) fn start(out: &Output, what: &'static str) -> Bar {
        if out.quiet || out.json || !std::io::stderr().is_terminal() {
            return Bar {
                progress: Progress::default(),
                drawer: None,
            };
        }
        let delay = std::env::var("SNAPSTORE_PROGRESS_DELAY")
            .ok()
            .and_then(|d| parse_duration(&d).ok())
            .unwrap_or(Duration::from_secs(1));
        let progress = Progress::new();
        let (stop, stopped) = mpsc::channel();
        let counter = progress.clone();
        let thread = std::thread::spawn(move || draw(&counter, what, delay, &stopped));
        Bar {
            progress,
            drawer: Some((stop, thread)),
        }
    }

    /// `store`, advancing this bar's counter, with the bar kept alive beside it.
    pub(crate) fn attach(self, store: LocalFile) -> Tracked {
        Tracked {
            store: store.with_progress(self.progress.clone()),
            _bar: self,
        }
    }
}

/// A store whose byte counts feed a bar, which is cleared when this is dropped: drop it before
/// printing results, so they do not share a line with the bar.
pub(crate) struct Tracked {
    store: LocalFile,
    _bar: Bar,
}

impl std::ops::Deref for Tracked {
    type Target = LocalFile;

    fn deref(&self) -> &LocalFile {
        &self.store
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.drawer.take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
}

fn draw(counter: &Progress, what: &str, delay: Duration, stopped: &mpsc::Receiver<()>) {
    let started = Instant::now();
    let mut bar: Option<ProgressBar> = None;
    loop {
        if started.elapsed() >= delay {
            let bar = bar.get_or_insert_with(|| {
                let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
                bar.set_style(style(false));
                bar.set_message(what.to_string());
                bar.set_draw_target(ProgressDrawTarget::stderr());
                bar
            });
            let total = counter.total();
            if total > 0 && bar.length() != Some(total) {
                bar.set_length(total);
                bar.set_style(style(true));
            }
            bar.set_position(counter.done());
            if counter.items_total() > 0 {
                let (done, total) = (counter.items_done(), counter.items_total());
                bar.set_message(format!("{what} {done}/{total} blobs"));
            }
        }
        match stopped.recv_timeout(TICK) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

/// With a known total: a bar, bytes of total, rate and time left; without: bytes and rate.
fn style(known_total: bool) -> ProgressStyle {
    let template = if known_total {
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
    } else {
        "{msg} {spinner} {bytes} {bytes_per_sec}"
    };
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}
