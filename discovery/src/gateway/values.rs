//! Values the Gateway API objects and weir's translation of them share: a condition's verdict
//! and Gateway API durations (GEP-2257).
//!
//! Must not: know any object.

use std::time::Duration;

/// One condition's value: its status (`True`/`False`), the spec's reason, and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Verdict {
    pub(crate) fn yes(reason: &'static str, message: impl Into<String>) -> Verdict {
        Verdict {
            status: true,
            reason,
            message: message.into(),
        }
    }

    pub(crate) fn no(reason: &'static str, message: impl Into<String>) -> Verdict {
        Verdict {
            status: false,
            reason,
            message: message.into(),
        }
    }
}

/// A Gateway API duration (GEP-2257): up to four `<number><unit>` parts, units `h`, `m`, `s`,
/// `ms` (`1h30m`, `500ms`, `0s`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a Gateway API duration (like 10s, 1m30s or 500ms)");
    let mut total = Duration::ZERO;
    let mut rest = text;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else {
            return Err(bad());
        };
        rest = &rest[len..];
        total += unit * u32::try_from(number).map_err(|_| bad())?;
        parts += 1;
    }
    if parts == 0 || parts > 4 {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_api_durations_parse_as_gep_2257_has_them() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "10", "s", "1.5s", "-1s", "1d", "1h1m1s1ms1s", "123456s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
