//! Who may join which group, and who may publish to it. The client's word is never enough: a
//! join is allowed only by the token's `groups` claim, a durable subscription, or the role
//! policy; a publish only to a group the connection is a member of, when the group kind's publish
//! policy allows it.

use crate::domain::auth::Principal;
use crate::domain::config::{ConfigError, Source, optional};
use crate::domain::groups::Group;

/// `HERALD_JOIN_ROLES`, e.g. `admin=*;instructor=course,room`: role → group kinds it may join in
/// its own tenant without a per-group entitlement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolePolicy {
    rules: Vec<(String, Vec<String>)>,
}

impl RolePolicy {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        match optional(src, "HERALD_JOIN_ROLES") {
            None => Ok(Self::default()),
            Some(spec) => Self::parse(&spec).map_err(|reason| ConfigError::Invalid {
                name: "HERALD_JOIN_ROLES",
                reason,
            }),
        }
    }

    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut rules = Vec::new();
        for rule in spec.split(';').map(str::trim).filter(|r| !r.is_empty()) {
            let (role, kinds) = rule
                .split_once('=')
                .ok_or_else(|| format!("rule {rule:?} must be role=kind,kind or role=*"))?;
            let kinds: Vec<String> = kinds.split(',').map(|k| k.trim().to_owned()).filter(|k| !k.is_empty()).collect();
            if role.trim().is_empty() || kinds.is_empty() {
                return Err(format!("rule {rule:?} needs a role and at least one kind"));
            }
            if kinds.iter().any(|k| k == "user" || k == "all") {
                return Err("roles cannot grant `user` or `all` groups".into());
            }
            rules.push((role.trim().to_owned(), kinds));
        }
        Ok(Self { rules })
    }

    fn allows(&self, principal: &Principal, kind: &str) -> bool {
        self.rules
            .iter()
            .any(|(role, kinds)| principal.has_role(role) && kinds.iter().any(|k| k == "*" || k == kind))
    }
}

/// `HERALD_PUBLISH_POLICY`, e.g. `room=member;course=instructor,admin;announcement=admin`:
/// group kind → who among its members may publish to it from a connection: `member` (anyone
/// who is a member) or role names. A kind not listed is closed (the default: nobody), and so are
/// `user` and `tenant` unless listed by those names; `all` cannot be listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishPolicy {
    rules: Vec<(String, Vec<String>)>,
}

/// Who may publish, per rule: every member.
pub const ANY_MEMBER: &str = "member";

impl PublishPolicy {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        match optional(src, "HERALD_PUBLISH_POLICY") {
            None => Ok(Self::default()),
            Some(spec) => Self::parse(&spec).map_err(|reason| ConfigError::Invalid {
                name: "HERALD_PUBLISH_POLICY",
                reason,
            }),
        }
    }

    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut rules = Vec::new();
        for rule in spec.split(';').map(str::trim).filter(|r| !r.is_empty()) {
            let (kind, who) = rule
                .split_once('=')
                .ok_or_else(|| format!("rule {rule:?} must be kind=member or kind=role,role"))?;
            let kind = kind.trim();
            let who: Vec<String> = who.split(',').map(|k| k.trim().to_owned()).filter(|k| !k.is_empty()).collect();
            if who.is_empty() {
                return Err(format!("rule {rule:?} names nobody"));
            }
            if !crate::domain::groups::valid_kind(kind) {
                return Err(format!("rule {rule:?}: {kind:?} is not a group kind"));
            }
            // `all` is every tenant's: only producers reach it, never a tenant's own users.
            if kind == "all" {
                return Err(format!("rule {rule:?}: `all` (every tenant) is producer-only"));
            }
            rules.push((kind.to_owned(), who));
        }
        Ok(Self { rules })
    }

    /// May `principal`, a member of `group`, publish to it? Membership is the caller's to check.
    pub fn allows(&self, principal: &Principal, group: &Group) -> bool {
        let kind = match group {
            Group::User(_) => "user",
            Group::Tenant => "tenant",
            Group::All => return false,
            Group::Named { kind, .. } => kind.as_str(),
        };
        self.rules
            .iter()
            .filter(|(k, _)| k == kind)
            .flat_map(|(_, who)| who)
            .any(|w| w == ANY_MEMBER || principal.has_role(w))
    }

    /// The kinds with a rule, for the start-up log.
    pub fn kinds(&self) -> Vec<&str> {
        self.rules.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// What a caller's own reminders may do (`POST /reminders`). A plain user's reminder is a
/// notification they send themselves, at no cost to them: `escalate` would put work on the
/// operator's email/SMS worker and `push: "always"` would wake devices past a live socket, so
/// both need a role of `HERALD_REMINDER_ESCALATE_ROLES` (default `service,admin`); and a user
/// keeps at most `HERALD_REMINDER_MAX_PENDING` (default 100) reminders pending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReminderPolicy {
    escalate_roles: Vec<String>,
    pub max_pending: usize,
}

impl Default for ReminderPolicy {
    fn default() -> Self {
        Self {
            escalate_roles: vec!["service".into(), "admin".into()],
            max_pending: 100,
        }
    }
}

impl ReminderPolicy {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let d = Self::default();
        let escalate_roles = match optional(src, "HERALD_REMINDER_ESCALATE_ROLES") {
            None => d.escalate_roles,
            Some(spec) => spec.split(',').map(|r| r.trim().to_owned()).filter(|r| !r.is_empty()).collect(),
        };
        Ok(Self {
            escalate_roles,
            max_pending: crate::domain::config::bounded(src, "HERALD_REMINDER_MAX_PENDING", d.max_pending, 1, 100_000)?,
        })
    }

    /// May `principal`'s reminders carry `escalate` and `push: "always"`?
    pub fn may_escalate(&self, principal: &Principal) -> bool {
        self.escalate_roles.iter().any(|r| principal.has_role(r))
    }

    /// The roles that may, for error messages.
    pub fn escalate_roles(&self) -> String {
        self.escalate_roles.join(", ")
    }
}

/// Presence events: `HERALD_PRESENCE_KINDS` (e.g. `room,chat`: the named group kinds whose
/// members are told when a user comes online or goes offline; default none),
/// `HERALD_PRESENCE_GRACE_SECONDS` (default 10: a user back within it produces no offline/online
/// pair), `HERALD_PRESENCE_MAX_MEMBERS` (default 100: bigger groups send none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresencePolicy {
    kinds: Vec<String>,
    pub grace_seconds: u64,
    pub max_members: usize,
}

impl Default for PresencePolicy {
    fn default() -> Self {
        Self {
            kinds: Vec::new(),
            grace_seconds: 10,
            max_members: 100,
        }
    }
}

impl PresencePolicy {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let d = Self::default();
        let kinds: Vec<String> = optional(src, "HERALD_PRESENCE_KINDS")
            .unwrap_or_default()
            .split(',')
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .collect();
        if let Some(bad) = kinds
            .iter()
            .find(|k| !crate::domain::groups::valid_kind(k) || *k == "user" || *k == "all")
        {
            return Err(ConfigError::Invalid {
                name: "HERALD_PRESENCE_KINDS",
                reason: format!("{bad:?} is not a named group kind"),
            });
        }
        Ok(Self {
            kinds,
            grace_seconds: crate::domain::config::bounded(src, "HERALD_PRESENCE_GRACE_SECONDS", d.grace_seconds, 0, 900)?,
            max_members: crate::domain::config::bounded(src, "HERALD_PRESENCE_MAX_MEMBERS", d.max_members, 1, 1000)?,
        })
    }

    /// Whether `group` sends presence events (named groups of the configured kinds only).
    pub fn applies(&self, group: &Group) -> bool {
        matches!(group, Group::Named { kind, .. } if self.kinds.iter().any(|k| k == kind))
    }

    pub fn kinds(&self) -> &[String] {
        &self.kinds
    }
}

/// The answer to "may this principal receive this group's notifications?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entitlement {
    /// Always: own personal group, own tenant.
    Implicit,
    /// Through the token's `groups` claim or the role policy.
    Token,
    /// Only if a durable subscription exists: look it up.
    NeedsSubscription,
    /// Never: another user's personal group, `all` (producer-only, joined implicitly).
    Denied,
}

/// Decides without I/O; `NeedsSubscription` asks the caller to check storage.
pub fn entitlement(principal: &Principal, group: &Group, roles: &RolePolicy) -> Entitlement {
    match group {
        Group::User(sub) if *sub == principal.user => Entitlement::Implicit,
        Group::User(_) => Entitlement::Denied,
        Group::Tenant => Entitlement::Implicit,
        Group::All => Entitlement::Denied,
        Group::Named { kind, .. } => {
            let name = group.to_string();
            if principal.groups.contains(&name) || roles.allows(principal, kind) {
                Entitlement::Token
            } else {
                Entitlement::NeedsSubscription
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configured_roles_escalate_reminders() {
        let d = ReminderPolicy::from_source(&crate::domain::config::tests::source(&[])).unwrap();
        assert_eq!(d, ReminderPolicy::default());
        assert!(d.may_escalate(&who(&["service"], &[])) && d.may_escalate(&who(&["admin"], &[])));
        assert!(!d.may_escalate(&who(&[], &[])) && !d.may_escalate(&who(&["instructor"], &[])));
        let p = ReminderPolicy::from_source(&crate::domain::config::tests::source(&[
            ("HERALD_REMINDER_ESCALATE_ROLES", "instructor"),
            ("HERALD_REMINDER_MAX_PENDING", "5"),
        ]))
        .unwrap();
        assert!(p.may_escalate(&who(&["instructor"], &[])) && !p.may_escalate(&who(&["service"], &[])));
        assert_eq!(p.max_pending, 5);
        let err = ReminderPolicy::from_source(&crate::domain::config::tests::source(&[("HERALD_REMINDER_MAX_PENDING", "0")])).unwrap_err();
        assert!(err.to_string().contains("HERALD_REMINDER_MAX_PENDING"), "{err}");
    }

    fn who(roles: &[&str], groups: &[&str]) -> Principal {
        Principal {
            user: "u1".into(),
            tenant: "acme".into(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn personal_groups_are_private() {
        let p = RolePolicy::parse("admin=*").unwrap();
        assert_eq!(entitlement(&who(&[], &[]), &Group::user("u1"), &p), Entitlement::Implicit);
        assert_eq!(entitlement(&who(&["admin"], &[]), &Group::user("u2"), &p), Entitlement::Denied);
        assert_eq!(entitlement(&who(&["admin"], &[]), &Group::All, &p), Entitlement::Denied);
    }

    #[test]
    fn named_groups_need_an_entitlement() {
        let p = RolePolicy::parse("admin=*; instructor=course,room").unwrap();
        let course = Group::parse("course:42").unwrap();
        let order = Group::parse("order:7").unwrap();
        assert_eq!(entitlement(&who(&[], &["course:42"]), &course, &p), Entitlement::Token);
        assert_eq!(entitlement(&who(&[], &["course:43"]), &course, &p), Entitlement::NeedsSubscription);
        assert_eq!(entitlement(&who(&["instructor"], &[]), &course, &p), Entitlement::Token);
        assert_eq!(entitlement(&who(&["instructor"], &[]), &order, &p), Entitlement::NeedsSubscription);
        assert_eq!(entitlement(&who(&["admin"], &[]), &order, &p), Entitlement::Token);
    }

    #[test]
    fn publishing_is_closed_unless_a_kind_allows_it() {
        let p = PublishPolicy::parse("room=member; course=instructor,admin; tenant=admin").unwrap();
        let room = Group::parse("room:7").unwrap();
        let course = Group::parse("course:42").unwrap();
        let order = Group::parse("order:1").unwrap();
        assert!(p.allows(&who(&[], &[]), &room));
        assert!(!p.allows(&who(&[], &[]), &course));
        assert!(p.allows(&who(&["instructor"], &[]), &course));
        assert!(!p.allows(&who(&["admin"], &[]), &order), "no rule: nobody");
        assert!(p.allows(&who(&["admin"], &[]), &Group::Tenant));
        assert!(!p.allows(&who(&[], &[]), &Group::Tenant));
        assert!(!p.allows(&who(&["admin"], &[]), &Group::user("u1")));
        assert!(!PublishPolicy::default().allows(&who(&["admin"], &[]), &room));
        assert!(PublishPolicy::parse("room").is_err());
        assert!(PublishPolicy::parse("room=").is_err());
        assert!(PublishPolicy::parse("Room!=member").is_err());
    }

    /// `all` reaches every tenant: a tenant's admin publishing from a socket must never reach
    /// it, whatever the configuration says (#28).
    #[test]
    fn publishing_to_all_cannot_be_configured() {
        let err = PublishPolicy::parse("room=member;all=admin").unwrap_err();
        assert!(err.contains("all"), "{err}");
        assert!(PublishPolicy::parse("all=member").is_err());
    }

    #[test]
    fn presence_is_for_the_configured_named_kinds() {
        let src = |name: &str| match name {
            "HERALD_PRESENCE_KINDS" => Some("room, chat".to_owned()),
            "HERALD_PRESENCE_GRACE_SECONDS" => Some("3".to_owned()),
            _ => None,
        };
        let p = PresencePolicy::from_source(&src).unwrap();
        assert!(p.applies(&Group::parse("room:7").unwrap()));
        assert!(!p.applies(&Group::parse("course:7").unwrap()));
        assert!(!p.applies(&Group::Tenant));
        assert_eq!((p.grace_seconds, p.max_members), (3, 100));
        assert!(!PresencePolicy::default().applies(&Group::parse("room:7").unwrap()));
        let bad = |name: &str| (name == "HERALD_PRESENCE_KINDS").then(|| "user".to_owned());
        assert!(PresencePolicy::from_source(&bad).is_err());
    }

    #[test]
    fn policy_syntax_is_checked() {
        assert!(RolePolicy::parse("admin").is_err());
        assert!(RolePolicy::parse("admin=").is_err());
        assert!(RolePolicy::parse("admin=user").is_err());
        assert_eq!(RolePolicy::parse("").unwrap(), RolePolicy::default());
    }
}
