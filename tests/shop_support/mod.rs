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

/// The shop example, built by `cargo test` next to this test binary.
pub fn shop_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join("examples").join("shop");
    assert!(
        path.exists(),
        "{} is missing: run through cargo test",
        path.display()
    );
    path
}

/// The shop as one plain instance (`SHOP_INSTANCES=1`): without it the shop
/// starts its demo balancer and instances of its own.
pub fn shop_command() -> Command {
    let mut command = Command::new(shop_binary());
    command.env("SHOP_INSTANCES", "1");
    command
}
