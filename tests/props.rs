//! Property tests: arbitrary input to the manifest parser, version parser and
//! archive extraction never panics, never writes outside the target directory,
//! and always ends in a value or a clear error.

use openwrk::supply::archive::{extract_binary, ArchiveKind};
use openwrk::supply::github::VersionRequest;
use openwrk::supply::manifest::Manifest;
use openwrk_test_support::fixtures::{self, Entry};
use proptest::prelude::*;

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "[a-z0-9./-]{0,70}".prop_map(serde_json::Value::from),
        Just(serde_json::Value::from("0".repeat(64))),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("version".to_string()),
                    Just("generatedAt".to_string()),
                    Just("entries".to_string()),
                    Just("targets".to_string()),
                    Just("asset".to_string()),
                    Just("sha256".to_string()),
                    Just("size".to_string()),
                    Just("archive".to_string()),
                    Just("binary".to_string()),
                    Just("linux-x64".to_string()),
                    "[a-z]{1,8}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn manifest_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Manifest::from_json(&bytes);
    }

    #[test]
    fn manifest_shapes_parse_or_name_a_path(value in json_value()) {
        match Manifest::from_json(value.to_string().as_bytes()) {
            // Whatever parses serializes and parses back to itself.
            Ok(m) => prop_assert_eq!(Manifest::from_json(m.to_json().as_bytes()).unwrap(), m),
            Err(e) => prop_assert!(!e.message.is_empty()),
        }
    }

    #[test]
    fn versions_parse_or_explain(s in "\\\\PC{0,24}") {
        match s.parse::<VersionRequest>() {
            Ok(_) => {}
            Err(e) => prop_assert!(e.to_string().contains("latest")),
        }
    }

    #[test]
    fn v_prefix_is_the_same_version(major in 0u64..100, minor in 0u64..100, patch in 0u64..100) {
        let plain: VersionRequest = format!("{major}.{minor}.{patch}").parse().unwrap();
        let prefixed: VersionRequest = format!("v{major}.{minor}.{patch}").parse().unwrap();
        prop_assert_eq!(plain, prefixed);
    }
}

/// Path pieces that make archive names interesting.
fn entry_name() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("..".to_string()),
            Just(".".to_string()),
            Just("".to_string()),
            Just("opencode".to_string()),
            Just("bin".to_string()),
            Just("C:".to_string()),
            "[a-z]{1,6}",
        ],
        1..4,
    )
    .prop_flat_map(|parts| (Just(parts), any::<bool>()))
    .prop_map(|(parts, absolute)| {
        let joined = parts.join("/");
        if absolute {
            format!("/{joined}")
        } else {
            joined
        }
    })
    .prop_filter("tar names are at most 99 bytes", |n| {
        !n.is_empty() && n.len() < 99
    })
}

#[derive(Debug, Clone)]
enum Kind {
    File(Vec<u8>),
    Symlink(String),
    Hardlink(String),
}

fn entry() -> impl Strategy<Value = (String, Kind)> {
    (
        entry_name(),
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64).prop_map(Kind::File),
            entry_name().prop_map(Kind::Symlink),
            entry_name().prop_map(Kind::Hardlink),
        ],
    )
}

/// Every file below `dir`, relative.
fn tree(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
        }
    }
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn archives_extract_or_refuse_and_never_escape(entries in prop::collection::vec(entry(), 1..5), zip in any::<bool>()) {
        let root = tempfile::tempdir().unwrap();
        let archive = root.path().join(if zip { "a.zip" } else { "a.tar.gz" });
        let owned: Vec<(String, Entry)> = entries
            .iter()
            .map(|(n, k)| {
                let e = match k {
                    Kind::File(b) => Entry::Bytes(b),
                    Kind::Symlink(t) => Entry::Symlink(t),
                    Kind::Hardlink(t) => Entry::Hardlink(t),
                };
                (n.clone(), e)
            })
            .collect();
        let refs: Vec<(&str, Entry)> = owned.iter().map(|(n, e)| (n.as_str(), clone_entry(e))).collect();
        let written = if zip { fixtures::zip(&archive, &refs) } else { fixtures::tar_gz(&archive, &refs) };
        prop_assume!(written.is_ok());
        let out_dir = root.path().join("out");
        std::fs::create_dir(&out_dir).unwrap();
        let before = tree(root.path());
        let kind = if zip { ArchiveKind::Zip } else { ArchiveKind::TarGz };
        let result = extract_binary(&archive, kind, "opencode", &out_dir.join("opencode"), 1 << 20);
        let after = tree(root.path());
        let added: Vec<String> = after.into_iter().filter(|p| !before.contains(p)).collect();
        match result {
            Ok(_) => prop_assert_eq!(added, vec!["out/opencode".to_string()]),
            Err(e) => {
                prop_assert!(added.is_empty(), "a failed extraction left {:?}", added);
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }
}

fn clone_entry<'a>(e: &Entry<'a>) -> Entry<'a> {
    match e {
        Entry::File(p) => Entry::File(p),
        Entry::Bytes(b) => Entry::Bytes(b),
        Entry::Symlink(t) => Entry::Symlink(t),
        Entry::Hardlink(t) => Entry::Hardlink(t),
    }
}
