//! `openwrk daemon run|start|stop|status` and `openwrk instance dispose`: the
//! flags become calls into the host half (`host::daemon`); this module
//! renders what they report.

use std::time::Duration;

use super::Failure;
use crate::cli::{DaemonArgs, DaemonCommand, Global};
use crate::host::daemon::{self, DaemonConfig, DaemonRecord, Launched};

pub async fn run(global: &Global, command: DaemonCommand) -> Result<i32, Failure> {
    match command {
        DaemonCommand::Run(args) => foreground(global, &args).await,
        DaemonCommand::Start(args) if args.foreground => foreground(global, &args).await,
        DaemonCommand::Start(args) => launch(global, &args).await,
        DaemonCommand::Stop(_) => stop(global).await,
        DaemonCommand::Status(_) => status(global).await,
    }
}

fn config(global: &Global, args: &DaemonArgs, run_id: String) -> Result<DaemonConfig, Failure> {
    Ok(DaemonConfig {
        data_dir: super::data_dir(global)?,
        host: args.daemon_host.clone(),
        port: args.daemon_port,
        startup_timeout: Duration::from_secs(args.startup_timeout),
        run_id,
        sandbox: (&args.sandbox).into(),
        opencode: super::start::opencode_settings(&args.opencode)?,
        opencode_workdir: args.opencode_workdir.clone(),
    })
}

fn print_started(global: &Global, record: &DaemonRecord) {
    if global.json {
        println!(
            "{}",
            serde_json::to_string(record).expect("the record serializes")
        );
        super::document_printed();
    } else {
        println!("{}", record.url);
    }
}

/// The daemon itself, in this process.
async fn foreground(global: &Global, args: &DaemonArgs) -> Result<i32, Failure> {
    let run_id = super::run_id(global)?;
    let logger = super::logger(global, &run_id);
    super::logged(global, &logger, async {
        let config = config(global, args, run_id.clone())?;
        let settings = super::settings(global, [args.opencode_bin.clone(), None, None])?;
        let resolver = super::resolver(
            global,
            settings,
            super::progress::Lines::Log(logger.clone()),
        )?;
        let started = |r: &DaemonRecord| print_started(global, r);
        Ok(daemon::run_foreground(&config, resolver, &logger, &started).await?)
    })
    .await
}

/// `daemon start`: in the background, its URL printed once it is ready.
async fn launch(global: &Global, args: &DaemonArgs) -> Result<i32, Failure> {
    // The background daemon inherits this id, so every record of the daemon,
    // from this process's and from its own, carries the same one.
    let run_id = super::run_id(global)?;
    let logger = super::logger(global, &run_id);
    let config = config(global, args, run_id)?;
    let settings = super::settings(global, [args.opencode_bin.clone(), None, None])?;
    let resolver = super::resolver(
        global,
        settings,
        super::progress::Lines::Log(logger.clone()),
    )?;
    match daemon::launch(&config, &resolver, &logger).await? {
        Launched::Started(r) | Launched::AlreadyRunning(r) => {
            print_started(global, &r);
            Ok(0)
        }
        Launched::Interrupted(code) => Ok(code),
    }
}

async fn stop(global: &Global) -> Result<i32, Failure> {
    let data_dir = super::data_dir(global)?;
    let s = daemon::stop(&data_dir).await?;
    let r = &s.record;
    if global.json {
        let state = if s.was_running { "stopped" } else { "gone" };
        println!(
            "{}",
            serde_json::json!({ "state": state, "pid": r.pid, "url": r.url, "notes": s.notes })
        );
        return Ok(0);
    }
    if s.was_running {
        let with_oc = r
            .opencode
            .pid
            .map_or_else(String::new, |p| format!(" and its OpenCode (pid {p})"));
        let how = if s.needed_sigkill {
            " (it needed SIGKILL)"
        } else {
            ""
        };
        println!("stopped the daemon (pid {}){with_oc}{how}", r.pid);
    } else {
        println!(
            "note: the daemon (pid {}) was no longer running; removed its record",
            r.pid
        );
    }
    for n in &s.notes {
        println!("note: {n}");
    }
    Ok(0)
}

/// The record plus live health; exit 1 unless all is well.
async fn status(global: &Global) -> Result<i32, Failure> {
    let data_dir = super::data_dir(global)?;
    let s = match daemon::status(&data_dir).await {
        Ok(s) => s,
        Err(e) if global.json => {
            let message = e.to_string();
            println!(
                "{}",
                serde_json::json!({ "running": false, "dataDir": data_dir, "message": message.lines().next() })
            );
            return Ok(1);
        }
        Err(e) => return Err(e.into()),
    };
    let (record, oc) = (&s.record, &s.opencode);
    if global.json {
        let doc = serde_json::json!({
            "running": true,
            "healthy": s.healthy(),
            "pid": record.pid,
            "url": record.url,
            "startedAt": record.started_at,
            "version": record.version,
            "dataDir": record.data_dir,
            "log": record.log,
            "error": s.health.as_ref().err(),
            "workspaces": s.workspaces.as_ref().ok(),
            "opencode": {
                "pid": oc.pid,
                "port": oc.port,
                "url": oc.url,
                "version": oc.version,
                "binary": oc.binary,
                "healthy": s.opencode_healthy,
                "restarts": oc.restarts,
                "lastExit": oc.last_exit,
            },
            "sandbox": record.sandbox,
        });
        println!("{doc}");
    } else {
        let daemon_state = match &s.health {
            Ok(()) => "running".to_string(),
            Err(e) => format!("not answering ({e})"),
        };
        let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        println!(
            "daemon      {daemon_state}, pid {}, {}, since {}",
            record.pid, record.url, record.started_at
        );
        println!(
            "opencode    {}, pid {}, {}, version {}",
            if s.opencode_healthy {
                "healthy"
            } else {
                "unhealthy"
            },
            dash(oc.pid.map(|p| p.to_string())),
            dash(oc.url.clone()),
            dash(oc.version.clone())
        );
        let last = oc.last_exit.as_ref().map_or_else(String::new, |l| {
            format!(" (last exit: {} at {})", l.status, l.at)
        });
        println!("restarts    {}{last}", oc.restarts);
        println!("sandbox     {}", record.sandbox.describe());
        match &s.workspaces {
            Ok(n) => println!("workspaces  {n} (`openwrk workspace list`)"),
            Err(e) => println!("workspaces  {e}"),
        }
        if let Some(log) = &record.log {
            println!("log         {}", log.display());
        }
    }
    Ok(if s.healthy() { 0 } else { 1 })
}

/// `instance dispose ID`: asks the running daemon to release OpenCode's instance.
pub async fn dispose(global: &Global, id: &str) -> Result<i32, Failure> {
    let data_dir = super::data_dir(global)?;
    let d = daemon::dispose(&data_dir, id).await?;
    if global.json {
        println!(
            "{}",
            serde_json::json!({ "id": d.id, "opencode": d.answer })
        );
    } else {
        let path = d
            .path
            .map(|p| format!(" ({})", p.display()))
            .unwrap_or_default();
        println!("disposed OpenCode's instance of {id}{path}: {}", d.answer);
    }
    Ok(0)
}
