//! Renders the supply half's events: progress bars on a terminal, and each
//! notice as one line (plain, or a log record for the commands that log).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::host::log::{Logger, Severity};
use crate::supply::events::{Event, Level, Reporter};

/// Where notices go.
#[derive(Clone)]
pub enum Lines {
    /// `warning: …` / plain lines on stderr (the `sidecars` commands).
    Stderr { verbose: bool },
    /// Records of the unified log (`start`, `serve`, the daemon).
    Log(Logger),
}

impl Lines {
    fn emit(&self, level: Level, text: &str, bars: Option<&MultiProgress>) {
        match self {
            Lines::Log(logger) => {
                let severity = match level {
                    Level::Detail => Severity::Debug,
                    Level::Info => Severity::Info,
                    Level::Warn => Severity::Warn,
                };
                logger.log(severity, text);
            }
            Lines::Stderr { verbose } => {
                let line = match level {
                    Level::Detail if !verbose => return,
                    Level::Warn => format!("warning: {text}"),
                    _ => text.to_string(),
                };
                let line = crate::sanitize::for_output(&line);
                match bars {
                    Some(m) => {
                        let _ = m.println(line);
                    }
                    None => eprintln!("{line}"),
                }
            }
        }
    }
}

/// Draws a bar per transfer when animated, and prints lines above the bars.
pub struct Renderer {
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<String, ProgressBar>>,
    lines: Lines,
}

impl Renderer {
    pub fn new(animated: bool, lines: Lines) -> Arc<Renderer> {
        Arc::new(Renderer {
            multi: animated.then(MultiProgress::new),
            bars: Mutex::default(),
            lines,
        })
    }

    /// A plain line (without a level) that does not garble the bars.
    pub fn line(&self, text: &str) {
        self.lines.emit(Level::Info, text, self.multi.as_ref());
    }

    /// The supply half's events, drawn by this renderer.
    pub fn reporter(self: &Arc<Self>) -> Reporter {
        let me = self.clone();
        Arc::new(move |event| me.event(event))
    }

    fn event(&self, event: Event<'_>) {
        let Some(multi) = &self.multi else {
            if let Event::Notice(n) = event {
                self.lines.emit(n.level(), &n.to_string(), None);
            }
            return;
        };
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Notice(n) => self.lines.emit(n.level(), &n.to_string(), Some(multi)),
            Event::TransferStarted { asset, size } => {
                let bar = multi.add(ProgressBar::new(size.unwrap_or(0)));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{msg:32} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                bar.set_message(asset.to_string());
                bars.insert(asset.to_string(), bar);
            }
            Event::TransferProgress { asset, bytes } => {
                if let Some(bar) = bars.get(asset) {
                    bar.inc(bytes);
                }
            }
            Event::TransferRestarted { asset } => {
                if let Some(bar) = bars.get(asset) {
                    bar.set_position(0);
                }
            }
            Event::TransferFinished { asset } => {
                if let Some(bar) = bars.remove(asset) {
                    bar.finish_and_clear();
                }
            }
        }
    }
}

/// A reporter drawing a bar per transfer when `animated`.
pub fn reporter(animated: bool, lines: Lines) -> Reporter {
    Renderer::new(animated, lines).reporter()
}
