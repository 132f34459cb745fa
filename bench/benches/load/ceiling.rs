//! The server's own ceiling for this crate's write: pgbench running the
//! PostgreSQL store's `apply` statement alone (no HTTP, no Rust), with the
//! parameters the store sends for the `write-small-in-big-session`
//! request, over as many connections as each app's store may open.
//!
//! The statement's text comes from the crate
//! (`PostgresStore::apply_statement_text`, hidden behind its `testing`
//! feature), so the ceiling follows the statement as it changes. Its
//! numbered parameters become pgbench variables, cast to the types the
//! store binds (pgbench's are untyped), except those the request leaves
//! NULL, which become `NULL` (pgbench has no NULL variable; the server then
//! knows them as constants, so if anything the ceiling is a little high). Each transaction writes one of `sessions` sessions, picked
//! at random, each seeded through the store with 50 attributes of 1,000
//! bytes in a schema of its own; the touch is never due, as in the
//! scenario's requests.
//!
//! Rounds run between the apps' rounds, so the same noise weighs on both.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use time::OffsetDateTime;
use tower_httpsession::SessionStore;
use tower_httpsession::store::postgres::PostgresStore;
use tower_httpsession::store::{Created, Record, StoreKey, VerifierHash};
use tower_sessions_sqlx_store::sqlx;

use crate::BoxError;
use crate::apps::{Backend, Crate};
use crate::scenarios::{Scenario, Settings, Target};
use crate::stores::{Env, STORE_CONNECTIONS};

/// The schema of the sessions pgbench writes.
const SCHEMA: &str = "httpsession_ceiling";
/// Seeded attributes per session, and bytes each: the scenario's.
const ATTRIBUTES: usize = 50;
const VALUE_BYTES: usize = 1_000;
/// Keys are this prefix, a zero-padded number and this suffix: 22
/// characters of base64url whose last one carries no bits past the 16
/// bytes a key decodes to.
const KEY_PREFIX: &str = "ceiling";
const KEY_SUFFIX: &str = "A";
/// The store's connections' setting, which pgbench's take too.
const PGOPTIONS: &str = "-c plan_cache_mode=force_generic_plan";

/// pgbench's rounds against the seeded sessions.
pub(crate) struct Ceiling {
    url: String,
    script: PathBuf,
    /// pgbench's variables (`-D name=value`).
    defines: Vec<(String, String)>,
    /// Transactions per second of each round.
    rounds: Vec<f64>,
    /// Why the ceiling could not be measured.
    failure: Option<String>,
}

/// The ceiling for `scenario`, seeded, when it is the PostgreSQL write and
/// this crate's PostgreSQL app is among `targets`.
pub(crate) async fn for_scenario(
    env: &Env,
    targets: &[Target],
    scenario: Scenario,
    settings: &Settings,
) -> Option<Ceiling> {
    let ours = targets
        .iter()
        .any(|t| t.spec.krate == Crate::Ours && t.spec.backend == Backend::Postgres);
    if scenario != Scenario::WriteSmallInBigSession || !ours {
        return None;
    }
    Some(
        Ceiling::prepare(env, settings.connections)
            .await
            .unwrap_or_else(|e| Ceiling {
                url: String::new(),
                script: PathBuf::new(),
                defines: Vec::new(),
                rounds: Vec::new(),
                failure: Some(format!("seeding: {e}")),
            }),
    )
}

impl Ceiling {
    /// Seeds `sessions` sessions through the store and writes the script.
    pub(crate) async fn prepare(env: &Env, sessions: usize) -> Result<Self, BoxError> {
        let store = PostgresStore::builder(env.bench_database_url.clone())
            .with_schema(SCHEMA)
            .with_max_connections(STORE_CONNECTIONS)
            .connect()
            .await?;
        store.migrate().await?;
        sqlx::query(&format!("truncate {SCHEMA}.attributes, {SCHEMA}.sessions"))
            .execute(store.pool())
            .await?;
        let verifier = VerifierHash::random()?;
        let now = OffsetDateTime::now_utc();
        let idle = Duration::from_secs(30 * 60);
        let attributes: HashMap<String, String> = (0..ATTRIBUTES)
            .map(|i| {
                let value = crate::apps::attribute_value(i, VALUE_BYTES);
                (format!("a{i}"), format!("\"{value}\""))
            })
            .collect();
        for i in 0..sessions {
            let key = format!("{KEY_PREFIX}{i:014}{KEY_SUFFIX}");
            let key = StoreKey::parse(&key).ok_or("a malformed ceiling key")?;
            let record = Record::new(verifier, now, now, idle, now + idle, attributes.clone());
            if store.create(&key, &record, None).await? != Created::Stored {
                return Err("a ceiling session was not stored".into());
            }
        }
        // The parameters the store binds for the scenario's request,
        // `session.set("n", &n)` with the default config: the touch at the
        // stored access time (so never due), no absolute timeout, the
        // default touch interval, and the attribute limit, since the
        // session's attribute count is not known.
        let key = format!("('{KEY_PREFIX}' || lpad(:i::text, 14, '0') || '{KEY_SUFFIX}')");
        let params: [&str; 11] = [
            &key,
            ":touched::timestamptz",
            "NULL",
            "NULL",
            "NULL",
            ":names::text[]",
            ":values::text[]",
            ":removed::text[]",
            ":verifier::bytea",
            ":limit::bigint",
            "NULL",
        ];
        let defines = vec![
            ("touched".to_owned(), timestamp(now)),
            ("names".to_owned(), "{n}".to_owned()),
            ("values".to_owned(), "{4242}".to_owned()),
            ("removed".to_owned(), "{}".to_owned()),
            (
                "verifier".to_owned(),
                format!("\\x{}", hex(verifier.as_bytes())),
            ),
            ("limit".to_owned(), "1024".to_owned()),
        ];
        let mut statement = store.apply_statement_text().to_owned();
        // $11 first, so that $1 does not take the start of $10 or $11.
        for (n, param) in params.iter().enumerate().rev() {
            statement = statement.replace(&format!("${}", n + 1), param);
        }
        let script = format!(
            "\\set i random(0, {})\n{statement};\n",
            sessions.saturating_sub(1)
        );
        let path =
            std::env::temp_dir().join(format!("httpsession-ceiling-{}.sql", std::process::id()));
        std::fs::write(&path, script)?;
        store.pool().close().await;
        Ok(Self {
            url: env.bench_database_url.clone(),
            script: path,
            defines,
            rounds: Vec::new(),
            failure: None,
        })
    }

    /// One round, unless an earlier one failed.
    pub(crate) async fn turn(&mut self, run: Duration) {
        if self.failure.is_none()
            && let Err(e) = self.round(run).await
        {
            self.failure = Some(e.to_string());
        }
    }

    /// The median of the rounds' transactions per second.
    pub(crate) fn outcome(&self) -> Result<f64, String> {
        if let Some(failure) = &self.failure {
            return Err(failure.clone());
        }
        let mut rounds = self.rounds.clone();
        rounds.sort_by(f64::total_cmp);
        match rounds.len() {
            0 => Err("no round ran".to_owned()),
            n if n % 2 == 1 => Ok(rounds[n / 2]),
            n => Ok(f64::midpoint(rounds[n / 2 - 1], rounds[n / 2])),
        }
    }

    pub(crate) fn summary(&self) -> String {
        match self.outcome() {
            Ok(tps) => format!("{tps:>9.0} tps (median of {} rounds)", self.rounds.len()),
            Err(e) => format!("FAILED: {e}"),
        }
    }

    /// One round of pgbench for about `run` (whole seconds, at least one):
    /// its transactions per second, also kept in `rounds`.
    async fn round(&mut self, run: Duration) -> Result<f64, BoxError> {
        let seconds = run.as_secs_f64().ceil().max(1.0);
        let mut command = tokio::process::Command::new("pgbench");
        command
            .env("PGOPTIONS", PGOPTIONS)
            .env("PGAPPNAME", "httpsession-ceiling")
            .args(["-n", "-M", "prepared", "-j", "1"])
            .arg(format!("-c{STORE_CONNECTIONS}"))
            .arg(format!("-T{seconds}"))
            .arg("-f")
            .arg(&self.script);
        for (name, value) in &self.defines {
            command.arg("-D").arg(format!("{name}={value}"));
        }
        let output = command.arg(&self.url).output().await?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let first = stderr.lines().next().unwrap_or_default();
            return Err(format!("pgbench: {}: {first}", output.status).into());
        }
        let tps = stdout
            .lines()
            .find_map(|l| l.strip_prefix("tps = "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
            .ok_or("pgbench printed no tps")?;
        let failed = stdout
            .lines()
            .find_map(|l| l.strip_prefix("number of failed transactions: "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        if failed > 0 {
            return Err(format!("pgbench: {failed} transactions failed").into());
        }
        self.rounds.push(tps);
        Ok(tps)
    }
}

impl Drop for Ceiling {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.script);
    }
}

/// `t` as PostgreSQL reads a timestamp with time zone, to the microsecond.
fn timestamp(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
