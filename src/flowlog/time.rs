//! UTC timestamps for the logs and `ctl who --at` without a date crate: RFC 3339 out,
//! RFC 3339 / `YYYY-MM-DD HH:MM:SS` / unix seconds in (civil-from-days, H. Hinnant).

/// `2026-11-27T23:01:02.345Z` for unix milliseconds.
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let r = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        r / 3600,
        r / 60 % 60,
        r % 60,
        ms % 1000
    )
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix milliseconds of a UTC time: `2026-11-27T23:01:02Z` (optional `.fff`, `Z` optional,
/// `T` or a space), or unix seconds (`1764284462`, `1764284462.5`).
pub fn parse_utc_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        if secs >= 0.0 {
            return Ok((secs * 1000.0).round() as u64);
        }
    }
    let bad = || format!("`{s}`: not a UTC time (2026-11-27T23:01:02Z or unix seconds)");
    let t = s.strip_suffix('Z').unwrap_or(s);
    let (date, time) = t.split_once(['T', ' ']).ok_or_else(bad)?;
    let mut dp = date.split('-');
    let (Some(y), Some(mo), Some(d), None) = (dp.next(), dp.next(), dp.next(), dp.next()) else {
        return Err(bad());
    };
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut tp = hms.split(':');
    let (Some(h), Some(mi), sec) = (tp.next(), tp.next(), tp.next().unwrap_or("0")) else {
        return Err(bad());
    };
    let n = |x: &str, hi: u32| x.parse::<u32>().ok().filter(|v| *v <= hi).ok_or_else(bad);
    let y: i64 = y.parse().map_err(|_| bad())?;
    let (mo, d, h, mi, sec) = (n(mo, 12)?, n(d, 31)?, n(h, 23)?, n(mi, 59)?, n(sec, 60)?);
    if mo == 0 || d == 0 {
        return Err(bad());
    }
    let ms = if frac.is_empty() {
        0
    } else {
        let f: String = frac.chars().chain("000".chars()).take(3).collect();
        f.parse::<u64>().map_err(|_| bad())?
    };
    let days = days_from_civil(y, mo, d);
    if days < 0 {
        return Err(bad());
    }
    let secs = days as u64 * 86_400 + u64::from(h) * 3600 + u64::from(mi) * 60 + u64::from(sec);
    Ok(secs * 1000 + ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_known_dates() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(parse_utc_ms("2000-02-29T00:00:00Z"), Ok(951_782_400_000));
        for ms in [
            0u64,
            1_764_284_462_345,
            4_102_444_800_000,
            1_709_251_199_999,
        ] {
            assert_eq!(parse_utc_ms(&rfc3339_ms(ms)), Ok(ms), "{}", rfc3339_ms(ms));
        }
        assert_eq!(
            parse_utc_ms("2026-11-27 23:01:02"),
            parse_utc_ms("2026-11-27T23:01:02Z")
        );
        assert_eq!(parse_utc_ms("1764284462"), Ok(1_764_284_462_000));
        assert!(parse_utc_ms("yesterday").is_err());
        assert!(parse_utc_ms("2026-13-01T00:00:00Z").is_err());
    }
}
