//! The manifest's JSON Schema, generated from the types in this module
//! (`cargo xtask schema` writes it to `manifests/openwrk-sidecars.schema.json`;
//! a test keeps the committed file equal to this output).
//!
//! The types give the shape; what serde cannot express is added here from the
//! same constants the parser checks with: the schema version, and the
//! stricter rules for the sidecars openwrk uses (their version and target
//! keys become cache paths, SPEC §3.4).

use serde_json::{json, Value};

use super::{Manifest, GENERATED_AT_PATTERN, SCHEMA_VERSION, SIDECARS, VERSION_PATTERN};
use crate::supply::platform::Target;

pub const SCHEMA_ID: &str =
    "https://github.com/different-ai/openwork/manifests/openwrk-sidecars.schema.json";

/// The schema as a JSON value (draft 2020-12).
pub fn manifest_schema() -> Value {
    let mut schema = schemars::schema_for!(Manifest).to_value();
    let root = schema.as_object_mut().expect("a schema object");
    root.insert("$id".into(), SCHEMA_ID.into());
    root.insert(
        "title".into(),
        "openwrk sidecar manifest (openwrk-sidecars.json)".into(),
    );
    schema["properties"]["schemaVersion"] = json!({
        "description": "Absent in upstream manifests, which are schema 1.",
        "const": SCHEMA_VERSION,
    });

    schema["properties"]["generatedAt"]["pattern"] = GENERATED_AT_PATTERN.into();

    // A used entry is an entry whose version and target keys are path-safe.
    let mut used = schema["$defs"]["Entry"].clone();
    used["description"] =
        "An entry openwrk uses: its version and target keys become cache paths (SPEC §3.4).".into();
    used["properties"]["version"] = json!({ "$ref": "#/$defs/Version" });
    used["properties"]["targets"]["propertyNames"] = json!({ "enum": Target::ALL.map(Target::id) });
    schema["$defs"]["UsedEntry"] = used;
    schema["$defs"]["Version"] = json!({
        "description": "A version safe to use as a path segment (SPEC §3.4).",
        "type": "string",
        "pattern": VERSION_PATTERN,
        "not": { "pattern": "\\.\\." },
    });
    schema["properties"]["entries"]["properties"] = SIDECARS
        .iter()
        .map(|name| (name.to_string(), json!({ "$ref": "#/$defs/UsedEntry" })))
        .collect::<serde_json::Map<_, _>>()
        .into();

    // `archive` needs the binary's name and digest (checked by the parser too).
    schema["$defs"]["TargetAsset"]["dependentRequired"] =
        json!({ "archive": ["binary", "binarySha256", "binarySize"] });
    unwrap_descriptions(&mut schema);
    schema
}

/// Doc comments arrive with their line breaks; a description is one paragraph.
fn unwrap_descriptions(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    Value::String(text) if key == "description" => *text = text.replace('\n', " "),
                    _ => unwrap_descriptions(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}

/// The schema as committed: sorted keys, two-space indent, trailing newline.
pub fn manifest_schema_json() -> String {
    let mut out = serde_json::to_string_pretty(&super::sorted(manifest_schema()))
        .expect("a schema serializes");
    out.push('\n');
    out
}
