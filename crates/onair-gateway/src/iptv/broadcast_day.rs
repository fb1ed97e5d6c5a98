//! Broadcast days: which days the guide covers, counted in the station's
//! time zone from the day start (05:00 belongs to today, 01:30 to
//! yesterday), and the time ranges it asks the media service for.

use std::time::Duration;

use jiff::civil::Date;
use jiff::tz::TimeZone;

use super::settings::IptvSettings;

/// The most broadcast days one timetable call of the guide covers: a week is
/// one call, and no call nears the media service's longest range.
const GUIDE_DAYS_PER_CALL: u32 = 7;

/// The time ranges the guide reads: from the start of the broadcast day on
/// air at `now_ms` to the end of the guide's last day, cut into ranges of at most
/// [`GUIDE_DAYS_PER_CALL`] broadcast days. Days are counted in the
/// station's time zone, so a day across a clock change is 23 or 25 hours.
pub(super) fn guide_ranges(
    now_ms: i64,
    settings: &IptvSettings,
) -> Result<Vec<(jiff::Timestamp, jiff::Timestamp)>, String> {
    let now = jiff::Timestamp::from_millisecond(now_ms)
        .map_err(|error| format!("the clock is out of range: {error}"))?;
    let day_start = settings.broadcast_day_start;
    let zone = &settings.time_zone;
    let first = broadcast_day_of(now, zone, day_start)?;
    let mut ranges = Vec::new();
    let mut day = first;
    let mut left = settings.epg_days;
    while left > 0 {
        let days = left.min(GUIDE_DAYS_PER_CALL);
        let next = day
            .checked_add(jiff::Span::new().days(i64::from(days)))
            .map_err(|error| format!("the guide runs past the calendar: {error}"))?;
        ranges.push((
            day_start_instant(day, zone, day_start)?,
            day_start_instant(next, zone, day_start)?,
        ));
        day = next;
        left -= days;
    }
    Ok(ranges)
}

/// The broadcast day on air at `now`: the local date of `now` less the day
/// start, so that 01:30 belongs to the day before when days start at 05:00.
fn broadcast_day_of(
    now: jiff::Timestamp,
    zone: &TimeZone,
    day_start: Duration,
) -> Result<Date, String> {
    let local = zone.to_datetime(now);
    let day_start = jiff::SignedDuration::try_from(day_start)
        .map_err(|error| format!("the broadcast day start is out of range: {error}"))?;
    let shifted = local
        .checked_sub(day_start)
        .map_err(|error| format!("the broadcast day is out of range: {error}"))?;
    Ok(shifted.date())
}

/// When broadcast day `day` starts: its date at the day start, in `zone`
/// (the earlier of two such instants when clocks go back, the first after a
/// gap when they go forward).
fn day_start_instant(
    day: Date,
    zone: &TimeZone,
    day_start: Duration,
) -> Result<jiff::Timestamp, String> {
    let day_start = jiff::SignedDuration::try_from(day_start)
        .map_err(|error| format!("the broadcast day start is out of range: {error}"))?;
    let local = day
        .to_datetime(jiff::civil::Time::midnight())
        .checked_add(day_start)
        .map_err(|error| format!("broadcast day {day} is out of range: {error}"))?;
    zone.to_ambiguous_timestamp(local)
        .compatible()
        .map_err(|error| format!("broadcast day {day} has no start in the time zone: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broadcast_day_before_the_day_start_is_yesterday() {
        let tokyo = TimeZone::get("Asia/Tokyo").unwrap();
        let five = Duration::from_secs(5 * 3600);
        // 01:30 on April 2nd in Tokyo belongs to April 1st's broadcast day.
        let late: jiff::Timestamp = "2025-04-01T16:30:00Z".parse().unwrap();
        assert_eq!(
            broadcast_day_of(late, &tokyo, five).unwrap().to_string(),
            "2025-04-01"
        );
        // 05:00 starts April 2nd's.
        let morning: jiff::Timestamp = "2025-04-01T20:00:00Z".parse().unwrap();
        assert_eq!(
            broadcast_day_of(morning, &tokyo, five).unwrap().to_string(),
            "2025-04-02"
        );
    }
}
