//! A log entry's content is stored deflated when, and only when, that makes its item cheaper.
//!
//! DynamoDB bills a write unit per started KB of an item (on every replica of a wide topic) and a
//! read unit per started 4 KB a resume reads back, so a 2 KB notification costs two write units
//! per topic where its deflated copy, text and JSON shrinking to about half, often costs one. The
//! rule compares whole items: `contentZ` (raw deflate of the content's JSON, a binary attribute)
//! replaces `content` only if the item then takes fewer write units. A notification that saves
//! nothing, small or incompressible, stays plain JSON that the console and scripts can read.

use super::{Item, StoreError};
use aws_sdk_dynamodb::types::AttributeValue;

/// The attribute holding the content as JSON text.
pub const PLAIN: &str = "content";
/// The attribute holding the content as raw deflate of that JSON.
pub const DEFLATED: &str = "contentZ";

/// Bytes of one DynamoDB write unit.
const WRITE_UNIT: usize = 1024;

/// The largest content an entry inflates to: DynamoDB's item limit, so a corrupt or crafted
/// attribute cannot make a reader allocate more than any real entry holds.
const MAX_INFLATED: usize = 400 * 1024;

/// Write units of an item of `bytes` (at least one).
pub fn write_units(bytes: usize) -> usize {
    bytes.div_ceil(WRITE_UNIT).max(1)
}

/// The size DynamoDB bills for an item: each attribute's name plus its value. A number counts at
/// its upper bound (one byte per two significant digits, plus one), which never undercounts.
pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(name, value)| name.len() + value_size(value)).sum()
}

fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => n.len().div_ceil(2) + 1,
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        // The log writes none of these; counted generously rather than guessed.
        other => format!("{other:?}").len(),
    }
}

/// The content attribute for an item whose other attributes are `rest`: deflated if that takes
/// fewer write units, plain otherwise.
pub fn content_attribute(json: String, rest: &Item) -> (&'static str, AttributeValue) {
    let others = item_size(rest);
    let plain = others + PLAIN.len() + json.len();
    if write_units(plain) == 1 {
        return (PLAIN, AttributeValue::S(json));
    }
    let deflated = miniz_oxide::deflate::compress_to_vec(json.as_bytes(), 6);
    if write_units(others + DEFLATED.len() + deflated.len()) < write_units(plain) {
        (DEFLATED, AttributeValue::B(deflated.into()))
    } else {
        (PLAIN, AttributeValue::S(json))
    }
}

/// The content's JSON from an item, whichever way it was stored.
pub fn content_json(item: &Item) -> Result<String, StoreError> {
    if let Some(value) = item.get(DEFLATED) {
        let bytes = value.as_b().map_err(|_| StoreError::Corrupt(format!("{DEFLATED} is not binary")))?;
        let inflated = miniz_oxide::inflate::decompress_to_vec_with_limit(bytes.as_ref(), MAX_INFLATED)
            .map_err(|e| StoreError::Corrupt(format!("{DEFLATED} does not inflate: {e:?}")))?;
        return String::from_utf8(inflated).map_err(|e| StoreError::Corrupt(format!("{DEFLATED}: {e}")));
    }
    item.get(PLAIN)
        .and_then(|v| v.as_s().ok())
        .cloned()
        .ok_or_else(|| StoreError::Corrupt(format!("missing string {PLAIN}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rest() -> Item {
        Item::from([
            ("pk".into(), AttributeValue::S("n#tenant-a#u#student-1234".into())),
            ("sk".into(), AttributeValue::S("01JF0000000000000000000000".into())),
            ("id".into(), AttributeValue::S("3f2c9a1e-6b1d-4a53-9a57-0d6c1f3e2b7a".into())),
            ("topic".into(), AttributeValue::S("user:student-1234".into())),
            ("createdAt".into(), AttributeValue::S("2026-12-06T20:31:27.123Z".into())),
            ("expiresAt".into(), AttributeValue::N("1796000000".into())),
        ])
    }

    /// About 2 KB of the JSON a grading notification carries: structured data repeats its keys.
    fn grades_json() -> String {
        let items: Vec<String> = (0..27)
            .map(|i| {
                format!(
                    r#"{{"assignment":"Essay {i}","course":"History 101","score":{},"max":100}}"#,
                    60 + i
                )
            })
            .collect();
        format!(
            r#"{{"title":"Grades posted","body":"Your teacher graded your work.","data":{{"grades":[{}]}}}}"#,
            items.join(",")
        )
    }

    fn item_with(rest: &Item, attribute: (&'static str, AttributeValue)) -> Item {
        let mut item = rest.clone();
        item.insert(attribute.0.into(), attribute.1);
        item
    }

    #[test]
    fn a_small_content_stays_plain() {
        let json = r#"{"title":"Class starts in 5 minutes"}"#.to_owned();
        let (name, value) = content_attribute(json.clone(), &rest());
        assert_eq!(name, PLAIN);
        assert_eq!(value, AttributeValue::S(json));
    }

    #[test]
    fn a_two_kilobyte_structured_content_is_stored_in_one_write_unit_and_reads_back() {
        let json = grades_json();
        assert!(json.len() > 1900, "the fixture is a 2 KB notification: {}", json.len());
        let item = item_with(&rest(), content_attribute(json.clone(), &rest()));
        assert!(item.contains_key(DEFLATED) && !item.contains_key(PLAIN));
        assert_eq!(write_units(item_size(&item)), 1, "{} bytes", item_size(&item));
        assert_eq!(content_json(&item).unwrap(), json);
    }

    #[test]
    fn incompressible_content_stays_plain() {
        // A pseudo-random token alphabet: deflate cannot save a whole unit of it.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let token: String = (0..1800)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[(x % 64) as usize])
            })
            .collect();
        let json = format!(r#"{{"data":{{"token":"{token}"}}}}"#);
        let (name, _) = content_attribute(json, &rest());
        assert_eq!(name, PLAIN);
    }

    #[test]
    fn the_rule_counts_the_whole_item_not_just_the_content() {
        // Content that fits one unit alone but not with the item's other attributes.
        let json = format!(r#"{{"body":"{}"}}"#, "grade ".repeat(150));
        assert!(json.len() < WRITE_UNIT && item_size(&rest()) + PLAIN.len() + json.len() > WRITE_UNIT);
        let (name, _) = content_attribute(json, &rest());
        assert_eq!(name, DEFLATED);
    }

    #[test]
    fn a_plain_item_reads_as_before() {
        let item = item_with(&rest(), (PLAIN, AttributeValue::S(r#"{"event":"old"}"#.into())));
        assert_eq!(content_json(&item).unwrap(), r#"{"event":"old"}"#);
    }

    #[test]
    fn a_corrupt_or_oversized_deflated_content_is_an_error_not_an_allocation() {
        let garbage = item_with(&rest(), (DEFLATED, AttributeValue::B(vec![0xff; 64].into())));
        assert!(matches!(content_json(&garbage), Err(StoreError::Corrupt(_))));
        let bomb = miniz_oxide::deflate::compress_to_vec(&vec![b'a'; MAX_INFLATED + 1], 6);
        let bomb = item_with(&rest(), (DEFLATED, AttributeValue::B(bomb.into())));
        assert!(matches!(content_json(&bomb), Err(StoreError::Corrupt(_))));
        let text = item_with(&rest(), (DEFLATED, AttributeValue::S("not binary".into())));
        assert!(matches!(content_json(&text), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn numbers_are_counted_at_their_upper_bound() {
        let item = Item::from([("e".into(), AttributeValue::N("1796000000".into()))]);
        assert_eq!(item_size(&item), 1 + 6);
    }
}
