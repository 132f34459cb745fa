//! The integration tests of `tower-httpsession` live in `tests/`:
//! `cargo test -p tower-httpsession-tests --all-features`. This library is
//! empty; the package's binary is the shop example, which the tests start.
