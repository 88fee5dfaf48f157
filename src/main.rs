//! The `openwrk` binary: parse the command line, run the command, map errors
//! to SPEC §9 exit codes.

use clap::Parser;
use openwrk::cli::{Cli, Command, InstanceCommand, Lazy};
use openwrk::commands::{self, Failure};

fn main() {
    // The process guardian (SPEC §5.1) starts before clap and tokio: it must
    // be up in a millisecond and must not touch openwrk's arguments.
    #[cfg(unix)]
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(openwrk::host::guardian::ARG))
    {
        openwrk::host::guardian::run(std::env::args_os().skip(2));
    }
    // Upstream's variable names count as ours (see cli::upstream).
    openwrk::cli::upstream::apply_env_aliases();
    let cli = Cli::parse_from(openwrk::cli::upstream::normalize_args(
        std::env::args_os().collect(),
    ));
    // Worker threads cost a quick command (a listing, a state-file edit, a
    // request to the daemon) a good share of its few milliseconds; only the
    // commands that download, hash or supervise get them.
    let mut runtime = if needs_workers(&cli.command) {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = runtime.enable_all().build().expect("tokio runtime");
    let json = cli.global.json;
    let code = runtime.block_on(run(cli)).unwrap_or_else(|f| {
        // With --json a failure is the one JSON document on stdout too.
        if json {
            commands::print_json_failure(&f);
        }
        // Messages quote manifests, URLs and child output: never a credential or control sequence.
        eprintln!("error: {}", openwrk::sanitize::for_output(&f.message));
        f.code
    });
    std::process::exit(code);
}

fn needs_workers(command: &Command) -> bool {
    use openwrk::cli::SidecarsCommand;
    match command {
        Command::Sidecars(c) => {
            !matches!(**c, SidecarsCommand::List | SidecarsCommand::Prune { .. })
        }
        Command::Start(_) | Command::Serve(_) | Command::Daemon(_) => true,
        _ => false,
    }
}

async fn run(cli: Cli) -> Result<i32, Failure> {
    match cli.command {
        Command::Sidecars(command) => commands::sidecars::run(&cli.global, command.0).await,
        Command::Start(args) => commands::start::run(&cli.global, args.0, true).await,
        Command::Serve(args) => commands::start::run(&cli.global, args.0, false).await,
        Command::Stop { run_id } => commands::start::stop(&cli.global, run_id).await,
        Command::Daemon(command) => commands::daemon::run(&cli.global, command.0).await,
        Command::Workspace(command) => commands::workspace::run(&cli.global, command.0).await,
        Command::Instance(Lazy(InstanceCommand::Dispose { id })) => {
            commands::daemon::dispose(&cli.global, &id).await
        }
        Command::Approvals(command) => commands::approvals::run(&cli.global, command.0).await,
        Command::Status(args) => commands::status::run(&cli.global, args.0).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            use std::io::Write;
            // Into a buffer first: `openwrk completions bash | head` must not panic on a closed pipe.
            let mut script = Vec::new();
            openwrk::cli::build_eagerly();
            clap_complete::generate(shell, &mut Cli::command(), "openwrk", &mut script);
            if cli.global.json {
                let script = String::from_utf8_lossy(&script);
                let doc = serde_json::json!({ "shell": shell.to_string(), "script": script });
                println!("{doc}");
            } else {
                let _ = std::io::stdout().write_all(&script);
            }
            Ok(0)
        }
    }
}
