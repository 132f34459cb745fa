//! The result table, the bars the crate must clear, and the chart.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::BoxError;
use crate::accounting::{Cost, thousands};
use crate::apps::{AppSpec, Backend, Crate};
use crate::scenarios::{Kept, Measured, Scenario};

/// What became of one scenario on one app.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Measured(Measured),
    /// The app cannot be built yet; the reason.
    Unavailable(&'static str),
    /// The scenario failed to run; the error.
    Failed(String),
}

/// Every outcome of one run.
#[derive(Debug, Default)]
pub(crate) struct Results {
    rows: Vec<(AppSpec, Scenario, Outcome)>,
    /// pgbench's transactions per second running this crate's PostgreSQL
    /// write alone (see `ceiling`), or why it was not measured.
    pub(crate) ceiling: Option<Result<f64, String>>,
}

const STORES: [Backend; 3] = [Backend::Memory, Backend::Redis, Backend::Postgres];

impl Results {
    pub(crate) fn push(&mut self, spec: AppSpec, scenario: Scenario, outcome: Outcome) {
        self.rows.push((spec, scenario, outcome));
    }

    fn outcome(&self, krate: Crate, backend: Backend, scenario: Scenario) -> Option<&Outcome> {
        self.rows
            .iter()
            .find(|(spec, s, _)| {
                !spec.metered
                    && spec.krate == krate
                    && (krate == Crate::Bare || spec.backend == backend)
                    && *s == scenario
            })
            .map(|(_, _, outcome)| outcome)
    }

    fn measured(&self, krate: Crate, backend: Backend, scenario: Scenario) -> Option<&Measured> {
        match self.outcome(krate, backend, scenario) {
            Some(Outcome::Measured(m)) => Some(m),
            _ => None,
        }
    }

    fn rps(&self, krate: Crate, backend: Backend, scenario: Scenario) -> Option<f64> {
        self.measured(krate, backend, scenario)
            .map(|m| m.requests_per_second)
    }

    /// The table: one row per scenario and store, this crate and the peer
    /// side by side, with their ratio and the ratio to bare axum.
    pub(crate) fn table(&self) -> String {
        let mut out = String::from(
            "| scenario | store | axum req/s | tower-httpsession req/s | tower-sessions req/s \
             | ours ÷ peer | ours ÷ axum | p50 / p99 ms, ours | p50 / p99 ms, peer \
             | store per request, ours | store per request, peer | kept, ours | kept, peer |\n\
             |---|---|--:|--:|--:|--:|--:|--:|--:|---|---|--:|--:|\n",
        );
        for scenario in Scenario::ALL {
            for backend in STORES {
                let bare = self.rps(Crate::Bare, backend, scenario);
                let ours = self.outcome(Crate::Ours, backend, scenario);
                let peer = self.outcome(Crate::Peer, backend, scenario);
                let ours_rps = self.rps(Crate::Ours, backend, scenario);
                let peer_rps = self.rps(Crate::Peer, backend, scenario);
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    scenario.label(),
                    backend.label(),
                    bare.map_or_else(dash, rate),
                    cell(ours, |m| rate(m.requests_per_second)),
                    cell(peer, |m| rate(m.requests_per_second)),
                    ratio(ours_rps, peer_rps),
                    ratio(ours_rps, bare),
                    cell(ours, latency),
                    cell(peer, latency),
                    cell(ours, cost),
                    cell(peer, cost),
                    cell(ours, kept),
                    cell(peer, kept),
                );
            }
        }
        out
    }

    /// Anything that went wrong while measuring: failed requests, failed
    /// scenarios, apps not yet available.
    pub(crate) fn notes(&self) -> String {
        let mut out = String::new();
        for (spec, scenario, outcome) in &self.rows {
            match outcome {
                Outcome::Measured(m) if m.failed > 0 => {
                    let _ = writeln!(
                        out,
                        "- {spec}, {}: {} of {} requests failed (first: {})",
                        scenario.label(),
                        m.failed,
                        m.requests,
                        m.first_failure.as_deref().unwrap_or("?")
                    );
                }
                Outcome::Measured(_) => {}
                Outcome::Unavailable(why) if *scenario == Scenario::Bare => {
                    let _ = writeln!(out, "- {spec}: not measured: {why}");
                }
                Outcome::Unavailable(_) => {}
                Outcome::Failed(error) => {
                    let _ = writeln!(out, "- {spec}, {}: failed: {error}", scenario.label());
                }
            }
        }
        if let Some(Err(error)) = &self.ceiling {
            let _ = writeln!(out, "- pgbench, the server's ceiling: failed: {error}");
        }
        out
    }

    /// The bars this crate must clear, each as `| bar | measured | verdict |`.
    pub(crate) fn checks(&self) -> String {
        let mut out = String::from("| bar | measured | verdict |\n|---|---|---|\n");
        let mut check = |bar: String, measured: Option<(String, bool)>| {
            let (value, verdict) = match measured {
                Some((value, true)) => (value, "pass"),
                Some((value, false)) => (value, "**FAIL**"),
                None => ("not measured".to_owned(), "not run"),
            };
            let _ = writeln!(out, "| {bar} | {value} | {verdict} |");
        };
        let write = Scenario::WriteSmallInBigSession;
        for (backend, min_ratio, max_bytes, unit) in [
            (Backend::Redis, 2.5, 500.0, "B to Redis"),
            (Backend::Postgres, 5.0, 1_500.0, "B of WAL"),
        ] {
            let ratio = self
                .rps(Crate::Ours, backend, write)
                .zip(self.rps(Crate::Peer, backend, write))
                .map(|(o, p)| o / p);
            check(
                format!(
                    "write-small-in-big-session on {}: ≥ {min_ratio}× the peer's req/s",
                    backend.label()
                ),
                ratio.map(|r| (format!("{r:.2}×"), r >= min_ratio)),
            );
            let bytes = self.cost(Crate::Ours, backend, write).map(Cost::bytes);
            let peer_bytes = self.cost(Crate::Peer, backend, write).map(Cost::bytes);
            check(
                format!(
                    "write-small-in-big-session on {}: ≤ {} {unit} per request",
                    backend.label(),
                    thousands(max_bytes)
                ),
                bytes.map(|b| {
                    let peer = peer_bytes
                        .map_or_else(String::new, |p| format!(" (peer: {})", thousands(p)));
                    (format!("{}{peer}", thousands(b)), b <= max_bytes)
                }),
            );
        }
        let ours = self.rps(Crate::Ours, Backend::Postgres, write);
        let ceiling = self.ceiling.as_ref().and_then(|c| c.as_ref().ok());
        check(
            "write-small-in-big-session on postgres: ≥ 0.85× the server's ceiling for the \
             crate's statement (pgbench, same pool size)"
                .to_owned(),
            ours.zip(ceiling).map(|(o, c)| {
                let r = o / c;
                (
                    format!(
                        "{r:.2}× ({} req/s; pgbench {} tps)",
                        thousands(o),
                        thousands(*c)
                    ),
                    r >= 0.85,
                )
            }),
        );
        for backend in STORES {
            let ratio = self
                .rps(Crate::Ours, backend, Scenario::Read)
                .zip(self.rps(Crate::Peer, backend, Scenario::Read))
                .map(|(o, p)| o / p);
            check(
                format!("read on {}: ≥ 0.95× the peer's req/s", backend.label()),
                ratio.map(|r| (format!("{r:.2}×"), r >= 0.95)),
            );
            if backend != Backend::Memory {
                let calls = self
                    .cost(Crate::Ours, backend, Scenario::Read)
                    .map(Cost::calls);
                check(
                    format!("read on {}: one store command per request", backend.label()),
                    calls.map(|c| (format!("{c:.2}"), c <= 1.05)),
                );
            }
        }
        let memory_read = self
            .rps(Crate::Ours, Backend::Memory, Scenario::Read)
            .zip(self.rps(Crate::Bare, Backend::None, Scenario::Read))
            .map(|(o, b)| o / b);
        check(
            "read on memory: ≥ 0.9× bare axum's req/s".to_owned(),
            memory_read.map(|r| (format!("{r:.2}×"), r >= 0.9)),
        );
        for backend in STORES {
            let kept = self
                .measured(Crate::Ours, backend, Scenario::LostUpdate)
                .and_then(|m| m.kept);
            check(
                format!("lost-update on {}: every key kept", backend.label()),
                kept.map(|k| {
                    (
                        show_kept(k),
                        matches!(k, Kept::Keys { kept, of } if kept == of),
                    )
                }),
            );
        }
        for backend in STORES {
            let measured = self.measured(Crate::Ours, backend, Scenario::Counter);
            check(
                format!("counter on {}: 100% of increments kept", backend.label()),
                measured
                    .and_then(|m| m.kept.map(|k| (k, m.failed)))
                    .map(|(k, failed)| {
                        let ok =
                            matches!(k, Kept::Share(s) if (s - 1.0).abs() < 1e-9) && failed == 0;
                        let failed = if failed > 0 {
                            format!(", {failed} requests failed")
                        } else {
                            String::new()
                        };
                        (format!("{}{failed}", show_kept(k)), ok)
                    }),
            );
        }
        for backend in [Backend::Redis, Backend::Postgres] {
            let ratio = self
                .rps(Crate::Ours, backend, Scenario::Counter)
                .zip(self.rps(Crate::Peer, backend, Scenario::Counter))
                .map(|(o, p)| o / p);
            check(
                format!("counter on {}: ≥ 2× the peer's req/s", backend.label()),
                ratio.map(|r| (format!("{r:.2}×"), r >= 2.0)),
            );
        }
        out
    }

    fn cost(&self, krate: Crate, backend: Backend, scenario: Scenario) -> Option<Cost> {
        self.measured(krate, backend, scenario).and_then(|m| m.cost)
    }

    /// Draws the chart: read and write requests/s side by side, and the
    /// bytes a write sends to the store.
    pub(crate) fn chart(&self, path: &Path, subtitle: &str) -> Result<(), BoxError> {
        let root = SVGBackend::new(path, (1200, 460)).into_drawing_area();
        root.fill(&WHITE)?;
        let (head, body) = root.split_vertically(50);
        head.draw(&Text::new(
            "tower-httpsession vs tower-sessions 0.14 (higher is better, except bytes)",
            (10, 8),
            ("sans-serif", 20).into_font(),
        ))?;
        head.draw(&Text::new(
            subtitle.to_owned(),
            (10, 32),
            ("sans-serif", 13).into_font().color(&RGBColor(90, 90, 90)),
        ))?;
        let panels = body.split_evenly((1, 3));
        let groups = [
            Backend::None,
            Backend::Memory,
            Backend::Redis,
            Backend::Postgres,
        ];
        for (panel, scenario) in panels
            .iter()
            .zip([Scenario::Read, Scenario::WriteSmallInBigSession])
        {
            let bars: Vec<Bar> = groups
                .iter()
                .enumerate()
                .flat_map(|(g, &backend)| {
                    let kinds: &[Crate] = if backend == Backend::None {
                        &[Crate::Bare]
                    } else {
                        &[Crate::Ours, Crate::Peer]
                    };
                    kinds
                        .iter()
                        .enumerate()
                        .map(move |(k, &krate)| (g, k, kinds.len(), krate, backend))
                })
                .map(|(g, k, n, krate, backend)| {
                    Bar::new(g, k, n, krate, self.rps(krate, backend, scenario))
                })
                .collect();
            let labels: Vec<&str> = groups
                .iter()
                .map(|b| {
                    if *b == Backend::None {
                        "axum"
                    } else {
                        b.label()
                    }
                })
                .collect();
            let top = bars.iter().filter_map(|b| b.value).fold(1.0, f64::max) * 1.18;
            let mut chart = ChartBuilder::on(panel)
                .caption(
                    format!("{}: requests/s", scenario.label()),
                    ("sans-serif", 15),
                )
                .margin(12)
                .x_label_area_size(28)
                .y_label_area_size(58)
                .build_cartesian_2d(0f64..groups.len() as f64, 0f64..top)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(0)
                .y_label_formatter(&|v| thousands(*v))
                .draw()?;
            draw_bars(&mut chart, &bars, 0.0, &|v| thousands(v))?;
            label_groups(&root, &chart, &labels)?;
        }
        let write = Scenario::WriteSmallInBigSession;
        let stores = [Backend::Redis, Backend::Postgres];
        let bars: Vec<Bar> = stores
            .iter()
            .enumerate()
            .flat_map(|(g, &backend)| {
                [Crate::Ours, Crate::Peer]
                    .into_iter()
                    .enumerate()
                    .map(move |(k, krate)| (g, k, krate, backend))
            })
            .map(|(g, k, krate, backend)| {
                Bar::new(
                    g,
                    k,
                    2,
                    krate,
                    self.cost(krate, backend, write).map(Cost::bytes),
                )
            })
            .collect();
        let mut chart = ChartBuilder::on(&panels[2])
            .caption("write: bytes to the store per request", ("sans-serif", 15))
            .margin(12)
            .x_label_area_size(28)
            .y_label_area_size(58)
            .build_cartesian_2d(0f64..2f64, (10f64..1_000_000f64).log_scale())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_label_formatter(&|v| thousands(*v))
            .draw()?;
        draw_bars(&mut chart, &bars, 10.0, &|v| thousands(v))?;
        label_groups(&root, &chart, &["redis (B in)", "postgres (B of WAL)"])?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.3))
            .draw()?;
        root.present()?;
        Ok(())
    }
}

/// One bar of the chart: group `group`, `index` of `of` in it.
struct Bar {
    left: f64,
    right: f64,
    krate: Crate,
    value: Option<f64>,
}

impl Bar {
    fn new(group: usize, index: usize, of: usize, krate: Crate, value: Option<f64>) -> Self {
        let width = 0.7 / of as f64;
        let left = group as f64 + 0.15 + width * index as f64;
        Self {
            left,
            right: left + width * 0.92,
            krate,
            value,
        }
    }
}

fn color(krate: Crate) -> RGBColor {
    match krate {
        Crate::Bare => RGBColor(150, 150, 150),
        Crate::Ours => RGBColor(31, 119, 180),
        Crate::Peer => RGBColor(255, 127, 14),
    }
}

fn legend(krate: Crate) -> &'static str {
    match krate {
        Crate::Bare => "axum, no session",
        Crate::Ours => "tower-httpsession",
        Crate::Peer => "tower-sessions 0.14",
    }
}

type Chart<'a, Y> =
    ChartContext<'a, SVGBackend<'a>, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>;

fn draw_bars<Y>(
    chart: &mut Chart<'_, Y>,
    bars: &[Bar],
    floor: f64,
    show: &dyn Fn(f64) -> String,
) -> Result<(), BoxError>
where
    Y: Ranged<ValueType = f64>,
{
    for krate in [Crate::Bare, Crate::Ours, Crate::Peer] {
        let mine: Vec<&Bar> = bars.iter().filter(|b| b.krate == krate).collect();
        if mine.is_empty() {
            continue;
        }
        let style = color(krate).filled();
        chart
            .draw_series(mine.iter().filter_map(|b| {
                b.value
                    .map(|v| Rectangle::new([(b.left, floor), (b.right, v.max(floor))], style))
            }))?
            .label(legend(krate))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], style));
        let font = ("sans-serif", 11).into_font();
        chart.draw_series(mine.iter().map(|b| {
            let (text, y) = match b.value {
                Some(v) => (show(v), v.max(floor)),
                None => ("not yet".to_owned(), floor),
            };
            Text::new(
                text,
                ((b.left + b.right) / 2.0, y),
                font.clone()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Bottom)),
            )
        }))?;
    }
    Ok(())
}

/// Writes each group's name under its bars.
fn label_groups<Y>(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    chart: &Chart<'_, Y>,
    labels: &[&str],
) -> Result<(), BoxError>
where
    Y: Ranged<ValueType = f64>,
{
    let (_, bottom) = chart.plotting_area().get_pixel_range();
    for (i, label) in labels.iter().enumerate() {
        let (x, _) = chart.backend_coord(&(i as f64 + 0.5, chart.y_range().start));
        root.draw(&Text::new(
            (*label).to_owned(),
            (x, bottom.end + 8),
            ("sans-serif", 13)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;
    }
    Ok(())
}

fn dash() -> String {
    "—".to_owned()
}

fn rate(value: f64) -> String {
    thousands(value)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => dash(),
    }
}

fn cell(outcome: Option<&Outcome>, show: impl Fn(&Measured) -> String) -> String {
    match outcome {
        Some(Outcome::Measured(m)) => show(m),
        Some(Outcome::Unavailable(_)) => "not yet".to_owned(),
        Some(Outcome::Failed(_)) => "failed".to_owned(),
        None => dash(),
    }
}

fn latency(m: &Measured) -> String {
    format!("{:.2} / {:.2}", m.p50_ms, m.p99_ms)
}

fn cost(m: &Measured) -> String {
    m.cost.map_or_else(dash, Cost::describe)
}

fn kept(m: &Measured) -> String {
    m.kept.map_or_else(dash, show_kept)
}

fn show_kept(kept: Kept) -> String {
    match kept {
        Kept::Keys { kept, of } => format!("{kept}/{of}"),
        Kept::Share(share) => format!("{:.1}%", share * 100.0),
    }
}
