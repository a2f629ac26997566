//! The matchers that policy values compile to: Istio's string patterns (exact, `prefix*`,
//! `*suffix`, `*`), path patterns (the same plus the `{*}` / `{**}` templates), and IP blocks.
//! Every pattern is checked when the policy folder is loaded; a pattern Istio would silently
//! treat as a literal that can never match (a `*` in the middle) is an error here.
//!
//! Matching allocates nothing: the request side is always a borrowed `&str`.

use std::net::IpAddr;

/// Why a pattern is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern is empty.
    #[error("empty pattern")]
    Empty,
    /// `*` somewhere other than the start or the end.
    #[error("`*` is only allowed alone, at the start (`*suffix`) or at the end (`prefix*`)")]
    InnerWildcard,
    /// A path pattern that does not start with `/` (or `*`).
    #[error("a path pattern starts with '/' (or is `*` / `*suffix`)")]
    PathNotAbsolute,
    /// A path pattern with a query.
    #[error("the query is not part of the path; remove `?...` from the pattern")]
    PathQuery,
    /// A path pattern that is not normalized, so no normalized request path could match it.
    #[error("path pattern is not normalized ({0}); requests are matched after normalization, so it could never match")]
    PathNotNormalized(&'static str),
    /// A malformed `{*}` / `{**}` template.
    #[error("bad path template: {0}")]
    Template(&'static str),
    /// A host pattern with a port.
    #[error("hosts match without the port; use `ports` for the port")]
    HostPort,
    /// Not a port number.
    #[error("not a port number (1 to 65535)")]
    Port,
    /// Not an IP address or CIDR block.
    #[error("not an IP address or CIDR block")]
    IpBlock,
}

/// One Istio string pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrMatch {
    /// `*`: any value.
    Any,
    /// The value itself.
    Exact(Box<str>),
    /// `prefix*`.
    Prefix(Box<str>),
    /// `*suffix`.
    Suffix(Box<str>),
}

impl StrMatch {
    /// Parses `*`, `prefix*`, `*suffix` or an exact value.
    pub fn parse(p: &str) -> Result<Self, PatternError> {
        if p.is_empty() {
            return Err(PatternError::Empty);
        }
        if p == "*" {
            return Ok(Self::Any);
        }
        let m = if let Some(s) = p.strip_prefix('*') {
            Self::Suffix(s.into())
        } else if let Some(s) = p.strip_suffix('*') {
            Self::Prefix(s.into())
        } else {
            Self::Exact(p.into())
        };
        match &m {
            Self::Suffix(s) | Self::Prefix(s) | Self::Exact(s) if s.contains('*') => {
                Err(PatternError::InnerWildcard)
            }
            _ => Ok(m),
        }
    }

    /// Whether `v` matches, case-sensitively.
    pub fn matches(&self, v: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(s) => v == &**s,
            Self::Prefix(s) => v.starts_with(&**s),
            Self::Suffix(s) => v.ends_with(&**s),
        }
    }

    /// Whether `v` matches, ignoring ASCII case (the pattern must be lowercase).
    pub fn matches_ignore_case(&self, v: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(s) => v.eq_ignore_ascii_case(s),
            Self::Prefix(s) => v.get(..s.len()).is_some_and(|h| h.eq_ignore_ascii_case(s)),
            Self::Suffix(s) => v
                .len()
                .checked_sub(s.len())
                .and_then(|i| v.get(i..))
                .is_some_and(|t| t.eq_ignore_ascii_case(s)),
        }
    }

    /// The same pattern, lowercased (for case-insensitive matching).
    pub fn to_lowercase(&self) -> Self {
        match self {
            Self::Any => Self::Any,
            Self::Exact(s) => Self::Exact(s.to_ascii_lowercase().into()),
            Self::Prefix(s) => Self::Prefix(s.to_ascii_lowercase().into()),
            Self::Suffix(s) => Self::Suffix(s.to_ascii_lowercase().into()),
        }
    }
}

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A literal segment.
    Literal(Box<str>),
    /// `{*}`: exactly one non-empty segment.
    One,
}

/// A path pattern: an Istio string pattern, or a template of whole segments where `{*}`
/// matches one segment and `{**}` (at most once, with no `{*}` after it) matches one or more
/// segments — Envoy's `**`, which matches any text including `/` after the `/` before it, so
/// `/a/{**}` matches `/a/` and `/a/b/c` but not `/a`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// `*`, exact, `/prefix*` or `*suffix`.
    Plain(StrMatch),
    /// A `{*}` / `{**}` template.
    Template {
        /// Segments before `{**}` (or all of them).
        head: Box<[Segment]>,
        /// `Some(tail)` when the template has `{**}`: the literal segments after it.
        glob_tail: Option<Box<[Box<str>]>>,
    },
}

impl PathPattern {
    /// Parses and checks a path pattern.
    pub fn parse(p: &str) -> Result<Self, PatternError> {
        if p.is_empty() {
            return Err(PatternError::Empty);
        }
        if p.contains('?') {
            return Err(PatternError::PathQuery);
        }
        if !p.starts_with('/') && !p.starts_with('*') {
            return Err(PatternError::PathNotAbsolute);
        }
        check_normalized(p)?;
        if p.contains('{') || p.contains('}') {
            return parse_template(p);
        }
        StrMatch::parse(p).map(Self::Plain)
    }

    /// Whether the normalized path `path` matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Plain(m) => m.matches(path),
            Self::Template { head, glob_tail } => {
                let Some(rest) = path.strip_prefix('/') else {
                    return false;
                };
                let mut segs = rest.split('/');
                for h in head.iter() {
                    match (h, segs.next()) {
                        (Segment::One, Some(s)) if !s.is_empty() => {}
                        (Segment::Literal(l), Some(s)) if s == &**l => {}
                        _ => return false,
                    }
                }
                match glob_tail {
                    None => segs.next().is_none(),
                    Some(tail) => {
                        // `{**}` takes at least one segment, then the tail must end the path.
                        let remaining: usize = segs.clone().count();
                        if remaining < tail.len() + 1 {
                            return false;
                        }
                        segs.skip(remaining - tail.len())
                            .zip(tail.iter())
                            .all(|(s, t)| s == &**t)
                    }
                }
            }
        }
    }
}

fn check_normalized(p: &str) -> Result<(), PatternError> {
    let body = p.trim_start_matches('*').trim_end_matches('*');
    if body.contains("//") {
        return Err(PatternError::PathNotNormalized("`//`"));
    }
    if body.contains('\\') {
        return Err(PatternError::PathNotNormalized("a backslash"));
    }
    if body.split('/').any(|s| s == "." || s == "..") && p.starts_with('/') {
        return Err(PatternError::PathNotNormalized("a `.` or `..` segment"));
    }
    let lower = body.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return Err(PatternError::PathNotNormalized("an encoded slash"));
    }
    let bytes = body.as_bytes();
    for (i, _) in body.match_indices('%') {
        let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
        if !hex(i + 1) || !hex(i + 2) {
            return Err(PatternError::PathNotNormalized("a malformed `%` escape"));
        }
        let decoded = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        if decoded
            .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
        {
            return Err(PatternError::PathNotNormalized(
                "an encoded unreserved character; write it plainly",
            ));
        }
        if bytes[i + 1..i + 3].iter().any(u8::is_ascii_lowercase) {
            return Err(PatternError::PathNotNormalized(
                "lowercase hex in a `%` escape; use uppercase",
            ));
        }
    }
    Ok(())
}

fn parse_template(p: &str) -> Result<PathPattern, PatternError> {
    let Some(rest) = p.strip_prefix('/') else {
        return Err(PatternError::Template("a template starts with '/'"));
    };
    let mut head = Vec::new();
    let mut tail: Option<Vec<Box<str>>> = None;
    for seg in rest.split('/') {
        match (seg, &mut tail) {
            ("{**}", None) => tail = Some(Vec::new()),
            ("{**}", Some(_)) => return Err(PatternError::Template("`{**}` may appear only once")),
            ("{*}", Some(_)) => return Err(PatternError::Template("no `{*}` after `{**}`")),
            ("{*}", None) => head.push(Segment::One),
            (s, _) if s.contains('{') || s.contains('}') || s.contains('*') => {
                return Err(PatternError::Template(
                    "`{*}` and `{**}` must be whole segments, and templates take no other `*`",
                ))
            }
            (s, Some(t)) => t.push(s.into()),
            (s, None) => head.push(Segment::Literal(s.into())),
        }
    }
    Ok(PathPattern::Template {
        head: head.into(),
        glob_tail: tail.map(Into::into),
    })
}

/// An IP address or CIDR block (`10.0.0.0/8`, `fd00::/8`, `192.168.1.7`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpBlock {
    addr: IpAddr,
    prefix: u8,
}

impl IpBlock {
    /// Parses an address or `address/prefix`; host bits beyond the prefix must be zero.
    pub fn parse(s: &str) -> Result<Self, PatternError> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| PatternError::IpBlock)?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| PatternError::IpBlock)?
            }
            Some(_) => return Err(PatternError::IpBlock),
        };
        if prefix > max {
            return Err(PatternError::IpBlock);
        }
        let block = Self { addr, prefix };
        if !block.contains(addr) || to_bits(addr) & !mask(prefix, max) != 0 {
            return Err(PatternError::IpBlock);
        }
        Ok(block)
    }

    /// Whether `ip` is in the block. An IPv4-mapped IPv6 address counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let m = mask(self.prefix, max);
        to_bits(ip) & m == to_bits(self.addr) & m
    }
}

fn to_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The mask of the first `prefix` bits of a `max`-bit address, in the low `max` bits.
fn mask(prefix: u8, max: u8) -> u128 {
    let all = if max == 128 {
        u128::MAX
    } else {
        (1u128 << max) - 1
    };
    let host_bits = u32::from(max.saturating_sub(prefix));
    if host_bits >= 128 {
        0
    } else {
        all & !((1u128 << host_bits) - 1)
    }
}

/// Parses a port number, 1 to 65535.
pub fn parse_port(s: &str) -> Result<u16, PatternError> {
    match s.parse::<u16>() {
        Ok(p) if p != 0 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
        _ => Err(PatternError::Port),
    }
}

#[cfg(test)]
mod tests;
