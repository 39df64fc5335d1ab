//! How an error is told on one line, for logs, `te/errors` and operation reasons: the error and
//! its causes, `a: b: c` (what `{:#}` gives for `anyhow`, below the binary, where there is none).

use std::error::Error;

/// The error and its sources, `: `-separated.
pub fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read /x")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn an_error_is_told_with_its_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        assert_eq!(chain(&Outer(io)), "cannot read /x: no such file");
        assert_eq!(
            chain(&std::fmt::Error),
            "an error occurred when formatting an argument"
        );
    }
}
