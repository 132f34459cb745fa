//! The load benchmark of `tower-httpsession` lives in `benches/load.rs`:
//! `cargo bench -p tower-httpsession-bench`. This library is empty; it
//! exists because a package needs a target besides its benchmarks.
