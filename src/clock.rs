//! The only source of wall-clock time, and the RFC 3339 text form of it.
//!
//! Decision code takes times as arguments; this module is where "now" comes from. Tests
//! use `Clock::manual` to set time explicitly. Times are milliseconds since the Unix epoch
//! (`u64`), which is what every record stores.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where "now" comes from.
#[derive(Clone, Debug)]
pub enum Clock {
    System,
    /// A clock that only moves when told to (tests).
    Manual(Arc<AtomicU64>),
}

impl Clock {
    pub fn manual(start_ms: u64) -> Clock {
        Clock::Manual(Arc::new(AtomicU64::new(start_ms)))
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        match self {
            #[expect(
                clippy::disallowed_methods,
                reason = "this is the one place wall time is read"
            )]
            Clock::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            Clock::Manual(ms) => ms.load(Ordering::Relaxed),
        }
    }

    /// Moves a manual clock forward; a no-op on the system clock.
    pub fn advance_ms(&self, delta_ms: u64) {
        if let Clock::Manual(ms) = self {
            ms.fetch_add(delta_ms, Ordering::Relaxed);
        }
    }
}

/// Formats a time as RFC 3339 UTC with milliseconds: `2024-05-01T12:00:00.123Z`.
pub fn format_rfc3339(ms: u64) -> String {
    match rfc3339_text(ms) {
        // Only ASCII digits and punctuation are in it.
        Some(text) => String::from_utf8_lossy(&text).into_owned(),
        // Past the year 9999 (only a clamped, absurd time gets here): the general path.
        None => rfc3339_by_fmt(ms),
    }
}

/// The length of `format_rfc3339`'s text for years 0 to 9999.
pub const RFC3339_LEN: usize = 24;

/// `format_rfc3339` through `core::fmt`, for any year (the fast path's reference).
fn rfc3339_by_fmt(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, mo, d) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or(i64::MAX));
    let rem = secs % 86_400;
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        ms % 1000
    )
}

/// `format_rfc3339(ms)` as bytes, for the years 0 to 9999 (`None` past them). Digits are
/// written directly, not through `core::fmt`: every accepted message's reply carries a
/// timestamp, and the formatting machinery was a visible share of the ingest path.
pub fn rfc3339_text(ms: u64) -> Option<[u8; RFC3339_LEN]> {
    let secs = ms / 1000;
    let (y, mo, d) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or(i64::MAX));
    let year = u32::try_from(y).ok().filter(|y| *y <= 9999)?;
    // Each value below is under 100,000: the conversions cannot fail.
    let field = |v: i64| u32::try_from(v).unwrap_or(0);
    let rem = u32::try_from(secs % 86_400).unwrap_or(0);
    let mut text = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut value: u32| {
        for i in (at..at + width).rev() {
            text[i] = b"0123456789"[(value % 10) as usize];
            value /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, field(mo));
    put(8, 2, field(d));
    put(11, 2, rem / 3600);
    put(14, 2, (rem / 60) % 60);
    put(17, 2, rem % 60);
    put(20, 3, u32::try_from(ms % 1000).unwrap_or(0));
    Some(text)
}

/// Parses RFC 3339 (`Z` or a numeric offset, optional fraction) into ms since the epoch.
/// Times before the epoch clamp to 0. Returns `None` on any syntax error.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let (hour, minute, second) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
    {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut rest = &b[19..];
    let mut millis = 0i64;
    if let Some((b'.', frac)) = rest.split_first() {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        let mut scale = 100;
        for &c in &frac[..n.min(3)] {
            millis += i64::from(c - b'0') * scale;
            scale /= 10;
        }
        rest = &frac[n..];
    }
    let offset_secs = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (hours, minutes) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            // RFC 3339's time-numoffset: hours 00–23, minutes 00–59.
            if hours > 23 || minutes > 59 {
                return None;
            }
            let secs = hours * 3600 + minutes * 60;
            if *sign == b'+' { secs } else { -secs }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    u64::try_from(secs * 1000 + millis).ok().or(Some(0))
}

/// A run of 1 to 4 ASCII digits as a number (every field read here is that short, and
/// the bound keeps all later arithmetic far from overflow).
fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 4 {
        return None;
    }
    b.iter().try_fold(0i64, |acc, c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })
}

/// Days in `month` (1–12) of `year`, proleptic Gregorian.
fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's algorithms for the proleptic Gregorian calendar.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// Parses an HTTP-date (RFC 9110 §5.6.7) into ms since the epoch: the IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`) and the two obsolete forms a recipient must accept
/// (RFC 850 and asctime), by the `httpdate` crate, which also refuses impossible dates.
pub fn parse_http_date(text: &str) -> Option<u64> {
    let time = httpdate::parse_http_date(text.trim()).ok()?;
    let since_epoch = time.duration_since(std::time::UNIX_EPOCH).ok()?;
    u64::try_from(since_epoch.as_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_fields_are_refused_not_overflowed() {
        // Found by the `time_parsers` fuzz target: a long run of digits overflowed.
        assert_eq!(
            parse_http_date("Wde, 3333333333333333333321 Oct 20157282:0GMT"),
            None
        );
        assert_eq!(parse_http_date("Sun, 06 Nov 99999999 08:49:37 GMT"), None);
        assert_eq!(
            parse_rfc3339("2021-02-25T15:02:10.99999999999999999999Z"),
            Some(1_614_265_330_999)
        );
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777_000)
        );
    }

    #[test]
    fn impossible_dates_and_offsets_are_refused() {
        assert_eq!(parse_rfc3339("2021-02-31T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("2021-02-29T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("2021-04-31T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("2021-02-25T15:02:10+99:99"), None);
        assert_eq!(parse_rfc3339("2021-02-25T15:02:10+23:60"), None);
        assert!(
            parse_rfc3339("2020-02-29T00:00:00Z").is_some(),
            "a leap day"
        );
        assert_eq!(parse_http_date("Wed, 31 Feb 2021 00:00:00 GMT"), None);
        // The two obsolete forms RFC 9110 requires recipients to accept.
        let fixdate = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(fixdate, Some(784_111_777_000));
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), fixdate);
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), fixdate);
    }

    #[test]
    fn formats_and_parses_round_trip() {
        for ms in [0, 1_614_265_330_000, 1_700_000_000_123, 4_102_444_800_999] {
            assert_eq!(parse_rfc3339(&format_rfc3339(ms)), Some(ms), "{ms}");
        }
        assert_eq!(
            format_rfc3339(1_614_265_330_042),
            "2021-02-25T15:02:10.042Z"
        );
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_rfc3339(0).len(), RFC3339_LEN);
        assert_eq!(
            format_rfc3339(253_402_300_799_999),
            "9999-12-31T23:59:59.999Z"
        );
        // Past the year 9999 the text grows a digit instead of wrapping.
        assert_eq!(
            format_rfc3339(253_402_300_800_000),
            "10000-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn the_direct_digits_match_the_formatted_text() {
        // Every field's carries: ends of seconds, minutes, hours, days, months and years,
        // leap days, and a spread of times in between.
        let mut times = vec![0, 999, 1_000, 59_999, 3_599_999, 86_399_999, 86_400_000];
        times.extend([
            951_782_399_999,
            951_782_400_000,
            978_307_199_999,
            1_764_547_199_999,
        ]);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            times.push(x % 253_402_300_800_000);
        }
        for ms in times {
            assert_eq!(format_rfc3339(ms), rfc3339_by_fmt(ms), "{ms}");
        }
    }

    #[test]
    fn parses_offsets_and_fractions() {
        let cases = [
            ("2021-02-25T15:02:10Z", Some(1_614_265_330_000)),
            ("2021-02-25T15:02:10+00:00", Some(1_614_265_330_000)),
            ("2021-02-25T16:02:10+01:00", Some(1_614_265_330_000)),
            ("2021-02-25T15:02:10.5123456Z", Some(1_614_265_330_512)),
            ("2021-02-25 15:02:10.042000+00:00", Some(1_614_265_330_042)),
            ("1960-01-01T00:00:00Z", Some(0)),
            ("2021-02-25T15:02:10", None),
            ("2021-13-25T15:02:10Z", None),
            ("2021-02-25T15:02:10.Z", None),
            ("not a time", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_rfc3339(text), want, "{text}");
        }
    }
}
