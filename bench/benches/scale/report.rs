//! The scale bench's report: its tables, the bars with their verdicts, and
//! the section of `BENCHMARKS.md` they go in.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::cleanup::{self, Cleanup};
use crate::fleet::{Backend, Krate};
use crate::hot::{self, Hot};
use crate::memory::{Memory, RedisConfig, Shape};
use crate::throughput::{Point, Scenario, Throughput};
use crate::{BoxError, Part, Settings};

pub(crate) const START: &str =
    "<!-- scale:start (written by cargo bench -p tower-httpsession-bench --bench scale) -->";
pub(crate) const END: &str = "<!-- scale:end -->";

/// What the parts that ran measured.
#[derive(Default)]
pub(crate) struct Results {
    pub(crate) throughput: Option<Throughput>,
    pub(crate) memory: Option<Memory>,
    pub(crate) cleanup: Option<Cleanup>,
    pub(crate) hot: Option<Hot>,
    pub(crate) durations: Vec<(&'static str, Duration)>,
    /// Parts that failed, with their errors.
    pub(crate) failures: Vec<(&'static str, String)>,
}

/// One bar: what it asks, what was measured, and whether it passed
/// (`None`: reported without a bar).
struct Bar {
    what: String,
    measured: String,
    pass: Option<bool>,
}

impl Results {
    pub(crate) fn markdown(&self, settings: &Settings, facts: &str) -> String {
        let durations: Vec<String> = self
            .durations
            .iter()
            .map(|(part, took)| format!("{part} {:.0} s", took.as_secs_f64()))
            .collect();
        let mut out = format!("{facts}\n- Durations: {}\n", durations.join(", "));
        for (part, error) in &self.failures {
            let _ = writeln!(out, "- **Part {part} FAILED**: {error}");
        }
        let mut bars = Vec::new();
        if let Some(t) = &self.throughput {
            out.push_str(&throughput_table(t, settings, &mut bars));
        }
        if let Some(m) = &self.memory {
            out.push_str(&memory_table(m, &mut bars));
        }
        if let Some(c) = &self.cleanup {
            out.push_str(&cleanup_table(c, &mut bars));
        }
        if let Some(h) = &self.hot {
            out.push_str(&hot_table(h, &mut bars));
        }
        out.push_str("\n### The bars at scale\n\n| bar | measured | verdict |\n|---|---|---|\n");
        for bar in bars {
            let verdict = match bar.pass {
                Some(true) => "pass",
                Some(false) => "**FAIL**",
                None => "reported",
            };
            let _ = writeln!(out, "| {} | {} | {verdict} |", bar.what, bar.measured);
        }
        out
    }

    pub(crate) fn chart(&self, path: &Path, subtitle: &str) -> Result<(), BoxError> {
        crate::chart::draw(self, path, subtitle)
    }
}

fn throughput_table(t: &Throughput, settings: &Settings, bars: &mut Vec<Bar>) -> String {
    let sizes = &settings.sizes;
    let mut out =
        String::from("\n### Throughput against live sessions\n\n| scenario | store | crate |");
    for size in sizes {
        let _ = write!(out, " {} sessions: req/s, p99 |", thousands(*size as f64));
    }
    out.push_str(" largest ÷ smallest |\n|---|---|---|");
    out.push_str(&"--:|".repeat(sizes.len() + 1));
    out.push('\n');
    for scenario in Scenario::ALL {
        for backend in Backend::ALL {
            for krate in Krate::ALL {
                let row: Vec<&Point> = sizes
                    .iter()
                    .filter_map(|s| {
                        t.points.iter().find(|p| {
                            p.scenario == scenario
                                && p.backend == backend
                                && p.krate == krate
                                && p.sessions == *s
                        })
                    })
                    .collect();
                let _ = write!(
                    out,
                    "| {} | {} | {} |",
                    scenario.label(),
                    backend.label(),
                    krate.label()
                );
                for p in &row {
                    let failed = if p.failed > 0 {
                        format!(" ({} failed)", p.failed)
                    } else {
                        String::new()
                    };
                    let _ = write!(
                        out,
                        " {}, {:.2} ms{failed} |",
                        thousands(p.requests_per_second),
                        p.p99_ms
                    );
                }
                let ratio = match (row.first(), row.last()) {
                    (Some(a), Some(b)) if row.len() == sizes.len() => {
                        b.requests_per_second / a.requests_per_second
                    }
                    _ => f64::NAN,
                };
                let _ = writeln!(out, " {ratio:.2}× |");
                let (Some(small), Some(large)) = (sizes.first(), sizes.last()) else {
                    continue;
                };
                bars.push(Bar {
                    what: format!(
                        "{} on {}, {}: req/s at {} sessions ≥ 0.9 × at {}",
                        scenario.label(),
                        backend.label(),
                        krate.label(),
                        thousands(*large as f64),
                        thousands(*small as f64)
                    ),
                    measured: format!("{ratio:.2}×"),
                    pass: (krate == Krate::Ours).then_some(ratio >= 0.9),
                });
            }
        }
    }
    let _ = writeln!(
        out,
        "\nSeeding every store took {:.0} s; the private Redis server held {:.2} GiB with all sizes in it.",
        t.seeding.as_secs_f64(),
        t.redis_used_memory as f64 / f64::from(1 << 30)
    );
    out
}

fn memory_table(m: &Memory, bars: &mut Vec<Bar>) -> String {
    let mut out = format!(
        "\n### Memory and disk per session\n\nOver {} copies of one session.\n\n\
         | store | session | tower-httpsession, B per session | tower-sessions 0.14, B per session | ours ÷ peer |\n\
         |---|---|--:|--:|--:|\n",
        thousands(m.sessions as f64)
    );
    for config in RedisConfig::ALL {
        for shape in Shape::ALL {
            let find = |krate| {
                m.redis
                    .iter()
                    .find(|c| c.config == config && c.shape == shape && c.krate == krate)
            };
            let (Some(ours), Some(peer)) = (find(Krate::Ours), find(Krate::Peer)) else {
                continue;
            };
            let ratio = ours.bytes_per_session / peer.bytes_per_session;
            let _ = writeln!(
                out,
                "| {} | {} | {} (`{}`) | {} (`{}`) | {ratio:.2}× |",
                config.label(),
                shape.label(),
                thousands(ours.bytes_per_session),
                ours.encoding,
                thousands(peer.bytes_per_session),
                peer.encoding
            );
            bars.push(Bar {
                what: format!(
                    "{}, {}: this crate's bytes ≤ 1.1 × the peer's",
                    config.label(),
                    shape.label()
                ),
                measured: format!("{ratio:.2}×"),
                pass: Some(ratio <= 1.1),
            });
        }
    }
    for shape in Shape::ALL {
        let find = |krate| m.pg.iter().find(|c| c.shape == shape && c.krate == krate);
        let (Some(ours), Some(peer)) = (find(Krate::Ours), find(Krate::Peer)) else {
            continue;
        };
        let split = |c: &crate::memory::PgCost| {
            format!(
                "{} (heap {} + indexes {} + TOAST {})",
                thousands(c.total()),
                thousands(c.heap),
                thousands(c.indexes),
                thousands(c.toast)
            )
        };
        let ratio = ours.total() / peer.total();
        let _ = writeln!(
            out,
            "| postgres, after `VACUUM ANALYZE` | {} | {} | {} | {ratio:.2}× |",
            shape.label(),
            split(ours),
            split(peer)
        );
        bars.push(Bar {
            what: format!("postgres, {}: bytes on disk, ours ÷ peer", shape.label()),
            measured: format!("{ratio:.2}×"),
            pass: None,
        });
    }
    out
}

fn cleanup_table(c: &Cleanup, bars: &mut Vec<Bar>) -> String {
    let mut out = format!(
        "\n### Expiry cleanup under load (PostgreSQL)\n\n{} expired sessions of {} attributes, twice, {} live ones under load \
         (half reading, half writing); the cleanup task every {} s in batches of {}, pausing {}% of each batch's time after it; the first set seeded in {:.0} s. First round: \
         each connection sends its next request as soon as the answer is in (the server saturated). Second round: \
         a fixed rate of {} req/s ({:.0}% of the first round's before the cleanup), latency counted from when a \
         request was due.\n\n\
         | round | window | length | req/s | p50 ms | p99 ms | failed |\n|---|---|--:|--:|--:|--:|--:|\n",
        thousands(c.expired as f64),
        cleanup::EXPIRED_ATTRIBUTES,
        c.live - 1,
        c.options.interval().as_secs(),
        thousands(f64::from(c.options.batch())),
        thousands(f64::from(c.options.pause_percent())),
        c.seeding.as_secs_f64(),
        thousands(c.paced.rate),
        cleanup::PACED_SHARE * 100.0,
    );
    let rounds = [("saturated", &c.saturated), ("fixed rate", &c.paced.round)];
    for (label, round) in rounds {
        for (name, w) in [
            ("before the cleanup", &round.before),
            ("while the cleanup runs", &round.during),
            ("after it", &round.after),
        ] {
            let _ = writeln!(
                out,
                "| {label} | {name} | {:.1} s | {} | {:.2} | {:.2} | {} |",
                w.elapsed.as_secs_f64(),
                thousands(w.requests_per_second()),
                w.ms(0.50),
                w.ms(0.99),
                w.failed
            );
        }
    }
    let took = |round: &cleanup::Round| {
        round.took.map_or_else(
            || "not done within the limit".to_owned(),
            |t| format!("{:.1} s", t.as_secs_f64()),
        )
    };
    let _ = writeln!(
        out,
        "\nThe cleanup deleted every expired session in {} saturated and {} at the fixed rate ({} left); \
         {} of {} live sessions kept; {} attribute rows of deleted sessions left.",
        took(&c.saturated),
        took(&c.paced.round),
        c.expired_left,
        c.live_kept,
        c.live,
        c.stray_attributes
    );
    let ratio = |round: &cleanup::Round| round.during.ms(0.99) / round.before.ms(0.99);
    let paced = ratio(&c.paced.round);
    bars.push(Bar {
        what: "cleanup at a fixed rate: p99 while it runs ≤ 1.2 × p99 before".to_owned(),
        measured: format!(
            "{paced:.2}× ({:.2} ms against {:.2} ms; {:.2} ms in the window after it)",
            c.paced.round.during.ms(0.99),
            c.paced.round.before.ms(0.99),
            c.paced.round.after.ms(0.99)
        ),
        pass: Some(paced <= 1.2),
    });
    let saturated = ratio(&c.saturated);
    bars.push(Bar {
        what: "cleanup with the server saturated: p99 while it runs ÷ p99 before".to_owned(),
        measured: format!(
            "{saturated:.2}× ({:.2} ms against {:.2} ms)",
            c.saturated.during.ms(0.99),
            c.saturated.before.ms(0.99)
        ),
        pass: None,
    });
    let failed: u64 = rounds
        .iter()
        .flat_map(|(_, r)| [&r.before, &r.during, &r.after])
        .map(|w| w.failed)
        .sum();
    bars.push(Bar {
        what: "cleanup: every expired session deleted, every live one kept".to_owned(),
        measured: format!(
            "{} and {}; {} expired left, {}/{} live kept",
            took(&c.saturated),
            took(&c.paced.round),
            c.expired_left,
            c.live_kept,
            c.live
        ),
        pass: Some(
            c.saturated.took.is_some()
                && c.paced.round.took.is_some()
                && c.expired_left == 0
                && c.live_kept == c.live
                && c.stray_attributes == 0
                && failed == 0,
        ),
    });
    out
}

fn hot_table(h: &Hot, bars: &mut Vec<Bar>) -> String {
    let mut out = format!(
        "\n### HOT updates and table size (PostgreSQL)\n\n{:.0} s of `POST /write/{{n}}` on {} sessions of 20 × 100 B, \
         touch interval {} s: {} req/s, p99 {:.2} ms, {} failed. A sample every {} s.\n\n\
         | at | sessions | attributes | both tables | HOT so far: sessions, attributes, both |\n\
         |--:|--:|--:|--:|--:|\n",
        h.duration.as_secs_f64(),
        h.sessions,
        hot::TOUCH_INTERVAL.as_secs(),
        thousands(h.load.requests_per_second()),
        h.load.ms(0.99),
        h.load.failed,
        h.every.as_secs()
    );
    let ratio = |s: &hot::Sample, t| format!("{:.1}%", 100.0 * h.ratio_at(s, t));
    for s in std::iter::once(&h.start).chain(&h.samples) {
        let _ = writeln!(
            out,
            "| {:.0} s | {} | {} | {} | {}, {}, {} |",
            s.at.as_secs_f64(),
            mib(s.tables[0].bytes),
            mib(s.tables[1].bytes),
            mib(s.bytes()),
            ratio(s, Some(0)),
            ratio(s, Some(1)),
            ratio(s, None)
        );
    }
    for (what, table) in [
        ("both tables", None),
        (Hot::table_label(0), Some(0)),
        (Hot::table_label(1), Some(1)),
    ] {
        let ratio = h.ratio(table);
        bars.push(Bar {
            what: format!("HOT: HOT updates ≥ 90% of updates, {what}"),
            measured: format!("{:.1}%", 100.0 * ratio),
            pass: Some(ratio >= 0.9),
        });
    }
    if let (Some(first), Some(end)) = (h.first_minute(), h.samples.last()) {
        let growth = end.bytes() as f64 / first.bytes() as f64;
        bars.push(Bar {
            what: "HOT: size at the end ≤ 1.1 × size after the first minute".to_owned(),
            measured: format!(
                "{growth:.2}× ({} at {:.0} s, {} at {:.0} s)",
                mib(end.bytes()),
                end.at.as_secs_f64(),
                mib(first.bytes()),
                first.at.as_secs_f64()
            ),
            pass: Some(growth <= 1.1),
        });
    }
    out
}

fn mib(bytes: i64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

pub(crate) fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return "—".to_owned();
    }
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if value < -0.5 {
        out.insert(0, '-');
    }
    out
}

/// The run's command, date, machine and load conditions.
pub(crate) fn facts(settings: &Settings, parts: &[Part], elapsed: Duration) -> String {
    let read = |path| std::fs::read_to_string(path).unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown CPU".to_owned(), |(_, m)| m.trim().to_owned());
    let memory = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or_else(
            || "unknown".to_owned(),
            |kb| format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0),
        );
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
    let mode = if settings.quick {
        "QUICK MODE (smoke test, numbers mean nothing)"
    } else {
        "full sizes"
    };
    let parts: Vec<&str> = parts.iter().map(|p| p.label()).collect();
    let date = time::OffsetDateTime::now_utc();
    format!(
        "- Command: `cargo bench -p tower-httpsession-bench --bench scale` ({mode}; parts: {}; {:.0} s in all)\n\
         - Date: {} {:02}:{:02} UTC\n\
         - Machine: {cores} cores (`nproc`), {memory} memory, {cpu}, Linux {kernel}; \
         other builds and tests ran on it at the same time\n\
         - Load: {} keep-alive HTTP/1.1 connections, one session each; throughput: {:.1} s warm-up per app, \
         then {} rounds of {:.1} s per app, medians",
        parts.join(", "),
        elapsed.as_secs_f64(),
        date.date(),
        date.hour(),
        date.minute(),
        settings.connections,
        settings.warmup.as_secs_f64(),
        settings.runs,
        settings.run.as_secs_f64(),
    )
}

pub(crate) fn subtitle(settings: &Settings) -> String {
    let date = time::OffsetDateTime::now_utc().date();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    format!(
        "cargo bench -p tower-httpsession-bench --bench scale, {date}, {cores} cores; server on 1 tokio worker, {} connections{}",
        settings.connections,
        if settings.quick {
            " (QUICK: numbers mean nothing)"
        } else {
            ""
        }
    )
}

/// Replaces the section between the markers in `path`, or writes a file
/// holding only the section.
pub(crate) fn write_section(path: &Path, markdown: &str) -> Result<(), BoxError> {
    let section = format!("{START}\n{markdown}{END}");
    let current = std::fs::read_to_string(path).unwrap_or_default();
    let updated = match (current.find(START), current.find(END)) {
        (Some(start), Some(end)) if start < end => format!(
            "{}{section}{}",
            &current[..start],
            &current[end + END.len()..]
        ),
        _ if current.is_empty() => format!("# Cost at scale\n\n{section}\n"),
        _ => {
            return Err(format!(
                "{} has no {START} … {END} markers: add them where the results go",
                path.display()
            )
            .into());
        }
    };
    std::fs::write(path, updated)?;
    Ok(())
}
