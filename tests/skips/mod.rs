//! Saying, visibly, that a test did not run its check.
//!
//! libtest hides what a passing test prints, so a test that returned early
//! looked like a pass. These write one line straight to the process's
//! stderr (not through `eprintln!`, which the harness captures).
//!
//! A dependency that `make test` installs (libtpu, its wheel) is different
//! from a capability of the machine (`/dev/full`, `chattr +i`): under
//! `make test` (which sets EMOTIONET_MAKE_TEST=1) or on CI (`CI=true`) its
//! absence is a failure, since `make test` was supposed to install it.
#![allow(dead_code)]

use std::io::Write;

/// Whether a dependency that `make test` installs must be present: under
/// `make test` (EMOTIONET_MAKE_TEST=1) or CI (CI=true or 1).
pub fn dependencies_required() -> bool {
    let set = |name: &str, values: &[&str]| std::env::var(name).is_ok_and(|v| values.contains(&v.as_str()));
    set("EMOTIONET_MAKE_TEST", &["1"]) || set("CI", &["true", "1"])
}

/// `what` (which `install` puts in place, and `make test` runs first) is
/// missing: a failure under `make test` or CI, elsewhere one line saying
/// which test was skipped and why.
pub fn missing_dependency(test: &str, what: &str, install: &str) {
    if dependencies_required() {
        panic!("{test}: {what} is missing, and `make test` installs it first ({install}); under `make test` or CI=true that is a failure, not a skip");
    }
    say(&format!("SKIPPED {test}: {what} is missing ({install}; `make test` runs it first)"));
}

/// This machine cannot run part of a test (`/dev/full`, `chattr +i`):
/// one line saying which part was skipped and why.
pub fn not_on_this_machine(test: &str, why: &str) {
    say(&format!("SKIPPED {test}: {why}"));
}

fn say(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
