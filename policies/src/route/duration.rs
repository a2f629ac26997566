//! Gateway API durations (GEP-2257): one to four `<1-5 digits><unit>` parts, units `h`, `m`,
//! `s`, `ms`, each at most once and in that order (`1h`, `1m30s`, `500ms`, `0s`). Anything
//! else (`1.5s`, `10`, `1d`, `-1s`, `30s1m`) is refused.

use std::time::Duration;

/// Parses a Gateway API duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad =
        |why: &str| format!("{s:?} is not a Gateway API duration ({why}; e.g. 10s, 1m30s, 500ms)");
    if s.is_empty() {
        return Err(bad("empty"));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    let mut parts = 0;
    // Index in UNITS of the last unit seen: units must come in this order, each once.
    let mut last: Option<usize> = None;
    const UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad("a number must come before each unit"));
        }
        if digits > 5 {
            return Err(bad("at most 5 digits per unit"));
        }
        let (number, after) = rest.split_at(digits);
        let n: u64 = number.parse().map_err(|_| bad("bad number"))?;
        let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(unit_len);
        let Some(i) = UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err(bad("units are h, m, s and ms"));
        };
        if last.is_some_and(|l| i <= l) {
            return Err(bad("units in the order h, m, s, ms, each once"));
        }
        last = Some(i);
        total += Duration::from_millis(n * UNITS[i].1);
        parts += 1;
        rest = after;
    }
    if parts > 4 {
        return Err(bad("at most 4 parts"));
    }
    Ok(total)
}

/// Formats `d` as a Gateway API duration (`1m30s`, `250ms`, `0s`).
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}
