//! A bundled install (SPEC §2.4, §3.4): `<dir>/openwrk`, `<dir>/openwrk-sidecars.json`
//! and `<dir>/sidecars/<name>`. Its sidecars are verified once and then trusted
//! through records in `<data dir>/bundled/`, like the cache's `.verified`.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::{fails, ok, rows, Mirror};

/// A bundled install built from a fetched cache: openwrk, the manifest and all three sidecars.
fn install(m: &Mirror) -> PathBuf {
    ok(&m.run(&["sidecars", "fetch"]));
    let dir = m.tmp.path().join("install");
    std::fs::create_dir_all(dir.join("sidecars")).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_openwrk"), dir.join("openwrk")).unwrap();
    std::fs::copy(
        m.tmp.path().join("dist/openwrk-sidecars.json"),
        dir.join("openwrk-sidecars.json"),
    )
    .unwrap();
    for name in ["opencode", "openwork-server", "owpenbot"] {
        std::fs::copy(
            m.cache_dir(name).join(name),
            dir.join("sidecars").join(name),
        )
        .unwrap();
    }
    dir
}

fn list(dir: &Path, data: &Path, extra: &[&str]) -> std::process::Output {
    let mut tries = 0;
    loop {
        let out = Command::new(dir.join("openwrk"))
            .args(["sidecars", "list", "--json"])
            .args(extra)
            .env("OPENWRK_DATA_DIR", data)
            .env_remove("OPENWRK_SIDECAR_BASE_URL")
            .env_remove("OPENWRK_SIDECAR_SOURCE")
            .env_remove("OPENWRK_OPENCODE_SOURCE")
            .env_remove("OPENWRK_SIDECAR_DIR")
            .output();
        match out {
            // The copied binary is "busy" while a process that another test
            // thread forks meanwhile still holds the copy's write descriptor.
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            out => return out.unwrap(),
        }
    }
}

/// Every record under `<data dir>/bundled/`, with the inode it has now.
fn records(data: &Path) -> Vec<(PathBuf, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for key in std::fs::read_dir(data.join("bundled")).unwrap() {
        for rec in std::fs::read_dir(key.unwrap().path()).unwrap() {
            let p = rec.unwrap().path();
            let ino = std::fs::metadata(&p).unwrap().ino();
            out.push((p, ino));
        }
    }
    out.sort();
    out
}

#[cfg(unix)]
#[test]
fn a_bundled_warm_start_rehashes_nothing_and_tampering_is_caught() {
    let m = Mirror::new();
    let dir = install(&m);
    let data = m.tmp.path().join("data-bundled");
    let all_bundled = vec![
        ("opencode".into(), "bundled".into(), "yes".into()),
        ("openwork-server".into(), "bundled".into(), "yes".into()),
        ("owpenbot".into(), "bundled".into(), "yes".into()),
    ];
    assert_eq!(rows(&ok(&list(&dir, &data, &[]))), all_bundled);
    let first = records(&data);
    assert_eq!(first.len(), 3, "{first:?}");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&first[0].0).unwrap()).unwrap();
    for field in [
        "sha256", "size", "mtimeNs", "ctimeNs", "device", "inode", "path",
    ] {
        assert!(record.get(field).is_some(), "{field} missing in {record}");
    }

    // Warm: the records describe the files, so nothing is rehashed or rewritten.
    assert_eq!(rows(&ok(&list(&dir, &data, &[]))), all_bundled);
    assert_eq!(records(&data), first, "a warm start rewrote a record");

    // Tampered with the same size and the mtime set back: ctime still changed.
    let bot = dir.join("sidecars/owpenbot");
    let mtime = std::fs::metadata(&bot).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&bot).unwrap();
    bytes[0] ^= 0xff;
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&bot, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&bot)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(std::fs::metadata(&bot).unwrap().modified().unwrap(), mtime);
    let r = rows(&ok(&list(&dir, &data, &[])));
    assert_eq!(r[2].1, "bundled");
    assert_eq!(r[2].2, "no", "a tampered bundled binary passed: {r:?}");
    // Its record is gone, and it stays refused (rehashed again, never trusted).
    assert_eq!(records(&data).len(), 2);
    let r = rows(&ok(&list(&dir, &data, &["--sidecar-source", "bundled"])));
    assert_eq!(
        r[2],
        ("owpenbot".into(), "bundled".into(), "no".into()),
        "{r:?}"
    );
}

#[cfg(unix)]
#[test]
fn bundled_records_that_others_can_write_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let m = Mirror::new();
    let dir = install(&m);
    let data = m.tmp.path().join("data-bundled");
    ok(&list(&dir, &data, &[]));
    let (record, _) = records(&data).remove(0);
    std::fs::set_permissions(&record, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = list(&dir, &data, &[]);
    fails(&o, 3, &["world-writable", "chmod go-w"]);
}
