//! Progress reporting on stderr: an indicatif bar on a terminal, plain lines otherwise.

use std::io::{IsTerminal, Read};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Progress of a long operation measured in bytes, with named steps (layers).
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    plain: bool,
    label: &'static str,
    steps: u64,
    step: u64,
}

impl Progress {
    /// Starts reporting `total_bytes` of work in `steps` named steps.
    ///
    /// `quiet` silences everything; otherwise a bar is drawn when stderr is a
    /// terminal and one plain line per step is printed when it is not.
    pub fn new(label: &'static str, total_bytes: u64, steps: u64, quiet: bool) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = (!quiet && terminal).then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {bytes}/{total_bytes} ({eta}) {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(label);
            bar
        });
        Progress {
            bar,
            plain: !quiet && !terminal,
            label,
            steps,
            step: 0,
        }
    }

    /// Announces the next step (e.g. a layer) of `bytes` bytes.
    pub fn step(&mut self, name: &str, bytes: u64) {
        self.step += 1;
        if let Some(bar) = &self.bar {
            bar.set_message(name.to_owned());
        } else if self.plain {
            eprintln!(
                "tmai {}: [{}/{}] {name} ({})",
                self.label,
                self.step,
                self.steps,
                human_bytes(bytes)
            );
        }
    }

    /// Records `bytes` more bytes done.
    pub fn advance(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    /// Wraps `reader` so that every byte read advances the progress.
    pub fn reader<'a, R: Read>(&'a self, reader: R) -> CountingReader<'a, R> {
        CountingReader {
            inner: reader,
            progress: self,
        }
    }

    /// Ends the display.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar
            && !bar.is_finished()
        {
            bar.abandon();
        }
    }
}

/// A reader that reports the bytes it reads to a [`Progress`].
#[derive(Debug)]
pub struct CountingReader<'a, R> {
    inner: R,
    progress: &'a Progress,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let count = self.inner.read(buffer)?;
        self.progress.advance(count as u64);
        Ok(count)
    }
}

/// `1536` → `"1.5 KiB"`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}
