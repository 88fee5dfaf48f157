//! Soak: 100 start/stop cycles with the stand-in sidecars leave no process, no
//! temp file, and no growth in open file descriptors.

use std::process::Command;

use openwrk_test_support::{processes_under, standin_bin};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[cfg(target_os = "linux")]
#[test]
fn a_hundred_check_cycles_leave_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let workspace = tmp.path().join("workspace");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&workspace).unwrap();
    let fds_before = open_fds();
    for i in 0..100 {
        let o = Command::new(env!("CARGO_BIN_EXE_openwrk"))
            .args([
                "serve",
                "--check",
                "--allow-external",
                "--openwork-port",
                "0",
            ])
            .arg("--opencode-bin")
            .arg(standin_bin("standin-opencode"))
            .arg("--openwork-server-bin")
            .arg(standin_bin("standin-openwork-server"))
            .arg("--owpenbot-bin")
            .arg(standin_bin("standin-owpenbot"))
            .arg("--workspace")
            .arg(&workspace)
            .env("OPENWRK_DATA_DIR", &data)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "cycle {i}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let left = processes_under(&workspace);
    assert!(left.is_empty(), "left running: {left:?}");
    // No temp files in the data dir (owpenbot's data dir is the only thing a run may leave).
    let mut stack = vec![data.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                !name.starts_with(".tmp") && !name.contains(".part-"),
                "temp file left: {}",
                e.path().display()
            );
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    assert!(
        open_fds() <= fds_before + 2,
        "fds grew from {fds_before} to {}",
        open_fds()
    );
}
