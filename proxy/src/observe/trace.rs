//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): the proxy reads the trace id of
//! a request's `traceparent` for the access log. A valid `traceparent` and its `tracestate`
//! are forwarded unchanged on both hops; a request that leaves the app without a valid one
//! gets a new trace from the outbound sidecar ([`ensure`]), so that every hop of it shares one
//! trace id in the access logs.

use std::cell::RefCell;

use http::{HeaderMap, HeaderName, HeaderValue};
use ring::rand::SecureRandom as _;

/// The `traceparent` header (W3C Trace Context §3.2): a `HeaderName`, so that a lookup does
/// not parse the name again on every request.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The `tracestate` header (W3C Trace Context §3.3).
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// A valid trace id: 32 lowercase hex digits, held inline so that reading one allocates
/// nothing. Only [`trace_id`] makes one; it reads as a `&str` (`Option::as_deref`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceId([u8; 32]);

impl std::ops::Deref for TraceId {
    type Target = str;

    fn deref(&self) -> &str {
        // Always ASCII hex: only `parse` fills it.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl TraceId {
    /// The 32 hex digits.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

/// Starts a trace when `headers` has no valid `traceparent`: random trace and parent ids,
/// flags `01` (sampled) when the sidecar exports spans (`sampled`), else `00`, so that a callee
/// is not asked to record a trace nobody collects. Any
/// `tracestate` without a valid `traceparent` belongs to no trace and is dropped (§3.3.1.1).
/// A valid `traceparent` is left exactly as it is. Returns the parent id it wrote when it
/// started a trace (the span id of the sidecar's own hop, for OTLP export).
pub fn ensure(headers: &mut HeaderMap, sampled: bool) -> Option<String> {
    if trace_id(headers).is_some() {
        return None;
    }
    // `00-` trace id `-` parent id `-` flags: 55 bytes, written in place.
    let mut value = *b"00-00000000000000000000000000000000-0000000000000000-00";
    let (trace, parent) = random_ids();
    hex_into(&trace.to_be_bytes(), &mut value[3..35]);
    hex_into(&parent.to_be_bytes(), &mut value[36..52]);
    if sampled {
        value[54] = b'1';
    }
    let parent = std::str::from_utf8(&value[36..52]).ok()?.to_string();
    let value = HeaderValue::from_bytes(&value).ok()?;
    headers.remove(TRACESTATE);
    headers.insert(TRACEPARENT, value);
    Some(parent)
}

/// The parent id of a valid `traceparent`.
pub fn parent_id(headers: &HeaderMap) -> Option<String> {
    let (_, parent) = parse(headers.get(TRACEPARENT)?.as_bytes())?;
    std::str::from_utf8(parent).ok().map(str::to_string)
}

/// A random span id (16 hex digits, never all zeros).
pub fn new_span_id() -> Option<String> {
    let mut out = [0u8; 16];
    hex_into(&random_ids().1.to_be_bytes(), &mut out);
    std::str::from_utf8(&out).ok().map(str::to_string)
}

thread_local! {
    /// Trace and span ids need to be unique, not secret (W3C Trace Context §3.2.2.3 asks for
    /// randomness, not unpredictability), so each thread draws them from a fast generator
    /// seeded once from the system's secure random source, rather than paying for a secure
    /// draw on every request.
    static IDS: RefCell<fastrand::Rng> = RefCell::new(seeded());
}

fn seeded() -> fastrand::Rng {
    let mut seed = [0u8; 8];
    match ring::rand::SystemRandom::new().fill(&mut seed) {
        Ok(()) => fastrand::Rng::with_seed(u64::from_ne_bytes(seed)),
        // Seeded by the standard library's per-process random keys instead.
        Err(_) => fastrand::Rng::new(),
    }
}

/// A random 128-bit trace id and 64-bit span id, neither zero (an invalid id, §3.2.2.3).
fn random_ids() -> (u128, u64) {
    IDS.with(|rng| {
        let mut rng = rng.borrow_mut();
        (rng.u128(1..), rng.u64(1..))
    })
}

/// Writes `bytes` as lowercase hex into `out` (twice as long).
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
}

/// The trace id of a valid `traceparent`.
pub fn trace_id(headers: &HeaderMap) -> Option<TraceId> {
    let (trace, _) = parse(headers.get(TRACEPARENT)?.as_bytes())?;
    trace.try_into().ok().map(TraceId)
}

/// Splits a `traceparent` into its trace id and parent id, or `None` when it is not valid:
/// `version-traceid-parentid-flags`, lowercase hex, neither id all zeros, version `ff`
/// forbidden, and for version `00` nothing after the flags (§3.2.2–§3.2.4). Every field has a
/// fixed length, so the dashes have fixed places: `vv-` (0..3), 32 digits and `-` (3..36),
/// 16 digits and `-` (36..53), `ff` (53..55), and after it the end or, for a later version,
/// a `-` and any visible text. Read from the header's bytes: what `HeaderValue::to_str` would
/// refuse (bytes past ASCII) is refused here too, by the hex checks or the one on the rest.
fn parse(value: &[u8]) -> Option<(&[u8], &[u8])> {
    // A header value holds no control character but tab: these are the spaces `str::trim` cuts.
    let b = value.trim_ascii();
    if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let (version, trace, parent, flags) = (&b[..2], &b[3..35], &b[36..52], &b[53..55]);
    let ok = is_hex(version)
        && version != b"ff"
        && is_hex(trace)
        && is_hex(parent)
        && is_hex(flags)
        && trace.iter().any(|&c| c != b'0')
        && parent.iter().any(|&c| c != b'0')
        && (b.len() == 55
            || (b[55] == b'-'
                && version != b"00"
                && b[56..]
                    .iter()
                    .all(|&c| c == b'\t' || (b' '..=b'~').contains(&c))));
    ok.then_some((trace, parent))
}

/// Lowercase hex digits only. Every byte is looked at (no early exit), which lets the compiler
/// check many at once: a valid id, the usual case, is read to its end anyway.
fn is_hex(s: &[u8]) -> bool {
    s.iter().fold(true, |ok, &b| {
        ok & (b.is_ascii_digit() | (b.wrapping_sub(b'a') < 6))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `parse` of a text, with the ids as text.
    fn parse_str(value: &str) -> Option<(&str, &str)> {
        let (t, p) = parse(value.as_bytes())?;
        Some((std::str::from_utf8(t).ok()?, std::str::from_utf8(p).ok()?))
    }

    #[test]
    fn parses_only_valid_traceparents() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            parse_str(good),
            Some(("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"))
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "0-04bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-701",
        ] {
            assert_eq!(parse_str(bad), None, "{bad}");
        }
        // A later version may add fields; surrounding whitespace is not part of the value.
        assert!(parse_str("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x").is_some());
        assert!(parse_str("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-").is_some());
        assert_eq!(parse_str(&format!(" {good}\t")), parse_str(good));
        // Bytes past ASCII (which `HeaderValue::to_str` refuses) are refused anywhere.
        let later = b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-";
        for tail in [b"\x80".as_slice(), b"x\xff", b"\xc3\xa9"] {
            assert_eq!(parse(&[later.as_slice(), tail].concat()), None);
        }
        let mut bad = good.as_bytes().to_vec();
        bad[10] = 0xe9;
        assert_eq!(parse(&bad), None);
    }

    #[test]
    fn ensure_starts_a_trace_only_when_there_is_none() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, good.parse().unwrap());
        h.insert(TRACESTATE, "congo=t61rcWkgMzE".parse().unwrap());
        ensure(&mut h, false);
        assert_eq!(h[TRACEPARENT], good);
        assert_eq!(h[TRACESTATE], "congo=t61rcWkgMzE");

        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, "garbage".parse().unwrap());
        h.insert(TRACESTATE, "congo=t61rcWkgMzE".parse().unwrap());
        ensure(&mut h, false);
        let first = trace_id(&h).expect("a new valid traceparent");
        assert!(h.get(TRACESTATE).is_none());
        let mut again = HeaderMap::new();
        ensure(&mut again, true);
        assert_ne!(trace_id(&again).unwrap(), first, "ids are random");
        assert!(h[TRACEPARENT].to_str().unwrap().ends_with("-00"));
        assert!(again[TRACEPARENT].to_str().unwrap().ends_with("-01"));
    }

    #[test]
    fn new_ids_are_valid_lowercase_hex_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let mut h = HeaderMap::new();
            let parent = ensure(&mut h, true).expect("a trace is started");
            let value = h[TRACEPARENT].to_str().unwrap().to_string();
            let (trace, p) = parse_str(&value).expect("a valid traceparent");
            assert_eq!(p, parent);
            assert!(seen.insert(trace.to_string()), "trace id {trace} repeated");
            let span = new_span_id().unwrap();
            assert!(
                span.len() == 16 && is_hex(span.as_bytes()) && span != "0000000000000000",
                "{span}"
            );
        }
        let mut out = [0u8; 4];
        hex_into(&[0x0f, 0xa0], &mut out);
        assert_eq!(&out, b"0fa0");
    }
}
