//! The `stallwatch` binary: parse arguments, run the subcommand, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser as _;
use tracer_user::{
    cli::{Cli, Command},
    profile, replay, watch,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Profile(args) => profile::run(args)
            .map(|()| 0)
            .map_err(|e| (e.exit_code(), Box::new(e) as Box<dyn std::error::Error>)),
        Command::Watch(args) => watch::run(args)
            .map(|found| found.exit_code())
            .map_err(|e| (e.exit_code(), Box::new(e) as Box<dyn std::error::Error>)),
        Command::Report(args) => replay::run(args)
            .map(|()| 0)
            .map_err(|e| (e.exit_code(), Box::new(e) as Box<dyn std::error::Error>)),
    };
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err((code, err)) => {
            eprintln!("{}", one_line(err.as_ref()));
            ExitCode::from(code as u8)
        }
    }
}

/// `stallwatch: error: WHAT: CAUSE: CAUSE`, one line. stallwatch's errors never repeat their
/// cause in their own message; a cause some library already printed in its message (aya's
/// `EbpfError::MapError` does) is not printed twice.
fn one_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut message = format!("stallwatch: error: {err}");
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}
