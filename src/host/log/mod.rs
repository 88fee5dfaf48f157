//! The unified log (SPEC §8): every line of every child plus openwrk's own,
//! tagged with its component, as pretty text or OpenTelemetry JSON records.
//! Known secret values are replaced with `***` before anything is written.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

pub mod diagnostics;
mod parse;

pub use parse::{is_health_request, parse_line, Parsed};

/// How records are written (SPEC §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Whether pretty output is colored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Color {
    Auto,
    Always,
    Never,
}

/// The component name of openwrk's own records.
pub const OPENWRK: &str = "openwrk";
/// The sidecars, as components of the log.
const SIDECARS: [&str; 3] = ["opencode", "openwork-server", "owpenbot"];
/// The attribute naming the sidecar one of openwrk's own records is about.
pub const SIDECAR_ATTRIBUTE: &str = "sidecar";
/// Lines kept per component for failure reports.
pub const TAIL_LINES: usize = 20;
const REDACTED: &str = "***";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// OpenTelemetry severities (the first number of each range).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
}

impl Severity {
    pub fn number(self) -> u8 {
        match self {
            Severity::Trace => 1,
            Severity::Debug => 5,
            Severity::Info => 9,
            Severity::Warn => 13,
            Severity::Error => 17,
            Severity::Fatal => 21,
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            Severity::Trace => "TRACE",
            Severity::Debug => "DEBUG",
            Severity::Info => "INFO",
            Severity::Warn => "WARN",
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }

    /// `INFO`, `warn`, `warning`, `err`, …
    pub fn from_name(s: &str) -> Option<Severity> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "trace" => Severity::Trace,
            "debug" => Severity::Debug,
            "info" | "notice" => Severity::Info,
            "warn" | "warning" => Severity::Warn,
            "error" | "err" => Severity::Error,
            "fatal" | "panic" | "critical" => Severity::Fatal,
            _ => return None,
        })
    }

    /// pino's numeric levels: 10 trace … 60 fatal.
    pub fn from_pino(n: u64) -> Severity {
        match n {
            0..=14 => Severity::Trace,
            15..=24 => Severity::Debug,
            25..=34 => Severity::Info,
            35..=44 => Severity::Warn,
            45..=54 => Severity::Error,
            _ => Severity::Fatal,
        }
    }
}

/// Replaces every occurrence of each secret with `***`, longest first so a
/// secret that contains another is hidden whole.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), REDACTED);
        }
    }
    out
}

/// One log record.
#[derive(Debug, Clone)]
pub struct Record {
    pub time_ns: u128,
    pub observed_ns: u128,
    pub severity: Severity,
    pub body: String,
    pub attributes: Map<String, Value>,
    pub component: String,
    pub pid: u32,
    pub stream: Option<Stream>,
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Attributes shown after the message in pretty output; the rest repeat what
/// the line already says.
fn shown_in_pretty(key: &str) -> bool {
    !matches!(key, "pid" | "hostname" | "name" | "v" | SIDECAR_ATTRIBUTE)
}

fn component_color(component: &str) -> &'static str {
    match component {
        OPENWRK => "1",
        "opencode" => "36",
        "openwork-server" => "35",
        "owpenbot" => "32",
        _ => "34",
    }
}

fn severity_color(s: Severity) -> &'static str {
    match s {
        Severity::Trace | Severity::Debug => "2",
        Severity::Info => "0",
        Severity::Warn => "33",
        Severity::Error | Severity::Fatal => "31",
    }
}

/// `HH:MM:SS.mmm LEVEL component  message k=v`, local time.
pub fn format_pretty(r: &Record, color: bool) -> String {
    let time = i64::try_from(r.time_ns)
        .ok()
        .map(chrono::DateTime::from_timestamp_nanos)
        .unwrap_or_default()
        .with_timezone(&chrono::Local)
        .format("%H:%M:%S%.3f")
        .to_string();
    let mut message = r.body.clone();
    for (k, v) in r.attributes.iter().filter(|(k, _)| shown_in_pretty(k)) {
        let v = match v {
            Value::String(s) if s.contains(char::is_whitespace) || s.is_empty() => {
                format!("{s:?}")
            }
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if !message.is_empty() {
            message.push(' ');
        }
        message.push_str(&format!("{k}={v}"));
    }
    // A child's terminal control sequences are shown, never acted on (SPEC §8).
    let message = crate::sanitize::escape_controls(&message);
    let component = crate::sanitize::escape_controls(&r.component);
    let level = r.severity.text();
    if color {
        format!(
            "\x1b[2m{time}\x1b[0m \x1b[{}m{level:<5}\x1b[0m \x1b[{}m{:<15}\x1b[0m  {message}",
            severity_color(r.severity),
            component_color(&r.component),
            component
        )
    } else {
        format!("{time} {level:<5} {component:<15}  {message}")
    }
}

/// Where the records describe themselves (OpenTelemetry resource and run id).
#[derive(Debug, Clone)]
pub struct Context {
    pub run_id: String,
    pub version: String,
    pub host_name: String,
}

/// One OpenTelemetry log record (SPEC §8), as a single JSON line.
pub fn format_json(r: &Record, ctx: &Context) -> String {
    let mut attributes = r.attributes.clone();
    attributes.insert("run.id".into(), Value::String(ctx.run_id.clone()));
    attributes.insert("service.name".into(), Value::String(r.component.clone()));
    attributes.insert("process.pid".into(), Value::from(r.pid));
    if let Some(s) = r.stream {
        attributes.insert("log.iostream".into(), Value::String(s.as_str().into()));
    }
    serde_json::json!({
        "timeUnixNano": r.time_ns.to_string(),
        "observedTimeUnixNano": r.observed_ns.to_string(),
        "severityNumber": r.severity.number(),
        "severityText": r.severity.text(),
        "body": r.body,
        "attributes": attributes,
        "resource": {
            "service.namespace": "openwrk",
            "service.version": ctx.version,
            "host.name": ctx.host_name,
        },
    })
    .to_string()
}

/// Whether to color output: `--color`, then `NO_COLOR` (set and not empty), then the terminal.
pub fn color_enabled(choice: Color, is_terminal: bool) -> bool {
    match choice {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => {
            is_terminal
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::env::var("TERM").map_or(true, |t| t != "dumb")
        }
    }
}

/// This machine's host name (the OpenTelemetry `host.name`).
pub fn host_name() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if rc == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            return String::from_utf8_lossy(&buf[..end]).into_owned();
        }
    }
    std::env::var("COMPUTERNAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default()
}

pub struct LogSettings {
    pub format: LogFormat,
    pub color: bool,
    pub verbose: bool,
    pub context: Context,
}

struct Inner {
    settings: LogSettings,
    secrets: RwLock<Vec<String>>,
    tails: Mutex<HashMap<String, VecDeque<String>>>,
    out: Mutex<Box<dyn Write + Send>>,
}

/// The shared log sink; cheap to clone.
#[derive(Clone)]
pub struct Logger(Arc<Inner>);

impl Logger {
    /// A logger writing to stderr.
    pub fn stderr(settings: LogSettings) -> Logger {
        Logger::with_writer(settings, Box::new(std::io::stderr()))
    }

    pub fn with_writer(settings: LogSettings, out: Box<dyn Write + Send>) -> Logger {
        Logger(Arc::new(Inner {
            settings,
            secrets: RwLock::new(secrets_from_env()),
            tails: Mutex::new(HashMap::new()),
            out: Mutex::new(out),
        }))
    }

    pub fn run_id(&self) -> &str {
        &self.0.settings.context.run_id
    }

    pub fn format(&self) -> LogFormat {
        self.0.settings.format
    }

    /// Adds values to hide from every later line.
    pub fn add_secrets(&self, more: impl IntoIterator<Item = String>) {
        let mut secrets = self.0.secrets.write().unwrap_or_else(|e| e.into_inner());
        secrets.extend(more.into_iter().filter(|s| !s.is_empty()));
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
    }

    pub fn redact(&self, text: &str) -> String {
        let secrets = self.0.secrets.read().unwrap_or_else(|e| e.into_inner());
        redact(text, &secrets)
    }

    /// A line a child printed. Its request lines for openwrk's own health
    /// probes are left out (shown as DEBUG with --verbose): once everything
    /// runs they would be most of the log.
    pub fn child_line(&self, component: &str, pid: u32, stream: Stream, raw: &str) {
        let parsed = parse_line(&self.redact(raw));
        let mut severity = parsed.severity;
        if is_health_request(component, &parsed) {
            if !self.0.settings.verbose {
                return;
            }
            severity = Severity::Debug;
        }
        let observed = now_ns();
        self.emit(Record {
            time_ns: parsed.time_ns.unwrap_or(observed),
            observed_ns: observed,
            severity,
            body: parsed.body,
            attributes: parsed.attributes,
            component: component.to_string(),
            pid,
            stream: Some(stream),
        });
    }

    /// One of openwrk's own messages; one that starts with a sidecar's name
    /// ("opencode is healthy …") is about that sidecar.
    pub fn log(&self, severity: Severity, message: &str) {
        let about = SIDECARS.into_iter().find(|name| {
            message
                .strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', ':']))
        });
        self.log_about(severity, about, message);
    }

    /// One of openwrk's own messages about a sidecar: its name goes into the
    /// record's `sidecar` attribute, so JSON consumers can filter by it.
    pub fn log_about(&self, severity: Severity, sidecar: Option<&str>, message: &str) {
        if severity < Severity::Info && !self.0.settings.verbose {
            return;
        }
        let mut attributes = Map::new();
        if let Some(name) = sidecar {
            attributes.insert(SIDECAR_ATTRIBUTE.into(), Value::String(name.into()));
        }
        let now = now_ns();
        self.emit(Record {
            time_ns: now,
            observed_ns: now,
            severity,
            body: self.redact(message),
            attributes,
            component: OPENWRK.into(),
            pid: std::process::id(),
            stream: None,
        });
    }

    pub fn debug(&self, message: &str) {
        self.log(Severity::Debug, message);
    }

    pub fn info(&self, message: &str) {
        self.log(Severity::Info, message);
    }

    pub fn warn(&self, message: &str) {
        self.log(Severity::Warn, message);
    }

    pub fn error(&self, message: &str) {
        self.log(Severity::Error, message);
    }

    /// The last lines of a component, oldest first, without color.
    pub fn tail(&self, component: &str) -> Vec<String> {
        let tails = self.0.tails.lock().unwrap_or_else(|e| e.into_inner());
        tails
            .get(component)
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn emit(&self, mut record: Record) {
        let s = &self.0.settings;
        // No URL in any record shows its userinfo (SPEC §8).
        record.body = crate::sanitize::strip_userinfo(&record.body);
        for v in record.attributes.values_mut() {
            if let Value::String(text) = v {
                if text.contains("://") {
                    *text = crate::sanitize::strip_userinfo(text);
                }
            }
        }
        {
            let mut tails = self.0.tails.lock().unwrap_or_else(|e| e.into_inner());
            let tail = tails.entry(record.component.clone()).or_default();
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(format_pretty(&record, false));
        }
        let mut line = match s.format {
            LogFormat::Pretty => format_pretty(&record, s.color),
            LogFormat::Json => format_json(&record, &s.context),
        };
        line.push('\n');
        let mut out = self.0.out.lock().unwrap_or_else(|e| e.into_inner());
        // A closed stderr must not take the supervisor down with it.
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
    }
}

/// Secrets openwrk itself may hold in its environment.
fn secrets_from_env() -> Vec<String> {
    [
        "GITHUB_TOKEN",
        "GH_TOKEN",
        "OPENWRK_OPENCODE_PASSWORD",
        "OPENWRK_OPENWORK_TOKEN",
        "OPENWRK_HOST_TOKEN",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok())
    .filter(|v| !v.is_empty())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_longest_first() {
        let secrets = vec!["abcdef".to_string(), "abc".to_string()];
        assert_eq!(redact("x abcdef y abc", &secrets), "x *** y ***");
    }

    fn settings(format: LogFormat) -> LogSettings {
        LogSettings {
            format,
            color: false,
            verbose: false,
            context: Context {
                run_id: "run-1".into(),
                version: "0.1.0".into(),
                host_name: "h".into(),
            },
        }
    }

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_records_follow_the_otel_shape_and_hide_secrets() {
        let buf = Buf::default();
        let log = Logger::with_writer(settings(LogFormat::Json), Box::new(buf.clone()));
        log.add_secrets(["hunter22".to_string()]);
        log.child_line(
            "opencode",
            42,
            Stream::Stderr,
            "level=INFO message=\"auth hunter22\" k=v",
        );
        log.info("password is hunter22");
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains("hunter22"));
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        let r = &lines[0];
        assert_eq!(r["severityNumber"], 9);
        assert_eq!(r["severityText"], "INFO");
        assert_eq!(r["body"], "auth ***");
        assert_eq!(r["attributes"]["run.id"], "run-1");
        assert_eq!(r["attributes"]["service.name"], "opencode");
        assert_eq!(r["attributes"]["process.pid"], 42);
        assert_eq!(r["attributes"]["log.iostream"], "stderr");
        assert_eq!(r["attributes"]["k"], "v");
        assert_eq!(r["resource"]["service.namespace"], "openwrk");
        assert!(r["timeUnixNano"].as_str().unwrap().parse::<u128>().is_ok());
        assert_eq!(lines[1]["attributes"]["service.name"], "openwrk");
        assert_eq!(log.tail("opencode").len(), 1);
    }

    #[test]
    fn pretty_lines_have_time_level_component_message() {
        let buf = Buf::default();
        let log = Logger::with_writer(settings(LogFormat::Pretty), Box::new(buf.clone()));
        log.child_line(
            "owpenbot",
            1,
            Stream::Stdout,
            r#"{"level":30,"msg":"hi","pid":1}"#,
        );
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let line = text.trim_end();
        let (time, rest) = line.split_once(' ').unwrap();
        assert_eq!(time.len(), 12, "{line}");
        assert_eq!(&time[2..3], ":");
        assert_eq!(rest, "INFO  owpenbot         hi");
        let colored = format_pretty(
            &Record {
                time_ns: 0,
                observed_ns: 0,
                severity: Severity::Error,
                body: "x".into(),
                attributes: Map::new(),
                component: "opencode".into(),
                pid: 1,
                stream: None,
            },
            true,
        );
        assert!(colored.contains("\x1b[31mERROR"));
    }

    #[test]
    fn color_follows_the_flag() {
        assert!(color_enabled(Color::Always, false));
        assert!(!color_enabled(Color::Never, true));
        assert!(!color_enabled(Color::Auto, false));
    }
}
