//! Rollback protection for signed manifests (SPEC §3.1): a mirror holding an
//! older manifest signed with the release key, or one of another openwrk
//! release, cannot make this openwrk accept it. The newest `generatedAt`
//! accepted per public key is remembered in `<data dir>/manifest-state.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const STATE_FILE: &str = "manifest-state.json";

#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("the manifest {origin} is for openwrk {theirs}, but this is openwrk {ours}\nhint: a mirror may be replaying another release's manifest; use the manifest of openwrk {ours}, or pass --allow-downgrade (OPENWRK_ALLOW_DOWNGRADE=1) to accept it for this run")]
    OtherVersion {
        origin: String,
        theirs: String,
        ours: &'static str,
    },
    #[error("the manifest {origin} was generated at {theirs}, before {newest}, the newest manifest this data dir accepted under the same key\nhint: a mirror may be replaying an older manifest; use a current mirror, or pass --allow-downgrade (OPENWRK_ALLOW_DOWNGRADE=1) to accept it for this run")]
    Older {
        origin: String,
        theirs: String,
        newest: String,
    },
    #[error("the signed manifest {origin} has generatedAt {value:?}, which is not an RFC 3339 time\nhint: regenerate the manifest with `cargo xtask bundle`")]
    BadTime { origin: String, value: String },
}

/// What this data dir has accepted, per key id.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    #[serde(default)]
    keys: BTreeMap<String, Accepted>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Accepted {
    generated_at: String,
    version: String,
}

/// A rollback that `--allow-downgrade` let through, to be reported.
#[derive(Debug)]
pub struct Allowed(pub RollbackError);

fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(s).ok()
}

fn state_path(data_dir: &Path) -> PathBuf {
    data_dir.join(STATE_FILE)
}

fn load(data_dir: &Path) -> State {
    crate::fsutil::read_capped(&state_path(data_dir), 1024 * 1024)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Checks a manifest whose signature verified under `key_id`, and remembers
/// it when it is the newest. With `allow_downgrade` a failed check is
/// returned as [`Allowed`] instead of an error (and nothing is remembered).
pub fn check(
    data_dir: &Path,
    key_id: &str,
    origin: &str,
    version: &str,
    generated_at: &str,
    allow_downgrade: bool,
) -> Result<Option<Allowed>, RollbackError> {
    let theirs = parse_time(generated_at).ok_or_else(|| RollbackError::BadTime {
        origin: origin.to_string(),
        value: crate::sanitize::escape_line(generated_at),
    })?;
    let mut state = load(data_dir);
    let newest = state.keys.get(key_id).cloned();
    let problem = if version != crate::VERSION {
        Some(RollbackError::OtherVersion {
            origin: origin.to_string(),
            theirs: crate::sanitize::escape_line(version),
            ours: crate::VERSION,
        })
    } else {
        newest
            .as_ref()
            .filter(|n| parse_time(&n.generated_at).is_some_and(|t| theirs < t))
            .map(|n| RollbackError::Older {
                origin: origin.to_string(),
                theirs: generated_at.to_string(),
                newest: n.generated_at.clone(),
            })
    };
    match problem {
        Some(e) if allow_downgrade => return Ok(Some(Allowed(e))),
        Some(e) => return Err(e),
        None => {}
    }
    let is_newer = newest
        .as_ref()
        .and_then(|n| parse_time(&n.generated_at))
        .is_none_or(|t| theirs > t);
    if is_newer {
        state.keys.insert(
            key_id.to_string(),
            Accepted {
                generated_at: generated_at.to_string(),
                version: version.to_string(),
            },
        );
        // Best effort: a read-only data dir still verifies, it just cannot remember.
        let _ = crate::fsutil::write_atomic(
            &state_path(data_dir),
            serde_json::to_string_pretty(&state)
                .expect("state serializes")
                .as_bytes(),
        );
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_is_remembered_older_and_other_versions_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let v = crate::VERSION;
        assert!(check(d, "k", "m", v, "2026-01-02T00:00:00Z", false)
            .unwrap()
            .is_none());
        // The same or a newer one is fine.
        check(d, "k", "m", v, "2026-01-02T00:00:00Z", false).unwrap();
        check(d, "k", "m", v, "2026-01-03T00:00:00Z", false).unwrap();
        let e = check(d, "k", "m", v, "2026-01-02T00:00:00Z", false).unwrap_err();
        assert!(e.to_string().contains("2026-01-03T00:00:00Z"), "{e}");
        // Another key has its own history.
        check(d, "other", "m", v, "2020-01-01T00:00:00Z", false).unwrap();
        let e = check(d, "k", "m", "0.0.1", "2027-01-01T00:00:00Z", false).unwrap_err();
        assert!(e.to_string().contains("openwrk 0.0.1"), "{e}");
        // Allowed once, and the newest stays what it was.
        let allowed = check(d, "k", "m", v, "2025-01-01T00:00:00Z", true).unwrap();
        assert!(matches!(
            allowed,
            Some(Allowed(RollbackError::Older { .. }))
        ));
        assert!(check(d, "k", "m", v, "2026-01-02T00:00:00Z", false).is_err());
        assert!(matches!(
            check(d, "k", "m", v, "yesterday", true),
            Err(RollbackError::BadTime { .. })
        ));
    }
}
