//! RFC 3339 time formatting (UTC), as the API, the status output and the logs write times.

use std::time::SystemTime;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The Unix epoch as RFC 3339, for a time that cannot be formatted.
const EPOCH: &str = "1970-01-01T00:00:00Z";

/// Formats a time as RFC 3339, UTC, whole seconds (`2026-12-01T09:53:15Z`). A time before the
/// epoch is the epoch.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| EPOCH.to_string())
}

/// Formats a time as RFC 3339, UTC, with the sub-second part (`2026-12-01T09:53:15.123456789Z`),
/// so that two events within one second still order once parsed.
pub fn rfc3339_precise(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| rfc3339(t))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn formats_whole_seconds_in_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_118_795_900);
        assert_eq!(rfc3339(t), "2026-12-01T09:53:15Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), EPOCH);
    }

    #[test]
    fn a_time_before_the_epoch_is_the_epoch() {
        let t = SystemTime::UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(rfc3339(t), EPOCH);
    }

    #[test]
    fn precise_keeps_the_fraction_so_times_within_a_second_order() {
        let a = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_796_118_795_000_000_100);
        let b = a + Duration::from_nanos(5);
        assert_eq!(rfc3339_precise(a), "2026-12-01T09:53:15.0000001Z");
        let parse = |s: &str| SystemTime::from(OffsetDateTime::parse(s, &Rfc3339).unwrap());
        assert_eq!(parse(&rfc3339_precise(b)), b);
        assert!(parse(&rfc3339_precise(a)) < parse(&rfc3339_precise(b)));
    }
}
