//! Certificates for the TLS tests, made by the test run: a CA, a server
//! certificate for 127.0.0.1 and localhost, a client certificate, and a
//! second CA that signed none of them. Written to a scratch folder that is
//! removed when the [`Pki`] drops.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::TcpListener;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The files of a test PKI.
#[derive(Debug)]
pub struct Pki {
    pub dir: PathBuf,
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// A CA that signed nothing here.
    pub other_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A client certificate signed by the other CA.
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A leaf certificate and its key, as PEM, for `names`.
fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    name: &str,
    names: &[&str],
    usages: Vec<ExtendedKeyUsagePurpose>,
) -> (String, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = usages;
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    /// Makes the certificates in a fresh scratch folder.
    pub fn generate(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "ths-tls-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let other = ca("some other CA");
        let ca = ca("tower-httpsession test CA");
        // Servers present the certificate to each other too (cluster bus,
        // replication), so it is good for both ends.
        let (server_cert, server_key) = leaf(
            &ca,
            "localhost",
            &["localhost", "127.0.0.1"],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        );
        let client = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let (client_cert, client_key) = leaf(&ca, "app", &[], client.clone());
        let (stranger_cert, stranger_key) = leaf(&other, "stranger", &[], client);
        Self {
            ca: write("ca.pem", &ca.pem()),
            other_ca: write("other-ca.pem", &other.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
            stranger_cert: write("stranger.pem", &stranger_cert),
            stranger_key: write("stranger.key", &stranger_key),
            dir,
        }
    }

    /// A file in the scratch folder holding `text`.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A path in the scratch folder where no file is.
    pub fn missing(&self) -> PathBuf {
        self.dir.join("missing.pem")
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The next free loopback port of `range`, never the same twice in one
/// test process.
pub fn port_in(range: Range<u16>) -> u16 {
    static TAKEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut taken = TAKEN.lock().unwrap();
    let port = range
        .clone()
        .find(|p| !taken.contains(p) && TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .unwrap_or_else(|| panic!("no free port in {range:?}"));
    taken.push(port);
    port
}

/// The text of an error and its sources, as a log line shows it.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The [`TlsError`](tower_httpsession::store::tls::TlsError) behind a
/// store error.
pub fn tls_cause(
    error: &tower_httpsession::StoreError,
) -> &tower_httpsession::store::tls::TlsError {
    std::error::Error::source(error)
        .and_then(|e| e.downcast_ref())
        .unwrap_or_else(|| panic!("no TlsError behind {}", chain(error)))
}

/// The error of a connect that must fail, and its whole text.
pub fn refused<T: std::fmt::Debug>(
    result: Result<T, tower_httpsession::StoreError>,
) -> (tower_httpsession::StoreError, String) {
    let error = result.expect_err("connect must fail");
    let text = chain(&error);
    (error, text)
}

/// Whether `path` is shown in `text`.
pub fn names(text: &str, path: &Path) -> bool {
    text.contains(&path.display().to_string())
}

/// Runs `script` in `sh` once this test process has exited, however it
/// ends: for servers and files that a `static` holds, which never drop.
pub fn after_exit(script: &str) {
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 0.2; done; {script}",
        me = std::process::id()
    );
    // Outlives this process by design, so it is never waited for.
    #[allow(clippy::zombie_processes)]
    std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
}

/// One PKI for the whole test binary, removed when it exits.
pub fn shared_pki() -> &'static Pki {
    static PKI: std::sync::OnceLock<Pki> = std::sync::OnceLock::new();
    PKI.get_or_init(|| {
        let pki = Pki::generate("shared");
        after_exit(&format!("rm -rf '{}'", pki.dir.display()));
        pki
    })
}
