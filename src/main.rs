//! The `reconcile` binary: parses the command line, sets up logging and the async runtime, and runs
//! the command.

use std::process::ExitCode;

use reconcile::cli::{Cli, Command, LogFormat};
use reconcile::commands::{self, Exit};

fn main() -> ExitCode {
    let cli = reconcile::cli::parse();
    init_tracing(&cli);
    reconcile::manifest::set_default_options(reconcile::manifest::Options {
        allow_code_from: cli.global.allow_code_from.clone(),
        variables: reconcile::manifest::variables::Inputs {
            vars: cli.global.vars.var.clone(),
            var_files: cli.global.vars.var_file.clone(),
            env: reconcile::manifest::variables::Inputs::from_env(),
        },
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(Exit::Error as u8);
        }
    };
    let exit = runtime.block_on(commands::run(cli));
    // A blocking read left running (a manifest on a hung file system, see watch::sources) must not keep
    // the process alive once the command is done.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    ExitCode::from(exit as u8)
}

/// Log targets whose trace level holds request and answer bodies.
const WIRE_LOGS: &[&str] = &[
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_smithy_http_client",
    "aws_smithy_types",
    "aws_sdk_lambda",
    "hyper",
    "hyper_util",
    "h2",
];

fn init_tracing(cli: &Cli) {
    let g = &cli.global;
    // The watcher's log is its output: info by default.
    let daemon = matches!(cli.command, Command::Watch(_));
    let default = match (g.quiet, g.verbose) {
        (true, _) => "error",
        (_, 0) if daemon => "info,aws_smithy_runtime=warn,aws_config=warn,sqlx=warn",
        (_, 0) => "warn",
        (_, 1) => "info,aws_smithy_runtime=warn,aws_config=warn,sqlx=warn",
        _ => "debug,hyper=info,h2=info,rustls=info",
    };
    let from_env = tracing_subscriber::EnvFilter::try_from_default_env().ok();
    let capped = from_env.is_some();
    let mut filter = from_env.unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default));
    // The SDK's and the HTTP stack's trace level prints requests and answers as sent, secret values
    // included (a function's environment): never above debug, whatever RUST_LOG says (the defaults
    // never go there).
    for target in WIRE_LOGS.iter().filter(|_| capped) {
        if let Ok(cap) = format!("{target}=debug").parse() {
            filter = filter.add_directive(cap);
        }
    }
    // Colours only on a terminal (not in a file or the journal), and never with NO_COLOR.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).with_ansi(ansi);
    let _ = match g.log_format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).with_span_list(false).try_init(),
    };
}
