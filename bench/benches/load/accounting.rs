//! The stores' own accounting of what the apps sent them.
//!
//! Redis: `INFO stats commandstats` (commands executed and
//! `total_net_input_bytes`). PostgreSQL: `pg_stat_database` of the bench
//! database (transactions and rows inserted, updated or deleted) and the
//! write-ahead log position (`pg_current_wal_lsn()`). Both are counters of the
//! whole server (the WAL) or database, so one app is measured at a time, and
//! another client of the same server shows up in the numbers: the bench
//! samples the idle noise first and prints it.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tower_sessions_sqlx_store::sqlx::{self, PgPool};

use crate::BoxError;

/// A minimal RESP client: enough for `PING`, `SELECT`, `FLUSHDB` and `INFO`.
pub(crate) struct Resp {
    stream: BufReader<TcpStream>,
}

/// The request bytes of one [`Resp::command`] call, as Redis counts them in
/// `total_net_input_bytes`.
fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    out
}

const INFO: [&str; 3] = ["INFO", "stats", "commandstats"];

impl Resp {
    pub(crate) async fn connect(addr: &str) -> Result<Self, BoxError> {
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connecting to Redis at {addr} timed out"))??;
        Ok(Self {
            stream: BufReader::new(stream),
        })
    }

    /// Sends one command and returns its reply as text; a Redis error is an
    /// error.
    pub(crate) async fn command(&mut self, args: &[&str]) -> Result<String, BoxError> {
        self.stream.get_mut().write_all(&encode(args)).await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let line = line.trim_end();
        let (kind, rest) = line.split_at(line.len().min(1));
        match kind {
            "+" | ":" => Ok(rest.to_owned()),
            "-" => Err(format!("redis {}: {rest}", args.join(" ")).into()),
            "$" => {
                let len: i64 = rest.parse()?;
                let Ok(len) = usize::try_from(len) else {
                    return Ok(String::new());
                };
                let mut buf = vec![0; len + 2];
                self.stream.read_exact(&mut buf).await?;
                buf.truncate(len);
                Ok(String::from_utf8(buf)?)
            }
            _ => Err(format!("unexpected Redis reply {line:?}").into()),
        }
    }

    /// The server's counters now.
    pub(crate) async fn snapshot(&mut self) -> Result<RedisCounters, BoxError> {
        let text = self.command(&INFO).await?;
        let mut counters = RedisCounters::default();
        for line in text.lines() {
            if let Some(bytes) = line.strip_prefix("total_net_input_bytes:") {
                counters.input_bytes = bytes.trim().parse()?;
            } else if let Some(stat) = line.strip_prefix("cmdstat_") {
                // cmdstat_get:calls=12,usec=...; our own INFO is not the app's.
                let (name, fields) = stat.split_once(':').unwrap_or((stat, ""));
                if name == "info" {
                    continue;
                }
                let calls = fields
                    .split(',')
                    .find_map(|f| f.strip_prefix("calls="))
                    .unwrap_or("0");
                counters.commands += calls.parse::<u64>()?;
            }
        }
        Ok(counters)
    }
}

/// What Redis counted, server-wide.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RedisCounters {
    commands: u64,
    input_bytes: u64,
}

impl RedisCounters {
    /// What happened between `self` and `later`, less the one `INFO` request
    /// that took `later`.
    pub(crate) fn delta(self, later: Self) -> Cost {
        let info = encode(&INFO).len() as u64;
        Cost::Redis {
            commands: later.commands.saturating_sub(self.commands) as f64,
            bytes: later
                .input_bytes
                .saturating_sub(self.input_bytes)
                .saturating_sub(info) as f64,
        }
    }
}

/// What PostgreSQL counted: transactions and rows of the bench database,
/// and the WAL position of the whole server.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PgCounters {
    transactions: i64,
    rows: i64,
    wal: i64,
    /// Transactions of every other database: a sign that another client
    /// wrote WAL during the phase.
    others: i64,
}

/// PostgreSQL reports a backend's counters at most once a second while it
/// is busy, and within 10 seconds once it is idle: this long after the load
/// stops, the counters hold all of it.
pub(crate) const PG_STATS_SETTLE: Duration = Duration::from_millis(10_500);

pub(crate) async fn pg_snapshot(pool: &PgPool) -> Result<PgCounters, BoxError> {
    let (transactions, rows, wal, others): (i64, i64, i64, i64) = sqlx::query_as(
        "select (xact_commit + xact_rollback)::int8,
                (tup_inserted + tup_updated + tup_deleted)::int8,
                (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8,
                (select coalesce(sum(o.xact_commit + o.xact_rollback), 0)::int8
                   from pg_stat_database o
                  where o.datname is distinct from current_database())
           from pg_stat_database where datname = current_database()",
    )
    .fetch_one(pool)
    .await?;
    Ok(PgCounters {
        transactions,
        rows,
        wal,
        others,
    })
}

impl PgCounters {
    /// What happened between `self` and `later`, less the snapshot
    /// transaction that took `self`.
    pub(crate) fn delta(self, later: Self) -> Cost {
        Cost::Postgres {
            transactions: (later.transactions - self.transactions - 1).max(0) as f64,
            rows: (later.rows - self.rows).max(0) as f64,
            wal_bytes: (later.wal - self.wal).max(0) as f64,
            other_transactions: (later.others - self.others).max(0) as f64,
        }
    }
}

/// A store's accounting over a phase, in total or per request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cost {
    Redis {
        commands: f64,
        bytes: f64,
    },
    Postgres {
        transactions: f64,
        rows: f64,
        wal_bytes: f64,
        /// Transactions of other databases over the whole phase (not per
        /// request): other clients whose WAL is counted too.
        other_transactions: f64,
    },
}

impl Cost {
    pub(crate) fn per(self, requests: u64) -> Self {
        let n = requests.max(1) as f64;
        match self {
            Self::Redis { commands, bytes } => Self::Redis {
                commands: commands / n,
                bytes: bytes / n,
            },
            Self::Postgres {
                transactions,
                rows,
                wal_bytes,
                other_transactions,
            } => Self::Postgres {
                transactions: transactions / n,
                rows: rows / n,
                wal_bytes: wal_bytes / n,
                other_transactions,
            },
        }
    }

    /// Commands (Redis) or transactions (PostgreSQL).
    pub(crate) fn calls(self) -> f64 {
        match self {
            Self::Redis { commands, .. } => commands,
            Self::Postgres { transactions, .. } => transactions,
        }
    }

    /// Bytes received (Redis) or WAL bytes (PostgreSQL).
    pub(crate) fn bytes(self) -> f64 {
        match self {
            Self::Redis { bytes, .. } => bytes,
            Self::Postgres { wal_bytes, .. } => wal_bytes,
        }
    }

    /// `1.0 cmd, 312 B in` or `1.0 xact, 2.0 rows, 1,234 B WAL`.
    pub(crate) fn describe(self) -> String {
        match self {
            Self::Redis { commands, bytes } => {
                format!("{commands:.2} cmd, {} B in", thousands(bytes))
            }
            Self::Postgres {
                transactions,
                rows,
                wal_bytes,
                other_transactions,
            } => {
                let noise = if other_transactions > 0.0 {
                    format!(
                        " (other databases: {} xact in the phase)",
                        thousands(other_transactions)
                    )
                } else {
                    String::new()
                };
                format!(
                    "{transactions:.2} xact, {rows:.2} rows, {} B WAL{noise}",
                    thousands(wal_bytes)
                )
            }
        }
    }
}

/// `56436` as `56,436`.
pub(crate) fn thousands(value: f64) -> String {
    let rounded = value.round();
    let digits = format!("{:.0}", rounded.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if rounded < 0.0 {
        out.insert(0, '-');
    }
    out
}
