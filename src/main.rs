use std::process::ExitCode;

fn main() -> ExitCode {
    pingscope::cli::main()
}
