//! `SessionId::from_cookie_value` and `StoreKey::parse` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tower_httpsession_fuzz::cookie_value(data);
});
