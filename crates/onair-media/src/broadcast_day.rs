//! Broadcast days: the day a guide shows, which in Japan runs from 05:00 to
//! 05:00 the next morning (a show at 01:30 is listed as "25:30" of the day
//! before). All times are stored as UTC instants; a broadcast day is turned
//! into an instant range in a time zone, with daylight saving handled by the
//! time zone database.

use std::time::Duration;

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;

use crate::error::MediaError;

/// How long a day is at most; a broadcast day start must be earlier.
const DAY: Duration = Duration::from_secs(24 * 3600);

/// A time zone by IANA name ("Asia/Tokyo", "UTC").
pub fn time_zone(name: &str) -> Result<TimeZone, MediaError> {
    TimeZone::get(name).map_err(|_| {
        MediaError::InvalidArgument(format!(
            "unknown time zone {name:?}: use an IANA name such as \"Asia/Tokyo\" or \"UTC\""
        ))
    })
}

/// Parses a broadcast day start written as `HH:MM` (or `HH:MM:SS`), e.g.
/// `05:00`, into the time after local midnight.
pub fn parse_day_start(text: &str) -> Result<Duration, MediaError> {
    let invalid = || {
        MediaError::InvalidArgument(format!(
            "broadcast day start {text:?} is not a time of day: use HH:MM such as \"05:00\""
        ))
    };
    let time: Time = text.trim().parse().map_err(|_| invalid())?;
    let seconds =
        i64::from(time.hour()) * 3600 + i64::from(time.minute()) * 60 + i64::from(time.second());
    Ok(Duration::from_secs(
        u64::try_from(seconds).map_err(|_| invalid())?,
    ))
}

/// Checks a broadcast day start: earlier than 24 hours after midnight.
pub fn check_day_start(day_start: Duration) -> Result<(), MediaError> {
    if day_start >= DAY {
        return Err(MediaError::InvalidArgument(format!(
            "broadcast day start {}s is not within a day: use a time from 00:00 to 23:59",
            day_start.as_secs()
        )));
    }
    Ok(())
}

/// The instants [start, end), in unix milliseconds, that broadcast day `day`
/// (YYYY-MM-DD) covers in `zone` when days start `day_start` after local
/// midnight.
///
/// A day start that falls in a daylight-saving gap moves forward to the first
/// instant after the gap, and one that falls twice (when clocks go back) is
/// the earlier of the two, as RFC 5545 and Temporal do; so consecutive days
/// always join up, and a day is 23 or 25 hours long when the clocks change.
pub fn day_range(
    day: &str,
    zone: &TimeZone,
    day_start: Duration,
) -> Result<(i64, i64), MediaError> {
    check_day_start(day_start)?;
    let date: Date = day.trim().parse().map_err(|_| {
        MediaError::InvalidArgument(format!(
            "broadcast_day {day:?} is not a date: expected YYYY-MM-DD such as 2025-04-01"
        ))
    })?;
    let next = date.tomorrow().map_err(|_| {
        MediaError::InvalidArgument(format!("broadcast_day {day:?} is out of range"))
    })?;
    let start = local_instant(date, zone, day_start)?;
    let end = local_instant(next, zone, day_start)?;
    Ok((start, end))
}

fn local_instant(date: Date, zone: &TimeZone, day_start: Duration) -> Result<i64, MediaError> {
    let seconds = day_start.as_secs();
    let out_of_range =
        || MediaError::InvalidArgument(format!("broadcast day {date} is out of range"));
    let time = Time::new(
        i8::try_from(seconds / 3600).map_err(|_| out_of_range())?,
        i8::try_from((seconds % 3600) / 60).map_err(|_| out_of_range())?,
        i8::try_from(seconds % 60).map_err(|_| out_of_range())?,
        0,
    )
    .map_err(|_| out_of_range())?;
    let local = DateTime::from_parts(date, time);
    let instant = zone
        .to_ambiguous_timestamp(local)
        .compatible()
        .map_err(|_| out_of_range())?;
    Ok(instant.as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: i64 = 3_600_000;

    fn millis(rfc3339: &str) -> i64 {
        rfc3339.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn a_tokyo_broadcast_day_runs_from_five_to_five() {
        let tokyo = time_zone("Asia/Tokyo").unwrap();
        let (start, end) = day_range("2025-04-01", &tokyo, Duration::from_secs(5 * 3600)).unwrap();
        assert_eq!(start, millis("2025-03-31T20:00:00Z"));
        assert_eq!(end, millis("2025-04-01T20:00:00Z"));
    }

    #[test]
    fn days_are_23_or_25_hours_when_clocks_change() {
        let new_york = time_zone("America/New_York").unwrap();
        let (start, end) = day_range("2025-03-09", &new_york, Duration::ZERO).unwrap();
        assert_eq!(end - start, 23 * HOUR_MS);
        let (start, end) = day_range("2025-11-02", &new_york, Duration::ZERO).unwrap();
        assert_eq!(end - start, 25 * HOUR_MS);
        // 02:30 does not exist on 2025-03-09 in New York: the day starts at 03:00 EDT.
        let (start, _) = day_range(
            "2025-03-09",
            &new_york,
            Duration::from_secs(2 * 3600 + 1800),
        )
        .unwrap();
        assert_eq!(start, millis("2025-03-09T07:30:00Z"));
        // and the day before ends where it starts.
        let (_, end) = day_range(
            "2025-03-08",
            &new_york,
            Duration::from_secs(2 * 3600 + 1800),
        )
        .unwrap();
        assert_eq!(end, start);
    }

    #[test]
    fn bad_input_is_refused_with_what_is_expected() {
        let utc = time_zone("UTC").unwrap();
        let error = day_range("2025-02-30", &utc, Duration::ZERO).unwrap_err();
        assert!(error.to_string().contains("YYYY-MM-DD"), "{error}");
        let error = time_zone("Mars/Olympus").unwrap_err();
        assert!(error.to_string().contains("IANA"), "{error}");
        assert!(day_range("2025-01-01", &utc, Duration::from_secs(86_400)).is_err());
        assert_eq!(
            parse_day_start("05:00").unwrap(),
            Duration::from_secs(18_000)
        );
        assert!(parse_day_start("25:00").is_err());
    }
}
