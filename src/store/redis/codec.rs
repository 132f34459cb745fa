//! How a [`Record`] is laid out in one Redis hash.
//!
//! Metadata fields start with `m:`, attribute fields with `a:`, so no
//! attribute name can collide with metadata. Timestamps and durations are
//! decimal milliseconds; the verifier hash is its 32 raw bytes.
//!
//! | field            | holds                                   |
//! |------------------|-----------------------------------------|
//! | `m:verifier`     | SHA-256 of the cookie's verifier        |
//! | `m:created`      | creation time, Unix ms                  |
//! | `m:accessed`     | last access time, Unix ms               |
//! | `m:max_inactive` | idle timeout, ms                        |
//! | `m:expires`      | expiry, Unix ms (also the key's TTL)    |
//! | `a:<name>`       | the attribute's serde_json text         |

use std::collections::HashMap;
use std::time::Duration;

use ::redis::Value;
use time::OffsetDateTime;

use crate::store::{
    ChangeSet, Record, VerifierHash, duration_millis, from_unix_millis, unix_millis,
};

pub(super) const VERIFIER: &[u8] = b"m:verifier";
pub(super) const CREATED: &[u8] = b"m:created";
pub(super) const ACCESSED: &[u8] = b"m:accessed";
pub(super) const MAX_INACTIVE: &[u8] = b"m:max_inactive";
pub(super) const EXPIRES: &[u8] = b"m:expires";
pub(super) const ATTRIBUTE: &[u8] = b"a:";
const METADATA: &[u8] = b"m:";
/// Every metadata field, in the order [`record`] takes their values.
pub(super) const METADATA_FIELDS: [&[u8]; 5] = [VERIFIER, CREATED, ACCESSED, MAX_INACTIVE, EXPIRES];

/// Why a stored hash is not a record. Names a field, never a value.
#[derive(Debug, thiserror::Error)]
#[error("malformed session record: {0}")]
pub(super) struct Malformed(&'static str);

/// The field that holds attribute `name`.
pub(super) fn attribute_field(name: &str) -> Vec<u8> {
    let mut field = Vec::with_capacity(ATTRIBUTE.len() + name.len());
    field.extend_from_slice(ATTRIBUTE);
    field.extend_from_slice(name.as_bytes());
    field
}

fn millis(t: OffsetDateTime) -> Vec<u8> {
    unix_millis(t).to_string().into_bytes()
}

/// The arguments of the create script after the key: the expiry, then every
/// field and value of the record.
pub(super) fn create_args(record: &Record) -> Vec<Vec<u8>> {
    let mut args = Vec::with_capacity(11 + 2 * record.attributes.len());
    args.push(millis(record.expires_at));
    for (field, value) in [
        (VERIFIER, record.verifier.as_bytes().to_vec()),
        (CREATED, millis(record.created)),
        (ACCESSED, millis(record.last_accessed)),
        (
            MAX_INACTIVE,
            duration_millis(record.max_inactive)
                .to_string()
                .into_bytes(),
        ),
        (EXPIRES, millis(record.expires_at)),
    ] {
        args.push(field.to_vec());
        args.push(value);
    }
    for (name, json) in &record.attributes {
        args.push(attribute_field(name));
        args.push(json.as_bytes().to_vec());
    }
    args
}

/// The arguments of the apply script after the key: the required verifier
/// hash, the touch's access time, absolute timeout and interval (`0` when
/// the change sets metadata, which makes the touch due), the attribute
/// limit (each empty when absent), the number of set arguments, the fields
/// and values to set, the fields to delete. Only what changed is sent.
pub(super) fn apply_args(changes: &ChangeSet) -> Vec<Vec<u8>> {
    let mut args: Vec<Vec<u8>> = Vec::with_capacity(
        9 + 2 * changes.attributes_set().len() + changes.attributes_removed().len(),
    );
    let touch = changes.touch();
    args.push(
        changes
            .required_verifier()
            .map_or_else(Vec::new, |h| h.as_bytes().to_vec()),
    );
    args.push(touch.map_or_else(Vec::new, |t| millis(t.last_accessed)));
    args.push(
        touch
            .and_then(|t| t.absolute_timeout)
            .map_or_else(Vec::new, |d| duration_millis(d).to_string().into_bytes()),
    );
    let interval = if changes.sets_metadata() {
        Some(Duration::ZERO)
    } else {
        touch.and_then(|t| t.interval)
    };
    args.push(interval.map_or_else(Vec::new, |d| duration_millis(d).to_string().into_bytes()));
    args.push(
        changes
            .attribute_limit()
            .map_or_else(Vec::new, |n| n.to_string().into_bytes()),
    );
    args.push(Vec::new());
    for (name, json) in changes.attributes_set() {
        args.push(attribute_field(name));
        args.push(json.as_bytes().to_vec());
    }
    if let Some(interval) = changes.max_inactive() {
        args.push(MAX_INACTIVE.to_vec());
        args.push(duration_millis(interval).to_string().into_bytes());
    }
    if let Some(hash) = changes.new_verifier() {
        args.push(VERIFIER.to_vec());
        args.push(hash.as_bytes().to_vec());
    }
    args[5] = (args.len() - 6).to_string().into_bytes();
    args.extend(changes.attributes_removed().map(attribute_field));
    args
}

/// Decodes the reply to `HGETALL`: `None` for an empty hash (no such key).
pub(super) fn decode(reply: Value) -> Result<Option<Record>, Malformed> {
    let pairs = match reply {
        Value::Array(items) => {
            if items.len() % 2 != 0 {
                return Err(Malformed("odd number of hash items"));
            }
            let mut pairs = Vec::with_capacity(items.len() / 2);
            let mut items = items.into_iter();
            while let (Some(field), Some(value)) = (items.next(), items.next()) {
                pairs.push((field, value));
            }
            pairs
        }
        Value::Map(pairs) => pairs,
        Value::Nil => Vec::new(),
        _ => return Err(Malformed("not a hash")),
    };
    if pairs.is_empty() {
        return Ok(None);
    }

    let mut verifier = None;
    let mut created = None;
    let mut accessed = None;
    let mut max_inactive = None;
    let mut expires = None;
    let mut attributes = HashMap::with_capacity(pairs.len().saturating_sub(5));
    for (field, value) in pairs {
        let (Value::BulkString(field), Value::BulkString(value)) = (field, value) else {
            return Err(Malformed("a field or value is not a string"));
        };
        if let Some(name) = field.strip_prefix(ATTRIBUTE) {
            let name = String::from_utf8(name.to_vec())
                .map_err(|_| Malformed("attribute name is not UTF-8"))?;
            let json =
                String::from_utf8(value).map_err(|_| Malformed("attribute value is not UTF-8"))?;
            attributes.insert(name, json);
            continue;
        }
        let slot = match field.as_slice() {
            VERIFIER => &mut verifier,
            CREATED => &mut created,
            ACCESSED => &mut accessed,
            MAX_INACTIVE => &mut max_inactive,
            EXPIRES => &mut expires,
            other if other.starts_with(METADATA) => {
                return Err(Malformed("unknown metadata field"));
            }
            _ => return Err(Malformed("field outside the m: and a: namespaces")),
        };
        *slot = Some(value);
    }

    record(
        [verifier, created, accessed, max_inactive, expires],
        attributes,
    )
    .map(Some)
}

/// The fields `HMGET` asks for to load the metadata and the attributes in
/// `names`: the metadata fields in [`record`]'s order, then one `a:` field
/// per name. The `a:` prefix keeps a name such as `m:verifier` an attribute.
pub(super) fn load_some_fields(names: &[&str]) -> Vec<Vec<u8>> {
    let mut fields = Vec::with_capacity(METADATA_FIELDS.len() + names.len());
    fields.extend(METADATA_FIELDS.iter().map(|field| field.to_vec()));
    fields.extend(names.iter().map(|name| attribute_field(name)));
    fields
}

/// Decodes the reply to `HMGET` of [`load_some_fields`]`(names)`: `None` if
/// every metadata field is absent (no such key), the metadata and the named
/// attributes that exist otherwise.
///
/// A hash holding some metadata fields but not all is malformed, as for
/// [`decode`]. A hash holding no metadata at all cannot be told from a
/// missing key in one `HMGET` and reads as `None`; the store never writes
/// one (the create script writes all metadata at once and nothing deletes
/// it).
pub(super) fn decode_some(reply: Value, names: &[&str]) -> Result<Option<Record>, Malformed> {
    let Value::Array(items) = reply else {
        return Err(Malformed("not a list of values"));
    };
    if items.len() != METADATA_FIELDS.len() + names.len() {
        return Err(Malformed("wrong number of values"));
    }
    let mut items = items.into_iter();
    let mut metadata: [Option<Vec<u8>>; 5] = Default::default();
    for slot in &mut metadata {
        *slot = match items.next() {
            Some(Value::BulkString(value)) => Some(value),
            Some(Value::Nil) | None => None,
            Some(_) => return Err(Malformed("a metadata value is not a string")),
        };
    }
    if metadata.iter().all(Option::is_none) {
        return Ok(None);
    }
    let mut attributes = HashMap::with_capacity(names.len());
    for (name, value) in names.iter().zip(items) {
        match value {
            Value::BulkString(json) => {
                let json = String::from_utf8(json)
                    .map_err(|_| Malformed("attribute value is not UTF-8"))?;
                attributes.insert((*name).to_owned(), json);
            }
            Value::Nil => {}
            _ => return Err(Malformed("an attribute value is not a string")),
        }
    }
    record(metadata, attributes).map(Some)
}

/// Builds a record from the metadata values, in [`METADATA_FIELDS`] order.
fn record(
    [verifier, created, accessed, max_inactive, expires]: [Option<Vec<u8>>; 5],
    attributes: HashMap<String, String>,
) -> Result<Record, Malformed> {
    let verifier = verifier.ok_or(Malformed("missing m:verifier"))?;
    let verifier =
        VerifierHash::from_slice(&verifier).ok_or(Malformed("m:verifier is not 32 bytes"))?;
    let max_inactive = parse_i64(max_inactive, "m:max_inactive")?;
    let max_inactive = u64::try_from(max_inactive)
        .map(Duration::from_millis)
        .map_err(|_| Malformed("m:max_inactive is negative"))?;
    Ok(Record {
        verifier,
        created: parse_time(created, "m:created")?,
        last_accessed: parse_time(accessed, "m:accessed")?,
        max_inactive,
        expires_at: parse_time(expires, "m:expires")?,
        attributes,
        principal: None,
        label: None,
    })
}

fn parse_i64(bytes: Option<Vec<u8>>, field: &'static str) -> Result<i64, Malformed> {
    let bytes = bytes.ok_or(Malformed(field))?;
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or(Malformed(field))
}

fn parse_time(bytes: Option<Vec<u8>>, field: &'static str) -> Result<OffsetDateTime, Malformed> {
    from_unix_millis(parse_i64(bytes, field)?).ok_or(Malformed(field))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Touch, now};

    fn record() -> Record {
        let t = now();
        Record {
            verifier: crate::store::VerifierHash::random().unwrap(),
            created: t,
            last_accessed: t,
            max_inactive: Duration::from_secs(1800),
            expires_at: t + Duration::from_secs(1800),
            attributes: [("m:created", "\"shadow\""), ("user", "\"alice\"")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            principal: None,
            label: None,
        }
    }

    fn as_reply(args: &[Vec<u8>]) -> Value {
        Value::Array(
            args[1..]
                .iter()
                .map(|a| Value::BulkString(a.clone()))
                .collect(),
        )
    }

    #[test]
    fn a_record_round_trips_and_names_cannot_collide_with_metadata() {
        let record = record();
        let decoded = decode(as_reply(&create_args(&record))).unwrap().unwrap();
        assert_eq!(decoded, record);
    }

    #[test]
    fn an_empty_hash_is_no_record() {
        assert_eq!(decode(Value::Array(Vec::new())).unwrap(), None);
        assert_eq!(decode(Value::Map(Vec::new())).unwrap(), None);
    }

    #[test]
    fn malformed_hashes_are_errors_not_panics() {
        let good = create_args(&record());
        let mut cases: Vec<Value> = vec![
            Value::Int(3),
            Value::Array(vec![Value::BulkString(b"a:x".to_vec())]),
            Value::Array(vec![Value::Int(1), Value::Int(2)]),
        ];
        // Each metadata field missing, or holding junk.
        for i in (1..good.len()).step_by(2).take(5) {
            let mut missing = good.clone();
            missing.drain(i..i + 2);
            cases.push(as_reply(&missing));
            let mut junk = good.clone();
            junk[i + 1] = b"\xff-x".to_vec();
            cases.push(as_reply(&junk));
        }
        let mut unknown = good.clone();
        unknown.extend([b"m:other".to_vec(), b"1".to_vec()]);
        cases.push(as_reply(&unknown));
        let mut outside = good.clone();
        outside.extend([b"plain".to_vec(), b"1".to_vec()]);
        cases.push(as_reply(&outside));
        let mut bad_utf8 = good;
        bad_utf8.extend([b"a:x".to_vec(), b"\xff".to_vec()]);
        cases.push(as_reply(&bad_utf8));
        for case in cases {
            assert!(decode(case.clone()).is_err(), "{case:?}");
        }
    }

    /// The `HMGET` reply a hash made by `create_args(record)` gives for
    /// `load_some_fields(names)`.
    fn hmget_reply(record: &Record, names: &[&str]) -> Value {
        let args = create_args(record);
        let stored: HashMap<&[u8], &[u8]> = args[1..]
            .chunks(2)
            .map(|pair| (pair[0].as_slice(), pair[1].as_slice()))
            .collect();
        Value::Array(
            load_some_fields(names)
                .iter()
                .map(|field| match stored.get(field.as_slice()) {
                    Some(value) => Value::BulkString(value.to_vec()),
                    None => Value::Nil,
                })
                .collect(),
        )
    }

    #[test]
    fn load_some_asks_for_the_metadata_then_the_named_attributes() {
        assert_eq!(
            load_some_fields(&["user", "m:created"]),
            [
                b"m:verifier".to_vec(),
                b"m:created".to_vec(),
                b"m:accessed".to_vec(),
                b"m:max_inactive".to_vec(),
                b"m:expires".to_vec(),
                b"a:user".to_vec(),
                b"a:m:created".to_vec(),
            ]
        );
    }

    #[test]
    fn decode_some_gives_the_metadata_and_the_named_attributes() {
        let record = record();
        let names = ["m:created", "absent"];
        let decoded = decode_some(hmget_reply(&record, &names), &names)
            .unwrap()
            .unwrap();
        let mut expected = record.clone();
        expected.attributes.remove("user");
        assert_eq!(decoded, expected);
        assert_eq!(decoded.attributes["m:created"], "\"shadow\"");

        let decoded = decode_some(hmget_reply(&record, &[]), &[])
            .unwrap()
            .unwrap();
        assert!(decoded.attributes.is_empty());
        assert_eq!(decoded.verifier, record.verifier);
    }

    #[test]
    fn decode_some_of_no_metadata_is_no_record() {
        let reply = Value::Array(vec![Value::Nil; 6]);
        assert_eq!(decode_some(reply, &["a"]).unwrap(), None);
    }

    #[test]
    fn decode_some_rejects_malformed_replies() {
        let good = record();
        let names = ["user"];
        let Value::Array(items) = hmget_reply(&good, &names) else {
            unreachable!()
        };
        let mut cases = vec![
            Value::Nil,
            Value::Int(3),
            Value::Array(items[..5].to_vec()),
            Value::Array([items.clone(), vec![Value::Nil]].concat()),
        ];
        for i in 0..5 {
            let mut missing = items.clone();
            missing[i] = Value::Nil;
            cases.push(Value::Array(missing));
            let mut junk = items.clone();
            junk[i] = Value::BulkString(b"\xff-x".to_vec());
            cases.push(Value::Array(junk));
            let mut wrong_type = items.clone();
            wrong_type[i] = Value::Int(1);
            cases.push(Value::Array(wrong_type));
        }
        let mut bad_utf8 = items.clone();
        bad_utf8[5] = Value::BulkString(b"\xff".to_vec());
        cases.push(Value::Array(bad_utf8));
        let mut wrong_type = items;
        wrong_type[5] = Value::Int(1);
        cases.push(Value::Array(wrong_type));
        for case in cases {
            assert!(decode_some(case.clone(), &names).is_err(), "{case:?}");
        }
    }

    #[test]
    fn apply_sends_only_the_delta() {
        let mut changes = ChangeSet::new();
        changes.set_attribute("n", "5");
        changes.remove_attribute("gone");
        let t = now();
        changes.set_touch(Some(Touch {
            last_accessed: t,
            absolute_timeout: Some(std::time::Duration::from_secs(7)),
            interval: None,
        }));
        let hash = crate::store::VerifierHash::random().unwrap();
        changes.require_verifier(Some(hash));
        changes.limit_attributes(Some(64));
        let args = apply_args(&changes);
        let ms = unix_millis(t).to_string().into_bytes();
        assert_eq!(args[0], hash.as_bytes());
        assert_eq!(args[1], ms);
        assert_eq!(args[2], b"7000");
        assert_eq!(args[3], b"");
        assert_eq!(args[4], b"64");
        assert_eq!(args[5], b"2");
        assert_eq!(args[6], b"a:n");
        assert_eq!(args[7], b"5");
        assert_eq!(args[8], b"a:gone");
        assert_eq!(args.len(), 9);
    }

    #[test]
    fn apply_without_touch_keeps_the_expiry() {
        let mut changes = ChangeSet::new();
        changes.remove_attribute("x");
        let args = apply_args(&changes);
        let empty = Vec::new();
        assert_eq!(
            args,
            [
                empty.clone(),
                empty.clone(),
                empty.clone(),
                empty.clone(),
                empty,
                b"0".to_vec(),
                b"a:x".to_vec()
            ]
        );
    }
}
