//! The command line explains itself: every flag and argument of every
//! subcommand has a help line, and `--json` means the same on every command
//! (print JSON; a file is `--json-out FILE`). Walks the binary's own parser
//! (`emotionet::cli::Cli`), so a new flag without a help line fails here.

mod cli_support;

use clap::CommandFactory;
use cli_support::emotionet;

/// Every argument below `cmd`, as ("emotionet sub ... --flag", arg).
fn walk<'a>(cmd: &'a clap::Command, path: &str, out: &mut Vec<(String, &'a clap::Arg)>) {
    for arg in cmd.get_arguments() {
        let name = arg.get_long().map(|l| format!("--{l}")).unwrap_or_else(|| format!("<{}>", arg.get_id()));
        out.push((format!("{path} {name}"), arg));
    }
    for sub in cmd.get_subcommands() {
        walk(sub, &format!("{path} {}", sub.get_name()), out);
    }
}

fn all_arguments(cmd: &clap::Command) -> Vec<(String, &clap::Arg)> {
    let mut out = Vec::new();
    walk(cmd, "emotionet", &mut out);
    out
}

#[test]
fn every_flag_and_argument_has_a_help_line() {
    let cmd = emotionet::cli::Cli::command();
    let args = all_arguments(&cmd);
    assert!(args.len() > 100, "the walk found only {} arguments", args.len());
    let missing: Vec<_> = args
        .iter()
        .filter(|(_, a)| !["help", "version"].contains(&a.get_id().as_str()))
        .filter(|(_, a)| a.get_help().is_none_or(|h| h.to_string().trim().is_empty()))
        .map(|(name, _)| name.clone())
        .collect();
    assert!(missing.is_empty(), "arguments without a help line:\n{}", missing.join("\n"));
}

#[test]
fn json_is_a_switch_everywhere_and_a_file_is_json_out() {
    let cmd = emotionet::cli::Cli::command();
    let args = all_arguments(&cmd);
    let json: Vec<_> = args.iter().filter(|(_, a)| a.get_long() == Some("json")).collect();
    for cmd in ["devices", "eval", "predict", "bench", "data prep"] {
        assert!(json.iter().any(|(n, _)| *n == format!("emotionet {cmd} --json")), "emotionet {cmd} has no --json");
    }
    for (name, arg) in &json {
        assert!(!arg.get_action().takes_values(), "{name} takes a value; --json must only switch JSON output on");
    }
    for (name, arg) in args.iter().filter(|(_, a)| a.get_long().is_some_and(|l| l.starts_with("json") && l != "json")) {
        assert_eq!(arg.get_long(), Some("json-out"), "{name}: a JSON file is --json-out FILE");
        assert!(arg.get_action().takes_values(), "{name} must take a FILE");
    }
}

/// The help the binary prints carries the lines the parser holds (one flag
/// from each of the formerly empty ones, through the real binary).
#[test]
fn help_text_reaches_the_binary_output() {
    for (sub, flag, words) in [
        (&["cloud", "status"][..], "--zone", "zone whose TPU VMs"),
        (&["cloud", "up"][..], "--subnetwork", "VPC subnetwork"),
        (&["data", "synth"][..], "--seed", "Seed of the drawing"),
        (&["data", "prep"][..], "--split-seed", "split by identity"),
    ] {
        let out = emotionet(&[sub, &["--help"]].concat());
        assert!(out.status.success());
        let help = String::from_utf8_lossy(&out.stdout);
        let at = help.find(flag).unwrap_or_else(|| panic!("{flag} missing from {sub:?} --help:\n{help}"));
        assert!(help[at..].contains(words), "{sub:?} {flag}: {help}");
    }
}
