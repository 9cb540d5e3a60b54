//! How an error is shown to a person: the message and each cause, once.
//!
//! Our library errors (thiserror) put their cause's text in their own
//! message (`cannot write {path}: {source}`), so that a log line with just
//! `{e}` says everything, and also return that cause from `source()`, so
//! that callers can inspect it (a full disk, a broken pipe). anyhow's
//! alternate form (`{e:#}`) prints every message of the chain, which then
//! says the OS error twice: "cannot write x: No space left on device (os
//! error 28): No space left on device (os error 28)". [`chain_text`] walks
//! the same chain but leaves out a cause whose text is already said.

/// `e` and its causes joined by ": ", each text once. Use it wherever an
/// error is shown to a person or stored in a record: an `anyhow::Error`
/// (`chain_text(&*e)`) or a client library's error, whose top-level message
/// is often terse and whose cause says what happened. The one helper of
/// its kind in the crate.
pub fn chain_text(e: &dyn std::error::Error) -> String {
    let mut text = String::new();
    let mut cause = Some(e);
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot write {path}: {source}")]
    struct WriteError {
        path: String,
        source: std::io::Error,
    }

    #[test]
    fn an_os_error_inside_a_message_is_said_once() {
        let os = std::io::Error::from_raw_os_error(28);
        let os_text = os.to_string();
        let e = anyhow::Error::new(WriteError { path: "ckpt.tmp".into(), source: os }).context("saving the checkpoint");
        assert_eq!(format!("{e:#}").matches(&os_text).count(), 2, "anyhow's own chain says it twice");
        let text = chain_text(&*e);
        assert_eq!(text, format!("saving the checkpoint: cannot write ckpt.tmp: {os_text}"));
    }

    #[test]
    fn causes_not_yet_said_are_kept_in_order() {
        let e = anyhow::Error::new(std::io::Error::other("disk gone")).context("reading x").context("loading the model");
        assert_eq!(chain_text(&*e), "loading the model: reading x: disk gone");
    }
}
