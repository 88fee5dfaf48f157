//! Reading a child's log line (SPEC §8): structured lines (pino JSON,
//! OpenCode's logfmt) keep their fields; plain lines get a severity from
//! their content when they announce one ("ERROR …", "[warn] …",
//! "level=error", OpenCode's "ERROR 2026-… " prefix), else INFO.

use serde_json::{Map, Value};

use super::Severity;

/// What a child line says once parsed: structured lines keep their fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub severity: Severity,
    pub body: String,
    pub attributes: Map<String, Value>,
    /// The child's own timestamp, when it gave one.
    pub time_ns: Option<u128>,
}

/// Parses a child's line: a JSON object (pino), logfmt with a `level`
/// (OpenCode), or plain text.
pub fn parse_line(line: &str) -> Parsed {
    let trimmed = line.trim();
    if trimmed.starts_with('{') {
        if let Some(p) = parse_json(trimmed) {
            return p;
        }
    }
    if let Some(p) = parse_logfmt(trimmed) {
        return p;
    }
    if let Some(p) = parse_level_prefix(trimmed) {
        return p;
    }
    Parsed {
        severity: guess_severity(trimmed),
        body: line.trim_end().to_string(),
        attributes: Map::new(),
        time_ns: None,
    }
}

/// The health path openwrk probes on each sidecar (SPEC §5.3).
fn health_path(component: &str) -> Option<&'static str> {
    match component {
        "opencode" => Some("/global/health"),
        "openwork-server" | "owpenbot" => Some("/health"),
        _ => None,
    }
}

/// Whether a child's line is its request log of a successful health check:
/// a GET of its health path whose status (when given) is 2xx, or any line
/// naming openwrk's probe User-Agent. openwrk probes every few seconds, so
/// these lines would drown everything else; a failing check (5xx) is kept.
pub fn is_health_request(component: &str, p: &Parsed) -> bool {
    if p.body.contains(crate::host::health::PROBE_AGENT_PREFIX) {
        return true;
    }
    let Some(path) = health_path(component) else {
        return false;
    };
    let ok = |status: &str| status.starts_with('2') && status.len() == 3;
    let attr = |k: &str| p.attributes.get(k).and_then(Value::as_str);
    if attr("method") == Some("GET") && attr("path") == Some(path) {
        return attr("status").is_none_or(ok);
    }
    // Plain request lines: `GET /health 200 1ms` or `… method=GET path=/health …`.
    let words: Vec<&str> = p.body.split_whitespace().collect();
    let plain = words
        .windows(2)
        .position(|w| w[0] == "GET" && w[1].split('?').next() == Some(path));
    if let Some(i) = plain {
        return words
            .get(i + 2)
            .filter(|s| s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()))
            .is_none_or(|s| ok(s));
    }
    let field = |k: &str| {
        words
            .iter()
            .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))
    };
    field("method") == Some("GET")
        && field("path").and_then(|v| v.split('?').next()) == Some(path)
        && field("status").is_none_or(ok)
}

/// A level name as programs print it in front of a line: upper case
/// (`ERROR`, `WARN`), never a word that merely starts a sentence.
fn shouted_level(token: &str) -> Option<Severity> {
    let word = token
        .trim_start_matches(['[', '<', '('])
        .trim_end_matches([']', '>', ')', ':']);
    let upper = !word.is_empty() && word.chars().all(|c| c.is_ascii_uppercase());
    if upper {
        Severity::from_name(word)
    } else {
        None
    }
}

/// OpenCode's own print format, `ERROR 2026-01-02T03:04:05 +12ms service=x
/// text`: the level, a timestamp (dropped: the record has its own) and an
/// optional `+Nms` delta, then the message.
fn parse_level_prefix(line: &str) -> Option<Parsed> {
    let (level, rest) = line.split_once(char::is_whitespace)?;
    let severity = shouted_level(level)?;
    let rest = rest.trim_start();
    let (stamp, after) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let looks_like_time = stamp.len() >= 10
        && stamp.as_bytes()[..4].iter().all(u8::is_ascii_digit)
        && stamp.as_bytes()[4] == b'-';
    if !looks_like_time {
        return None;
    }
    let after = after.trim_start();
    let body = match after.split_once(char::is_whitespace) {
        Some((delta, text)) if is_delta(delta) => text.trim_start(),
        None if is_delta(after) => "",
        _ => after,
    };
    Some(Parsed {
        severity,
        body: body.to_string(),
        attributes: Map::new(),
        time_ns: None,
    })
}

/// `+12ms`, OpenCode's time since its previous line.
fn is_delta(s: &str) -> bool {
    s.strip_prefix('+')
        .and_then(|d| d.strip_suffix("ms"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Plain lines are INFO unless they announce a severity: a shouted level
/// among their first words (`[ERROR] x`, `2026-01-02 10:00:00 WARN x`), a
/// `level=` field, or a lower-case `error:` / `warning:` prefix.
fn guess_severity(line: &str) -> Severity {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    if let Some(s) = tokens.iter().take(3).find_map(|t| shouted_level(t)) {
        return s;
    }
    let field = tokens.iter().find_map(|t| {
        let (k, v) = t.split_once('=')?;
        matches!(k, "level" | "lvl" | "severity")
            .then(|| Severity::from_name(v.trim_matches('"')))
            .flatten()
    });
    if let Some(s) = field {
        return s;
    }
    let lower = line.to_ascii_lowercase();
    let head = lower.split_once(": ").map_or(lower.as_str(), |(a, b)| {
        if a.contains(' ') {
            lower.as_str()
        } else {
            b
        }
    });
    let first = tokens.first().copied().unwrap_or_default();
    let panicked = lower.starts_with("thread '") && lower.contains("' panicked at");
    // "error" as a word: "errors: none" is no error.
    let word = |text: &str, w: &str| {
        text.strip_prefix(w)
            .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_alphabetic()))
    };
    if word(head, "error")
        || word(&lower, "error")
        || lower.contains(" error:")
        || first.ends_with("Error:")
        || panicked
    {
        Severity::Error
    } else if ["warn", "warning"]
        .iter()
        .any(|w| word(head, w) || word(&lower, w))
    {
        Severity::Warn
    } else {
        Severity::Info
    }
}

fn parse_json(line: &str) -> Option<Parsed> {
    let Value::Object(mut map) = serde_json::from_str::<Value>(line).ok()? else {
        return None;
    };
    let severity = match map.remove("level") {
        Some(Value::Number(n)) => n.as_u64().map(Severity::from_pino),
        Some(Value::String(s)) => Severity::from_name(&s),
        _ => None,
    }
    .unwrap_or(Severity::Info);
    let body = ["msg", "message"]
        .iter()
        .find_map(|k| map.remove(*k))
        .map(|v| match v {
            Value::String(s) => s,
            other => other.to_string(),
        })
        .unwrap_or_default();
    let time_ns = match map.remove("time") {
        Some(Value::Number(n)) => n.as_u64().map(|ms| u128::from(ms) * 1_000_000),
        Some(Value::String(s)) => rfc3339_ns(&s),
        _ => None,
    };
    Some(Parsed {
        severity,
        body,
        attributes: map,
        time_ns,
    })
}

fn rfc3339_ns(s: &str) -> Option<u128> {
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    u128::try_from(t.timestamp_nanos_opt()?).ok()
}

/// `key=value key2="quoted value"` pairs; the line counts as logfmt only if
/// every token is a pair and one of them is `level`.
fn parse_logfmt(line: &str) -> Option<Parsed> {
    let pairs = logfmt_pairs(line)?;
    if !pairs.iter().any(|(k, _)| k == "level") {
        return None;
    }
    let mut parsed = Parsed {
        severity: Severity::Info,
        body: String::new(),
        attributes: Map::new(),
        time_ns: None,
    };
    for (k, v) in pairs {
        match k.as_str() {
            "level" => parsed.severity = Severity::from_name(&v).unwrap_or(Severity::Info),
            "message" | "msg" => parsed.body = v,
            "timestamp" | "time" | "ts" => {
                parsed.time_ns = rfc3339_ns(&v);
                if parsed.time_ns.is_none() {
                    parsed.attributes.insert(k, Value::String(v));
                }
            }
            _ => {
                parsed.attributes.insert(k, Value::String(v));
            }
        }
    }
    Some(parsed)
}

fn logfmt_pairs(line: &str) -> Option<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() || chars.next() != Some('=') {
            return None;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' => match chars.next() {
                        Some('n') => value.push('\n'),
                        Some('t') => value.push('\t'),
                        Some(other) => value.push(other),
                        None => return None,
                    },
                    c => value.push(c),
                }
            }
            if !closed {
                return None;
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        pairs.push((key, value));
    }
    (!pairs.is_empty()).then_some(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pino_json_lines_map_level_message_and_time() {
        let p = parse_line(
            r#"{"level":40,"time":1700000000123,"pid":7,"name":"owpenbot","msg":"no channel"}"#,
        );
        assert_eq!(p.severity, Severity::Warn);
        assert_eq!(p.body, "no channel");
        assert_eq!(p.time_ns, Some(1_700_000_000_123_000_000));
        assert_eq!(p.attributes["pid"], 7);
        assert!(!p.attributes.contains_key("msg"));
    }

    #[test]
    fn opencode_logfmt_lines_are_structured() {
        let p = parse_line(
            r#"timestamp=2023-11-14T22:13:20.500Z level=WARN run=12 message="server listening" url=http://127.0.0.1:1 path="/a b""#,
        );
        assert_eq!(p.severity, Severity::Warn);
        assert_eq!(p.body, "server listening");
        assert_eq!(p.time_ns, Some(1_700_000_000_500_000_000));
        assert_eq!(p.attributes["url"], "http://127.0.0.1:1");
        assert_eq!(p.attributes["path"], "/a b");
        assert_eq!(p.attributes["run"], "12");
    }

    #[test]
    fn plain_lines_stay_plain() {
        let p = parse_line("GET /health 200 1ms");
        assert_eq!(p.severity, Severity::Info);
        assert_eq!(p.body, "GET /health 200 1ms");
        assert!(p.attributes.is_empty());
        assert_eq!(
            parse_line("standin: error: cannot listen").severity,
            Severity::Error
        );
        assert_eq!(parse_line("a=b c").severity, Severity::Info);
        assert_eq!(parse_line("errors: none").severity, Severity::Info);
        assert_eq!(parse_line("{not json").body, "{not json");
    }

    #[test]
    fn plain_lines_get_the_severity_they_announce() {
        let cases = [
            ("ERROR cannot bind", Severity::Error),
            ("[WARN] disk almost full", Severity::Warn),
            ("2026-01-02 10:00:00 WARN slow", Severity::Warn),
            (
                "time=x level=error msg=boom trailing words",
                Severity::Error,
            ),
            ("ts=1 lvl=warn and more", Severity::Warn),
            ("Warning: deprecated flag", Severity::Warn),
            ("TypeError: x is undefined", Severity::Error),
            (
                "thread 'main' panicked at src/main.rs:1:1:",
                Severity::Error,
            ),
            ("DEBUG details", Severity::Debug),
            ("listening on 127.0.0.1:1", Severity::Info),
        ];
        for (line, want) in cases {
            assert_eq!(parse_line(line).severity, want, "{line}");
        }
    }

    #[test]
    fn opencode_print_format_gives_level_and_message() {
        let p = parse_line("ERROR 2026-01-02T03:04:05 +12ms service=server failed to bind");
        assert_eq!(p.severity, Severity::Error);
        assert_eq!(p.body, "service=server failed to bind");
        let p = parse_line("INFO  2026-01-02T03:04:05 +0ms service=bus publishing");
        assert_eq!(
            (p.severity, p.body.as_str()),
            (Severity::Info, "service=bus publishing")
        );
        // Not a timestamp after the level: an ordinary shouted line.
        let p = parse_line("WARN something odd");
        assert_eq!(
            (p.severity, p.body.as_str()),
            (Severity::Warn, "WARN something odd")
        );
    }

    #[test]
    fn successful_health_checks_are_recognised_failing_ones_kept() {
        let yes = [
            ("opencode", "timestamp=2026-01-01T00:00:00Z level=INFO message=request method=GET path=/global/health status=200"),
            ("opencode", "INFO  2026-01-02T03:04:05 +1ms service=server method=GET path=/global/health request"),
            ("openwork-server", "GET /health 200 1ms"),
            ("openwork-server", "GET /health?x=1 204 0ms"),
            ("owpenbot", r#"{"level":30,"msg":"GET /health","ua":"openwrk-probe/0.1.0"}"#),
        ];
        for (c, line) in yes {
            assert!(is_health_request(c, &parse_line(line)), "{c}: {line}");
        }
        let no = [
            (
                "opencode",
                "timestamp=x level=INFO message=request method=GET path=/global/health status=503",
            ),
            ("openwork-server", "GET /health 503 1ms"),
            ("openwork-server", "GET /workspaces 200 1ms"),
            ("opencode", "GET /health 200 1ms"),
            ("openwork-server", "POST /health 200 1ms"),
        ];
        for (c, line) in no {
            assert!(!is_health_request(c, &parse_line(line)), "{c}: {line}");
        }
    }
}
