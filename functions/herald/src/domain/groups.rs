//! Group (topic) names and the tenant-prefixed keys they are stored under.
//!
//! A group name is what clients and producers write (`course:42`, `user:u1`, `tenant`, `all`).
//! Storage never sees a bare name: [`Group::key`] prefixes the tenant taken from the token or the
//! producer message, so two tenants' `course:42` are different rows and can never meet.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    /// `user:{sub}`: one user's personal group.
    User(String),
    /// `tenant`: everyone in the caller's tenant.
    Tenant,
    /// `all`: platform-wide, producer-only.
    All,
    /// `kind:id` for any other kind (`course:42`, `room:7`, `order:123`).
    Named { kind: String, id: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("group name is empty")]
    Empty,
    #[error("group name must be `kind:id`, `tenant` or `all`")]
    Shape,
    #[error("group kind must match [a-z][a-z0-9_-]{{0,31}}")]
    Kind,
    #[error("group id must match [A-Za-z0-9._-]{{1,128}}")]
    Id,
    #[error("`{0}` is a reserved group kind")]
    Reserved(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tenant must match [A-Za-z0-9._-]{{1,64}}")]
pub struct TenantError;

pub fn valid_kind(kind: &str) -> bool {
    let mut chars = kind.chars();
    matches!(chars.next(), Some('a'..='z')) && kind.len() <= 32 && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
}

/// The id grammar, shared by group ids, user ids (`sub`) and tenants (shorter).
pub fn valid_id(id: &str, max: usize) -> bool {
    !id.is_empty() && id.len() <= max && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Tenants are part of every key; the grammar keeps `#` (the key separator) out of them.
pub fn validate_tenant(tenant: &str) -> Result<(), TenantError> {
    if valid_id(tenant, 64) { Ok(()) } else { Err(TenantError) }
}

impl Group {
    pub fn parse(name: &str) -> Result<Self, GroupError> {
        if name.is_empty() {
            return Err(GroupError::Empty);
        }
        match name {
            "tenant" => return Ok(Group::Tenant),
            "all" => return Ok(Group::All),
            _ => {}
        }
        let (kind, id) = name.split_once(':').ok_or(GroupError::Shape)?;
        if !valid_kind(kind) {
            return Err(GroupError::Kind);
        }
        if !valid_id(id, 128) {
            return Err(GroupError::Id);
        }
        match kind {
            "user" => Ok(Group::User(id.to_owned())),
            "tenant" | "all" => Err(GroupError::Reserved(kind.to_owned())),
            _ => Ok(Group::Named {
                kind: kind.to_owned(),
                id: id.to_owned(),
            }),
        }
    }

    pub fn user(sub: &str) -> Self {
        Group::User(sub.to_owned())
    }

    pub fn kind(&self) -> &str {
        match self {
            Group::User(_) => "user",
            Group::Tenant => "tenant",
            Group::All => "all",
            Group::Named { kind, .. } => kind,
        }
    }

    /// The storage key: `{tenant}#{name}`. `all` belongs to no tenant; `*` cannot be a tenant.
    pub fn key(&self, tenant: &str) -> String {
        match self {
            Group::All => "*#all".to_owned(),
            _ => format!("{tenant}#{self}"),
        }
    }

    /// How many partitions this group's membership list is spread over. A personal group is one
    /// user's few tabs; the others can hold a whole tenant, so they are sharded to keep any one
    /// partition key below DynamoDB's per-partition throughput.
    pub fn shards(&self, membership_shards: u16) -> u16 {
        match self {
            Group::User(_) => 1,
            _ => membership_shards.max(1),
        }
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Group::User(sub) => write!(f, "user:{sub}"),
            Group::Tenant => f.write_str("tenant"),
            Group::All => f.write_str("all"),
            Group::Named { kind, id } => write!(f, "{kind}:{id}"),
        }
    }
}

/// A stable 64-bit FNV-1a hash: shard placement must not change between releases, which rules out
/// `std`'s randomly seeded hasher.
pub fn stable_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_shape() {
        assert_eq!(Group::parse("user:u-1").unwrap(), Group::User("u-1".into()));
        assert_eq!(Group::parse("tenant").unwrap(), Group::Tenant);
        assert_eq!(Group::parse("all").unwrap(), Group::All);
        let g = Group::parse("course:42").unwrap();
        assert_eq!(
            g,
            Group::Named {
                kind: "course".into(),
                id: "42".into()
            }
        );
        assert_eq!(g.to_string(), "course:42");
    }

    #[test]
    fn rejects_malformed_names() {
        assert_eq!(Group::parse(""), Err(GroupError::Empty));
        assert_eq!(Group::parse("course"), Err(GroupError::Shape));
        assert_eq!(Group::parse("Course:1"), Err(GroupError::Kind));
        assert_eq!(Group::parse("9x:1"), Err(GroupError::Kind));
        assert_eq!(Group::parse(&format!("{}:1", "k".repeat(33))), Err(GroupError::Kind));
        assert_eq!(Group::parse("course:"), Err(GroupError::Id));
        assert_eq!(Group::parse("course:a b"), Err(GroupError::Id));
        assert_eq!(Group::parse("course:a#b"), Err(GroupError::Id));
        assert_eq!(Group::parse(&format!("course:{}", "1".repeat(129))), Err(GroupError::Id));
        assert!(Group::parse(&format!("course:{}", "1".repeat(128))).is_ok());
        assert_eq!(Group::parse("tenant:acme"), Err(GroupError::Reserved("tenant".into())));
    }

    #[test]
    fn keys_are_tenant_prefixed_so_tenants_never_meet() {
        let g = Group::parse("course:42").unwrap();
        assert_ne!(g.key("acme"), g.key("globex"));
        assert_eq!(g.key("acme"), "acme#course:42");
        assert_eq!(Group::All.key("acme"), Group::All.key("globex"));
        assert!(validate_tenant("acme").is_ok());
        assert!(validate_tenant("a#b").is_err());
        assert!(validate_tenant("*").is_err());
    }

    #[test]
    fn personal_groups_are_not_sharded() {
        assert_eq!(Group::user("u").shards(8), 1);
        assert_eq!(Group::Tenant.shards(8), 8);
        assert_eq!(Group::All.shards(0), 1);
    }

    #[test]
    fn stable_hash_is_stable() {
        assert_eq!(stable_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
