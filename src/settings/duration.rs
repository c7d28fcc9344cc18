//! Human durations in settings: `"250ms"`, `"10s"`, `"5m"`, `"1h"`, `"1m30s"`. Written
//! as strings with a unit, never bare numbers, so nobody has to guess whether `10` means
//! seconds or milliseconds.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// A duration setting that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DurationError {
    /// The text is empty.
    Empty,
    /// A number without a unit, or a unit without a number, in `text`.
    Malformed(String),
    /// A unit other than `ms`, `s`, `m`, `h`.
    UnknownUnit(String),
    /// Larger than any timeout could need.
    TooLarge(String),
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const FORMS: &str =
            "write a whole number and a unit, e.g. \"250ms\", \"10s\", \"5m\", \"1h\" or \"1m30s\"";
        match self {
            Self::Empty => write!(f, "the duration is empty; {FORMS}"),
            Self::Malformed(t) => write!(f, "{t:?} is not a duration; {FORMS}"),
            Self::UnknownUnit(u) => write!(
                f,
                "{u:?} is not a duration unit; use ms, s, m or h (e.g. \"10s\")"
            ),
            Self::TooLarge(t) => write!(f, "{t:?} is too long a duration for a timeout"),
        }
    }
}

impl std::error::Error for DurationError {}

/// Parses `"250ms"`, `"10s"`, `"5m"`, `"1h"` and sums like `"1m30s"`; a bare `"0"` is
/// zero (in any unit, so not ambiguous: `reload_interval = "0"` turns the watch off).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let malformed = || DurationError::Malformed(text.to_owned());
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(malformed());
        }
        let (number, after) = rest.split_at(digits);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(malformed());
        }
        let n: u64 = number
            .parse()
            .map_err(|_| DurationError::TooLarge(text.to_owned()))?;
        let millis_per = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            other => return Err(DurationError::UnknownUnit(other.to_owned())),
        };
        let part = n
            .checked_mul(millis_per)
            .map(Duration::from_millis)
            .ok_or_else(|| DurationError::TooLarge(text.to_owned()))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| DurationError::TooLarge(text.to_owned()))?;
        rest = next;
    }
    Ok(total)
}

/// Writes a duration the way [`parse_duration`] reads it, in the largest exact unit.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, per) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms != 0 && ms % per == 0 {
            return format!("{}{unit}", ms / per);
        }
    }
    format!("{ms}ms")
}

/// serde `with` module for `Duration` fields.
pub(crate) mod human {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a duration string with a unit, e.g. \"10s\" (a bare number is ambiguous)",
            )
        })?;
        parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_sums_parse_and_format_back() {
        for (text, ms) in [
            ("250ms", 250),
            ("10s", 10_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("1m30s", 90_000),
            (" 2s ", 2_000),
            ("0", 0),
            ("0s", 0),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
            assert_eq!(
                parse_duration(&format_duration(Duration::from_millis(ms))),
                Ok(Duration::from_millis(ms))
            );
        }
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn bad_durations_say_what_is_expected() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(
            parse_duration("10"),
            Err(DurationError::Malformed("10".into()))
        );
        assert_eq!(
            parse_duration("s"),
            Err(DurationError::Malformed("s".into()))
        );
        assert_eq!(
            parse_duration("-1s"),
            Err(DurationError::Malformed("-1s".into()))
        );
        assert_eq!(
            parse_duration("10 s"),
            Err(DurationError::UnknownUnit(" s".into()))
        );
        assert_eq!(
            parse_duration("3d"),
            Err(DurationError::UnknownUnit("d".into()))
        );
        assert!(matches!(
            parse_duration("99999999999999999999s"),
            Err(DurationError::TooLarge(_))
        ));
        let shown = parse_duration("10").unwrap_err().to_string();
        assert!(shown.contains("\"10s\""), "{shown}");
        assert!(parse_duration("2w")
            .unwrap_err()
            .to_string()
            .contains("use ms, s, m or h"));
    }
}
