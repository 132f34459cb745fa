//! The shop example as a process of the test's own.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::{Child, Command};

/// A child process killed when dropped, so a failing test leaves nothing.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The shop example, built by `cargo test` as this package's binary (it
/// needs the package's default features, `health` and `profile`).
pub fn shop_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_shop"))
}

/// The shop as one plain instance (`SHOP_INSTANCES=1`): without it the shop
/// starts its demo balancer and instances of its own.
pub fn shop_command() -> Command {
    let mut command = Command::new(shop_binary());
    command.env("SHOP_INSTANCES", "1");
    command
}

pub mod load;
