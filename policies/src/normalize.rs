//! Path normalization, the step between reading a request and authorizing it: the path a
//! policy is matched against, and the path the app receives, are the same [`RoutePath`].
//!
//! Without it, `/public/%2E%2E/private` or `/public/../private` would match an ALLOW rule for
//! `/public/*` while the app serves `/private`. The steps, in order:
//! 1. split off the query (kept, never matched; RFC 3986 §3.4) and refuse a fragment;
//! 2. refuse backslashes, control characters, spaces and non-ASCII bytes;
//! 3. decode percent-encoded unreserved characters (RFC 3986 §2.3, §6.2.2.2), normalize other
//!    escapes to uppercase hex (§6.2.2.1), and refuse `%2F` / `%5C` (an encoded `/` or `\`
//!    would mean one thing to us and another to the app) and malformed escapes;
//! 4. merge duplicate slashes and remove dot segments (RFC 3986 §5.2.4), refusing a path that
//!    climbs above the root instead of clamping it.
//!
//! Also refused, because servers behind the sidecar read them differently from us: `%00` (C
//! code stops there), double encoding (`%25` followed by two hex digits: an app or framework
//! that decodes twice sees another path), escapes that are not UTF-8 (decoders disagree on
//! them), and `;` path parameters (RFC 3986 §3.3): Tomcat and Spring drop `;...` from each
//! segment before routing, so `/public/..;/admin` is `/admin` to them and a path under
//! `/public` to a plain matcher. With `path_parameters: strip` in `mesh.yaml` ([`PathParameters`])
//! `;` is accepted for apps that use matrix parameters: policies then match the path with the
//! parameter part of every segment removed (as those servers route), the app still receives
//! the parameters, and a parameter on a dot or empty segment (`/..;/`, `/.;x/`, `/;x/`) is
//! still refused (Tomcat reads `..;x` as `..`).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::registry::split_once_byte;

/// Why a request path was refused (the proxy answers `400`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/` (origin form, RFC 9112 §3.2.1).
    #[error("path must start with '/'")]
    NotAbsolute,
    /// `%2F` or `%5C`: an encoded slash or backslash.
    #[error("path contains an encoded slash or backslash (%2F or %5C)")]
    EncodedSlash,
    /// A `%` not followed by two hex digits.
    #[error("path contains a malformed percent escape")]
    MalformedEscape,
    /// A raw backslash.
    #[error("path contains a backslash")]
    Backslash,
    /// A fragment (`#`), which clients never send.
    #[error("path contains a fragment ('#')")]
    Fragment,
    /// A control character, space or non-ASCII byte.
    #[error("path contains a character that must be percent-encoded")]
    BadCharacter,
    /// `..` segments climb above `/`.
    #[error("path climbs above the root")]
    AboveRoot,
    /// A `;` path parameter, with `path_parameters: reject` (the default).
    #[error("path contains a ';' path parameter")]
    PathParameter,
    /// A path parameter on a `.`, `..` or empty segment (`/..;/`), refused in every mode.
    #[error("path contains a ';' parameter on a dot or empty segment")]
    DotSegmentParameter,
    /// `%00`.
    #[error("path contains an encoded NUL (%00)")]
    EncodedNul,
    /// `%25` followed by two hex digits (`%252F`).
    #[error("path contains a double-encoded escape (%25 followed by two hex digits)")]
    DoubleEncoding,
    /// Percent-escapes whose bytes are not valid UTF-8.
    #[error("path contains percent-escapes that are not valid UTF-8")]
    InvalidUtf8,
}

/// What the sidecar does with `;` path parameters (`mesh.yaml` `path_parameters`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathParameters {
    /// Refuse any `;` in the path with `400` (the default).
    #[default]
    Reject,
    /// Accept them; policies match each segment without its `;...` part, the app receives them.
    Strip,
}

/// A normalized request path (always starts with `/`, has no `.`/`..` segments, no `//`, no
/// encoded unreserved characters), and the query that came with it, kept aside.
///
/// Only [`normalize_path`] makes one, so code that takes a `&RoutePath` cannot forget to
/// normalize.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoutePath {
    /// `path` or `path?query`.
    full: String,
    /// Where the path ends in `full`.
    path_len: usize,
    /// With `path_parameters: strip` and parameters present: the path without them.
    matched: Option<Box<str>>,
}

impl RoutePath {
    /// The normalized path, without the query (and without `;` parameters, which only
    /// `path_parameters: strip` lets through): what policies match.
    pub fn as_str(&self) -> &str {
        self.matched
            .as_deref()
            .unwrap_or_else(|| &self.full[..self.path_len])
    }

    /// The query, without its `?`, as the client sent it.
    pub fn query(&self) -> Option<&str> {
        self.full
            .get(self.path_len + 1..)
            .filter(|_| self.full.len() > self.path_len)
    }

    /// `path?query` (or the path alone): the request target to forward to the app.
    pub fn path_and_query(&self) -> &str {
        &self.full
    }
}

impl fmt::Display for RoutePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RoutePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoutePath({:?})", self.full)
    }
}

/// Reads the forwarded form back (`path_parameters: strip` accepts every path the default
/// accepts and gives the same result for them).
impl TryFrom<String> for RoutePath {
    type Error = PathError;
    fn try_from(s: String) -> Result<Self, PathError> {
        normalize_path_with(&s, PathParameters::Strip)
    }
}

impl From<RoutePath> for String {
    fn from(p: RoutePath) -> String {
        p.full
    }
}

/// Normalizes a request target in origin form (`/path?query`) with `;` path parameters
/// refused; see the module docs for the steps. Normalizing a normalized path changes nothing.
pub fn normalize_path(raw: &str) -> Result<RoutePath, PathError> {
    normalize_path_with(raw, PathParameters::Reject)
}

/// [`normalize_path`], with `;` path parameters handled as `params` says.
pub fn normalize_path_with(raw: &str, params: PathParameters) -> Result<RoutePath, PathError> {
    let (path, query) = match split_once_byte(raw, b'?') {
        Some((p, q)) => (p, Some(q)),
        None => (raw, None),
    };
    if raw.as_bytes().contains(&b'#') {
        return Err(PathError::Fragment);
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = decode_unreserved(path)?;
    let mut out = String::with_capacity(decoded.len() + query.map_or(0, |q| q.len() + 1));
    // (segment as forwarded, segment as matched)
    let mut segments: Vec<(&str, &str)> = Vec::new();
    let mut last = "";
    for seg in decoded.split('/').skip(1) {
        last = seg;
        let name = match split_once_byte(seg, b';') {
            None => seg,
            Some(_) if params == PathParameters::Reject => return Err(PathError::PathParameter),
            // Tomcat reads `..;x` as `..`: a dot segment we would keep and it would climb.
            Some(("" | "." | "..", _)) => return Err(PathError::DotSegmentParameter),
            Some((name, _)) => name,
        };
        match seg {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            _ => segments.push((seg, name)),
        }
    }
    // A path that ends in `/`, `/.` or `/..` names a directory: keep its trailing slash.
    let trailing = matches!(last, "" | "." | "..") && !segments.is_empty();
    let join = |matched: bool, out: &mut String| {
        for (forwarded, name) in &segments {
            out.push('/');
            out.push_str(if matched { name } else { forwarded });
        }
        if segments.is_empty() || trailing {
            out.push('/');
        }
    };
    join(false, &mut out);
    // Only the segments that remain count (`/a;x/..` is `/`, with nothing stripped).
    let has_params = segments.iter().any(|(f, n)| f.len() != n.len());
    let matched = has_params.then(|| {
        let mut m = String::with_capacity(out.len());
        join(true, &mut m);
        m.into_boxed_str()
    });
    let path_len = out.len();
    if let Some(q) = query {
        if q.bytes().any(|b| b <= b' ' || b >= 0x7f) {
            return Err(PathError::BadCharacter);
        }
        out.push('?');
        out.push_str(q);
    }
    Ok(RoutePath {
        full: out,
        path_len,
        matched,
    })
}

/// RFC 3986 §2.3: ALPHA / DIGIT / "-" / "." / "_" / "~".
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes escapes of unreserved characters, uppercases the hex of the others, and refuses
/// what must not appear in a path we authorize.
fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    // The bytes of consecutive escapes of non-ASCII bytes, which must form UTF-8 characters.
    let mut high: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let escaped = if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_value);
            let lo = bytes.get(i + 2).copied().and_then(hex_value);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(PathError::MalformedEscape);
            };
            Some((hi, lo))
        } else {
            None
        };
        if escaped.is_none_or(|(hi, _)| hi < 8) && !high.is_empty() {
            std::str::from_utf8(&high).map_err(|_| PathError::InvalidUtf8)?;
            high.clear();
        }
        match escaped {
            Some((hi, lo)) => {
                let decoded = hi << 4 | lo;
                match decoded {
                    b'/' | b'\\' => return Err(PathError::EncodedSlash),
                    0 => return Err(PathError::EncodedNul),
                    0x80.. => high.push(decoded),
                    _ => {}
                }
                if is_unreserved(decoded) {
                    out.push(char::from(decoded));
                } else {
                    out.push('%');
                    out.push(char::from(b"0123456789ABCDEF"[usize::from(hi)]));
                    out.push(char::from(b"0123456789ABCDEF"[usize::from(lo)]));
                }
                i += 3;
            }
            None if b == b'\\' => return Err(PathError::Backslash),
            None if b <= b' ' || b >= 0x7f => return Err(PathError::BadCharacter),
            None => {
                out.push(char::from(b));
                i += 1;
            }
        }
    }
    std::str::from_utf8(&high).map_err(|_| PathError::InvalidUtf8)?;
    // Checked on the result, so that `%25%34%31` (which becomes `%2541`) is caught too.
    let o = out.as_bytes();
    let double = (0..o.len().saturating_sub(4)).any(|j| {
        &o[j..j + 3] == b"%25" && hex_value(o[j + 3]).is_some() && hex_value(o[j + 4]).is_some()
    });
    if double {
        return Err(PathError::DoubleEncoding);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
