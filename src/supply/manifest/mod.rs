//! The sidecar manifest `openwrk-sidecars.json` (SPEC §2.3): types, strict
//! parsing with errors that name the JSON path, and deterministic output.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::supply::archive::ArchiveKind;
use crate::supply::digest::is_sha256_hex;
use crate::supply::platform::Target;

pub const MANIFEST_FILE: &str = "openwrk-sidecars.json";
pub const SCHEMA_VERSION: u32 = 1;

/// The three sidecars, in start order.
pub const OPENCODE: &str = "opencode";
pub const OPENWORK_SERVER: &str = "openwork-server";
pub const OWPENBOT: &str = "owpenbot";
pub const SIDECARS: [&str; 3] = [OPENCODE, OPENWORK_SERVER, OWPENBOT];

#[cfg(feature = "schema")]
pub mod schema;

/// SHA-256 and size of every sidecar asset per target (SPEC §2.3). Readers
/// ignore unknown fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Absent in upstream manifests, which are schema 1.
    #[serde(default = "schema_v1")]
    pub schema_version: u32,
    /// openwrk's own version.
    pub version: NonEmpty,
    /// RFC 3339 UTC, from `SOURCE_DATE_EPOCH` when set.
    pub generated_at: NonEmpty,
    /// Keyed by sidecar name. Only the known sidecars are used (their version
    /// and target keys become cache paths, so they are strict); other entries
    /// are ignored.
    pub entries: BTreeMap<String, Entry>,
}

fn schema_v1() -> u32 {
    SCHEMA_VERSION
}

/// One sidecar: its version and an asset per target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Entry {
    pub version: NonEmpty,
    /// Where the bytes came from, e.g. `github:anomalyco/opencode@v1.2.3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Keyed by target id; ids this openwrk does not know are kept and ignored.
    pub targets: BTreeMap<String, TargetAsset>,
}

/// A release asset and, for archives, the binary inside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct TargetAsset {
    /// The release asset's file name (downloaded from the manifest's base URL).
    pub asset: AssetName,
    /// SHA-256 of the asset.
    pub sha256: Sha256Hex,
    /// Size of the asset in bytes.
    pub size: u64,
    /// Set when the asset is an archive holding the binary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveKind>,
    /// The binary's path inside the archive (required with `archive`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub binary: Option<String>,
    /// SHA-256 of the extracted binary (required with `archive`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_sha256: Option<Sha256Hex>,
    /// Size of the extracted binary (required with `archive`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_size: Option<u64>,
}

/// What the executable itself must hash to: the extracted binary for archives,
/// the asset for plain binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryDigest<'a> {
    pub sha256: &'a str,
    pub size: u64,
}

impl TargetAsset {
    pub fn binary_digest(&self) -> BinaryDigest<'_> {
        match (&self.binary_sha256, self.binary_size) {
            (Some(sha), Some(size)) => BinaryDigest {
                sha256: sha.as_str(),
                size,
            },
            _ => BinaryDigest {
                sha256: self.sha256.as_str(),
                size: self.size,
            },
        }
    }
}

/// A string type that is checked when parsed; `$schema` is its JSON Schema
/// (kept beside the check so the two say the same).
macro_rules! validated_string {
    ($name:ident, $check:expr, $expected:literal, $schema:tt) => {
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Result<Self, String> {
                let s = s.into();
                let check: fn(&str) -> bool = $check;
                if check(&s) {
                    Ok(Self(s))
                } else {
                    Err(format!(concat!("expected ", $expected, ", got {:?}"), s))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::new(s).map_err(serde::de::Error::custom)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        #[cfg(feature = "schema")]
        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!($schema)
            }
        }
    };
}

validated_string!(
    Sha256Hex,
    is_sha256_hex,
    "64 lowercase hex characters",
    { "type": "string", "pattern": "^[0-9a-f]{64}$" }
);
validated_string!(
    AssetName,
    |s| !s.is_empty() && !s.contains(['/', '\\']) && s != "." && s != "..",
    "a bare file name (no `/`, no `..`)",
    {
        "type": "string",
        "pattern": "^[^/\\\\]+$",
        "not": { "enum": [".", ".."] }
    }
);
validated_string!(
    NonEmpty,
    |s| !s.trim().is_empty(),
    "a non-empty string",
    { "type": "string", "pattern": "\\S" }
);

/// What [`Manifest::generated_at`] looks like when openwrk writes it.
pub const GENERATED_AT_PATTERN: &str = "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$";

/// [`check_version`] as a JSON Schema pattern (with `not` a `..`).
pub const VERSION_PATTERN: &str = "^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$";

/// A manifest that could not be read: the JSON path of the bad field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ManifestError {
    /// Dotted JSON path (`entries.opencode.targets.linux-x64.sha256`), `.` for the document.
    pub path: String,
    pub message: String,
}

impl Manifest {
    /// Parses and validates a manifest. Unknown fields are ignored.
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let manifest: Manifest = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            ManifestError {
                path,
                message: strip_position(&e.into_inner().to_string()),
            }
        })?;
        manifest.validate()?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<(), ManifestError> {
        let err = |path: String, message: &str| ManifestError {
            path,
            message: message.to_string(),
        };
        if self.schema_version != SCHEMA_VERSION {
            return Err(err(
                "schemaVersion".into(),
                &format!(
                    "schema {} is not supported (this openwrk reads schema {SCHEMA_VERSION}); upgrade openwrk",
                    self.schema_version
                ),
            ));
        }
        // Only the sidecars openwrk knows are used; their strings become cache
        // paths, so they are held to SPEC §3.4's shapes. Other entries (a newer
        // manifest may carry more sidecars) are never touched.
        for (name, entry) in self
            .entries
            .iter()
            .filter(|(n, _)| SIDECARS.contains(&n.as_str()))
        {
            if let Err(reason) = check_version(entry.version.as_str()) {
                return Err(err(format!("entries.{name}.version"), &reason));
            }
            for (target, asset) in &entry.targets {
                let at = format!("entries.{name}.targets.{target}");
                if target.parse::<Target>().is_err() {
                    return Err(err(
                        at,
                        &format!(
                            "unknown target {target:?}: expected one of {}",
                            Target::ALL.map(Target::id).join(", ")
                        ),
                    ));
                }
                if asset.archive.is_some() {
                    if asset.binary.is_none() {
                        return Err(err(
                            format!("{at}.binary"),
                            "required when `archive` is set",
                        ));
                    }
                    if asset.binary_sha256.is_none() {
                        return Err(err(
                            format!("{at}.binarySha256"),
                            "required when `archive` is set",
                        ));
                    }
                    if asset.binary_size.is_none() {
                        return Err(err(
                            format!("{at}.binarySize"),
                            "required when `archive` is set",
                        ));
                    }
                }
                if let Some(binary) = &asset.binary {
                    if let Err(reason) = crate::supply::archive::check_entry_path(binary) {
                        return Err(err(format!("{at}.binary"), reason));
                    }
                }
            }
        }
        Ok(())
    }

    /// Entry names this openwrk does not use (ignored, with a note).
    pub fn unknown_entries(&self) -> impl Iterator<Item = &str> {
        self.entries
            .keys()
            .map(String::as_str)
            .filter(|n| !SIDECARS.contains(n))
    }

    /// The entry for `name` on `target`, if the manifest has one.
    pub fn target(&self, name: &str, target: Target) -> Option<(&Entry, &TargetAsset)> {
        let entry = self.entries.get(name)?;
        Some((entry, entry.targets.get(target.id())?))
    }

    /// Sorted keys, two-space indent, trailing newline: byte-stable output.
    pub fn to_json(&self) -> String {
        let value = serde_json::to_value(self).expect("manifest serializes");
        let mut out = serde_json::to_string_pretty(&sorted(value)).expect("value serializes");
        out.push('\n');
        out
    }
}

/// Rebuilds every object with sorted keys (whatever map type serde_json was built with).
fn sorted(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// A sidecar version as it may appear in a cache path (SPEC §3.4):
/// [`VERSION_PATTERN`] and no `..`.
pub fn check_version(v: &str) -> Result<(), String> {
    let mut chars = v.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '_' | '-'));
    if first_ok && rest_ok && v.len() <= 64 && !v.contains("..") {
        Ok(())
    } else {
        Err(format!(
            "expected a version of letters, digits and `.+_-` (at most 64, starting with a letter or digit, no `..`), got {:?}",
            crate::sanitize::escape_controls(v)
        ))
    }
}

/// serde_json appends " at line X column Y"; the JSON path already says where.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// RFC 3339 UTC (`2023-11-14T22:13:20Z`) for a Unix time.
pub fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{
      "version": "0.1.0",
      "generatedAt": "2023-11-14T22:13:20Z",
      "futureField": {"ignored": true},
      "entries": {
        "openwork-server": {
          "version": "0.1.0",
          "targets": {"linux-x64": {"asset": "openwork-server-linux-x64",
            "sha256": "0000000000000000000000000000000000000000000000000000000000000000", "size": 3}}
        }
      }
    }"#;

    #[test]
    fn upstream_manifest_parses_as_schema_1() {
        let m = Manifest::from_json(GOOD.as_bytes()).unwrap();
        assert_eq!(m.schema_version, 1);
        let (_, t) = m.target(OPENWORK_SERVER, Target::LinuxX64).unwrap();
        assert_eq!(t.binary_digest().size, 3);
        assert!(m.target(OPENCODE, Target::LinuxX64).is_none());
    }

    #[test]
    fn bad_fields_name_their_path() {
        let bad = GOOD.replace(
            "\"0000000000000000000000000000000000000000000000000000000000000000\"",
            "\"abc\"",
        );
        let e = Manifest::from_json(bad.as_bytes()).unwrap_err();
        assert_eq!(e.path, "entries.openwork-server.targets.linux-x64.sha256");
        assert!(
            e.message.contains("expected 64 lowercase hex characters"),
            "{e}"
        );

        let bad = GOOD.replace("\"openwork-server-linux-x64\"", "\"../x\"");
        let e = Manifest::from_json(bad.as_bytes()).unwrap_err();
        assert_eq!(e.path, "entries.openwork-server.targets.linux-x64.asset");

        let bad = GOOD.replace("\"size\": 3", "\"size\": -3");
        let e = Manifest::from_json(bad.as_bytes()).unwrap_err();
        assert_eq!(e.path, "entries.openwork-server.targets.linux-x64.size");

        let bad = GOOD.replace("\"size\": 3", "\"size\": 3, \"archive\": \"tar.gz\"");
        let e = Manifest::from_json(bad.as_bytes()).unwrap_err();
        assert_eq!(e.path, "entries.openwork-server.targets.linux-x64.binary");

        let e = Manifest::from_json(b"{").unwrap_err();
        assert!(e.message.contains("EOF"), "{e}");
    }

    #[test]
    fn output_is_sorted_and_stable() {
        let m = Manifest::from_json(GOOD.as_bytes()).unwrap();
        let out = m.to_json();
        assert!(out.ends_with("}\n"));
        assert!(out.find("\"entries\"").unwrap() < out.find("\"generatedAt\"").unwrap());
        assert!(out.find("\"generatedAt\"").unwrap() < out.find("\"schemaVersion\"").unwrap());
        assert_eq!(Manifest::from_json(out.as_bytes()).unwrap(), m);
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
