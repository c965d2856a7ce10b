//! SMPP time formats (SMPP 3.4 7.1.1), used by `schedule_delivery_time`, `validity_period` and `final_date`:
//!
//! - absolute `YYMMDDhhmmsstnnp`: local time, tenths of a second `t`, and `nn` quarter hours between that local
//!   time and UTC, `p` being `+` (local time ahead of UTC) or `-` (behind);
//! - relative `YYMMDDhhmmss000R`: an interval from now.
//!
//! Years `YY` are 2000 + YY.

/// A parsed SMPP time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SmppTime {
    Absolute(AbsoluteTime),
    Relative(RelativeTime),
}

/// A point in time as SMPP writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AbsoluteTime {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub tenths: u8,
    /// Quarter hours the local time is ahead of UTC (negative: behind), -48..=48.
    pub offset_quarters: i8,
}

/// An interval as SMPP writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RelativeTime {
    pub years: u8,
    pub months: u8,
    pub days: u8,
    pub hours: u8,
    pub minutes: u8,
    pub seconds: u8,
}

/// Why a time string is not an SMPP time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("an SMPP time has 16 characters, not {0}")]
    Length(usize),
    #[error("{0} is not two digits")]
    NotDigits(&'static str),
    #[error("{field} {value} is out of range")]
    OutOfRange { field: &'static str, value: u32 },
    #[error("the last character must be '+', '-' or 'R', not {0:?}")]
    Direction(char),
    #[error("a relative time must have \"000\" before its 'R'")]
    RelativeTail,
}

fn two(s: &[u8], at: usize, field: &'static str) -> Result<u8, TimeError> {
    match (s[at], s[at + 1]) {
        (a @ b'0'..=b'9', b @ b'0'..=b'9') => Ok((a - b'0') * 10 + (b - b'0')),
        _ => Err(TimeError::NotDigits(field)),
    }
}

fn range(field: &'static str, v: u8, lo: u8, hi: u8) -> Result<u8, TimeError> {
    if (lo..=hi).contains(&v) { Ok(v) } else { Err(TimeError::OutOfRange { field, value: v.into() }) }
}

impl SmppTime {
    /// Parses the 16 characters of an SMPP time.
    pub fn parse(s: &str) -> Result<SmppTime, TimeError> {
        let b = s.as_bytes();
        if b.len() != 16 {
            return Err(TimeError::Length(s.chars().count()));
        }
        let yy = two(b, 0, "year")?;
        let mm = two(b, 2, "month")?;
        let dd = two(b, 4, "day")?;
        let hh = two(b, 6, "hour")?;
        let mi = two(b, 8, "minute")?;
        let ss = two(b, 10, "second")?;
        match b[15] {
            b'R' => {
                if &b[12..15] != b"000" {
                    return Err(TimeError::RelativeTail);
                }
                Ok(SmppTime::Relative(RelativeTime {
                    years: yy,
                    months: mm,
                    days: dd,
                    hours: hh,
                    minutes: mi,
                    seconds: ss,
                }))
            }
            p @ (b'+' | b'-') => {
                let tenths = match b[12] {
                    t @ b'0'..=b'9' => t - b'0',
                    _ => return Err(TimeError::NotDigits("tenths")),
                };
                let nn = range("utc offset", two(b, 13, "utc offset")?, 0, 48)? as i8;
                let year = 2000 + u16::from(yy);
                let month = range("month", mm, 1, 12)?;
                let day = range("day", dd, 1, days_in_month(year, month))?;
                Ok(SmppTime::Absolute(AbsoluteTime {
                    year,
                    month,
                    day,
                    hour: range("hour", hh, 0, 23)?,
                    minute: range("minute", mi, 0, 59)?,
                    second: range("second", ss, 0, 59)?,
                    tenths,
                    offset_quarters: if p == b'-' { -nn } else { nn },
                }))
            }
            other => Err(TimeError::Direction(char::from(other))),
        }
    }

    /// The time as seconds since the Unix epoch (UTC); a relative time counts from `now`.
    pub fn resolve(&self, now: i64) -> i64 {
        match self {
            SmppTime::Absolute(a) => a.unix_seconds(),
            SmppTime::Relative(r) => r.after(now),
        }
    }
}

impl std::fmt::Display for SmppTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SmppTime::Absolute(a) => write!(
                f,
                "{:02}{:02}{:02}{:02}{:02}{:02}{}{:02}{}",
                a.year % 100,
                a.month,
                a.day,
                a.hour,
                a.minute,
                a.second,
                a.tenths,
                a.offset_quarters.unsigned_abs(),
                if a.offset_quarters < 0 { '-' } else { '+' }
            ),
            SmppTime::Relative(r) => write!(
                f,
                "{:02}{:02}{:02}{:02}{:02}{:02}000R",
                r.years, r.months, r.days, r.hours, r.minutes, r.seconds
            ),
        }
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        2 if is_leap(i64::from(year)) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

impl AbsoluteTime {
    /// Seconds since the Unix epoch, UTC (tenths dropped).
    pub fn unix_seconds(&self) -> i64 {
        let days = days_from_civil(i64::from(self.year), u32::from(self.month), u32::from(self.day));
        let local = days * 86_400 + i64::from(self.hour) * 3600 + i64::from(self.minute) * 60 + i64::from(self.second);
        local - i64::from(self.offset_quarters) * 900
    }

    /// The time `unix` seconds after the epoch, written in UTC (offset 0). `None` outside the years 2000..=2099.
    pub fn from_unix(unix: i64) -> Option<AbsoluteTime> {
        let (y, m, d) = civil_from_days(unix.div_euclid(86_400));
        let secs = unix.rem_euclid(86_400);
        (2000..=2099).contains(&y).then_some(AbsoluteTime {
            year: y as u16,
            month: m as u8,
            day: d as u8,
            hour: (secs / 3600) as u8,
            minute: (secs / 60 % 60) as u8,
            second: (secs % 60) as u8,
            tenths: 0,
            offset_quarters: 0,
        })
    }
}

impl RelativeTime {
    /// The time this interval after `now` (Unix seconds): years and months by the calendar (the day clamped to
    /// the month's last), the rest by the clock.
    pub fn after(&self, now: i64) -> i64 {
        let (y, m, d) = civil_from_days(now.div_euclid(86_400));
        let secs = now.rem_euclid(86_400);
        let months = y * 12 + i64::from(m) - 1 + i64::from(self.years) * 12 + i64::from(self.months);
        let (ny, nm) = (months.div_euclid(12), (months.rem_euclid(12) + 1) as u32);
        let max_day = match nm {
            2 if is_leap(ny) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let base = days_from_civil(ny, nm, d.min(max_day)) * 86_400 + secs;
        base + i64::from(self.days) * 86_400
            + i64::from(self.hours) * 3600
            + i64::from(self.minutes) * 60
            + i64::from(self.seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(s: &str) -> SmppTime {
        let t = SmppTime::parse(s).unwrap();
        assert_eq!(t.to_string(), s);
        t
    }

    #[test]
    fn absolute() {
        let SmppTime::Absolute(a) = check("240229153000104+") else { panic!() };
        assert_eq!((a.year, a.month, a.day, a.hour, a.tenths, a.offset_quarters), (2024, 2, 29, 15, 1, 4));
        // 15:30 at UTC+1 is 14:30 UTC.
        assert_eq!(a.unix_seconds(), 1_709_217_000);
        let SmppTime::Absolute(b) = check("991231235959948-") else { panic!() };
        assert_eq!(b.offset_quarters, -48);
        assert_eq!(AbsoluteTime::from_unix(1_709_217_000).unwrap().hour, 14);
    }

    #[test]
    fn relative() {
        let SmppTime::Relative(r) = check("000001020304000R") else { panic!() };
        assert_eq!(r.after(0), 86_400 + 2 * 3600 + 3 * 60 + 4);
        // One month after 31 January is the last day of February.
        let jan31 = days_from_civil(2025, 1, 31) * 86_400;
        let feb28 = days_from_civil(2025, 2, 28) * 86_400;
        assert_eq!(SmppTime::parse("000100000000000R").unwrap().resolve(jan31), feb28);
    }

    #[test]
    fn rejects() {
        assert_eq!(SmppTime::parse("2401011200000"), Err(TimeError::Length(13)));
        assert_eq!(SmppTime::parse("240230120000000+"), Err(TimeError::OutOfRange { field: "day", value: 30 }));
        assert_eq!(SmppTime::parse("240101120000049+"), Err(TimeError::OutOfRange { field: "utc offset", value: 49 }));
        assert_eq!(SmppTime::parse("240101120000000X"), Err(TimeError::Direction('X')));
        assert_eq!(SmppTime::parse("000001000000100R"), Err(TimeError::RelativeTail));
        assert_eq!(SmppTime::parse("24x101120000000+"), Err(TimeError::NotDigits("month")));
        assert!(SmppTime::parse("2401011200000é+").is_err());
    }

    #[test]
    fn civil_round_trip() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
