//! A user's notification preferences (issue #33): categories turned off per channel, and quiet
//! hours in the user's time zone. Pure rules: parsing with precise errors, "may this channel
//! carry this event", and "until when is it quiet". Where they are stored and applied:
//! `services::preferences`.
//!
//! A category is an `event` (`forum.reply`) or an event prefix (`forum.*`: every event starting
//! with `forum.`). `critical` notifications pass every preference (the producer's call, allowed
//! by role); nothing here knows about that, callers skip the check.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

/// The channels a user can turn a category off on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Channel {
    /// The inbox: live frames, `resume`/`missed`, the unread count.
    InApp,
    /// Web Push.
    Push,
    /// The escalation queue (the operator's email/SMS worker).
    Escalation,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::InApp, Channel::Push, Channel::Escalation];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::InApp => "inapp",
            Channel::Push => "push",
            Channel::Escalation => "escalation",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Categories turned off on one channel at most.
pub const MAX_PATTERNS: usize = 50;

/// `22:00`–`07:00` in `Europe/Berlin`: push and escalation wait until `end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuietHours {
    /// Minutes after local midnight.
    pub start: u16,
    pub end: u16,
    pub time_zone: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preferences {
    pub off: BTreeMap<Channel, Vec<String>>,
    pub quiet: Option<QuietHours>,
}

/// A bad preferences document: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct PreferencesError {
    pub field: String,
    pub reason: String,
}

fn bad(field: &str, reason: impl Into<String>) -> PreferencesError {
    PreferencesError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// `event` or `prefix.*`, with the characters of an event.
fn valid_pattern(p: &str) -> bool {
    let stem = p.strip_suffix(".*").unwrap_or(p);
    !stem.is_empty()
        && p.len() <= 64
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
}

fn matches(pattern: &str, event: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => event.starts_with(prefix),
        None => pattern == event,
    }
}

/// `HH:MM` (24-hour) → minutes after midnight.
fn parse_clock(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

fn clock(minutes: u16) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// The IANA zone, from the bundled database (the same one that evaluates it later).
fn zone(name: &str) -> Option<jiff::tz::TimeZone> {
    if name.is_empty() || name.len() > 64 {
        return None;
    }
    jiff::tz::db().get(name).ok()
}

impl Preferences {
    /// Parses a `PUT /preferences` body: `{"off":{"push":["forum.*"],...},
    /// "quietHours":{"start":"22:00","end":"07:00","timeZone":"Europe/Berlin"}|null}`.
    /// Unknown fields and channels are refused, so a typo never silently keeps a channel on.
    pub fn parse(v: &Value) -> Result<Self, PreferencesError> {
        let Value::Object(obj) = v else {
            return Err(bad("preferences", "must be a JSON object"));
        };
        if let Some(k) = obj.keys().find(|k| !matches!(k.as_str(), "off" | "quietHours")) {
            return Err(bad(k, "is not a known field (off, quietHours)"));
        }
        let mut prefs = Preferences::default();
        match obj.get("off") {
            None | Some(Value::Null) => {}
            Some(Value::Object(channels)) => {
                for (name, list) in channels {
                    let field = format!("off.{name}");
                    let channel = Channel::parse(name).ok_or_else(|| bad(&field, "unknown channel; use inapp, push or escalation"))?;
                    let items = list.as_array().ok_or_else(|| bad(&field, "must be a list of categories"))?;
                    if items.len() > MAX_PATTERNS {
                        return Err(bad(&field, format!("lists at most {MAX_PATTERNS} categories")));
                    }
                    let mut patterns: Vec<String> = Vec::with_capacity(items.len());
                    for item in items {
                        let p = item
                            .as_str()
                            .filter(|p| valid_pattern(p))
                            .ok_or_else(|| bad(&field, "categories are events or prefixes like forum.* ([A-Za-z0-9._:-], ≤ 64)"))?;
                        if !patterns.iter().any(|x| x == p) {
                            patterns.push(p.to_owned());
                        }
                    }
                    if !patterns.is_empty() {
                        prefs.off.insert(channel, patterns);
                    }
                }
            }
            Some(_) => return Err(bad("off", "must be an object of channel → categories")),
        }
        prefs.quiet = match obj.get("quietHours") {
            None | Some(Value::Null) => None,
            Some(Value::Object(q)) => {
                if let Some(k) = q.keys().find(|k| !matches!(k.as_str(), "start" | "end" | "timeZone")) {
                    return Err(bad(&format!("quietHours.{k}"), "is not a known field (start, end, timeZone)"));
                }
                let time = |k: &str| {
                    q.get(k)
                        .and_then(Value::as_str)
                        .and_then(parse_clock)
                        .ok_or_else(|| bad(&format!("quietHours.{k}"), "must be a 24-hour time HH:MM"))
                };
                let (start, end) = (time("start")?, time("end")?);
                if start == end {
                    return Err(bad("quietHours.end", "must differ from start"));
                }
                let time_zone = q
                    .get("timeZone")
                    .and_then(Value::as_str)
                    .filter(|z| zone(z).is_some())
                    .ok_or_else(|| bad("quietHours.timeZone", "must be an IANA time zone name like Europe/Berlin"))?;
                Some(QuietHours {
                    start,
                    end,
                    time_zone: time_zone.to_owned(),
                })
            }
            Some(_) => return Err(bad("quietHours", "must be an object or null")),
        };
        Ok(prefs)
    }

    /// The document `GET /preferences` answers (and the store keeps).
    pub fn to_json(&self) -> Value {
        let off: Map<String, Value> = self.off.iter().map(|(c, p)| (c.as_str().to_owned(), json!(p))).collect();
        let quiet = self
            .quiet
            .as_ref()
            .map(|q| json!({"start": clock(q.start), "end": clock(q.end), "timeZone": q.time_zone}));
        json!({"off": off, "quietHours": quiet})
    }

    /// Whether `channel` may carry a notification of `event`.
    pub fn allows(&self, channel: Channel, event: &str) -> bool {
        !self.off.get(&channel).is_some_and(|ps| ps.iter().any(|p| matches(p, event)))
    }

    /// When the quiet hours around `now` end, if `now` is inside them. A zone the database no
    /// longer knows counts as no quiet hours: better a push at night than none.
    pub fn quiet_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let q = self.quiet.as_ref()?;
        let tz = zone(&q.time_zone)?;
        let local = jiff::Timestamp::from_millisecond(now.timestamp_millis()).ok()?.to_zoned(tz.clone());
        let minute = (local.hour() as u16) * 60 + local.minute() as u16;
        let quiet = if q.start < q.end {
            (q.start..q.end).contains(&minute)
        } else {
            minute >= q.start || minute < q.end
        };
        if !quiet {
            return None;
        }
        let end_time = jiff::civil::time((q.end / 60) as i8, (q.end % 60) as i8, 0, 0);
        let mut day = local.date();
        if minute >= q.end {
            day = day.tomorrow().ok()?;
        }
        let end = tz.to_ambiguous_zoned(day.to_datetime(end_time)).compatible().ok()?;
        DateTime::<Utc>::from_timestamp_millis(end.timestamp().as_millisecond())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn categories_are_off_per_channel() {
        let p = Preferences::parse(&json!({"off": {"push": ["forum.*", "chat.message"], "escalation": []}})).unwrap();
        assert!(!p.allows(Channel::Push, "forum.reply"));
        assert!(!p.allows(Channel::Push, "chat.message"));
        assert!(p.allows(Channel::Push, "chat.messages"), "an event is matched whole");
        assert!(p.allows(Channel::Push, "forums.x"), "forum.* is the prefix forum.");
        assert!(p.allows(Channel::InApp, "forum.reply"));
        assert!(p.allows(Channel::Escalation, "forum.reply"));
        assert_eq!(Preferences::parse(&p.to_json()).unwrap(), p, "round trip");
    }

    #[test]
    fn bad_documents_name_the_field() {
        for (doc, field) in [
            (json!([]), "preferences"),
            (json!({"colour": 1}), "colour"),
            (json!({"off": {"sms": ["a"]}}), "off.sms"),
            (json!({"off": {"push": "forum.*"}}), "off.push"),
            (json!({"off": {"push": ["has space"]}}), "off.push"),
            (json!({"off": {"push": [".*"]}}), "off.push"),
            (
                json!({"quietHours": {"start": "22:00", "end": "07:00", "timeZone": "Mars/Olympus"}}),
                "quietHours.timeZone",
            ),
            (
                json!({"quietHours": {"start": "25:00", "end": "07:00", "timeZone": "UTC"}}),
                "quietHours.start",
            ),
            (
                json!({"quietHours": {"start": "7:00", "end": "07:30", "timeZone": "UTC"}}),
                "quietHours.start",
            ),
            (
                json!({"quietHours": {"start": "07:00", "end": "07:00", "timeZone": "UTC"}}),
                "quietHours.end",
            ),
            (json!({"quietHours": {"start": "07:00", "end": "08:00"}}), "quietHours.timeZone"),
            (
                json!({"quietHours": {"start": "07:00", "end": "08:00", "timeZone": "UTC", "x": 1}}),
                "quietHours.x",
            ),
        ] {
            assert_eq!(Preferences::parse(&doc).unwrap_err().field, field, "{doc}");
        }
        let many: Vec<String> = (0..=MAX_PATTERNS).map(|i| format!("e{i}")).collect();
        assert_eq!(Preferences::parse(&json!({"off": {"push": many}})).unwrap_err().field, "off.push");
    }

    #[test]
    fn quiet_hours_end_in_the_users_zone() {
        let p = Preferences::parse(&json!({"quietHours": {"start": "22:00", "end": "07:00", "timeZone": "Europe/Berlin"}})).unwrap();
        // 23:30 in Berlin (CET, UTC+1) → quiet until 07:00 Berlin, 06:00 UTC next day.
        assert_eq!(p.quiet_until(at("2026-01-10T22:30:00Z")), Some(at("2026-01-11T06:00:00Z")));
        // 05:00 Berlin → until 07:00 the same day.
        assert_eq!(p.quiet_until(at("2026-01-11T04:00:00Z")), Some(at("2026-01-11T06:00:00Z")));
        // Noon: not quiet.
        assert_eq!(p.quiet_until(at("2026-01-11T11:00:00Z")), None);
        // Summer time (CEST, UTC+2): 07:00 Berlin is 05:00 UTC.
        assert_eq!(p.quiet_until(at("2026-07-11T03:00:00Z")), Some(at("2026-07-11T05:00:00Z")));
        let day = Preferences::parse(&json!({"quietHours": {"start": "09:00", "end": "17:00", "timeZone": "UTC"}})).unwrap();
        assert_eq!(day.quiet_until(at("2026-07-11T12:00:00Z")), Some(at("2026-07-11T17:00:00Z")));
        assert_eq!(day.quiet_until(at("2026-07-11T17:00:00Z")), None, "the end is not quiet");
        assert_eq!(day.quiet_until(at("2026-07-11T08:59:00Z")), None);
    }
}
