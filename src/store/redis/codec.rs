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
//! | `m:principal`    | the principal's name, if bound          |
//! | `m:label`        | the session's label, if any             |
//! | `a:<name>`       | the attribute's serde_json text         |
//! | `b:<name>`       | the rest of a value stored in two parts |
//!
//! A value a little longer than the server's `hash-max-listpack-value` is
//! stored in two parts, its first bytes under `a:<name>` and the rest under
//! `b:<name>`, so that the hash stays compact (see the `encoding` module
//! and [`EXPAND`](super::scripts::EXPAND)). Readers always ask for both
//! fields and join their bytes before decoding them as UTF-8, since the
//! split may fall inside a character.

use std::collections::HashMap;
use std::time::Duration;

use ::redis::Value;
use time::OffsetDateTime;

use crate::store::{
    ChangeSet, Label, Principal, Record, VerifierHash, duration_millis, from_unix_millis,
    unix_millis,
};

pub(super) const VERIFIER: &[u8] = b"m:verifier";
pub(super) const CREATED: &[u8] = b"m:created";
pub(super) const ACCESSED: &[u8] = b"m:accessed";
pub(super) const MAX_INACTIVE: &[u8] = b"m:max_inactive";
pub(super) const EXPIRES: &[u8] = b"m:expires";
pub(super) const PRINCIPAL: &[u8] = b"m:principal";
pub(super) const LABEL: &[u8] = b"m:label";
pub(super) const ATTRIBUTE: &[u8] = b"a:";
/// The prefix of the field that holds the rest of a value stored in two
/// parts.
pub(super) const REST: &[u8] = b"b:";
const METADATA: &[u8] = b"m:";
/// Every metadata field, in the order [`record`] takes their values.
pub(super) const METADATA_FIELDS: [&[u8]; 5] = [VERIFIER, CREATED, ACCESSED, MAX_INACTIVE, EXPIRES];
/// The metadata fields a session holds only when set, in the order
/// [`record`] takes their values.
const OPTIONAL_FIELDS: [&[u8]; 2] = [PRINCIPAL, LABEL];

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

/// The field that holds the rest of attribute `name`'s value, when it is
/// stored in two parts.
pub(super) fn rest_field(name: &str) -> Vec<u8> {
    let mut field = Vec::with_capacity(REST.len() + name.len());
    field.extend_from_slice(REST);
    field.extend_from_slice(name.as_bytes());
    field
}

fn millis(t: OffsetDateTime) -> Vec<u8> {
    unix_millis(t).to_string().into_bytes()
}

/// The arguments of the create script after the key: the expiry, the split
/// length (`0`: never split), then every field and value of the record.
pub(super) fn create_args(record: &Record, split: u64) -> Vec<Vec<u8>> {
    let mut args = Vec::with_capacity(12 + 2 * record.attributes.len());
    args.push(millis(record.expires_at));
    args.push(split.to_string().into_bytes());
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
    if let Some(principal) = &record.principal {
        args.push(PRINCIPAL.to_vec());
        args.push(principal.as_str().as_bytes().to_vec());
    }
    if let Some(label) = &record.label {
        args.push(LABEL.to_vec());
        args.push(label.as_str().as_bytes().to_vec());
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
/// limit (each empty when absent), the number of set arguments, the split
/// length (`0`: never split), the fields and values to set, the fields to
/// delete. Only what changed is sent.
pub(super) fn apply_args(changes: &ChangeSet, split: u64) -> Vec<Vec<u8>> {
    let mut args: Vec<Vec<u8>> = Vec::with_capacity(
        10 + 2 * changes.attributes_set().len() + changes.attributes_removed().len(),
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
    args.push(split.to_string().into_bytes());
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
    if let Some(binding) = changes.binding() {
        args.push(PRINCIPAL.to_vec());
        args.push(binding.principal.as_str().as_bytes().to_vec());
    }
    if let Some(label) = changes.label() {
        args.push(LABEL.to_vec());
        args.push(label.as_str().as_bytes().to_vec());
    }
    args[5] = (args.len() - 7).to_string().into_bytes();
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
    let mut principal = None;
    let mut label = None;
    let mut parts: HashMap<Vec<u8>, Vec<u8>> = HashMap::with_capacity(pairs.len());
    let mut rests = Vec::new();
    for (field, value) in pairs {
        let (Value::BulkString(field), Value::BulkString(value)) = (field, value) else {
            return Err(Malformed("a field or value is not a string"));
        };
        if let Some(name) = field.strip_prefix(ATTRIBUTE) {
            parts.insert(name.to_vec(), value);
            continue;
        }
        if let Some(name) = field.strip_prefix(REST) {
            rests.push((name.to_vec(), value));
            continue;
        }
        let slot = match field.as_slice() {
            VERIFIER => &mut verifier,
            CREATED => &mut created,
            ACCESSED => &mut accessed,
            MAX_INACTIVE => &mut max_inactive,
            EXPIRES => &mut expires,
            PRINCIPAL => &mut principal,
            LABEL => &mut label,
            other if other.starts_with(METADATA) => {
                return Err(Malformed("unknown metadata field"));
            }
            _ => return Err(Malformed("field outside the m:, a: and b: namespaces")),
        };
        *slot = Some(value);
    }
    // A rest without its first part is never written; it is ignored.
    for (name, rest) in rests {
        if let Some(first) = parts.get_mut(&name) {
            first.extend_from_slice(&rest);
        }
    }
    let mut attributes = HashMap::with_capacity(parts.len());
    for (name, json) in parts {
        let name = String::from_utf8(name).map_err(|_| Malformed("attribute name is not UTF-8"))?;
        let json =
            String::from_utf8(json).map_err(|_| Malformed("attribute value is not UTF-8"))?;
        attributes.insert(name, json);
    }

    record(
        [verifier, created, accessed, max_inactive, expires],
        [principal, label],
        attributes,
    )
    .map(Some)
}

/// The fields `HMGET` asks for to load the metadata and the attributes in
/// `names`: the metadata fields in [`record`]'s order (the optional ones
/// last), then per name its `a:` field and its `b:` field (the rest of a
/// value stored in two parts). The `a:` prefix keeps a name such as
/// `m:verifier` an attribute.
pub(super) fn load_some_fields(names: &[&str]) -> Vec<Vec<u8>> {
    let mut fields = Vec::with_capacity(METADATA_FIELDS.len() + 2 + 2 * names.len());
    fields.extend(METADATA_FIELDS.iter().map(|field| field.to_vec()));
    fields.extend(OPTIONAL_FIELDS.iter().map(|field| field.to_vec()));
    for name in names {
        fields.push(attribute_field(name));
        fields.push(rest_field(name));
    }
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
    if items.len() != METADATA_FIELDS.len() + OPTIONAL_FIELDS.len() + 2 * names.len() {
        return Err(Malformed("wrong number of values"));
    }
    let mut items = items.into_iter();
    let mut metadata: [Option<Vec<u8>>; 5] = Default::default();
    let mut optional: [Option<Vec<u8>>; 2] = Default::default();
    for slot in metadata.iter_mut().chain(optional.iter_mut()) {
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
    for name in names {
        let (Some(first), Some(rest)) = (items.next(), items.next()) else {
            return Err(Malformed("wrong number of values"));
        };
        match (first, rest) {
            (Value::BulkString(mut json), rest) => {
                match rest {
                    Value::BulkString(rest) => json.extend_from_slice(&rest),
                    Value::Nil => {}
                    _ => return Err(Malformed("an attribute value is not a string")),
                }
                let json = String::from_utf8(json)
                    .map_err(|_| Malformed("attribute value is not UTF-8"))?;
                attributes.insert((*name).to_owned(), json);
            }
            // A rest without its first part is never written; it is ignored.
            (Value::Nil, Value::Nil | Value::BulkString(_)) => {}
            _ => return Err(Malformed("an attribute value is not a string")),
        }
    }
    record(metadata, optional, attributes).map(Some)
}

/// Builds a record from the metadata values, in [`METADATA_FIELDS`] order.
fn record(
    [verifier, created, accessed, max_inactive, expires]: [Option<Vec<u8>>; 5],
    [principal, label]: [Option<Vec<u8>>; 2],
    attributes: HashMap<String, String>,
) -> Result<Record, Malformed> {
    let principal = principal
        .map(|bytes| Principal::from_bytes(&bytes))
        .transpose()
        .map_err(|_| Malformed("m:principal is not a principal name"))?;
    let label = label
        .map(|bytes| {
            String::from_utf8(bytes)
                .ok()
                .and_then(|text| Label::new(text).ok())
        })
        .map(|label| label.ok_or(Malformed("m:label is not a label")))
        .transpose()?;
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
        principal,
        label,
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
#[path = "codec_tests.rs"]
mod tests;
