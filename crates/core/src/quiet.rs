//! Quiet hours: when a marketing text may reach a recipient, in the recipient's own time. The law's hours are data
//! (`data/quiet_hours.tsv`, each row with its source): a default for everywhere, replaced by a country's rows,
//! replaced in turn by a US state's. An account's [`Hours`] can only narrow them. [`next_opening`] says when a text
//! accepted now may go: now, or the next minute both allow.

use std::collections::HashMap;
use std::sync::LazyLock;

use chrono::{Datelike, NaiveDate, NaiveTime, TimeZone, Timelike};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::message::Timestamp;

/// Allowed hours on some days of the week, as an account writes them: `{"days": "Mon-Fri", "from": "09:00",
/// "to": "18:00"}`. `days` is a day (`Sun`), a range (`Mon-Fri`, wrapping allowed: `Sat-Sun`) or a list of either
/// (`Mon,Wed,Fri`); `to` is after `from`, both on the same day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    pub days: String,
    pub from: String,
    pub to: String,
}

/// An account's allowed hours: a list of windows.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Hours(pub Vec<WindowSpec>);

/// Allowed minutes `[from, to)` of the day on the days in `days` (bit 0 Monday .. bit 6 Sunday).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub days: u8,
    pub from: u16,
    pub to: u16,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn day(s: &str) -> Option<u8> {
    let s = s.trim().to_ascii_lowercase();
    DAYS.iter().position(|d| s.starts_with(d) && d.len() <= s.len()).and_then(|i| u8::try_from(i).ok())
}

fn days(s: &str) -> Result<u8, String> {
    let mut mask = 0u8;
    for part in s.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (Some(a), Some(b)) = (day(a), day(b)) else {
            return Err(format!("days {s:?}: use Mon..Sun, a range such as Mon-Fri, or a list"));
        };
        let mut d = a;
        loop {
            mask |= 1 << d;
            if d == b {
                break;
            }
            d = (d + 1) % 7;
        }
    }
    Ok(mask)
}

fn minute(s: &str) -> Result<u16, String> {
    let bad = || format!("time {s:?}: use HH:MM, 00:00 to 24:00");
    let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m >= 60 || h > 24 || (h == 24 && m > 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

impl WindowSpec {
    pub fn parse(&self) -> Result<Window, String> {
        let window = Window { days: days(&self.days)?, from: minute(&self.from)?, to: minute(&self.to)? };
        if window.to <= window.from {
            return Err(format!("{} to {}: the end must be after the start", self.from, self.to));
        }
        Ok(window)
    }
}

impl Hours {
    /// The windows, or why they cannot be used.
    pub fn parse(&self) -> Result<Vec<Window>, String> {
        if self.0.is_empty() {
            return Err("give at least one window; null keeps the law's hours alone".into());
        }
        self.0.iter().map(WindowSpec::parse).collect()
    }

    pub fn problem(&self) -> Option<String> {
        self.parse().err()
    }
}

/// The law's windows by place (`*`, a country such as `GB`, a state such as `US-FL`), read once from the data.
static RULES: LazyLock<HashMap<String, Vec<(Window, String)>>> = LazyLock::new(|| {
    let mut rules: HashMap<String, Vec<(Window, String)>> = HashMap::new();
    for line in include_str!("../data/quiet_hours.tsv").lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        let [place, d, from, to, source] = cols[..] else { continue };
        let spec = WindowSpec { days: d.into(), from: from.into(), to: to.into() };
        // A test reads every row; a bad row cannot reach a build.
        if let Ok(w) = spec.parse() {
            rules.entry(place.to_string()).or_default().push((w, source.to_string()));
        }
    }
    rules
});

/// The law's windows for a place (`US-FL`, `GB`), with the source of the first; the most specific rows that exist.
pub fn law(place: &Place) -> (Vec<Window>, &'static str) {
    let state = place.subdivision.as_ref().map(|s| format!("{}-{s}", place.region));
    for key in state.iter().map(String::as_str).chain([place.region.as_str(), "*"]) {
        if let Some(rows) = RULES.get(key) {
            let source = rows.first().map_or("", |(_, s)| s.as_str());
            return (rows.iter().map(|(w, _)| *w).collect(), source);
        }
    }
    (Vec::new(), "")
}

/// The law's hours and an account's never meet within a week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the allowed hours never open within a week")]
pub struct NeverOpen;

/// Where a number is, as far as its digits tell: its country, its US state or Canadian province for +1, the time
/// zone the contact is presumed to be in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// ISO 3166 country, such as `US`, `GB`.
    pub region: String,
    /// A US state's or a Canadian province's code, for +1 numbers whose area code names one.
    pub subdivision: Option<String>,
    /// The IANA zone.
    pub zone: Tz,
    /// The country or area code spans several zones and the most populous was taken.
    pub several: bool,
}

impl Place {
    /// `US-FL`, or `GB`.
    pub fn name(&self) -> String {
        match &self.subdivision {
            Some(s) => format!("{}-{s}", self.region),
            None => self.region.clone(),
        }
    }
}

struct Tables {
    /// NANP area code → (country, state or province, zone, several).
    nanp: HashMap<String, (String, Option<String>, Tz, bool)>,
    /// Country → (zone, several).
    countries: HashMap<String, (Tz, bool)>,
}

static TABLES: LazyLock<Tables> = LazyLock::new(|| {
    let rows = |text: &'static str| {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| l.split('\t').collect::<Vec<_>>())
            .collect::<Vec<_>>()
    };
    let mut nanp = HashMap::new();
    for r in rows(include_str!("../data/nanp.tsv")) {
        if let [npa, region, sub, zone, how] = r[..]
            && let Ok(tz) = zone.parse::<Tz>()
        {
            let sub = (!sub.is_empty()).then(|| sub.to_string());
            nanp.insert(npa.to_string(), (region.to_string(), sub, tz, how == "several"));
        }
    }
    let mut countries = HashMap::new();
    for r in rows(include_str!("../data/countries.tsv")) {
        if let [cc, zone, how] = r[..]
            && let Ok(tz) = zone.parse::<Tz>()
        {
            countries.insert(cc.to_string(), (tz, how == "several"));
        }
    }
    Tables { nanp, countries }
});

/// Where an E.164 number is presumed to be; `None` when its digits do not tell (an unknown country code).
pub fn place_of(e164: &str) -> Option<Place> {
    let digits = e164.strip_prefix('+').unwrap_or(e164);
    if let Some(rest) = digits.strip_prefix('1')
        && let Some(npa) = rest.get(..3)
        && let Some((region, sub, zone, several)) = TABLES.nanp.get(npa)
    {
        return Some(Place { region: region.clone(), subdivision: sub.clone(), zone: *zone, several: *several });
    }
    let number = phonenumber::parse(None, format!("+{digits}")).ok()?;
    // A number in a range the metadata does not know as assigned (test ranges such as 07700 900xxx) has no
    // region of its own: its country code's main one.
    let region = match number.country().id() {
        Some(id) => id.as_ref().to_string(),
        None => {
            let code = number.code().value();
            phonenumber::metadata::DATABASE.region(&code)?.first()?.to_string()
        }
    };
    let (zone, several) = *TABLES.countries.get(&region)?;
    Some(Place { region, subdivision: None, zone, several })
}

/// A number's country (ISO 3166), cheaply: a +1 number's by its area code, any other's as the main country of its
/// country code (a code several countries share counts as its first: +7 as RU, +44 as GB). Without the full
/// parse [`place_of`] makes, for what counts many numbers (the analytics' rollups).
pub fn country_of(e164: &str) -> Option<String> {
    let digits = e164.strip_prefix('+').unwrap_or(e164);
    if let Some(rest) = digits.strip_prefix('1')
        && let Some(npa) = rest.get(..3)
        && let Some((region, ..)) = TABLES.nanp.get(npa)
    {
        return Some(region.clone());
    }
    // Country codes are one to three digits and none is a prefix of another.
    (1..=3).find_map(|n| {
        let code: u16 = digits.get(..n)?.parse().ok()?;
        phonenumber::metadata::DATABASE.region(&code)?.first().map(|r| (*r).to_string())
    })
}

/// Whether the zone name is one smsgate knows (the IANA database's).
pub fn zone(name: &str) -> Option<Tz> {
    name.parse().ok()
}

/// When a text to a recipient at `place`, in zone `tz`, accepted at `at`, may go: `Ok(None)` now, `Ok(Some(t))` at
/// `t`, the next minute both the law and `account`'s hours allow; `Err` when they never meet in a week.
pub fn next_opening(
    at: Timestamp,
    tz: Tz,
    place: &Place,
    account: Option<&[Window]>,
) -> Result<Option<Timestamp>, NeverOpen> {
    let (law, _) = law(place);
    let Some(utc) = chrono::DateTime::from_timestamp_millis(at.millis()) else { return Err(NeverOpen) };
    let local = utc.with_timezone(&tz);
    let today = local.date_naive();
    let now_minute = u16::try_from(local.hour() * 60 + local.minute()).unwrap_or(0);
    for offset in 0..8 {
        let Some(date) = today.checked_add_days(chrono::Days::new(offset)) else { return Err(NeverOpen) };
        let weekday = u8::try_from(date.weekday().num_days_from_monday()).unwrap_or(0);
        let mut opens: Vec<(u16, u16)> = allowed(&law, weekday);
        if let Some(account) = account {
            opens = intersect(&opens, &allowed(account, weekday));
        }
        opens.sort_unstable();
        for (from, to) in opens {
            if offset == 0 {
                if now_minute >= to {
                    continue;
                }
                if now_minute >= from {
                    return Ok(None);
                }
            }
            return Ok(Some(local_instant(tz, date, from)));
        }
    }
    Err(NeverOpen)
}

/// The allowed `[from, to)` minutes on a weekday.
fn allowed(windows: &[Window], weekday: u8) -> Vec<(u16, u16)> {
    windows.iter().filter(|w| w.days & (1 << weekday) != 0).map(|w| (w.from, w.to)).collect()
}

fn intersect(a: &[(u16, u16)], b: &[(u16, u16)]) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    for &(a0, a1) in a {
        for &(b0, b1) in b {
            let (from, to) = (a0.max(b0), a1.min(b1));
            if from < to {
                out.push((from, to));
            }
        }
    }
    out
}

/// The instant `minute` of `date` is in `tz`; in a gap of a change to summer time, the first minute after it.
fn local_instant(tz: Tz, date: NaiveDate, minute: u16) -> Timestamp {
    // A window opens before midnight (`from` < `to` <= 24:00); a gap is at most a few hours, so a minute that does
    // not exist is followed by one that does the same day.
    for m in u32::from(minute)..24 * 60 {
        let Some(time) = NaiveTime::from_hms_opt(m / 60, m % 60, 0) else { break };
        if let Some(t) = tz.from_local_datetime(&date.and_time(time)).earliest() {
            return Timestamp(t.timestamp_millis());
        }
    }
    // Not reached for any zone; the local time read as UTC rather than a panic.
    Timestamp(
        date.and_time(
            NaiveTime::from_hms_opt(u32::from(minute) / 60, u32::from(minute) % 60, 0).unwrap_or(NaiveTime::MIN),
        )
        .and_utc()
        .timestamp_millis(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(tz: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Timestamp {
        Timestamp(tz.with_ymd_and_hms(y, mo, d, h, mi, 0).single().unwrap().timestamp_millis())
    }

    fn opening(number: &str, when: Timestamp, account: Option<&Hours>) -> Option<Timestamp> {
        let place = place_of(number).unwrap();
        let windows = account.map(|h| h.parse().unwrap());
        next_opening(when, place.zone, &place, windows.as_deref()).unwrap()
    }

    #[test]
    fn every_rule_row_parses_and_every_zone_is_known() {
        for line in include_str!("../data/quiet_hours.tsv").lines().filter(|l| !l.starts_with('#')) {
            let cols: Vec<&str> = line.split('\t').collect();
            assert_eq!(cols.len(), 5, "{line:?}");
            WindowSpec { days: cols[1].into(), from: cols[2].into(), to: cols[3].into() }.parse().unwrap();
            assert!(!cols[4].is_empty(), "every row names its source: {line:?}");
        }
        for file in [include_str!("../data/nanp.tsv"), include_str!("../data/countries.tsv")] {
            for line in file.lines().filter(|l| !l.starts_with('#')) {
                let zone = line.split('\t').rev().nth(1).unwrap();
                assert!(zone.parse::<Tz>().is_ok(), "{line:?}");
            }
        }
        assert!(TABLES.nanp.len() > 400 && TABLES.countries.len() > 240);
    }

    #[test]
    fn countries_from_numbers_cheaply() {
        let check = |n: &str, c: Option<&str>| assert_eq!(country_of(n).as_deref(), c, "{n}");
        check("+13055550100", Some("US"));
        check("+14165550100", Some("CA"));
        check("+447700900123", Some("GB"));
        check("+33612345678", Some("FR"));
        check("+353871234567", Some("IE"));
        check("+8613812345678", Some("CN"));
        check("+999123", None);
        check("", None);
        // The same country as the full parse, for numbers of one country's code.
        for n in ["+447700900123", "+33612345678", "+4915112345678", "+61412345678"] {
            assert_eq!(country_of(n), place_of(n).map(|p| p.region), "{n}");
        }
    }

    #[test]
    fn area_codes_listed_only_by_longer_prefixes_have_places() {
        // libphonenumber lists 310 and 208 only by their longer prefixes; the table has them from those.
        let la = place_of("+13105550100").unwrap();
        assert_eq!(
            (la.region.as_str(), la.subdivision.as_deref(), la.zone.name()),
            ("US", Some("CA"), "America/Los_Angeles")
        );
        let id = place_of("+12085550100").unwrap();
        assert_eq!((id.subdivision.as_deref(), id.zone.name(), id.several), (Some("ID"), "America/Boise", true));
    }

    #[test]
    fn places_from_numbers() {
        let fl = place_of("+13055550100").unwrap();
        assert_eq!((fl.name(), fl.zone, fl.several), ("US-FL".into(), chrono_tz::America::New_York, false));
        assert_eq!(place_of("+14155550100").unwrap().zone, chrono_tz::America::Los_Angeles);
        assert_eq!(place_of("+12145550100").unwrap().name(), "US-TX");
        assert_eq!(place_of("+16045550100").unwrap().name(), "CA-BC");
        let uk = place_of("+447700900123").unwrap();
        assert_eq!((uk.name(), uk.zone), ("GB".into(), chrono_tz::Europe::London));
        let br = place_of("+5511987654321").unwrap();
        assert_eq!((br.zone, br.several), (chrono_tz::America::Sao_Paulo, true));
        let ak = place_of("+19075550100").unwrap();
        assert_eq!((ak.zone, ak.several), (chrono_tz::America::Anchorage, true));
        assert_eq!(place_of("+999123"), None);
    }

    #[test]
    fn florida_closes_at_eight_in_the_evening() {
        let ny = chrono_tz::America::New_York;
        // 20:30 in Miami on a Tuesday: held until 08:00 Wednesday.
        assert_eq!(opening("+13055550100", at(ny, 2026, 12, 1, 20, 30), None), Some(at(ny, 2026, 12, 2, 8, 0)));
        // New York at 20:30 is still open (21:00); at 07:59 it waits a minute.
        assert_eq!(opening("+12125550100", at(ny, 2026, 12, 1, 20, 30), None), None);
        assert_eq!(opening("+12125550100", at(ny, 2026, 12, 1, 7, 59), None), Some(at(ny, 2026, 12, 1, 8, 0)));
    }

    #[test]
    fn texas_sundays_and_alabama_none() {
        let chicago = chrono_tz::America::Chicago;
        // Sunday 6 Dec 2026 10:00 in Dallas: noon.
        assert_eq!(
            opening("+12145550100", at(chicago, 2026, 12, 6, 10, 0), None),
            Some(at(chicago, 2026, 12, 6, 12, 0))
        );
        // Saturday 21:30 in Birmingham, Alabama: not Sunday; Monday 08:00.
        assert_eq!(
            opening("+12055550100", at(chicago, 2026, 12, 5, 21, 30), None),
            Some(at(chicago, 2026, 12, 7, 8, 0))
        );
    }

    #[test]
    fn an_account_narrows_the_law() {
        let london = chrono_tz::Europe::London;
        let weekdays = Hours(vec![WindowSpec { days: "Mon-Fri".into(), from: "10:00".into(), to: "17:00".into() }]);
        // Friday 4 Dec 2026 09:00 London: the law allows, the account waits until 10:00.
        assert_eq!(
            opening("+447700900123", at(london, 2026, 12, 4, 9, 0), Some(&weekdays)),
            Some(at(london, 2026, 12, 4, 10, 0))
        );
        // Friday 18:00: Monday 10:00.
        assert_eq!(
            opening("+447700900123", at(london, 2026, 12, 4, 18, 0), Some(&weekdays)),
            Some(at(london, 2026, 12, 7, 10, 0))
        );
        // Hours the law never allows.
        let night = Hours(vec![WindowSpec { days: "Mon-Sun".into(), from: "22:00".into(), to: "23:00".into() }]);
        let place = place_of("+447700900123").unwrap();
        let w = night.parse().unwrap();
        assert!(next_opening(at(london, 2026, 12, 4, 9, 0), london, &place, Some(&w)).is_err());
    }

    #[test]
    fn an_opening_in_a_spring_gap_is_the_first_minute_after_it() {
        // 8 March 2026, 02:00 does not exist in New York (clocks go to 03:00).
        let ny = chrono_tz::America::New_York;
        let date = NaiveDate::from_ymd_opt(2026, 3, 8).unwrap();
        assert_eq!(local_instant(ny, date, 2 * 60 + 30), at(ny, 2026, 3, 8, 3, 0));
        assert_eq!(local_instant(ny, date, 8 * 60), at(ny, 2026, 3, 8, 8, 0));
    }

    #[test]
    fn windows_are_checked() {
        let bad =
            |d: &str, f: &str, t: &str| WindowSpec { days: d.into(), from: f.into(), to: t.into() }.parse().is_err();
        assert!(bad("Funday", "08:00", "09:00"));
        assert!(bad("Mon", "8", "09:00"));
        assert!(bad("Mon", "09:00", "08:00"));
        assert!(bad("Mon", "09:00", "24:01"));
        assert!(!bad("Sat-Sun", "10:00", "24:00"));
        assert_eq!(days("Sat-Mon").unwrap(), 0b110_0001);
        assert_eq!(days("mon,wed").unwrap(), 0b101);
        assert!(Hours(vec![]).problem().is_some());
    }
}
