//! `tracing` diagnostics of the library (retries, resumes, cache decisions)
//! as records of the unified log: one subscriber, installed once by the
//! command line, so `--verbose` shows them in the same stream and format as
//! everything else (SPEC §8).

use std::fmt::Write as _;
use std::sync::OnceLock;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::Layer;

use super::{Logger, Severity};

static SINK: OnceLock<Logger> = OnceLock::new();

/// Sends every later `tracing` event to `logger` (the first call wins: one
/// process, one log).
pub fn install(logger: &Logger) {
    if SINK.set(logger.clone()).is_err() {
        return;
    }
    let subscriber = tracing_subscriber::registry().with(Bridge);
    let _ = tracing::subscriber::set_global_default(subscriber);
}

struct Bridge;

impl<S: Subscriber> Layer<S> for Bridge {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let Some(logger) = SINK.get() else { return };
        let severity = match *event.metadata().level() {
            Level::ERROR => Severity::Error,
            Level::WARN => Severity::Warn,
            Level::INFO => Severity::Info,
            Level::DEBUG => Severity::Debug,
            Level::TRACE => Severity::Trace,
        };
        let mut text = Text::default();
        event.record(&mut text);
        logger.log(severity, &text.0);
    }
}

/// The message, then `key=value` for the other fields.
#[derive(Default)]
struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let rest = std::mem::take(&mut self.0);
            let _ = write!(self.0, "{value:?}{rest}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.insert_str(0, value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}
