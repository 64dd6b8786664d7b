//! The `stallwatch` binary: parse arguments, run the subcommand, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser as _;
use tracer_user::{
    cli::{Cli, Command},
    profile,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Profile(args) => profile::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let mut message = format!("stallwatch: error: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                let cause = cause.to_string();
                if !message.contains(&cause) {
                    message.push_str(": ");
                    message.push_str(&cause);
                }
                source = cause_of(source);
            }
            eprintln!("{message}");
            ExitCode::from(err.exit_code() as u8)
        }
    }
}

fn cause_of<'a>(
    e: Option<&'a (dyn std::error::Error + 'static)>,
) -> Option<&'a (dyn std::error::Error + 'static)> {
    e.and_then(std::error::Error::source)
}
