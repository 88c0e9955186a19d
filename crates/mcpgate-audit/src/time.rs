//! [`UtcTime`]: an instant to the millisecond, written as RFC 3339 in UTC.
//!
//! Hand-written rather than a date crate: the audit trail needs only UTC
//! with milliseconds, out and in, and this crate keeps its dependencies to
//! serde, tokio and tracing so that anything can embed it. The calendar
//! arithmetic is Howard Hinnant's `days_from_civil` / `civil_from_days`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An instant in UTC, to the millisecond, from 1970 to 9999. JSON and
/// `Display` write it as RFC 3339 (`2026-12-04T16:47:06.123Z`); its Unix
/// milliseconds are what ranges and ordering use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UtcTime(u64);

/// Why a text is not an RFC 3339 time this crate reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 time (YYYY-MM-DDTHH:MM:SS[.fff](Z|+HH:MM)) from 1970 to 9999")]
pub struct TimeError;

const MS_PER_DAY: i64 = 86_400_000;
/// 9999-12-31T23:59:59.999Z.
const MAX_MS: u64 = 253_402_300_799_999;

impl UtcTime {
    /// The instant `ms` milliseconds after the Unix epoch.
    pub const fn from_unix_millis(ms: u64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn unix_millis(self) -> u64 {
        self.0
    }

    /// The system clock now.
    pub fn now() -> Self {
        Self::from_system(SystemTime::now())
    }

    /// The instant `time` (a time before the epoch reads as the epoch).
    pub fn from_system(time: SystemTime) -> Self {
        let ms = time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self(ms)
    }

    /// This instant moved `by` earlier, stopping at the epoch.
    pub fn minus(self, by: Duration) -> Self {
        Self(
            self.0
                .saturating_sub(u64::try_from(by.as_millis()).unwrap_or(u64::MAX)),
        )
    }

    /// Reads RFC 3339: `YYYY-MM-DDTHH:MM:SS`, an optional fraction (kept to
    /// the millisecond), then `Z` or an offset `±HH:MM`. `t`, `z` and a
    /// space for `T` are accepted, as RFC 3339 allows.
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimeError> {
        let b = text.as_bytes();
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
            return Err(TimeError);
        }
        if !matches!(b[10], b'T' | b't' | b' ') {
            return Err(TimeError);
        }
        let year = digits(&b[0..4])?;
        let (month, day) = (digits(&b[5..7])?, digits(&b[8..10])?);
        let (hour, minute, second) = (
            digits(&b[11..13])?,
            digits(&b[14..16])?,
            digits(&b[17..19])?,
        );
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return Err(TimeError);
        }
        let mut rest = &b[19..];
        let mut millis = 0;
        if let Some((b'.', fraction)) = rest.split_first() {
            let len = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
            if len == 0 {
                return Err(TimeError);
            }
            // The first three digits are milliseconds; finer ones are cut.
            for (i, c) in fraction[..len.min(3)].iter().enumerate() {
                millis += i64::from(c - b'0') * [100, 10, 1][i];
            }
            rest = &fraction[len..];
        }
        let offset_minutes = match rest {
            [b'Z' | b'z'] => 0,
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                let (h, m) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
                if h > 23 || m > 59 {
                    return Err(TimeError);
                }
                let minutes = h * 60 + m;
                if *sign == b'-' { -minutes } else { minutes }
            }
            _ => return Err(TimeError),
        };
        let days = days_from_civil(year, month, day);
        let ms = days * MS_PER_DAY
            + ((hour * 60 + minute - offset_minutes) * 60 + second) * 1000
            + millis;
        let ms = u64::try_from(ms).map_err(|_| TimeError)?;
        if ms > MAX_MS {
            return Err(TimeError);
        }
        Ok(Self(ms))
    }
}

fn digits(b: &[u8]) -> Result<i64, TimeError> {
    b.iter().try_fold(0, |n, c| {
        if c.is_ascii_digit() {
            Ok(n * 10 + i64::from(c - b'0'))
        } else {
            Err(TimeError)
        }
    })
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date (year, month, day) `days` after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for UtcTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = i64::try_from(self.0.min(MAX_MS)).unwrap_or(0);
        let (days, in_day) = (ms.div_euclid(MS_PER_DAY), ms.rem_euclid(MS_PER_DAY));
        let (year, month, day) = civil_from_days(days);
        let secs = in_day / 1000;
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            in_day % 1000
        )
    }
}

impl Serialize for UtcTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UtcTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_rfc3339_in_utc_with_milliseconds() {
        assert_eq!(
            UtcTime::from_unix_millis(0).to_string(),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            UtcTime::from_unix_millis(1_796_402_826_123).to_string(),
            "2026-12-04T16:47:06.123Z"
        );
        // A leap day, and the last millisecond of a leap year.
        assert_eq!(
            UtcTime::from_unix_millis(951_782_400_000).to_string(),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            UtcTime::from_unix_millis(978_307_199_999).to_string(),
            "2000-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn reads_what_it_writes_over_four_centuries() {
        // Every 997th hour and some milliseconds, 1970 to 2400.
        let mut ms = 17;
        while ms < 13_574_563_200_000 {
            let t = UtcTime::from_unix_millis(ms);
            assert_eq!(UtcTime::parse_rfc3339(&t.to_string()), Ok(t), "{t}");
            ms += 997 * 3_600_000 + 331;
        }
    }

    #[test]
    fn reads_offsets_and_fractions() {
        let utc = UtcTime::parse_rfc3339("2026-12-04T16:47:06.123Z").expect("utc");
        for same in [
            "2026-12-04T17:47:06.123+01:00",
            "2026-12-04T11:17:06.123456-05:30",
            "2026-12-04t16:47:06.1239z",
            "2026-12-04 16:47:06.123Z",
        ] {
            assert_eq!(UtcTime::parse_rfc3339(same), Ok(utc), "{same}");
        }
        assert_eq!(
            UtcTime::parse_rfc3339("2026-12-04T16:47:06Z").map(UtcTime::unix_millis),
            Ok(utc.unix_millis() - 123)
        );
    }

    #[test]
    fn refuses_what_is_not_a_time() {
        for bad in [
            "",
            "2026-12-04",
            "2026-12-04T16:47:06",
            "2026-13-04T16:47:06Z",
            "2026-02-29T16:47:06Z",
            "2026-12-04T24:00:00Z",
            "2026-12-04T16:47:06.Z",
            "2026-12-04T16:47:06+0100",
            "1969-12-31T23:59:59Z",
            "2026-12-04T16:47:06Z trailing",
            "２026-12-04T16:47:06Z",
        ] {
            assert_eq!(UtcTime::parse_rfc3339(bad), Err(TimeError), "{bad:?}");
        }
    }

    #[test]
    fn serialises_as_a_string() {
        let t = UtcTime::from_unix_millis(1_796_402_826_123);
        let json = serde_json::to_string(&t).expect("json");
        assert_eq!(json, "\"2026-12-04T16:47:06.123Z\"");
        assert_eq!(serde_json::from_str::<UtcTime>(&json).expect("back"), t);
    }
}
