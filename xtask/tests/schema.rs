//! The committed manifest schema is the one generated from the Rust types,
//! and it holds the sidecars openwrk uses to the parser's path-safe rules.

use std::path::Path;

use openwrk::supply::manifest::schema::manifest_schema_json;
use serde_json::json;

fn committed() -> String {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/openwrk-sidecars.schema.json");
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn the_committed_schema_is_generated_from_the_types() {
    assert!(
        committed() == manifest_schema_json(),
        "manifests/openwrk-sidecars.schema.json is stale: run `cargo xtask schema` and commit it"
    );
}

fn manifest(name: &str, version: &str, target: &str) -> serde_json::Value {
    json!({
        "schemaVersion": 1,
        "version": "0.1.0",
        "generatedAt": "2023-11-14T22:13:20Z",
        "entries": { name: { "version": version, "targets": { target: {
            "asset": "a.tar.gz",
            "sha256": "0".repeat(64),
            "size": 3,
            "archive": "tar.gz",
            "binary": "bin/a",
            "binarySha256": "1".repeat(64),
            "binarySize": 2
        }}}}
    })
}

#[test]
fn schema_and_parser_agree_on_what_a_used_entry_may_be() {
    let schema: serde_json::Value = serde_json::from_str(&committed()).unwrap();
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let cases = [
        (manifest("opencode", "1.2.3", "linux-x64"), true),
        (
            manifest("opencode", "../../../../tmp/x", "linux-x64"),
            false,
        ),
        (manifest("opencode", "/abs", "linux-x64"), false),
        (manifest("owpenbot", "1..2", "linux-x64"), false),
        (manifest("openwork-server", "1.0.0", "../x"), false),
        // Entries openwrk does not use are never paths: only their shape counts.
        (
            manifest("future-sidecar", "../anything", "some-target"),
            true,
        ),
    ];
    for (doc, ok) in cases {
        let by_schema = validator.is_valid(&doc);
        let by_parser =
            openwrk::supply::manifest::Manifest::from_json(doc.to_string().as_bytes()).is_ok();
        assert_eq!(by_schema, ok, "schema on {doc}");
        assert_eq!(by_parser, ok, "parser on {doc}");
    }
    let mut no_binary = manifest("opencode", "1.2.3", "linux-x64");
    let asset = &mut no_binary["entries"]["opencode"]["targets"]["linux-x64"];
    asset.as_object_mut().unwrap().remove("binarySha256");
    assert!(!validator.is_valid(&no_binary));
    assert!(
        openwrk::supply::manifest::Manifest::from_json(no_binary.to_string().as_bytes()).is_err()
    );
}
