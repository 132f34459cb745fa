//! Start-up for the small examples: the port from `PORT`, and errors
//! printed as the one line their `Display` is, with a non-zero exit code.
//! (A `main` that returns an error prints its `Debug` form instead.)

use std::error::Error;
use std::process::ExitCode;

/// The port in `PORT`, or `default` when it is not set.
pub(crate) fn port(default: u16) -> Result<u16, String> {
    match std::env::var("PORT") {
        Err(_) => Ok(default),
        Ok(value) => value
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("PORT={value:?}: expected a TCP port from 1 to 65535")),
    }
}

/// Exit code 0 for `Ok`; for an error, prints it on one line to standard
/// error and exits with 1.
pub(crate) fn exit(name: &str, result: Result<(), Box<dyn Error>>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}
