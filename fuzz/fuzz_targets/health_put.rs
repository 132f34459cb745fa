//! The health toggle's `PUT`: arbitrary bodies from an allowed caller, and
//! arbitrary credentials from a caller outside the ACL.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tower_httpsession_fuzz::health_put(data);
});
