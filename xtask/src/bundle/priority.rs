//! Work that no bundled archive waits for (hashing another target's
//! download, copying another target's prebuilt file) runs below normal CPU
//! priority. The bundled archive's compression can only start on the host
//! target's OpenCode once its download is extracted; when every download
//! shares the cores alike, that extraction finishes as late as the last
//! one, and the compression after it sets the bundle's end.

/// Runs `work` on a thread of its own at a lower priority (`nice 10` on
/// Linux; elsewhere at normal priority). A thread of its own because a
/// thread cannot raise its priority back without privileges, so a pool
/// thread must never be lowered.
pub async fn in_background<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bundle-background".into())
        .spawn(move || {
            lower_this_thread();
            let _ = tx.send(work());
        })?;
    Ok(rx.await?)
}

/// Where it cannot be lowered, the work still runs: only its order changes.
fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on this thread's own id (Linux applies
    // PRIO_PROCESS with a thread id to that thread alone).
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
}
