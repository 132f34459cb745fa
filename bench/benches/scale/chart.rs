//! `docs/scaling.svg`: requests/s against live sessions (both axes
//! logarithmic) for both crates on Redis and PostgreSQL, reads and writes;
//! and bytes per session.

use std::path::Path;

use plotters::prelude::*;

use crate::BoxError;
use crate::fleet::{Backend, Krate};
use crate::memory::{RedisConfig, Shape};
use crate::report::{Results, thousands};
use crate::throughput::Scenario;

const WIDTH: u32 = 1280;
const HEIGHT: u32 = 600;

fn colour(krate: Krate, backend: Backend) -> RGBColor {
    match (krate, backend) {
        (Krate::Ours, Backend::Redis) => RGBColor(31, 119, 180),
        (Krate::Peer, Backend::Redis) => RGBColor(255, 127, 14),
        (Krate::Ours, Backend::Postgres) => RGBColor(44, 160, 44),
        (Krate::Peer, Backend::Postgres) => RGBColor(214, 39, 40),
    }
}

pub(crate) fn draw(results: &Results, path: &Path, subtitle: &str) -> Result<(), BoxError> {
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, body) = root.split_vertically(56);
    top.draw(&Text::new(
        "tower-httpsession and tower-sessions 0.14 at scale",
        (12, 8),
        ("sans-serif", 22).into_font(),
    ))?;
    top.draw(&Text::new(
        subtitle.to_owned(),
        (12, 34),
        ("sans-serif", 13).into_font().color(&RGBColor(90, 90, 90)),
    ))?;
    let (left, right) = body.split_horizontally(720);
    throughput(results, &left)?;
    bytes(results, &right)?;
    root.present()?;
    Ok(())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn throughput(results: &Results, area: &Area<'_>) -> Result<(), BoxError> {
    let Some(t) = &results.throughput else {
        area.draw(&Text::new(
            "throughput: not measured in this run",
            (20, 20),
            ("sans-serif", 14).into_font(),
        ))?;
        return Ok(());
    };
    let xs = t.points.iter().map(|p| p.sessions as f64);
    let ys = t.points.iter().map(|p| p.requests_per_second.max(1.0));
    let (x_min, x_max) = xs.fold((f64::MAX, 1.0_f64), |(a, b), x| (a.min(x), b.max(x)));
    let (y_min, y_max) = ys.fold((f64::MAX, 1.0_f64), |(a, b), y| (a.min(y), b.max(y)));
    let mut chart = ChartBuilder::on(area)
        .caption(
            "requests/s against live sessions in the store",
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(
            (x_min / 2.0..x_max * 2.0).log_scale(),
            (y_min / 2.0..y_max * 2.0).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("live sessions (log)")
        .y_desc("requests/s (log)")
        .x_label_formatter(&|x| thousands(*x))
        .y_label_formatter(&|y| thousands(*y))
        .draw()?;
    for backend in Backend::ALL {
        for krate in Krate::ALL {
            for scenario in Scenario::ALL {
                let mut points: Vec<(f64, f64)> = t
                    .points
                    .iter()
                    .filter(|p| p.backend == backend && p.krate == krate && p.scenario == scenario)
                    .map(|p| (p.sessions as f64, p.requests_per_second.max(1.0)))
                    .collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                let colour = colour(krate, backend);
                let label = format!(
                    "{}, {}, {}",
                    krate.label(),
                    backend.label(),
                    scenario.label()
                );
                let style = colour.stroke_width(2);
                match scenario {
                    Scenario::Read => {
                        chart
                            .draw_series(LineSeries::new(points.clone(), style))?
                            .label(label)
                            .legend(move |(x, y)| {
                                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                            });
                        chart.draw_series(
                            points.iter().map(|&p| Circle::new(p, 4, colour.filled())),
                        )?;
                    }
                    Scenario::Write => {
                        chart
                            .draw_series(DashedLineSeries::new(points.clone(), 6, 4, style))?
                            .label(label)
                            .legend(move |(x, y)| {
                                PathElement::new(vec![(x, y), (x + 8, y)], colour.stroke_width(2))
                            });
                        chart.draw_series(
                            points
                                .iter()
                                .map(|&p| TriangleMarker::new(p, 5, colour.filled())),
                        )?;
                    }
                }
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 11))
        .draw()?;
    Ok(())
}

/// One bar pair: its label, this crate's bytes and the peer's.
fn rows(results: &Results) -> Vec<(String, f64, f64)> {
    let Some(m) = &results.memory else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    for shape in Shape::ALL {
        for config in RedisConfig::ALL {
            let find = |krate| {
                m.redis
                    .iter()
                    .find(|c| c.config == config && c.shape == shape && c.krate == krate)
                    .map(|c| c.bytes_per_session)
            };
            if let (Some(ours), Some(peer)) = (find(Krate::Ours), find(Krate::Peer)) {
                let name = match config {
                    RedisConfig::Default => "Redis",
                    RedisConfig::Listpack => "Redis, listpack value 256",
                };
                rows.push((format!("{name}, {}", shape.label()), ours, peer));
            }
        }
        let find = |krate| {
            m.pg.iter()
                .find(|c| c.shape == shape && c.krate == krate)
                .map(crate::memory::PgCost::total)
        };
        if let (Some(ours), Some(peer)) = (find(Krate::Ours), find(Krate::Peer)) {
            rows.push((format!("PostgreSQL, {}", shape.label()), ours, peer));
        }
    }
    rows
}

fn bytes(results: &Results, area: &Area<'_>) -> Result<(), BoxError> {
    let rows = rows(results);
    if rows.is_empty() {
        area.draw(&Text::new(
            "bytes per session: not measured in this run",
            (20, 20),
            ("sans-serif", 14).into_font(),
        ))?;
        return Ok(());
    }
    let max = rows.iter().map(|r| r.1.max(r.2)).fold(1.0_f64, f64::max);
    let min = rows.iter().map(|r| r.1.min(r.2)).fold(f64::MAX, f64::min);
    let x_min = (min / 3.0).max(1.0);
    let count = rows.len() as f64;
    let mut chart = ChartBuilder::on(area)
        .caption("bytes per session (log)", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(8)
        .build_cartesian_2d((x_min..max * 3.0).log_scale(), 0.0..count)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .x_desc("bytes per session")
        .x_label_formatter(&|x| thousands(*x))
        .draw()?;
    let font = ("sans-serif", 11).into_font();
    for (i, (label, ours, peer)) in rows.iter().enumerate() {
        let y = count - i as f64;
        let bars = [
            (*ours, colour(Krate::Ours, Backend::Redis), 0.15),
            (*peer, colour(Krate::Peer, Backend::Redis), 0.45),
        ];
        for (value, colour, offset) in bars {
            chart.draw_series(std::iter::once(Rectangle::new(
                [(x_min, y - offset), (value, y - offset - 0.28)],
                colour.filled(),
            )))?;
            chart.draw_series(std::iter::once(Text::new(
                thousands(value),
                (value * 1.05, y - offset - 0.05),
                font.clone(),
            )))?;
        }
        chart.draw_series(std::iter::once(Text::new(
            label.clone(),
            (x_min * 1.05, y - 0.78),
            font.clone(),
        )))?;
    }
    area.draw(&Text::new(
        "blue: tower-httpsession, orange: tower-sessions 0.14",
        (16, 40),
        ("sans-serif", 12).into_font(),
    ))?;
    Ok(())
}
