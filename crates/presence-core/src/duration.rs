//! ISO 8601 durations as Graph's `Edm.Duration` carries them, and the ranges each action allows.
//!
//! Graph serialises `Edm.Duration` as an XML Schema `dayTimeDuration`: `P[nD][T[nH][nM][n[.fff]S]]`.
//! Years and months have no fixed length and are refused, as are weeks (not part of the grammar) and a
//! leading minus sign (a negative duration is never valid for presence).

use std::time::Duration;

/// Shortest `expirationDuration` setPresence accepts.
pub const SET_PRESENCE_MIN: Duration = Duration::from_secs(5 * 60);
/// Longest `expirationDuration` setPresence accepts.
pub const SET_PRESENCE_MAX: Duration = Duration::from_secs(4 * 60 * 60);
/// `expirationDuration` of setPresence when the caller gives none.
pub const SET_PRESENCE_DEFAULT: Duration = SET_PRESENCE_MIN;
/// Default preferred-presence lifetime for Busy and DoNotDisturb.
pub const PREFERRED_DEFAULT_SHORT: Duration = Duration::from_secs(24 * 60 * 60);
/// Default preferred-presence lifetime for every other preferred pair.
pub const PREFERRED_DEFAULT_LONG: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// The longest duration this server represents at all (about 100 years); longer input is refused.
pub const MAX_REPRESENTABLE: Duration = Duration::from_secs(100 * 366 * 24 * 60 * 60);

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not an ISO 8601 day-time duration.
    #[error("'{0}' is not an ISO 8601 duration such as PT30M or P1DT2H")]
    Unparsable(String),
    /// Years, months or weeks, whose length depends on the calendar.
    #[error("'{0}' uses years, months or weeks; use days, hours, minutes and seconds")]
    CalendarUnits(String),
    /// Negative or zero.
    #[error("'{0}' must be longer than zero")]
    NotPositive(String),
    /// Longer than [`MAX_REPRESENTABLE`].
    #[error("'{0}' is too long")]
    TooLong(String),
}

/// Parses an ISO 8601 day-time duration such as `PT5M`, `PT1H30M`, `P1D` or `PT0.5S`.
///
/// Also accepted, because the official Python SDK (msgraph-sdk) sends it for every `Edm.Duration`: the
/// text of a Python `timedelta`, `[D day[s], ]H:MM:SS[.ffffff]` (`1:00:00`, `2 days, 0:30:00`).
/// Zero and negative durations are refused; callers check their own ranges.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    if text.contains(':') {
        return parse_clock_form(text);
    }
    let unparsable = || DurationError::Unparsable(text.to_owned());
    if text.starts_with('-') {
        return Err(DurationError::NotPositive(text.to_owned()));
    }
    let body = text.strip_prefix('P').or_else(|| text.strip_prefix('p')).ok_or_else(unparsable)?;
    if body.is_empty() {
        return Err(unparsable());
    }
    let (date_part, time_part) = match body.find(['T', 't']) {
        Some(index) => (&body[..index], Some(&body[index + 1..])),
        None => (body, None),
    };
    let mut total = Duration::ZERO;
    let mut any_component = false;
    let mut add = |amount: Duration| -> Result<(), DurationError> {
        total = total
            .checked_add(amount)
            .filter(|sum| *sum <= MAX_REPRESENTABLE)
            .ok_or_else(|| DurationError::TooLong(text.to_owned()))?;
        any_component = true;
        Ok(())
    };

    let mut rest = date_part;
    while !rest.is_empty() {
        let (number, unit, tail) = split_component(rest).ok_or_else(unparsable)?;
        match unit.to_ascii_uppercase() {
            'D' => add(scaled(number, 24 * 60 * 60).ok_or_else(|| DurationError::TooLong(text.to_owned()))?)?,
            'Y' | 'M' | 'W' => return Err(DurationError::CalendarUnits(text.to_owned())),
            _ => return Err(unparsable()),
        }
        rest = tail;
    }

    if let Some(time_part) = time_part {
        if time_part.is_empty() {
            return Err(unparsable());
        }
        let mut rest = time_part;
        let mut last_rank = 0;
        while !rest.is_empty() {
            let (number, unit, tail) = split_component(rest).ok_or_else(unparsable)?;
            let (rank, seconds_per_unit) = match unit.to_ascii_uppercase() {
                'H' => (1, 3600),
                'M' => (2, 60),
                'S' => (3, 1),
                _ => return Err(unparsable()),
            };
            if rank <= last_rank || (number.contains('.') && rank != 3) {
                return Err(unparsable());
            }
            last_rank = rank;
            add(scaled(number, seconds_per_unit).ok_or_else(|| DurationError::TooLong(text.to_owned()))?)?;
            rest = tail;
        }
    }

    if !any_component {
        return Err(unparsable());
    }
    if total.is_zero() {
        return Err(DurationError::NotPositive(text.to_owned()));
    }
    Ok(total)
}

/// `[D day[s], ]H:MM:SS[.ffffff]`, as Python's `str(timedelta)` writes a duration.
fn parse_clock_form(text: &str) -> Result<Duration, DurationError> {
    let unparsable = || DurationError::Unparsable(text.to_owned());
    if text.starts_with('-') {
        return Err(DurationError::NotPositive(text.to_owned()));
    }
    let (days, clock) = match text.split_once(", ") {
        Some((days, clock)) => {
            let days = days.strip_suffix(" days").or_else(|| days.strip_suffix(" day")).ok_or_else(unparsable)?;
            if days.is_empty() || days.len() > 9 || !days.bytes().all(|b| b.is_ascii_digit()) {
                return Err(unparsable());
            }
            (days.parse::<u64>().map_err(|_| unparsable())?, clock)
        }
        None => (0, text),
    };
    let mut parts = clock.split(':');
    let (Some(hours), Some(minutes), Some(seconds), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(unparsable());
    };
    let digits = |part: &str, max_len: usize| {
        !part.is_empty() && part.len() <= max_len && part.bytes().all(|b| b.is_ascii_digit())
    };
    let (whole_seconds, fraction) = seconds.split_once('.').unwrap_or((seconds, ""));
    if !digits(hours, 9)
        || !digits(minutes, 2)
        || !digits(whole_seconds, 2)
        || (seconds.contains('.') && !digits(fraction, 9))
    {
        return Err(unparsable());
    }
    let (hours, minutes, whole_seconds): (u64, u64, u64) = (
        hours.parse().map_err(|_| unparsable())?,
        minutes.parse().map_err(|_| unparsable())?,
        whole_seconds.parse().map_err(|_| unparsable())?,
    );
    if minutes > 59 || whole_seconds > 59 {
        return Err(unparsable());
    }
    let total_seconds = days
        .checked_mul(86_400)
        .and_then(|total| total.checked_add(hours.checked_mul(3600)?))
        .and_then(|total| total.checked_add(minutes * 60 + whole_seconds))
        .ok_or_else(|| DurationError::TooLong(text.to_owned()))?;
    let nanos: u32 = format!("{fraction:0<9}").parse().map_err(|_| unparsable())?;
    let total = Duration::new(total_seconds, nanos);
    if total > MAX_REPRESENTABLE {
        return Err(DurationError::TooLong(text.to_owned()));
    }
    if total.is_zero() {
        return Err(DurationError::NotPositive(text.to_owned()));
    }
    Ok(total)
}

/// Splits `"30M..."` into `("30", 'M', "...")`; the number may carry a fraction (`"1.5S"`).
fn split_component(text: &str) -> Option<(&str, char, &str)> {
    let end = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let number = &text[..end];
    let unit = text[end..].chars().next()?;
    let digits_ok = !number.is_empty()
        && !number.starts_with('.')
        && !number.ends_with('.')
        && number.matches('.').count() <= 1
        && number.len() <= 24;
    digits_ok.then(|| (number, unit, &text[end + unit.len_utf8()..]))
}

/// `number` units of `seconds_per_unit` seconds, keeping up to nanosecond precision of a fraction.
fn scaled(number: &str, seconds_per_unit: u64) -> Option<Duration> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let whole: u64 = whole.parse().ok()?;
    let mut nanos_text: String = fraction.chars().take(9).collect();
    while nanos_text.len() < 9 {
        nanos_text.push('0');
    }
    let nanos: u64 = nanos_text.parse().ok()?;
    let whole_seconds = whole.checked_mul(seconds_per_unit)?;
    let fraction_nanos = nanos.checked_mul(seconds_per_unit)?;
    Duration::from_secs(whole_seconds).checked_add(Duration::from_nanos(fraction_nanos))
}

/// Formats a duration the way Graph writes one (`PT5M`, `P1DT2H`, `PT0.5S`).
pub fn format(duration: Duration) -> String {
    let total = duration.as_secs();
    let (days, hours, minutes, seconds) = (total / 86_400, total / 3600 % 24, total / 60 % 60, total % 60);
    let nanos = duration.subsec_nanos();
    let mut out = String::from("P");
    if days > 0 {
        out.push_str(&format!("{days}D"));
    }
    if hours > 0 || minutes > 0 || seconds > 0 || nanos > 0 || days == 0 {
        out.push('T');
        if hours > 0 {
            out.push_str(&format!("{hours}H"));
        }
        if minutes > 0 {
            out.push_str(&format!("{minutes}M"));
        }
        if seconds > 0 || nanos > 0 || (hours == 0 && minutes == 0) {
            if nanos > 0 {
                let fraction = format!("{nanos:09}");
                out.push_str(&format!("{seconds}.{}S", fraction.trim_end_matches('0')));
            } else {
                out.push_str(&format!("{seconds}S"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<u64, &str>) {
        let got = parse(input).map(|d| d.as_millis() as u64).map_err(|e| match e {
            DurationError::Unparsable(_) => "unparsable",
            DurationError::CalendarUnits(_) => "calendar",
            DurationError::NotPositive(_) => "not positive",
            DurationError::TooLong(_) => "too long",
        });
        assert_eq!(got, expected, "{input}");
    }

    #[test]
    fn accepts_day_time_durations() {
        check("PT5M", Ok(300_000));
        check("PT4H", Ok(14_400_000));
        check("PT1H30M", Ok(5_400_000));
        check("P1D", Ok(86_400_000));
        check("P1DT2H", Ok(93_600_000));
        check("PT0.5S", Ok(500));
        check("PT90S", Ok(90_000));
        check("pt5m", Ok(300_000));
        check("PT1H0M0S", Ok(3_600_000));
    }

    #[test]
    fn refuses_everything_else() {
        check("", Err("unparsable"));
        check("P", Err("unparsable"));
        check("PT", Err("unparsable"));
        check("5M", Err("unparsable"));
        check("PT5", Err("unparsable"));
        check("PT5X", Err("unparsable"));
        check("PT5M1H", Err("unparsable"));
        check("PT1.5M", Err("unparsable"));
        check("PT.5S", Err("unparsable"));
        check("PT5.S", Err("unparsable"));
        check("PT1..5S", Err("unparsable"));
        check("P1DT", Err("unparsable"));
        check("PT5M ", Err("unparsable"));
        check("PT5MM", Err("unparsable"));
        check("P1Y", Err("calendar"));
        check("P1M", Err("calendar"));
        check("P1W", Err("calendar"));
        check("PT0S", Err("not positive"));
        check("P0D", Err("not positive"));
        check("-PT5M", Err("not positive"));
        check("P99999999999999999D", Err("too long"));
        check("PT999999999999999999999H", Err("too long"));
        check("P40000D", Err("too long"));
        check("PT5M\u{e9}", Err("unparsable"));
    }

    #[test]
    fn accepts_the_python_sdk_timedelta_form() {
        check("1:00:00", Ok(3_600_000));
        check("0:05:00", Ok(300_000));
        check("4:00:00", Ok(14_400_000));
        check("1 day, 0:00:00", Ok(86_400_000));
        check("7 days, 12:30:00", Ok(649_800_000));
        check("0:00:00.500000", Ok(500));
        check("0:00:00", Err("not positive"));
        check("-1 day, 23:55:00", Err("not positive"));
        check("1:60:00", Err("unparsable"));
        check("1:00", Err("unparsable"));
        check("1:00:00:00", Err("unparsable"));
        check("x:00:00", Err("unparsable"));
        check("1 week, 0:00:00", Err("unparsable"));
        check("99999999999 days, 0:00:00", Err("unparsable"));
        check("40000 days, 0:00:00", Err("too long"));
    }

    #[test]
    fn format_round_trips() {
        for text in ["PT5M", "PT4H", "P1D", "P7D", "P1DT2H", "PT1H30M", "PT0.5S", "PT1S"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }
}
