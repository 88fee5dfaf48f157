//! The signals that stop a run or the daemon (SPEC §5.7).

use crate::host::HostError;

/// SIGINT and SIGTERM; on Windows Ctrl-C and Ctrl-Break (like SIGINT) and
/// the console closing (like a hang-up).
pub struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    // Optional: a background openwrk has no console, and a handler that
    // cannot be installed there must not stop the run from starting.
    #[cfg(windows)]
    ctrl_c: Option<tokio::signal::windows::CtrlC>,
    #[cfg(windows)]
    ctrl_break: Option<tokio::signal::windows::CtrlBreak>,
    #[cfg(windows)]
    close: Option<tokio::signal::windows::CtrlClose>,
}

impl Signals {
    pub fn install() -> Result<Signals, HostError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let fail = |e: std::io::Error| {
                HostError::Runtime(format!("cannot install signal handlers: {e}"))
            };
            Ok(Signals {
                int: signal(SignalKind::interrupt()).map_err(fail)?,
                term: signal(SignalKind::terminate()).map_err(fail)?,
            })
        }
        #[cfg(windows)]
        {
            use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_close};
            Ok(Signals {
                ctrl_c: ctrl_c().ok(),
                ctrl_break: ctrl_break().ok(),
                close: ctrl_close().ok(),
            })
        }
        #[cfg(not(any(unix, windows)))]
        Ok(Signals {})
    }

    /// Waits for a signal; returns its number (for the 128 + n exit code) and name.
    pub async fn recv(&mut self) -> (i32, &'static str) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.int.recv() => (2, "SIGINT"),
            _ = self.term.recv() => (15, "SIGTERM"),
        }
        // Windows gives a closing console about 5 s: stopping is quick there
        // (children are terminated, not asked).
        #[cfg(windows)]
        {
            // A listener that is missing never fires.
            macro_rules! next {
                ($l:expr) => {
                    async {
                        match $l.as_mut() {
                            Some(l) => l.recv().await,
                            None => std::future::pending().await,
                        }
                    }
                };
            }
            tokio::select! {
                _ = next!(self.ctrl_c) => (2, "Ctrl-C"),
                _ = next!(self.ctrl_break) => (2, "Ctrl-Break"),
                _ = next!(self.close) => (1, "console close"),
            }
        }
        #[cfg(not(any(unix, windows)))]
        std::future::pending().await
    }
}
