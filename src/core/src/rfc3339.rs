//! RFC 3339 date-times (`2023-07-19T10:11:12.630662123Z`, `...+02:00`) to Unix milliseconds,
//! strictly and without a date library: Twitch signs its timestamp in this form.
#![deny(clippy::arithmetic_side_effects)]

fn digits(raw: &[u8], at: usize, n: usize) -> Option<u64> {
    let slice = raw.get(at..at.checked_add(n)?)?;
    slice.iter().try_fold(0u64, |acc, b| {
        b.is_ascii_digit()
            .then(|| {
                acc.checked_mul(10)?
                    .checked_add(u64::from(b.checked_sub(b'0')?))
            })
            .flatten()
    })
}

/// Days from 1970-01-01 to a civil date (proleptic Gregorian); years from 1970 on.
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    let y = if month <= 2 {
        year.checked_sub(1)?
    } else {
        year
    };
    let era = y.checked_div(400)?;
    let yoe = y.checked_sub(era.checked_mul(400)?)?;
    let mp = if month > 2 {
        month.checked_sub(3)?
    } else {
        month.checked_add(9)?
    };
    let doy = (153u64.checked_mul(mp)?.checked_add(2)? / 5).checked_add(day.checked_sub(1)?)?;
    let doe = yoe
        .checked_mul(365)?
        .checked_add(yoe / 4)?
        .checked_sub(yoe / 100)?
        .checked_add(doy)?;
    era.checked_mul(146_097)?
        .checked_add(doe)?
        .checked_sub(719_468)
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

pub fn parse_ms(raw: &[u8]) -> Option<u64> {
    if raw.len() > 40 {
        return None;
    }
    let sep = |at: usize, c: &[u8]| raw.get(at).is_some_and(|b| c.contains(b));
    let (year, month, day) = (digits(raw, 0, 4)?, digits(raw, 5, 2)?, digits(raw, 8, 2)?);
    let (hour, minute, second) = (
        digits(raw, 11, 2)?,
        digits(raw, 14, 2)?,
        digits(raw, 17, 2)?,
    );
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    if year < 1970
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut at = 19usize;
    let mut millis = 0u64;
    if sep(at, b".") {
        at = at.checked_add(1)?;
        let start = at;
        while raw.get(at).is_some_and(u8::is_ascii_digit) {
            at = at.checked_add(1)?;
        }
        let frac = raw.get(start..at)?;
        if frac.is_empty() || frac.len() > 9 {
            return None;
        }
        // Milliseconds: the first three digits, right-padded.
        for i in 0..3 {
            let d = frac.get(i).map_or(0, |b| u64::from(b.saturating_sub(b'0')));
            millis = millis.checked_mul(10)?.checked_add(d)?;
        }
    }
    let offset_s: i64 = match raw.get(at..)? {
        b"Z" | b"z" => 0,
        rest if rest.len() == 6
            && (rest.first() == Some(&b'+') || rest.first() == Some(&b'-'))
            && rest.get(3) == Some(&b':') =>
        {
            let h = i64::try_from(digits(rest, 1, 2)?).ok()?;
            let m = i64::try_from(digits(rest, 4, 2)?).ok()?;
            if h > 23 || m > 59 {
                return None;
            }
            let s = h.checked_mul(3600)?.checked_add(m.checked_mul(60)?)?;
            if rest.first() == Some(&b'-') {
                s.checked_neg()?
            } else {
                s
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day)?;
    let local = days
        .checked_mul(86_400)?
        .checked_add(hour.checked_mul(3600)?)?
        .checked_add(minute.checked_mul(60)?)?
        .checked_add(second)?;
    let utc = i64::try_from(local).ok()?.checked_sub(offset_s)?;
    u64::try_from(utc)
        .ok()?
        .checked_mul(1000)?
        .checked_add(millis)
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (for tools that sign).
#[allow(clippy::arithmetic_side_effects)] // every term is bounded by the u64 day count
pub fn format_secs(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil from days (inverse of days_from_civil), shifted to 0000-03-01.
    let z = days.saturating_add(719_468);
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::{format_secs, parse_ms};

    #[test]
    fn format_round_trips() {
        for secs in [
            0u64,
            951_782_400,
            1_689_761_472,
            1_709_164_800,
            4_102_444_799,
        ] {
            assert_eq!(parse_ms(format_secs(secs).as_bytes()), Some(secs * 1000));
        }
    }

    #[test]
    fn parses_twitch_and_offsets() {
        assert_eq!(parse_ms(b"1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_ms(b"2023-07-19T10:11:12.630662123Z"),
            Some(1_689_761_472_630)
        );
        assert_eq!(
            parse_ms(b"2023-07-19T12:11:12+02:00"),
            Some(1_689_761_472_000)
        );
        assert_eq!(parse_ms(b"2024-02-29T00:00:00.5z"), Some(1_709_164_800_500));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            &b"2023-02-29T00:00:00Z"[..],
            b"2023-07-19 10:11:12Z",
            b"2023-07-19T10:11:12",
            b"2023-07-19T10:11:12.Z",
            b"2023-13-01T00:00:00Z",
            b"1969-12-31T23:59:59Z",
            b"2023-07-19T10:11:12.1234567890Z",
            b"2023-07-19T10:11:12+2:00",
            b"",
        ] {
            assert_eq!(parse_ms(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
