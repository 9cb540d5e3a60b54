//! The `emotionet` binary: parse the command line, run, map errors to exit
//! codes (0 ok, 1 the work failed, 2 bad usage). Everything else is in `cli`.

fn main() -> std::process::ExitCode {
    emotionet::cli::main()
}
