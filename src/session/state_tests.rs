//! Unit tests of the per-request state's transitions.

use super::*;

fn config() -> SessionConfig {
    SessionConfig::default()
}

fn now() -> OffsetDateTime {
    crate::store::now()
}

fn stored_record(id: &SessionId, attributes: &[(&str, &str)]) -> Record {
    let at = now();
    Record {
        verifier: id.verifier_hash(),
        created: at,
        last_accessed: at,
        max_inactive: Duration::from_secs(1800),
        expires_at: at + Duration::from_secs(1800),
        attributes: attributes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        principal: None,
        label: None,
    }
}

#[test]
fn a_new_session_knows_it_is_empty_and_stored_nowhere() {
    let loaded = Loaded::new(&config(), now(), Predecessor::None).unwrap();
    assert_eq!(loaded.origin, Origin::New(Predecessor::None));
    assert!(!loaded.is_stored());
    assert!(loaded.is_read());
    assert_eq!(loaded.verifier(), None);
    assert!(loaded.is_empty());
    assert_eq!(loaded.stored("anything"), Some(None));
}

#[test]
fn an_unread_session_requires_the_cookies_verifier_and_knows_nothing() {
    let id = SessionId::generate().unwrap();
    let loaded = Loaded::unread(id.clone(), &config(), now());
    assert!(loaded.is_stored());
    assert!(!loaded.is_read());
    assert_eq!(loaded.verifier(), Some(id.verifier_hash()));
    assert_eq!(loaded.stored("a"), None);
    assert_eq!(loaded.attribute_count(), None);
    assert!(loaded.needs_count_for("a"));
}

#[test]
fn a_read_session_requires_the_stored_verifier() {
    let id = SessionId::generate().unwrap();
    let record = stored_record(&id, &[("a", "1")]);
    let loaded = Loaded::read(id.clone(), record, true, Some(1), &config(), now());
    assert_eq!(loaded.verifier(), Some(id.verifier_hash()));
    assert!(matches!(
        loaded.origin,
        Origin::Read {
            touch_due: false,
            ..
        }
    ));
    assert_eq!(loaded.stored("a"), Some(Some("1")));
    assert_eq!(loaded.stored("b"), Some(None));
    assert_eq!(loaded.attribute_count(), Some(1));
}

#[test]
fn a_read_session_a_touch_interval_old_is_due_a_touch() {
    let id = SessionId::generate().unwrap();
    let mut record = stored_record(&id, &[]);
    record.last_accessed = now() - Duration::from_secs(91);
    let loaded = Loaded::read(id, record, false, None, &config(), now());
    assert!(matches!(
        loaded.origin,
        Origin::Read {
            touch_due: true,
            ..
        }
    ));
}

#[test]
fn invalidating_a_read_session_deletes_it_with_its_verifier() {
    let id = SessionId::generate().unwrap();
    let record = stored_record(&id, &[("a", "1")]);
    let mut loaded = Loaded::read(id.clone(), record, true, Some(1), &config(), now());
    loaded.changes.set_attribute("b", "2");
    loaded.invalidate(&config()).unwrap();
    assert_eq!(
        loaded.origin,
        Origin::New(Predecessor::Invalidated {
            key: id.store_key(),
            verifier: id.verifier_hash(),
        })
    );
    assert_ne!(loaded.id.store_key(), id.store_key(), "a new id");
    assert!(loaded.changes.is_empty(), "the old changes are dropped");
    // Invalidating again keeps the session to delete.
    loaded.invalidate(&config()).unwrap();
    assert!(matches!(
        loaded.origin,
        Origin::New(Predecessor::Invalidated { .. })
    ));
}

#[test]
fn invalidating_a_new_session_only_drops_the_cookie() {
    let mut loaded = Loaded::new(&config(), now(), Predecessor::None).unwrap();
    loaded.invalidate(&config()).unwrap();
    assert_eq!(loaded.origin, Origin::New(Predecessor::StaleCookie));
}

#[test]
fn rotating_a_stored_session_records_the_new_verifier() {
    let id = SessionId::generate().unwrap();
    let record = stored_record(&id, &[]);
    let mut loaded = Loaded::read(id.clone(), record, true, Some(0), &config(), now());
    loaded.rotate().unwrap();
    assert_eq!(loaded.id.store_key(), id.store_key(), "same selector");
    assert_eq!(
        loaded.changes.new_verifier(),
        Some(&loaded.id.verifier_hash())
    );
    assert_eq!(
        loaded.verifier(),
        Some(id.verifier_hash()),
        "the write still requires the old verifier"
    );

    let mut fresh = Loaded::new(&config(), now(), Predecessor::None).unwrap();
    fresh.rotate().unwrap();
    assert_eq!(
        fresh.changes.new_verifier(),
        None,
        "nothing stored to rotate"
    );
}

#[test]
fn an_ended_session_refuses_everything_and_forgets_its_changes() {
    let id = SessionId::generate().unwrap();
    let mut loaded = Loaded::unread(id, &config(), now());
    loaded.changes.set_attribute("a", "1");
    loaded.end();
    assert_eq!(loaded.origin, Origin::Ended);
    assert!(matches!(loaded.check_live(), Err(SessionError::Ended)));
    assert!(loaded.changes.is_empty());
    assert_eq!(loaded.verifier(), None);
    assert!(!loaded.is_stored());
}

#[test]
fn a_read_after_a_blind_set_keeps_what_was_set() {
    let id = SessionId::generate().unwrap();
    let mut blind = Loaded::unread(id.clone(), &config(), now());
    blind.record_set("a", "2".into(), &config()).unwrap();
    let record = stored_record(&id, &[("a", "1"), ("b", "1")]);
    let mut read = Loaded::read(id, record, true, Some(2), &config(), now());
    read.adopt(&blind.changes);
    assert_eq!(read.value("a"), Some("2"));
    assert_eq!(read.names(), ["a", "b"]);
}

#[test]
fn setting_the_stored_value_is_no_change_and_removal_counts() {
    let id = SessionId::generate().unwrap();
    let record = stored_record(&id, &[("a", "1")]);
    let mut loaded = Loaded::read(id, record, true, Some(1), &config(), now());
    loaded.record_set("a", "1".into(), &config()).unwrap();
    assert!(loaded.changes.is_empty());
    assert!(loaded.record_remove("a"));
    assert!(!loaded.record_remove("never"));
    assert!(loaded.is_empty());
    loaded.set_max_inactive(Duration::from_secs(1800));
    assert_eq!(loaded.changes.max_inactive(), None, "unchanged");
    loaded.set_max_inactive(Duration::from_secs(60));
    assert_eq!(loaded.changes.max_inactive(), Some(Duration::from_secs(60)));
}
