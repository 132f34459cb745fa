//! A whole request through the session layer with an arbitrary `Cookie`
//! header.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tower_httpsession_fuzz::cookie_header(data);
});
