//! `openwrk start`, `serve` and `stop`: the flags become a run of the host
//! half (`host::run`); this module renders what it reports.

use std::io::Write as _;
use std::path::Path;

use super::Failure;
use crate::cli::{Approval, Global, StartArgs};
use crate::host::log::Logger;
use crate::host::run::pairing::{self, Pairing};
use crate::host::run::{self, Mode, Options, RunConfig, RunOutput};

/// `openwrk start` (`dashboard` true) and `openwrk serve`.
pub async fn run(global: &Global, args: StartArgs, dashboard: bool) -> Result<i32, Failure> {
    let run_id = super::run_id(global)?;
    let logger = super::logger(global, &run_id);
    super::logged(global, &logger, async {
        let config = RunConfig {
            mode: mode(global, &args, dashboard, &logger),
            options: options(&args)?,
            data_dir: super::data_dir(global)?,
            run_id,
        };
        let owpenbot_bin = args.owpenbot_bin.clone().filter(|_| !args.no_owpenbot);
        let settings = super::settings(
            global,
            [
                args.opencode_bin.clone(),
                args.openwork_server_bin.clone(),
                owpenbot_bin,
            ],
        )?;
        let resolver = super::resolver(
            global,
            settings,
            super::progress::Lines::Log(logger.clone()),
        )?;
        let output = Render {
            json: global.json,
            remote_access: args.remote_access,
        };
        Ok(run::run(&config, &resolver, &logger, &output).await?)
    })
    .await
}

/// `openwrk stop [--run-id ID]`.
pub async fn stop(global: &Global, run_id: Option<String>) -> Result<i32, Failure> {
    let data_dir = super::data_dir(global)?;
    let run_id = run_id.or_else(|| global.run_id.clone());
    let report = run::stop(&data_dir, run_id.as_deref()).await?;
    let id = &report.run_id;
    if global.json {
        let state = if report.stopped { "stopped" } else { "gone" };
        println!(
            "{}",
            serde_json::json!({ "runId": id, "state": state, "notes": report.notes })
        );
        return Ok(0);
    }
    match (report.stopped, report.needed_sigkill) {
        (false, _) => println!("note: run {id} was no longer running; removed its record"),
        (true, true) => println!("stopped run {id} (some processes needed SIGKILL)"),
        (true, false) => println!("stopped run {id}"),
    }
    for n in &report.notes {
        println!("note: {n}");
    }
    Ok(0)
}

/// The dashboard needs a terminal on both ends and no machine-readable output.
fn mode(global: &Global, args: &StartArgs, dashboard: bool, logger: &Logger) -> Mode {
    use std::io::IsTerminal;
    if args.detach {
        return Mode::Detach;
    }
    let tui = (dashboard || args.tui) && !args.no_tui && !global.json && !args.check;
    let terminal = std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    if tui && !terminal && args.tui {
        logger.warn("--tui needs a terminal on stdin and stdout; logging instead");
    }
    if tui && terminal {
        Mode::Dashboard
    } else {
        Mode::Foreground
    }
}

fn options(args: &StartArgs) -> Result<Options, Failure> {
    Ok(Options {
        workspace: args.workspace.clone(),
        opencode_host: args.opencode_host.clone(),
        opencode_port: args.opencode_port,
        opencode_username: args.opencode_username.clone(),
        opencode_password: args.opencode_password.clone(),
        openwork_host: args.openwork_host.clone(),
        remote_access: args.remote_access,
        openwork_port: args.openwork_port,
        openwork_token: args.openwork_token.clone(),
        host_token: args.host_token.clone(),
        approval: match args.approval {
            Approval::Manual => run::Approval::Manual,
            Approval::Auto => run::Approval::Auto,
        },
        approval_timeout: args.approval_timeout,
        read_only: args.read_only,
        cors: args.cors.clone(),
        connect_host: args.connect_host.clone(),
        no_owpenbot: args.no_owpenbot,
        owpenbot_required: args.owpenbot_required,
        owpenbot_health_port: args.owpenbot_health_port,
        no_log_requests: args.no_log_requests,
        startup_timeout: args.startup_timeout,
        check: args.check,
        check_events: args.check_events,
        sandbox: (&args.sandbox).into(),
        opencode: opencode_settings(&args.opencode)?,
    })
}

/// OpenCode's settings, or the usage error that refuses them (`--no-opencode-auth`).
pub(super) fn opencode_settings(
    args: &crate::cli::OpenCodeArgs,
) -> Result<crate::host::opencode::OpenCodeSettings, Failure> {
    args.settings()
        .map_err(|message| Failure { message, code: 2 })
}

/// Pairing details on stdout: one JSON object with `--json`, else text.
struct Render {
    json: bool,
    remote_access: bool,
}

impl Render {
    fn pairing(&self, p: &Pairing, note: Option<&str>) {
        let text = if self.json {
            serde_json::to_string(p).expect("pairing serializes") + "\n"
        } else {
            pairing::text(p, self.remote_access, note)
        };
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
        if self.json {
            super::document_printed();
        }
    }
}

impl RunOutput for Render {
    fn ready(&self, pairing: &Pairing, owpenbot_note: Option<&str>) {
        self.pairing(pairing, owpenbot_note);
    }

    fn detached(&self, pairing: &Pairing, run_id: &str, log: &Path) {
        self.pairing(pairing, None);
        if !self.json {
            println!(
                "detached: run {run_id} keeps running; log: {}\nstop it with: openwrk stop --run-id {run_id}",
                log.display()
            );
        }
    }

    fn stopped(&self, run_id: &str) {
        if !self.json {
            println!("stopped run {run_id}");
        }
    }
}
