//! Values of numeric flags, checked where they are parsed: every duration flag of every command (and of the agent's
//! config file) goes through [`Seconds`], so that `inf`, `nan`, `1e300` or a negative number is refused with
//! an error naming the flag instead of reaching `Duration::from_secs_f64`, which panics on them.

use std::fmt;
use std::time::Duration;

/// The longest duration a flag takes: a year. Longer is a typo, and an `Instant` plus it must not overflow.
pub const MAX_SECONDS: f64 = 366.0 * 86_400.0;
/// The shortest non-zero duration: a microsecond. Much shorter rounds to a zero `Duration`, which would read as
/// "no limit" for a budget.
pub const MIN_SECONDS: f64 = 0.000_001;

/// A number of seconds given by the user: finite, between [`MIN_SECONDS`] and [`MAX_SECONDS`], or zero where the
/// flag gives zero a meaning ("no limit", "until Ctrl-C").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seconds(Duration);

impl Seconds {
    /// A positive number of seconds (an interval, a budget that must be set).
    pub fn positive(s: &str) -> Result<Seconds, String> {
        match Seconds::or_zero(s)? {
            Seconds(d) if d.is_zero() => Err(format!("{s}: give a positive number of seconds")),
            v => Ok(v),
        }
    }

    /// A number of seconds, or 0 for the flag's "no limit".
    pub fn or_zero(s: &str) -> Result<Seconds, String> {
        let v: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("{s}: not a number of seconds"))?;
        if v == 0.0 {
            return Ok(Seconds(Duration::ZERO));
        }
        if !v.is_finite() || v < 0.0 {
            return Err(format!(
                "{s}: give a finite number of seconds, not negative"
            ));
        }
        if !(MIN_SECONDS..=MAX_SECONDS).contains(&v) {
            return Err(format!(
                "{s}: give between 0.000001 and {MAX_SECONDS} seconds (a year)"
            ));
        }
        Ok(Seconds(Duration::from_secs_f64(v)))
    }

    pub fn duration(self) -> Duration {
        self.0
    }

    /// The duration, or `None` for 0 ("no limit").
    pub fn limit(self) -> Option<Duration> {
        (!self.0.is_zero()).then_some(self.0)
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.0.as_secs_f64())
    }
}

/// A sampling rate in Hz: finite, above 0, at most 1000.
pub fn hz(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("{s}: not a number"))?;
    if !(v > 0.0 && v <= 1000.0) {
        return Err(format!(
            "{s}: give a rate above 0 and at most 1000 samples per second"
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_refuse_what_would_panic_or_spin() {
        assert_eq!(
            Seconds::positive("1.5").unwrap().duration(),
            Duration::from_millis(1500)
        );
        assert_eq!(Seconds::or_zero("0").unwrap().limit(), None);
        assert_eq!(
            Seconds::or_zero("2").unwrap().limit(),
            Some(Duration::from_secs(2))
        );
        for bad in [
            "inf", "-inf", "nan", "NaN", "-1", "1e300", "1e-300", "x", "",
        ] {
            assert!(Seconds::or_zero(bad).is_err(), "{bad}");
            assert!(Seconds::positive(bad).is_err(), "{bad}");
        }
        assert!(Seconds::positive("0").is_err());
        assert!(Seconds::positive("-0").is_err());
        assert!(Seconds::positive("31622400").is_ok());
        assert!(Seconds::positive("31622401").is_err());
        assert!(hz("20").is_ok());
        for bad in ["0", "inf", "nan", "-5", "1001", "1e300"] {
            assert!(hz(bad).is_err(), "{bad}");
        }
    }
}
