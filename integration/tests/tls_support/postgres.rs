//! A PostgreSQL server of the test's own on a loopback port of 5440-5449,
//! run as user postgres from a scratch folder: with `ssl = on` and only
//! `hostssl` entries in pg_hba.conf (TLS-only), or without TLS. Stopped
//! and removed when its guard drops, or once the test process exits.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::tls_support::{Pki, after_exit, port_in};

/// The loopback ports these tests may use for PostgreSQL.
const PORTS: std::ops::Range<u16> = 5440..5450;

/// The newest PostgreSQL's binaries.
fn bin(name: &str) -> PathBuf {
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (scripts/services)")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort_unstable();
    let version = versions.last().expect("a PostgreSQL version");
    PathBuf::from(format!("/usr/lib/postgresql/{version}/bin/{name}"))
}

/// Runs `program` with `args` as user postgres; panics on failure.
fn as_postgres(program: &Path, args: &[&str]) {
    let output = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("runuser");
    assert!(
        output.status.success(),
        "{} {args:?}: {}",
        program.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn chown_postgres(path: &Path) {
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Whether the server accepts plain connections or only TLS ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    Only,
    Off,
}

/// One PostgreSQL server; stopped and removed on drop.
pub struct PgServer {
    pub port: u16,
    dir: PathBuf,
    data: PathBuf,
}

impl PgServer {
    pub fn start(pki: &Pki, tls: Tls) -> Self {
        let port = port_in(PORTS);
        // Apart from the PKI's folder, which may go first at exit.
        let dir = std::env::temp_dir().join(format!("ths-tls-pg-{}-{port}", std::process::id()));
        let data = dir.join("data");
        std::fs::create_dir_all(&dir).unwrap();
        chown_postgres(&dir);
        let data_arg = data.display().to_string();
        as_postgres(
            &bin("initdb"),
            &[
                "-D",
                &data_arg,
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
        );
        let server = Self { port, dir, data };
        // Stopped once the test process exits even if nothing drops it.
        after_exit(&server.stop_script());
        let mut conf = format!(
            "listen_addresses = '127.0.0.1,127.0.0.2'\nport = {port}\n\
             unix_socket_directories = '{dir}'\nfsync = off\n",
            dir = server.dir.display()
        );
        let hba = match tls {
            Tls::Only => {
                for (from, to) in [
                    (&pki.server_cert, "server.crt"),
                    (&pki.server_key, "server.key"),
                ] {
                    std::fs::copy(from, server.data.join(to)).unwrap();
                }
                chown_postgres(&server.data);
                let status = Command::new("chmod")
                    .arg("600")
                    .arg(server.data.join("server.key"))
                    .status()
                    .unwrap();
                assert!(status.success());
                conf.push_str(
                    "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
                );
                "local all all trust\nhostssl all all 127.0.0.0/8 trust\n"
            }
            Tls::Off => "local all all trust\nhost all all 127.0.0.0/8 trust\n",
        };
        let append = |name: &str, text: &str| {
            use std::io::Write as _;
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(server.data.join(name))
                .unwrap();
            file.write_all(text.as_bytes()).unwrap();
        };
        append("postgresql.conf", &conf);
        std::fs::write(server.data.join("pg_hba.conf"), hba).unwrap();
        chown_postgres(&server.data);
        let log = server.dir.join("log").display().to_string();
        as_postgres(
            &bin("pg_ctl"),
            &["-D", &data_arg, "-l", &log, "-w", "start"],
        );
        server
    }

    fn stop_script(&self) -> String {
        format!(
            "runuser -u postgres -- '{}' -D '{}' -m immediate stop; rm -rf '{}'",
            bin("pg_ctl").display(),
            self.data.display(),
            self.dir.display()
        )
    }

    /// A URL of database postgres on the server, by IP address, with
    /// `params` as its query.
    pub fn url(&self, params: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?{params}",
            self.port
        )
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .arg("-c")
            .arg(self.stop_script())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
