//! Cursors: the position of a notification in the log.
//!
//! A cursor is 48 bits of milliseconds since the epoch followed by 80 random bits, written as 26
//! Crockford base32 characters (the ULID layout). Lexicographic order is numeric order, so
//! DynamoDB sort keys, `resume` and `missed` all compare plain strings. A cursor is assigned once,
//! when a notification is first logged, and stored with its idempotency key, so redeliveries and
//! replays carry the same cursor. Clients treat it as opaque.

use std::fmt;
use std::str::FromStr;

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
pub const LEN: usize = 26;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Cursor(u128);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed cursor")]
pub struct CursorError;

impl Cursor {
    /// Before every notification: `resume` without `since` starts here.
    pub const MIN: Cursor = Cursor(0);

    pub fn from_parts(millis: u64, random: u128) -> Self {
        let millis = u128::from(millis & 0xFFFF_FFFF_FFFF);
        Cursor((millis << 80) | (random & ((1u128 << 80) - 1)))
    }

    /// A fresh cursor for a notification logged now.
    pub fn now() -> Self {
        let mut bytes = [0u8; 16];
        // A failing system RNG leaves zeros: cursors stay ordered by time, only ties lose their
        // random tie-break, which is harmless for ordering.
        let _ = aws_lc_rs::rand::fill(&mut bytes);
        Self::from_parts(now_millis(), u128::from_le_bytes(bytes))
    }

    /// The first cursor at or after `millis`: used to bound queries by retention.
    pub fn at_millis(millis: u64) -> Self {
        Self::from_parts(millis, 0)
    }

    pub fn millis(&self) -> u64 {
        (self.0 >> 80) as u64
    }
}

pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; LEN];
        for (i, slot) in out.iter_mut().enumerate() {
            let shift = 5 * (LEN - 1 - i);
            *slot = ALPHABET[((self.0 >> shift) & 0x1F) as usize];
        }
        // The alphabet is ASCII, so this cannot fail.
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl FromStr for Cursor {
    type Err = CursorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != LEN {
            return Err(CursorError);
        }
        let mut value: u128 = 0;
        for (i, b) in s.bytes().enumerate() {
            let digit = ALPHABET.iter().position(|&a| a == b).ok_or(CursorError)? as u128;
            // 26 * 5 = 130 bits: the first character may only carry 3 bits.
            if i == 0 && digit > 7 {
                return Err(CursorError);
            }
            value = (value << 5) | digit;
        }
        Ok(Cursor(value))
    }
}

impl serde::Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_orders_like_strings() {
        let a = Cursor::from_parts(1_700_000_000_000, 5);
        let b = Cursor::from_parts(1_700_000_000_000, 6);
        let c = Cursor::from_parts(1_700_000_000_001, 0);
        for x in [a, b, c, Cursor::MIN] {
            assert_eq!(x.to_string().len(), LEN);
            assert_eq!(x.to_string().parse::<Cursor>().unwrap(), x);
        }
        assert!(a.to_string() < b.to_string() && b.to_string() < c.to_string());
        assert_eq!(c.millis(), 1_700_000_000_001);
    }

    #[test]
    fn fresh_cursors_differ_and_carry_time() {
        let before = now_millis();
        let (x, y) = (Cursor::now(), Cursor::now());
        assert_ne!(x, y);
        assert!(x.millis() >= before);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "abc",
            "0000000000000000000000000U",
            "8ZZZZZZZZZZZZZZZZZZZZZZZZZ",
            "00000000000000000000000000x",
        ] {
            assert_eq!(bad.parse::<Cursor>(), Err(CursorError), "{bad}");
        }
    }
}
