//! What the IPTV exports need to know about the station (its time zone,
//! broadcast day, guide length and XMLTV domain), checked when they are made.

use std::time::Duration;

use jiff::tz::TimeZone;
use onair_kit::config::{ConfigError, Key, Section, Settings, count_within};

use crate::settings::GatewaySettings;

/// The most broadcast days a guide may cover; the media service answers a
/// timetable of at most 31 days.
pub const MAX_EPG_DAYS: u32 = 31;

/// Why IPTV settings are refused.
#[derive(Debug, thiserror::Error)]
pub enum IptvSettingsError {
    /// The time zone is not one the IANA database knows; holds the name
    /// given.
    #[error("unknown time zone {0:?}: use an IANA name such as \"Asia/Tokyo\" or \"UTC\"")]
    UnknownTimeZone(String),
    /// The broadcast day start is not a time of day (`HH:MM`); holds the
    /// text given.
    #[error("broadcast day start {0:?} is not a time of day: use HH:MM such as \"05:00\"")]
    InvalidDayStart(String),
    /// The guide covers 0 days, or more than [`MAX_EPG_DAYS`].
    #[error("epg_days {0} is out of range: use 1 to {MAX_EPG_DAYS}")]
    EpgDaysOutOfRange(u32),
    /// The XMLTV domain is not dot-separated labels of letters, digits and
    /// hyphens; holds the text given.
    #[error(
        "xmltv_domain {0:?} is not a domain name: use letters, digits and hyphens in dot-separated labels, e.g. \"tv.example.com\""
    )]
    InvalidXmltvDomain(String),
}

/// What the IPTV exports need to know about the station.
#[derive(Debug, Clone)]
pub struct IptvSettings {
    /// The station's time zone: the guide starts at the beginning of the
    /// broadcast day on air now, counted in it.
    pub time_zone: TimeZone,
    /// When a broadcast day starts, after local midnight.
    pub broadcast_day_start: Duration,
    /// How many broadcast days the guide covers.
    pub epg_days: u32,
    /// Appended to channel ids to make XMLTV channel ids (`news-1.onair`).
    pub xmltv_domain: String,
    /// How long clients and proxies may reuse a playlist or guide without
    /// asking again.
    pub max_age: Duration,
    /// How long one call to the media service may take.
    pub request_timeout: Duration,
    /// The largest timetable (up to a week of the whole station) read from
    /// the media service, in bytes.
    pub max_timetable_bytes: usize,
}

impl IptvSettings {
    /// Settings for a station in `time_zone` (an IANA name) whose broadcast
    /// day starts at `broadcast_day_start` (`HH:MM`), with a guide of
    /// `epg_days` days and XMLTV ids under `xmltv_domain`.
    pub fn for_station(
        time_zone: &str,
        broadcast_day_start: &str,
        epg_days: u32,
        xmltv_domain: &str,
    ) -> Result<IptvSettings, IptvSettingsError> {
        let zone = TimeZone::get(time_zone)
            .map_err(|_| IptvSettingsError::UnknownTimeZone(time_zone.to_owned()))?;
        let day_start: jiff::civil::Time = broadcast_day_start
            .trim()
            .parse()
            .map_err(|_| IptvSettingsError::InvalidDayStart(broadcast_day_start.to_owned()))?;
        let day_start_seconds = u64::from(day_start.hour().unsigned_abs()) * 3600
            + u64::from(day_start.minute().unsigned_abs()) * 60
            + u64::from(day_start.second().unsigned_abs());
        if epg_days == 0 || epg_days > MAX_EPG_DAYS {
            return Err(IptvSettingsError::EpgDaysOutOfRange(epg_days));
        }
        if !is_domain_name(xmltv_domain) {
            return Err(IptvSettingsError::InvalidXmltvDomain(
                xmltv_domain.to_owned(),
            ));
        }
        Ok(IptvSettings {
            time_zone: zone,
            broadcast_day_start: Duration::from_secs(day_start_seconds),
            epg_days,
            xmltv_domain: xmltv_domain.to_owned(),
            max_age: Duration::from_secs(300),
            request_timeout: Duration::from_secs(15),
            max_timetable_bytes: 256 * 1024 * 1024,
        })
    }
}

/// What `iptv.epg_days` takes.
const EPG_DAYS_EXPECTED: &str = "a whole number of days from 1 to 31";
/// What `iptv.xmltv_domain` takes.
const XMLTV_DOMAIN_EXPECTED: &str = "a domain name such as tv.example.com";

impl Section for IptvSettings {
    const KEYS: &'static [Key] = &[
        Key::with_default("iptv.epg_days", "7"),
        Key::with_default("iptv.xmltv_domain", "onair"),
    ];

    /// Reads the `iptv.*` keys with the station's time zone and broadcast
    /// day; calls to the media service get the REST deadline
    /// (`gateway.request_timeout_ms`).
    fn read(settings: &Settings) -> Result<Self, ConfigError> {
        let layers = settings.layers();
        let epg_days = layers.required(
            "iptv.epg_days",
            EPG_DAYS_EXPECTED,
            count_within(1..=MAX_EPG_DAYS),
        )?;
        let xmltv_domain =
            layers.required("iptv.xmltv_domain", XMLTV_DOMAIN_EXPECTED, |value| {
                is_domain_name(value).then(|| value.to_owned())
            })?;
        let mut iptv = IptvSettings::for_station(
            &settings.time_zone,
            &settings.broadcast_day_start,
            epg_days,
            &xmltv_domain,
        )
        .map_err(|error| match error {
            IptvSettingsError::UnknownTimeZone(_) => {
                layers.invalid("media.time_zone", "an IANA time zone such as Asia/Tokyo")
            }
            IptvSettingsError::InvalidDayStart(_) => layers.invalid(
                "media.broadcast_day_start",
                "a local time HH:MM such as 05:00",
            ),
            IptvSettingsError::EpgDaysOutOfRange(_) => {
                layers.invalid("iptv.epg_days", EPG_DAYS_EXPECTED)
            }
            IptvSettingsError::InvalidXmltvDomain(_) => {
                layers.invalid("iptv.xmltv_domain", XMLTV_DOMAIN_EXPECTED)
            }
        })?;
        iptv.request_timeout = settings.section::<GatewaySettings>()?.request_timeout;
        Ok(iptv)
    }
}

/// Dot-separated labels of ASCII letters, digits and hyphens: the shape
/// XMLTV wants after a channel id.
fn is_domain_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_refuse_what_xmltv_or_the_media_service_cannot_take() {
        assert!(IptvSettings::for_station("Asia/Tokyo", "05:00", 7, "onair").is_ok());
        assert!(IptvSettings::for_station("Mars/Base", "05:00", 7, "onair").is_err());
        assert!(IptvSettings::for_station("UTC", "25:00", 7, "onair").is_err());
        assert!(IptvSettings::for_station("UTC", "00:00", 0, "onair").is_err());
        assert!(IptvSettings::for_station("UTC", "00:00", 32, "onair").is_err());
        assert!(IptvSettings::for_station("UTC", "00:00", 7, "tv..example").is_err());
        assert!(IptvSettings::for_station("UTC", "00:00", 7, "tv.example.com").is_ok());
    }
}
