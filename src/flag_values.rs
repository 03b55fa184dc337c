//! Values of command-line flags that the CLI and `corekv bench` share: durations such as
//! "500ms", "1.5s", "2m" or a bare number of seconds, within bounds the flag names.

use std::time::Duration;

/// Why a flag's duration was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DurationError {
    #[error("{0:?} is not a duration such as 500ms, 5s or 2m")]
    NotANumber(String),
    #[error("unknown unit {0:?}: use ms, s or m")]
    UnknownUnit(String),
    #[error("{text:?} must be {bounds}")]
    OutOfBounds { text: String, bounds: &'static str },
}

/// What durations a flag takes.
#[derive(Debug, Clone, Copy)]
pub struct DurationBounds {
    pub zero_allowed: bool,
    pub max: Duration,
    /// The bounds as the error states them ("positive and at most a day").
    pub described: &'static str,
}

/// Parses "500ms", "5s", "1.5s", "2m" or "3" (seconds) within `bounds`.
pub fn parse_duration(text: &str, bounds: DurationBounds) -> Result<Duration, DurationError> {
    let text = text.trim();
    let split = text
        .find(|character: char| character.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .trim()
        .parse()
        .map_err(|_| DurationError::NotANumber(text.to_string()))?;
    let seconds_per_unit = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        other => return Err(DurationError::UnknownUnit(other.to_string())),
    };
    let seconds = number * seconds_per_unit;
    let too_small = if bounds.zero_allowed {
        seconds < 0.0
    } else {
        seconds <= 0.0
    };
    if !seconds.is_finite() || too_small || seconds > bounds.max.as_secs_f64() {
        return Err(DurationError::OutOfBounds {
            text: text.to_string(),
            bounds: bounds.described,
        });
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A_MINUTE: DurationBounds = DurationBounds {
        zero_allowed: false,
        max: Duration::from_secs(60),
        described: "positive and at most a minute",
    };

    #[test]
    fn units_bounds_and_errors() {
        assert_eq!(
            parse_duration("1.5s", A_MINUTE),
            Ok(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_duration(" 20 ", A_MINUTE),
            Ok(Duration::from_secs(20))
        );
        assert!(matches!(
            parse_duration("0s", A_MINUTE),
            Err(DurationError::OutOfBounds { .. })
        ));
        let zero_ok = DurationBounds {
            zero_allowed: true,
            ..A_MINUTE
        };
        assert_eq!(parse_duration("0s", zero_ok), Ok(Duration::ZERO));
        assert!(matches!(
            parse_duration("2h", A_MINUTE),
            Err(DurationError::UnknownUnit(unit)) if unit == "h"
        ));
        assert_eq!(
            parse_duration("2m", A_MINUTE).unwrap_err().to_string(),
            "\"2m\" must be positive and at most a minute"
        );
        assert!(matches!(
            parse_duration("fast", A_MINUTE),
            Err(DurationError::NotANumber(_))
        ));
    }
}
