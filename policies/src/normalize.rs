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

use std::fmt;

use serde::{Deserialize, Serialize};

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
}

impl RoutePath {
    /// The normalized path, without the query: what policies match.
    pub fn as_str(&self) -> &str {
        &self.full[..self.path_len]
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

impl TryFrom<String> for RoutePath {
    type Error = PathError;
    fn try_from(s: String) -> Result<Self, PathError> {
        normalize_path(&s)
    }
}

impl From<RoutePath> for String {
    fn from(p: RoutePath) -> String {
        p.full
    }
}

/// Normalizes a request target in origin form (`/path?query`); see the module docs for the
/// steps. Normalizing a normalized path changes nothing.
pub fn normalize_path(raw: &str) -> Result<RoutePath, PathError> {
    let (path, query) = match raw.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (raw, None),
    };
    if raw.contains('#') {
        return Err(PathError::Fragment);
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = decode_unreserved(path)?;
    let mut out = String::with_capacity(decoded.len() + query.map_or(0, |q| q.len() + 1));
    let mut segments: Vec<&str> = Vec::new();
    let mut last = "";
    for seg in decoded.split('/').skip(1) {
        last = seg;
        match seg {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            _ => segments.push(seg),
        }
    }
    // A path that ends in `/`, `/.` or `/..` names a directory: keep its trailing slash.
    let trailing = matches!(last, "" | "." | "..") && !segments.is_empty();
    for seg in &segments {
        out.push('/');
        out.push_str(seg);
    }
    if segments.is_empty() || trailing {
        out.push('/');
    }
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
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_value);
                let lo = bytes.get(i + 2).copied().and_then(hex_value);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::MalformedEscape);
                };
                let decoded = hi << 4 | lo;
                if decoded == b'/' || decoded == b'\\' {
                    return Err(PathError::EncodedSlash);
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
            b'\\' => return Err(PathError::Backslash),
            _ if b <= b' ' || b >= 0x7f => return Err(PathError::BadCharacter),
            _ => {
                out.push(char::from(b));
                i += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
