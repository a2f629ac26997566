//! Durations on the command line (`30s`, `1h`, `250ms`), as both binaries' flags take them.

use std::time::Duration;

/// Parses a positive duration (`humantime` syntax: `30s`, `10m`, `1h30m`); zero is refused,
/// since every flag that takes one is a timeout, a lifetime or an interval.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration ({e})"))?;
    if d.is_zero() {
        return Err(format!("{s:?} is zero; a positive duration is needed"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_positive_durations_and_refuses_zero_and_words() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0s").unwrap_err().contains("is zero"));
        assert!(parse_duration("soon")
            .unwrap_err()
            .contains("is not a duration"));
    }
}
