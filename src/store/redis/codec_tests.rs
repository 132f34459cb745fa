//! Tests of the hash layout.

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
        args[2..]
            .iter()
            .map(|a| Value::BulkString(a.clone()))
            .collect(),
    )
}

#[test]
fn a_record_round_trips_and_names_cannot_collide_with_metadata() {
    let record = record();
    let decoded = decode(as_reply(&create_args(&record, 64)))
        .unwrap()
        .unwrap();
    assert_eq!(decoded, record);
}

#[test]
fn the_principal_and_label_round_trip() {
    let record = record()
        .with_principal(Some(Principal::new("alice").unwrap()))
        .with_label(Some(Label::new("Firefox").unwrap()));
    let decoded = decode(as_reply(&create_args(&record, 64)))
        .unwrap()
        .unwrap();
    assert_eq!(decoded, record);
    let names = ["user"];
    let decoded = decode_some(hmget_reply(&record, &names), &names)
        .unwrap()
        .unwrap();
    assert_eq!(decoded.principal, record.principal);
    assert_eq!(decoded.label, record.label);
}

#[test]
fn an_empty_hash_is_no_record() {
    assert_eq!(decode(Value::Array(Vec::new())).unwrap(), None);
    assert_eq!(decode(Value::Map(Vec::new())).unwrap(), None);
}

#[test]
fn malformed_hashes_are_errors_not_panics() {
    let good = create_args(&record(), 64);
    let mut cases: Vec<Value> = vec![
        Value::Int(3),
        Value::Array(vec![Value::BulkString(b"a:x".to_vec())]),
        Value::Array(vec![Value::Int(1), Value::Int(2)]),
    ];
    // Each metadata field missing, or holding junk.
    for i in (2..good.len()).step_by(2).take(5) {
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
    let args = create_args(record, 64);
    let stored: HashMap<&[u8], &[u8]> = args[2..]
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
fn load_some_asks_for_the_metadata_then_each_named_attribute_and_its_rest() {
    assert_eq!(
        load_some_fields(&["user", "m:created"]),
        [
            b"m:verifier".to_vec(),
            b"m:created".to_vec(),
            b"m:accessed".to_vec(),
            b"m:max_inactive".to_vec(),
            b"m:expires".to_vec(),
            b"m:principal".to_vec(),
            b"m:label".to_vec(),
            b"a:user".to_vec(),
            b"b:user".to_vec(),
            b"a:m:created".to_vec(),
            b"b:m:created".to_vec(),
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
    let reply = Value::Array(vec![Value::Nil; 9]);
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
    bad_utf8[7] = Value::BulkString(b"\xff".to_vec());
    cases.push(Value::Array(bad_utf8));
    let mut wrong_type = items;
    wrong_type[7] = Value::Int(1);
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
    let args = apply_args(&changes, 64);
    let ms = unix_millis(t).to_string().into_bytes();
    assert_eq!(args[0], hash.as_bytes());
    assert_eq!(args[1], ms);
    assert_eq!(args[2], b"7000");
    assert_eq!(args[3], b"");
    assert_eq!(args[4], b"64");
    assert_eq!(args[5], b"2");
    assert_eq!(args[6], b"64");
    assert_eq!(args[7], b"a:n");
    assert_eq!(args[8], b"5");
    assert_eq!(args[9], b"a:gone");
    assert_eq!(args.len(), 10);
}

#[test]
fn apply_without_touch_keeps_the_expiry() {
    let mut changes = ChangeSet::new();
    changes.remove_attribute("x");
    let args = apply_args(&changes, 0);
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
            b"0".to_vec(),
            b"a:x".to_vec()
        ]
    );
}

/// A hash with `user`'s value stored in two parts, split at byte `at`.
fn split_hash(record: &Record, at: usize) -> Vec<Vec<u8>> {
    let mut args = create_args(record, 64);
    let value = record.attributes["user"].as_bytes();
    let i = args.iter().position(|a| a == b"a:user").unwrap();
    args[i + 1] = value[..at].to_vec();
    args.extend([b"b:user".to_vec(), value[at..].to_vec()]);
    args
}

#[test]
fn a_value_stored_in_two_parts_reads_as_one_even_split_inside_a_character() {
    let mut record = record();
    // 'é' is two bytes: a split after the first is not UTF-8 on its own.
    let value = format!("\"{}é{}\"", "x".repeat(63), "y".repeat(40));
    record.attributes.insert("user".to_owned(), value.clone());
    let args = split_hash(&record, 65);
    assert!(std::str::from_utf8(&args[args.len() - 1]).is_err());
    let decoded = decode(as_reply(&args)).unwrap().unwrap();
    assert_eq!(decoded, record);

    let stored: HashMap<&[u8], &[u8]> = args[2..]
        .chunks(2)
        .map(|pair| (pair[0].as_slice(), pair[1].as_slice()))
        .collect();
    let names = ["user", "m:created"];
    let reply = Value::Array(
        load_some_fields(&names)
            .iter()
            .map(|field| match stored.get(field.as_slice()) {
                Some(value) => Value::BulkString(value.to_vec()),
                None => Value::Nil,
            })
            .collect(),
    );
    let decoded = decode_some(reply, &names).unwrap().unwrap();
    assert_eq!(decoded.attributes["user"], value);
    assert_eq!(decoded.attributes["m:created"], "\"shadow\"");
}

#[test]
fn a_rest_without_its_first_part_is_ignored() {
    let record = record();
    let mut args = create_args(&record, 64);
    args.extend([b"b:ghost".to_vec(), b"tail".to_vec()]);
    let decoded = decode(as_reply(&args)).unwrap().unwrap();
    assert_eq!(decoded, record);
}

#[test]
fn the_scripts_name_the_fields_the_codec_does() {
    assert_eq!(ATTRIBUTE, b"a:");
    assert_eq!(REST, b"b:");
    assert!(super::super::scripts::EXPAND.contains("'a:'"));
    assert!(super::super::scripts::EXPAND.contains("'b:'"));
}
