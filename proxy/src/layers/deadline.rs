//! A request's deadline: `--upstream-timeout`, or for a gRPC call its `grpc-timeout` header
//! (gRPC over HTTP/2, "Requests": `1*8DIGIT unit`, units `H M S m u n`), bounded by
//! `--max-grpc-timeout`. A sidecar timeout answers a gRPC caller `DEADLINE_EXCEEDED` (4,
//! [`crate::layers::rescue`]). A malformed `grpc-timeout` is ignored: the default applies.

use std::time::Duration;

use http::HeaderMap;

use crate::layers::rescue::is_grpc;

/// How long to wait for a response head to the request whose headers are `headers`:
/// `grpc-timeout` when the caller speaks gRPC and sent a valid one (at most `max`), else
/// `default`.
pub fn for_request(headers: &HeaderMap, default: Duration, max: Duration) -> Duration {
    if !is_grpc(headers) {
        return default;
    }
    headers
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map_or(default, |d| d.min(max))
}

/// Parses a `grpc-timeout` value: 1 to 8 ASCII digits and one unit (`H` hours, `M` minutes,
/// `S` seconds, `m` milliseconds, `u` microseconds, `n` nanoseconds); `None` otherwise.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn grpc_timeout_values_parse_as_the_spec_says() {
        let table: &[(&str, Option<Duration>)] = &[
            ("1H", Some(Duration::from_secs(3600))),
            ("2M", Some(Duration::from_secs(120))),
            ("50S", Some(Duration::from_secs(50))),
            ("0S", Some(Duration::ZERO)),
            ("250m", Some(Duration::from_millis(250))),
            ("7u", Some(Duration::from_micros(7))),
            ("99999999n", Some(Duration::from_nanos(99_999_999))),
            ("99999999H", Some(Duration::from_secs(99_999_999 * 3600))),
            ("00000010S", Some(Duration::from_secs(10))),
            // Nine digits, no digits, no unit, unknown or lower-case units, signs, spaces.
            ("123456789S", None),
            ("S", None),
            ("10", None),
            ("", None),
            ("10s", None),
            ("10h", None),
            ("10x", None),
            ("-1S", None),
            ("+1S", None),
            (" 1S", None),
            ("1 S", None),
            ("1.5S", None),
            ("1SS", None),
            ("1é", None),
            ("١S", None),
        ];
        for (value, want) in table {
            assert_eq!(parse_grpc_timeout(value), *want, "{value:?}");
        }
    }

    fn headers(content_type: &str, timeout: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_str(content_type).unwrap());
        h.insert("grpc-timeout", HeaderValue::from_str(timeout).unwrap());
        h
    }

    #[test]
    fn a_grpc_call_waits_its_own_deadline_up_to_the_maximum() {
        let (default, max) = (Duration::from_secs(30), Duration::from_secs(3600));
        let grpc = |t| for_request(&headers("application/grpc", t), default, max);
        assert_eq!(grpc("50S"), Duration::from_secs(50));
        assert_eq!(grpc("1S"), Duration::from_secs(1));
        assert_eq!(grpc("2H"), max, "bounded by --max-grpc-timeout");
        assert_eq!(grpc("soon"), default, "a malformed value is ignored");
        let plain = for_request(&headers("application/json", "50S"), default, max);
        assert_eq!(plain, default, "only gRPC callers set their deadline");
        assert_eq!(for_request(&HeaderMap::new(), default, max), default);
    }
}
