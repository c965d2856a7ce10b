//! The pure parts of running an automation: durations (`24h`), times as fields hold them, a value at a dotted
//! path, and positions in the steps (`2`, `3.1.0` inside a branch) with how a run moves between them.

use chrono::TimeZone;
use serde_json::Value;
use smsgate_core::Timestamp;
use smsgate_core::consent::fold;

use super::{Case, Step};
use crate::templates;

/// A duration as `24h`, `90m`, `1d12h`, `-24h` (units `s`, `m`, `h`, `d`, `w`), in milliseconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    let (sign, rest) = match s.strip_prefix('-') {
        Some(r) => (-1, r),
        None => (1, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest.is_empty() {
        return None;
    }
    let (mut total, mut n, mut digits) = (0i64, 0i64, 0);
    for c in rest.chars() {
        if let Some(d) = c.to_digit(10) {
            n = n.checked_mul(10)?.checked_add(i64::from(d))?;
            digits += 1;
            continue;
        }
        let unit = match c {
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            'w' => 7 * 86_400_000,
            _ => return None,
        };
        if digits == 0 {
            return None;
        }
        total = total.checked_add(n.checked_mul(unit)?)?;
        (n, digits) = (0, 0);
    }
    if digits != 0 {
        return None;
    }
    Some(sign * total)
}

/// A time as a field holds it: RFC 3339 (`2026-12-03T15:00:00-05:00`), a local time in `zone`
/// (`2026-12-03T15:00`, `2026-12-03 15:00`), a day (`2026-12-03`, its midnight in `zone`) or Unix seconds.
pub fn parse_time(value: &Value, zone: chrono_tz::Tz) -> Option<Timestamp> {
    if let Some(secs) = value.as_i64() {
        return secs.checked_mul(1000).map(Timestamp);
    }
    let s = value.as_str()?.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(Timestamp(t.timestamp_millis()));
    }
    let local = templates::LOCAL_FORMATS
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(s, f).ok())
        .or_else(|| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)))?;
    // A local time the clocks skipped (spring forward) is read an hour later; one they repeat, the first time.
    let t = zone
        .from_local_datetime(&local)
        .earliest()
        .or_else(|| zone.from_local_datetime(&(local + chrono::Duration::hours(1))).earliest())?;
    Some(Timestamp(t.timestamp_millis()))
}

/// The value at a dotted path (`fields.appointment_at`) of a JSON object.
pub(super) fn lookup<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(root, |v, key| v.get(key)).filter(|v| !v.is_null())
}

// Positions: a step's path in the steps, as "2" or "3.1.0" (step 3, its case 1 — `cases.len()` is the default —,
// that case's step 0).

pub(super) fn parse_position(s: &str) -> Option<Vec<usize>> {
    let path: Option<Vec<usize>> = s.split('.').map(|p| p.parse().ok()).collect();
    path.filter(|p| p.len() % 2 == 1)
}

pub(super) fn position_text(path: &[usize]) -> String {
    path.iter().map(usize::to_string).collect::<Vec<_>>().join(".")
}

/// The steps of a branch's case (`cases.len()`: its default).
pub(super) fn case_steps(step: &Step, case: usize) -> Option<&[Step]> {
    match step {
        Step::Branch { cases, default } if case < cases.len() => Some(&cases[case].steps),
        Step::Branch { cases, default } if case == cases.len() => Some(default),
        _ => None,
    }
}

/// The list of steps a position's last index counts in.
pub(super) fn list_at<'a>(steps: &'a [Step], prefix: &[usize]) -> Option<&'a [Step]> {
    let mut list = steps;
    for pair in prefix.chunks(2) {
        let [step, case] = pair else { return None };
        list = case_steps(list.get(*step)?, *case)?;
    }
    Some(list)
}

pub(super) fn step_at<'a>(steps: &'a [Step], path: &[usize]) -> Option<&'a Step> {
    let (last, prefix) = path.split_last()?;
    list_at(steps, prefix)?.get(*last)
}

/// The step after `path` once it is done: the next in its list, else the one after the branch it is in; `None`
/// at the end.
pub(super) fn next_position(steps: &[Step], path: &[usize]) -> Option<Vec<usize>> {
    let mut p = path.to_vec();
    loop {
        let (last, prefix) = p.split_last()?;
        let len = list_at(steps, prefix)?.len();
        if last + 1 < len {
            *p.last_mut()? += 1;
            return Some(p);
        }
        if p.len() == 1 {
            return None;
        }
        p.truncate(p.len() - 2);
    }
}

/// Where a branch at `path` goes for `case`: its first step, or past the branch when the case has none.
pub(super) fn enter_case(steps: &[Step], path: &[usize], case: usize) -> Option<Vec<usize>> {
    let has_steps = step_at(steps, path).and_then(|s| case_steps(s, case)).is_some_and(|l| !l.is_empty());
    if has_steps {
        let mut p = path.to_vec();
        p.extend([case, 0]);
        Some(p)
    } else {
        next_position(steps, path)
    }
}

/// The case of a branch a reply picks: the first with a word equal to the reply or its first word.
pub(super) fn pick_case(cases: &[Case], reply: Option<&str>) -> usize {
    let Some(reply) = reply.map(fold) else { return cases.len() };
    let first = reply.split(' ').next().unwrap_or("");
    cases
        .iter()
        .position(|c| {
            c.words.iter().any(|w| {
                let w = fold(w);
                w == reply || w == first
            })
        })
        .unwrap_or(cases.len())
}

/// Every step, nested ones included, with its depth.
pub(super) fn each_step(steps: &[Step], depth: usize, out: &mut Vec<(usize, Step)>) {
    for s in steps {
        out.push((depth, s.clone()));
        if let Step::Branch { cases, default } = s {
            for c in cases {
                each_step(&c.steps, depth + 1, out);
            }
            each_step(default, depth + 1, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::automations::AutomationSpec;

    #[test]
    fn durations() {
        let check = |s: &str, ms: Option<i64>| assert_eq!(parse_duration(s), ms, "{s}");
        check("24h", Some(86_400_000));
        check("-24h", Some(-86_400_000));
        check("1d12h", Some(129_600_000));
        check("90m", Some(5_400_000));
        check("2w", Some(1_209_600_000));
        check("+30s", Some(30_000));
        for bad in ["", "h", "24", "24x", "-", "1.5h", "h24", "99999999999999999999d"] {
            check(bad, None);
        }
    }

    #[test]
    fn times_as_fields_hold_them() {
        let ny: chrono_tz::Tz = "America/New_York".parse().unwrap_or(chrono_tz::UTC);
        let utc = |s: &str| {
            Some(Timestamp(chrono::DateTime::parse_from_rfc3339(s).map(|t| t.timestamp_millis()).unwrap_or(0)))
        };
        let check = |v: Value, expected: Option<Timestamp>| assert_eq!(parse_time(&v, ny), expected, "{v}");
        check(json!("2026-12-03T15:00:00-05:00"), utc("2026-12-03T20:00:00Z"));
        check(json!("2026-12-03T15:00"), utc("2026-12-03T20:00:00Z"));
        check(json!("2026-12-03 15:00:30"), utc("2026-12-03T20:00:30Z"));
        check(json!("2026-07-03 15:00"), utc("2026-07-03T19:00:00Z"));
        check(json!("2026-12-03"), utc("2026-12-03T05:00:00Z"));
        // 02:30 on the day clocks spring forward does not exist: an hour later.
        check(json!("2026-03-08 02:30"), utc("2026-03-08T07:30:00Z"));
        check(json!(1_800_000_000), Some(Timestamp(1_800_000_000_000)));
        check(json!("next tuesday"), None);
        check(json!(true), None);
    }

    fn steps() -> Vec<Step> {
        serde_json::from_value(json!([
            {"type": "send", "from": "+1", "body": "Reply YES"},
            {"type": "wait", "until": "reply"},
            {"type": "branch", "cases": [
                {"match": ["YES", "Y"], "steps": [{"type": "tag", "tag": "a"}, {"type": "tag", "tag": "b"}]},
                {"match": ["NO"], "steps": []}
            ], "default": [{"type": "untag", "tag": "a"}]},
            {"type": "webhook", "url": "https://x.example"}
        ]))
        .unwrap_or_default()
    }

    #[test]
    fn positions_walk_into_and_out_of_branches() {
        let s = steps();
        assert_eq!(s.len(), 4);
        assert_eq!(next_position(&s, &[0]), Some(vec![1]));
        assert_eq!(enter_case(&s, &[2], 0), Some(vec![2, 0, 0]));
        assert_eq!(next_position(&s, &[2, 0, 0]), Some(vec![2, 0, 1]));
        assert_eq!(next_position(&s, &[2, 0, 1]), Some(vec![3]), "out of the branch");
        assert_eq!(enter_case(&s, &[2], 1), Some(vec![3]), "a case with no steps goes past the branch");
        assert_eq!(enter_case(&s, &[2], 2), Some(vec![2, 2, 0]), "the default");
        assert_eq!(next_position(&s, &[3]), None);
        assert!(matches!(step_at(&s, &[2, 2, 0]), Some(Step::Untag { .. })));
        assert_eq!(step_at(&s, &[2, 5, 0]), None);
        assert_eq!(parse_position("2.0.1"), Some(vec![2, 0, 1]));
        assert_eq!(parse_position("2.0"), None);
        assert_eq!(position_text(&[2, 0, 1]), "2.0.1");
    }

    #[test]
    fn replies_pick_cases() {
        let Some(Step::Branch { cases, .. }) = steps().into_iter().nth(2) else { panic!("a branch") };
        assert_eq!(pick_case(&cases, Some("yes")), 0);
        assert_eq!(pick_case(&cases, Some(" Y! ")), 0);
        assert_eq!(pick_case(&cases, Some("Yes please")), 0, "the first word");
        assert_eq!(pick_case(&cases, Some("no")), 1);
        assert_eq!(pick_case(&cases, Some("maybe")), 2, "the default");
        assert_eq!(pick_case(&cases, None), 2, "no reply");
    }

    #[test]
    fn specs_refuse_what_they_do_not_know() {
        let spec = |v: Value| serde_json::from_value::<AutomationSpec>(v);
        assert!(spec(json!({"name": "a", "trigger": {"type": "event", "event": "x"}, "steps": []})).is_ok());
        assert!(
            spec(json!({"name": "a", "trigger": {"type": "event", "event": "x", "nope": 1}, "steps": []})).is_err()
        );
        assert!(spec(json!({"name": "a", "trigger": {"type": "cron"}, "steps": []})).is_err());
        assert!(
            spec(json!({"name": "a", "trigger": {"type": "event", "event": "x"},
            "steps": [{"type": "wait", "duration": "1h", "extra": true}]}))
            .is_err()
        );
    }
}
