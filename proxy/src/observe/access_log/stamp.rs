//! The access log's `time`: RFC 3339 in UTC with the fraction of the second, exactly as
//! [`trustmesh_runtime::rfc3339_precise`] writes it (`2026-12-01T09:53:15.1134Z`: nine digits
//! with trailing zeros cut, none for a whole second), but without formatting a date for
//! every line: each thread keeps the text of the last second it wrote and adds the fraction.

use std::cell::Cell;
use std::time::{Duration, SystemTime};

/// `YYYY-MM-DDTHH:MM:SS`.
const SECOND_LEN: usize = 19;

/// 10000-01-01T00:00:00Z: from here on RFC 3339 has no four-digit year and
/// `rfc3339_precise` writes a placeholder instead, which the cache must not extend.
const YEAR_10000: u64 = 253_402_300_800;

thread_local! {
    /// The last second written by this thread (seconds since the epoch) and its text.
    static LAST: Cell<(u64, [u8; SECOND_LEN])> = const { Cell::new((u64::MAX, [0; SECOND_LEN])) };
}

/// Appends `t` as a JSON string.
pub(super) fn write(out: &mut Vec<u8>, t: SystemTime) -> serde_json::Result<()> {
    let Some((second, nanos)) = split(t) else {
        // Before the epoch or past year 9999: not worth a cache.
        return serde_json::to_writer(out, &trustmesh_runtime::rfc3339_precise(t));
    };
    out.push(b'"');
    out.extend_from_slice(&second);
    if nanos != 0 {
        let mut digits = [b'0'; 9];
        let mut n = nanos;
        for d in digits.iter_mut().rev() {
            // `n % 10` is a digit.
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        let len = 9 - digits.iter().rev().take_while(|&&d| d == b'0').count();
        out.push(b'.');
        out.extend_from_slice(&digits[..len]);
    }
    out.extend_from_slice(b"Z\"");
    Ok(())
}

/// The text of `t`'s second and its nanoseconds, from this thread's cache when the second
/// is the last one written; `None` for a time the cache does not hold.
fn split(t: SystemTime) -> Option<([u8; SECOND_LEN], u32)> {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    let secs = since.as_secs();
    if secs >= YEAR_10000 {
        return None;
    }
    let (last, text) = LAST.get();
    if last == secs {
        return Some((text, since.subsec_nanos()));
    }
    let whole =
        trustmesh_runtime::rfc3339_precise(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
    // A whole second is `YYYY-MM-DDTHH:MM:SSZ`; anything else (a five-digit year) is not cached.
    let text: [u8; SECOND_LEN] = whole.strip_suffix('Z')?.as_bytes().try_into().ok()?;
    LAST.set((secs, text));
    Some((text, since.subsec_nanos()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(t: SystemTime) -> String {
        let mut out = Vec::new();
        write(&mut out, t).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn writes_what_rfc3339_precise_writes_within_and_across_seconds() {
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_118_795);
        let mut rng = fastrand::Rng::with_seed(7);
        let mut times = vec![
            SystemTime::UNIX_EPOCH,
            SystemTime::UNIX_EPOCH + Duration::from_nanos(1),
            base,
            base + Duration::from_nanos(100),
            base + Duration::from_nanos(999_999_999),
            base + Duration::from_millis(500),
            base + Duration::from_micros(113_400),
            base - Duration::from_nanos(1),
            // The last second with a four-digit year.
            SystemTime::UNIX_EPOCH + Duration::from_secs(YEAR_10000 - 1),
            SystemTime::UNIX_EPOCH + Duration::new(YEAR_10000 - 1, 5),
            SystemTime::UNIX_EPOCH - Duration::from_secs(1),
        ];
        for _ in 0..2000 {
            // Mostly within a few seconds (the cache's case), some far apart.
            let secs = if rng.bool() {
                rng.u64(0..4)
            } else {
                rng.u64(0..2_000_000_000)
            };
            let nanos = match rng.u8(0..4) {
                0 => 0,
                1 => rng.u32(0..1000) * 1_000_000,
                _ => rng.u32(0..1_000_000_000),
            };
            times.push(base + Duration::new(secs, nanos));
        }
        for t in times {
            let expected = serde_json::to_string(&trustmesh_runtime::rfc3339_precise(t)).unwrap();
            assert_eq!(written(t), expected, "{t:?}");
        }
    }
}
