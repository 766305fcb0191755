//! The `composefs` binary: parse arguments, run, print errors.

fn main() -> std::process::ExitCode {
    composefs::cli::main()
}
