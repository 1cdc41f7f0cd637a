//! Wall-clock times as UTC text: acceld's event times for people, and the timestamps of the
//! Kubernetes objects the device plugin writes.

/// Civil date and time of `secs` since the epoch: (year, month, day, hour, minute, second).
fn civil(secs: u64) -> (i64, i64, i64, u64, u64, u64) {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem / 60 % 60, rem % 60)
}

/// `seconds` since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub fn utc(seconds: f64) -> String {
    let ms = (seconds * 1000.0).max(0.0) as u64;
    let (y, m, d, hh, mm, ss) = civil(ms / 1000);
    format!(
        "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{:03}Z",
        ms % 1000
    )
}

/// `secs` since the epoch as RFC 3339 in whole seconds, `YYYY-MM-DDTHH:MM:SSZ`: the form of
/// a Kubernetes `metav1.Time`.
pub fn rfc3339(secs: u64) -> String {
    let (y, m, d, hh, mm, ss) = civil(secs);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::utc(1_796_400_000.5), "2026-12-04T16:00:00.500Z");
        assert_eq!(super::utc(951_782_400.0), "2000-02-29T00:00:00.000Z");
        assert_eq!(super::rfc3339(1_796_400_061), "2026-12-04T16:01:01Z");
        assert_eq!(super::rfc3339(4_107_542_400), "2100-03-01T00:00:00Z");
    }
}
