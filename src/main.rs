//! The binary: parse the command line, hand it to the library, exit with its status.

use std::process::ExitCode;

use clap::Parser as _;
use clap::error::ErrorKind;
use pingscope::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => pingscope::exit::EXIT_OK,
                _ => pingscope::exit::EXIT_USAGE,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    ExitCode::from(match cli.command {
        Command::Ping(args) => pingscope::ping::main(args.into_options()),
        Command::Trace(args) => pingscope::trace::main(args.into_options()),
        Command::Serve(args) => pingscope::app::main(*args),
        Command::CheckConfig { file } => pingscope::app::check_config(&file),
    })
}
