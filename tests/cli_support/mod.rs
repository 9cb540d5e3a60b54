//! Running the real `emotionet` binary from a test. The command line, exit
//! status and output are echoed into the test's log, so a failing assertion
//! shows what the binary said.
#![allow(dead_code)]

use std::process::{Command, Output};

/// The binary under test, not yet given arguments.
pub fn command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_emotionet"))
}

/// Runs `emotionet ARGS` to completion.
pub fn emotionet(args: &[&str]) -> Output {
    output(command().args(args))
}

/// Runs a prepared command (extra environment, working folder) to completion.
pub fn output(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run emotionet");
    show(cmd, &out);
    out
}

/// Echoes a finished command into the test's log.
pub fn show(cmd: &Command, out: &Output) {
    let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
    eprintln!("$ emotionet {}\n--- exit {:?}\n--- stdout\n{}--- stderr\n{}", args.join(" "), out.status.code(), text(&out.stdout), text(&out.stderr));
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
