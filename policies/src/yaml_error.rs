//! Turning serde_yaml errors into diagnostics: the position comes from the error's
//! `location()`, the message loses serde_yaml's own " at line N column M" (the diagnostic puts
//! the position in front), and errors about fields trustmesh deliberately does not implement
//! are reworded to say so, naming the field.

/// Fields of Istio's `AuthorizationPolicy` that trustmesh refuses, with the reason.
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "provider",
        "CUSTOM authorization providers are not supported",
    ),
    (
        "requestPrincipals",
        "JWT request principals are not supported (trustmesh does no request authentication)",
    ),
    (
        "notRequestPrincipals",
        "JWT request principals are not supported (trustmesh does no request authentication)",
    ),
    (
        "remoteIpBlocks",
        "remoteIpBlocks (X-Forwarded-For) is not supported; use ipBlocks",
    ),
    (
        "notRemoteIpBlocks",
        "notRemoteIpBlocks (X-Forwarded-For) is not supported; use notIpBlocks",
    ),
    (
        "targetRef",
        "targetRef is not supported; select workloads with selector.matchLabels",
    ),
    (
        "targetRefs",
        "targetRefs is not supported; select workloads with selector.matchLabels",
    ),
    (
        "matchExpressions",
        "selector.matchExpressions is not supported; use matchLabels",
    ),
];

/// The (line, column) relative to the parsed text, and the message, of a serde_yaml error.
pub(crate) fn describe(err: &serde_yaml::Error) -> (usize, usize, String) {
    let (line, col) = err.location().map_or((1, 1), |l| (l.line(), l.column()));
    (line, col, reword(&strip_positions(&err.to_string())))
}

/// Removes every " at line N column M" and " at position N" from a message.
fn strip_positions(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find(" at ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 4..];
        if let Some(skip) = position_len(after) {
            rest = &after[skip..];
        } else {
            out.push_str(" at ");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The length of a leading `line N column M` or `position N`, if `s` starts with one.
fn position_len(s: &str) -> Option<usize> {
    fn digits(s: &str) -> usize {
        s.bytes().take_while(u8::is_ascii_digit).count()
    }
    if let Some(r) = s.strip_prefix("line ") {
        let n = digits(r);
        let r2 = r[n..].strip_prefix(" column ")?;
        let m = digits(r2);
        (n > 0 && m > 0).then_some(5 + n + 8 + m)
    } else if let Some(r) = s.strip_prefix("position ") {
        let n = digits(r);
        (n > 0).then_some(9 + n)
    } else {
        None
    }
}

/// Rewords "unknown field `X`" for deliberately unsupported fields and "unknown variant
/// `CUSTOM`" for the CUSTOM action; other messages pass through.
fn reword(msg: &str) -> String {
    let (prefix, body) = match msg.find(": ") {
        Some(i) if !msg[..i].contains(' ') => (&msg[..i + 2], &msg[i + 2..]),
        _ => ("", msg),
    };
    if let Some(field) = between(body, "unknown field `", "`") {
        if let Some((_, why)) = UNSUPPORTED.iter().find(|(f, _)| *f == field) {
            return format!("{prefix}unsupported field `{field}`: {why}");
        }
    }
    if between(body, "unknown variant `", "`") == Some("CUSTOM") {
        return format!("{prefix}unsupported action CUSTOM: external authorizers are not supported; use ALLOW, DENY or AUDIT");
    }
    msg.to_string()
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = s.find(start)? + start.len();
    let len = s[from..].find(end)?;
    Some(&s[from..from + len])
}

#[cfg(test)]
mod tests;
