//! Pairing details (SPEC §5.5) and the record of a detached run (§5.6).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::HostError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pairing {
    pub run_id: String,
    pub workspace: String,
    pub openwork: OpenWorkPairing,
    pub opencode: OpenCodePairing,
    pub owpenbot: OwpenbotPairing,
    pub attach: String,
    /// Sandbox mode (SPEC §5.9): `{"mode":"none"}` without one.
    #[serde(default)]
    pub sandbox: crate::host::sandbox::SandboxInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenWorkPairing {
    pub url: String,
    pub token: String,
    pub host_token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenCodePairing {
    pub url: String,
    pub username: String,
    pub password: String,
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwpenbotPairing {
    pub enabled: bool,
    pub health_port: Option<u16>,
}

/// The `opencode attach` command, credentials in its environment.
pub fn attach_command(url: &str, username: &str, password: &str) -> String {
    format!(
        "OPENCODE_SERVER_USERNAME={} OPENCODE_SERVER_PASSWORD={} opencode attach {url}",
        shell_quote(username),
        shell_quote(password)
    )
}

/// Quotes a value for POSIX shells only when it needs it.
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@%+=,".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The human summary printed once everything is healthy.
pub fn text(p: &Pairing, remote_access: bool, owpenbot_note: Option<&str>) -> String {
    let mut out = format!("openwrk is ready (run {})\n", p.run_id);
    let mut row = |label: &str, value: &str| out.push_str(&format!("  {label:<16}{value}\n"));
    row("workspace", &p.workspace);
    row("OpenWork URL", &p.openwork.url);
    row("client token", &p.openwork.token);
    row(
        "host token",
        &format!("{}  (approvals)", p.openwork.host_token),
    );
    row(
        "OpenCode URL",
        &match &p.opencode.version {
            Some(v) => format!("{}  (opencode {v})", p.opencode.url),
            None => p.opencode.url.clone(),
        },
    );
    row("username", &p.opencode.username);
    row("password", &p.opencode.password);
    row("attach", &p.attach);
    match (p.owpenbot.enabled, p.owpenbot.health_port) {
        (true, Some(port)) => row(
            "owpenbot",
            &format!(
                "health http://127.0.0.1:{port}/health{}",
                owpenbot_note
                    .map(|n| format!("  ({n})"))
                    .unwrap_or_default()
            ),
        ),
        _ => row("owpenbot", "disabled"),
    }
    row("sandbox", &p.sandbox.describe());
    if !remote_access {
        out.push_str(
            "These services are reachable from this machine only; pass --remote-access \
             (and --connect-host HOST if needed) so remote OpenWork clients can pair.\n",
        );
    }
    out
}

/// One started child in a run record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChildRecord {
    pub name: String,
    pub pid: u32,
    /// Each child leads its own process group.
    pub pgid: u32,
    pub port: Option<u16>,
    /// Where openwrk reaches it (health probes).
    pub local_url: Option<String>,
    pub version: Option<String>,
    pub binary: PathBuf,
    pub started_unix_ms: u64,
    /// The process's start time (`crate::host::process`): `stop` signals the pid
    /// only while it still has this one. Absent in older records: never signalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_start: Option<u64>,
    /// The guardian watching it (Unix) and its start time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardian_pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardian_start: Option<u64>,
}

/// `<data dir>/runs/<run id>.json` (0600): what `openwrk stop` and the
/// dashboard need, credentials included (only here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    pub run_id: String,
    /// The openwrk process supervising the children.
    pub supervisor_pid: u32,
    /// Its start time (`crate::host::process`); absent in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor_start: Option<u64>,
    pub started_at: String,
    pub started_unix_ms: u64,
    pub workspace: String,
    pub log: PathBuf,
    pub remote_access: bool,
    pub children: Vec<ChildRecord>,
    pub pairing: Pairing,
}

pub fn runs_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("runs")
}

pub fn record_path(data_dir: &Path, run_id: &str) -> PathBuf {
    runs_dir(data_dir).join(format!("{run_id}.json"))
}

pub fn log_path(data_dir: &Path, run_id: &str) -> PathBuf {
    runs_dir(data_dir).join(format!("{run_id}.log"))
}

/// A run id names files, so it must be a plain file-name component.
pub fn check_run_id(id: &str) -> Result<(), HostError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !id.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(HostError::Usage(format!("invalid run id `{id}`: use letters, digits, `-`, `_` and `.` (at most 128)\nhint: omit --run-id / OPENWRK_RUN_ID to get a generated UUIDv7")))
    }
}

/// Writes the record atomically with mode 0600.
pub fn write_record(data_dir: &Path, record: &RunRecord) -> Result<PathBuf, HostError> {
    let path = record_path(data_dir, &record.run_id);
    let fail = |e: std::io::Error| {
        HostError::Runtime(format!(
            "cannot write the run record {}: {e}\nhint: check that the data dir is writable",
            path.display()
        ))
    };
    crate::fsutil::create_private_dir_all(&runs_dir(data_dir)).map_err(fail)?;
    let json = serde_json::to_string_pretty(record).expect("a record serializes");
    // tempfile creates 0600 files, so the secrets are never readable by others.
    crate::fsutil::write_atomic(&path, json.as_bytes()).map_err(fail)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    }
    Ok(path)
}

pub fn read_record(path: &Path) -> Result<RunRecord, HostError> {
    let bytes = std::fs::read(path).map_err(|e| {
        HostError::Runtime(format!(
            "cannot read the run record {}: {e}",
            path.display()
        ))
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        HostError::Config(format!(
            "the run record {} is not valid: {e}\nhint: remove it if that run is gone",
            path.display()
        ))
    })
}

/// Every run record, newest first.
pub fn list_records(data_dir: &Path) -> Vec<(PathBuf, Option<RunRecord>)> {
    let Ok(entries) = std::fs::read_dir(runs_dir(data_dir)) else {
        return Vec::new();
    };
    let mut found: Vec<(PathBuf, Option<RunRecord>)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let r = read_record(&p).ok();
            (p, r)
        })
        .collect();
    found.sort_by_key(|(_, r)| std::cmp::Reverse(r.as_ref().map_or(0, |r| r.started_unix_ms)));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairing() -> Pairing {
        Pairing {
            run_id: "r1".into(),
            workspace: "/w".into(),
            openwork: OpenWorkPairing {
                url: "http://127.0.0.1:8787".into(),
                token: "tok".into(),
                host_token: "host".into(),
            },
            opencode: OpenCodePairing {
                url: "http://127.0.0.1:4096".into(),
                username: "opencode".into(),
                password: "pw".into(),
                version: Some("1.2.3".into()),
            },
            owpenbot: OwpenbotPairing {
                enabled: true,
                health_port: Some(3005),
            },
            attach: attach_command("http://127.0.0.1:4096", "opencode", "p w"),
            sandbox: Default::default(),
        }
    }

    #[test]
    fn json_has_the_spec_shape() {
        let v = serde_json::to_value(pairing()).unwrap();
        assert_eq!(v["runId"], "r1");
        assert_eq!(v["openwork"]["hostToken"], "host");
        assert_eq!(v["opencode"]["version"], "1.2.3");
        assert_eq!(v["owpenbot"]["healthPort"], 3005);
        assert_eq!(
            v["attach"],
            "OPENCODE_SERVER_USERNAME=opencode OPENCODE_SERVER_PASSWORD='p w' opencode attach http://127.0.0.1:4096"
        );
    }

    #[test]
    fn text_says_when_only_local() {
        let t = text(&pairing(), false, Some("degraded"));
        assert!(t.contains("OpenWork URL    http://127.0.0.1:8787"));
        assert!(t.contains("--remote-access"));
        assert!(t.contains("(degraded)"));
        assert!(!text(&pairing(), true, None).contains("--remote-access"));
    }

    #[test]
    fn run_ids_are_file_names() {
        assert!(check_run_id("0190abcd-ef").is_ok());
        assert!(check_run_id("../x").is_err());
        assert!(check_run_id("").is_err());
    }
}
