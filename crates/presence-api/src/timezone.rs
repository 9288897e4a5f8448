//! Graph's `dateTimeTimeZone` (a wall-clock time without offset, plus a zone name) to an instant.
//!
//! Graph accepts Windows zone names ("Pacific Standard Time") and IANA names ("Europe/Berlin"). IANA names
//! resolve through the time-zone database bundled in the binary (no dependence on the host's files);
//! Windows names go through the CLDR mapping of each Windows zone to its primary IANA zone (territory
//! "001"), listed below for the zones in common use.

use presence_core::Timestamp;

/// Windows zone name → IANA zone (CLDR windowsZones, territory 001).
const WINDOWS_ZONES: &[(&str, &str)] = &[
    ("Dateline Standard Time", "Etc/GMT+12"),
    ("UTC-11", "Etc/GMT+11"),
    ("Aleutian Standard Time", "America/Adak"),
    ("Hawaiian Standard Time", "Pacific/Honolulu"),
    ("Alaskan Standard Time", "America/Anchorage"),
    ("Pacific Standard Time (Mexico)", "America/Tijuana"),
    ("Pacific Standard Time", "America/Los_Angeles"),
    ("US Mountain Standard Time", "America/Phoenix"),
    ("Mountain Standard Time (Mexico)", "America/Mazatlan"),
    ("Mountain Standard Time", "America/Denver"),
    ("Central America Standard Time", "America/Guatemala"),
    ("Central Standard Time", "America/Chicago"),
    ("Central Standard Time (Mexico)", "America/Mexico_City"),
    ("Canada Central Standard Time", "America/Regina"),
    ("SA Pacific Standard Time", "America/Bogota"),
    ("Eastern Standard Time", "America/New_York"),
    ("Eastern Standard Time (Mexico)", "America/Cancun"),
    ("US Eastern Standard Time", "America/Indiana/Indianapolis"),
    ("Venezuela Standard Time", "America/Caracas"),
    ("Atlantic Standard Time", "America/Halifax"),
    ("SA Western Standard Time", "America/La_Paz"),
    ("Pacific SA Standard Time", "America/Santiago"),
    ("Newfoundland Standard Time", "America/St_Johns"),
    ("E. South America Standard Time", "America/Sao_Paulo"),
    ("Argentina Standard Time", "America/Argentina/Buenos_Aires"),
    ("SA Eastern Standard Time", "America/Cayenne"),
    ("Greenland Standard Time", "America/Nuuk"),
    ("UTC-02", "Etc/GMT+2"),
    ("Azores Standard Time", "Atlantic/Azores"),
    ("Cape Verde Standard Time", "Atlantic/Cape_Verde"),
    ("UTC", "Etc/UTC"),
    ("GMT Standard Time", "Europe/London"),
    ("Greenwich Standard Time", "Atlantic/Reykjavik"),
    ("Morocco Standard Time", "Africa/Casablanca"),
    ("W. Europe Standard Time", "Europe/Berlin"),
    ("Central Europe Standard Time", "Europe/Budapest"),
    ("Romance Standard Time", "Europe/Paris"),
    ("Central European Standard Time", "Europe/Warsaw"),
    ("W. Central Africa Standard Time", "Africa/Lagos"),
    ("GTB Standard Time", "Europe/Bucharest"),
    ("Middle East Standard Time", "Asia/Beirut"),
    ("Egypt Standard Time", "Africa/Cairo"),
    ("E. Europe Standard Time", "Europe/Chisinau"),
    ("South Africa Standard Time", "Africa/Johannesburg"),
    ("FLE Standard Time", "Europe/Kyiv"),
    ("Israel Standard Time", "Asia/Jerusalem"),
    ("Kaliningrad Standard Time", "Europe/Kaliningrad"),
    ("Jordan Standard Time", "Asia/Amman"),
    ("Arabic Standard Time", "Asia/Baghdad"),
    ("Turkey Standard Time", "Europe/Istanbul"),
    ("Arab Standard Time", "Asia/Riyadh"),
    ("Russian Standard Time", "Europe/Moscow"),
    ("E. Africa Standard Time", "Africa/Nairobi"),
    ("Iran Standard Time", "Asia/Tehran"),
    ("Arabian Standard Time", "Asia/Dubai"),
    ("Azerbaijan Standard Time", "Asia/Baku"),
    ("Georgian Standard Time", "Asia/Tbilisi"),
    ("Caucasus Standard Time", "Asia/Yerevan"),
    ("Mauritius Standard Time", "Indian/Mauritius"),
    ("Afghanistan Standard Time", "Asia/Kabul"),
    ("West Asia Standard Time", "Asia/Tashkent"),
    ("Ekaterinburg Standard Time", "Asia/Yekaterinburg"),
    ("Pakistan Standard Time", "Asia/Karachi"),
    ("India Standard Time", "Asia/Kolkata"),
    ("Sri Lanka Standard Time", "Asia/Colombo"),
    ("Nepal Standard Time", "Asia/Kathmandu"),
    ("Central Asia Standard Time", "Asia/Almaty"),
    ("Bangladesh Standard Time", "Asia/Dhaka"),
    ("Myanmar Standard Time", "Asia/Yangon"),
    ("SE Asia Standard Time", "Asia/Bangkok"),
    ("N. Central Asia Standard Time", "Asia/Novosibirsk"),
    ("North Asia Standard Time", "Asia/Krasnoyarsk"),
    ("China Standard Time", "Asia/Shanghai"),
    ("North Asia East Standard Time", "Asia/Irkutsk"),
    ("Singapore Standard Time", "Asia/Singapore"),
    ("W. Australia Standard Time", "Australia/Perth"),
    ("Taipei Standard Time", "Asia/Taipei"),
    ("Tokyo Standard Time", "Asia/Tokyo"),
    ("Korea Standard Time", "Asia/Seoul"),
    ("Yakutsk Standard Time", "Asia/Yakutsk"),
    ("Cen. Australia Standard Time", "Australia/Adelaide"),
    ("AUS Central Standard Time", "Australia/Darwin"),
    ("E. Australia Standard Time", "Australia/Brisbane"),
    ("AUS Eastern Standard Time", "Australia/Sydney"),
    ("West Pacific Standard Time", "Pacific/Port_Moresby"),
    ("Tasmania Standard Time", "Australia/Hobart"),
    ("Vladivostok Standard Time", "Asia/Vladivostok"),
    ("New Zealand Standard Time", "Pacific/Auckland"),
    ("UTC+12", "Etc/GMT-12"),
    ("Tonga Standard Time", "Pacific/Tongatapu"),
    ("Samoa Standard Time", "Pacific/Apia"),
    ("Line Islands Standard Time", "Pacific/Kiritimati"),
];

fn zone(name: &str) -> Option<jiff::tz::TimeZone> {
    let trimmed = name.trim();
    if ["UTC", "GMT", "Z", "Etc/UTC", "Coordinated Universal Time"].iter().any(|utc| utc.eq_ignore_ascii_case(trimmed))
    {
        return Some(jiff::tz::TimeZone::UTC);
    }
    let iana = WINDOWS_ZONES
        .iter()
        .find(|(windows, _)| windows.eq_ignore_ascii_case(trimmed))
        .map_or(trimmed, |(_, iana)| *iana);
    jiff::tz::db().get(iana).ok()
}

/// The instant that wall-clock `date_time` in zone `time_zone` denotes.
///
/// `date_time` is ISO 8601 without an offset (`2026-09-01T17:00:00.0000000`); an ambiguous wall-clock time
/// (a clock going back) takes the earlier instant, a skipped one the later, as Graph's calendar does.
pub(crate) fn resolve(date_time: &str, time_zone: &str) -> Result<Timestamp, String> {
    let after_date = date_time.get(10..).unwrap_or_default();
    if after_date.contains(['Z', 'z', '+', '-', '[']) {
        return Err(format!(
            "expiryDateTime.dateTime '{date_time}' must not carry an offset; give the zone in expiryDateTime.timeZone."
        ));
    }
    let civil: jiff::civil::DateTime = date_time.parse().map_err(|_| {
        format!("expiryDateTime.dateTime '{date_time}' is not a date and time such as 2026-09-01T17:00:00.")
    })?;
    let zone =
        zone(time_zone).ok_or_else(|| format!("expiryDateTime.timeZone '{time_zone}' is not a known time zone."))?;
    let instant = zone
        .to_ambiguous_timestamp(civil)
        .compatible()
        .map_err(|_| format!("expiryDateTime '{date_time}' in '{time_zone}' is out of range."))?;
    Ok(Timestamp(instant.as_millisecond()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_windows_zone_maps_to_a_known_iana_zone() {
        for (windows, iana) in WINDOWS_ZONES {
            assert!(jiff::tz::db().get(iana).is_ok(), "{windows} -> {iana}");
        }
    }

    #[test]
    fn resolves_utc_windows_and_iana_zones() {
        let check = |date_time: &str, zone: &str, expected: &str| {
            let got = resolve(date_time, zone).unwrap();
            let expected: jiff::Timestamp = expected.parse().unwrap();
            assert_eq!(got.as_millis(), expected.as_millisecond(), "{date_time} {zone}");
        };
        check("2026-09-01T17:00:00.0000000", "UTC", "2026-09-01T17:00:00Z");
        check("2026-09-01T17:00:00", "Pacific Standard Time", "2026-09-02T00:00:00Z");
        check("2026-01-15T09:30:00", "W. Europe Standard Time", "2026-01-15T08:30:00Z");
        check("2026-01-15T09:30:00", "Europe/Berlin", "2026-01-15T08:30:00Z");
        check("2026-01-15T09:30:00.5", "india standard time", "2026-01-15T04:00:00.5Z");
    }

    #[test]
    fn refuses_offsets_bad_dates_and_unknown_zones() {
        assert!(resolve("2026-09-01T17:00:00Z", "UTC").unwrap_err().contains("offset"));
        assert!(resolve("2026-09-01T17:00:00+02:00", "UTC").unwrap_err().contains("offset"));
        assert!(resolve("2026-09-01 17:00:00+02:00", "UTC").unwrap_err().contains("offset"));
        assert!(resolve("2026-09-01T17:00:00-07:00", "UTC").unwrap_err().contains("offset"));
        assert!(resolve("tomorrow", "UTC").unwrap_err().contains("not a date"));
        assert!(resolve("2026-13-01T17:00:00", "UTC").unwrap_err().contains("not a date"));
        assert!(resolve("2026-09-01T17:00:00", "Mars Standard Time").unwrap_err().contains("time zone"));
    }
}
