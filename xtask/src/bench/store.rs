//! The store section of `target/bench/report.md`, from `store.json` (the
//! `bench_report` example): rows in the summary table, then the acceptance
//! figures of issue 13 (goal and met/missed per figure), the cgroup
//! streaming sides, the streaming variants and the plots.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use super::{line_chart, mib, ms, num, write_file};
use crate::TaskError;

/// A value in its unit: seconds as ms, bytes as MiB, bytes/s as GB/s.
fn show(value: f64, unit: &str) -> String {
    if !value.is_finite() {
        return "–".to_owned();
    }
    match unit {
        "s" => ms(value),
        "B" => mib(value),
        "B/s" => format!("{:.2} GB/s", value / 1e9),
        _ => format!("{value:.3}"),
    }
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("?")
}

/// Renders the store section: summary rows into `md`, details into `details`.
pub(super) fn store_section(
    store: &Value,
    out: &Path,
    md: &mut String,
    details: &mut String,
) -> Result<(), TaskError> {
    let plain = num(store, "plain_read_seconds");
    let model = num(store, "model_bytes");
    let device_tool = store["device"]["tool"].as_str().unwrap_or("unknown");
    for row in store["cold_load"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| cold load of a {} model, {} (vs plain sequential read) | {} | {} | {:.2} |",
            mib(model),
            text(row, "variant"),
            ms(num(row, "seconds")),
            ms(plain),
            num(row, "ratio_vs_plain")
        );
    }
    let bound = num(store, "stream_lower_bound_seconds");
    for row in store["streaming"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| streaming pass, model 2× budget, compute = I/O time, {} (vs max(compute, Belady misses / device bandwidth)) | {} | {} | {:.2} |",
            text(row, "variant"),
            ms(num(row, "seconds_per_pass")),
            ms(bound),
            num(row, "vs_bound")
        );
    }
    let memory = &store["memory"];
    let _ = writeln!(
        md,
        "| peak RSS streaming a model 4× the budget ({} budget) (vs naive mmap) | {} | {} | {:.2} |",
        mib(num(memory, "budget")),
        mib(num(memory, "peak_rss_bytes")),
        mib(num(memory, "naive_peak_rss_bytes")),
        num(memory, "peak_rss_bytes") / num(memory, "naive_peak_rss_bytes")
    );
    let checks: Vec<&Value> = store["checks"].as_array().into_iter().flatten().collect();
    let met = checks
        .iter()
        .filter(|c| c["met"] == Value::Bool(true))
        .count();
    let missed = checks
        .iter()
        .filter(|c| c["met"] == Value::Bool(false))
        .count();
    let skipped = checks.len() - met - missed;
    if !checks.is_empty() {
        let _ = writeln!(
            md,
            "| store vs the device limit (issue 13): acceptance figures met (see Store details) | {met} of {} | {missed} missed, {skipped} skipped | |",
            checks.len()
        );
    }

    // Details.
    let _ = writeln!(
        details,
        "\n## Store details\n\nDevice limit: {}. Every ratio below is the median of \
         per-round ratios, each round measuring the device and then every side on \
         the same file.\n",
        store["device"]["note"].as_str().unwrap_or("not recorded"),
    );
    let _ = writeln!(
        details,
        "Cold load ({} rounds, {} model): plain sequential read {} ({:.2} GB/s), \
         device limit ({device_tool}) {} ({:.2} GB/s).\n",
        store["cold_load_rounds"],
        mib(model),
        ms(plain),
        num(store, "plain_read_bandwidth") / 1e9,
        ms(num(store, "device_read_seconds")),
        num(store, "device_bandwidth") / 1e9,
    );
    let _ = writeln!(
        details,
        "| backend | time | bandwidth | read from storage | vs plain read | vs device |\n|---|---|---|---|---|---|"
    );
    for row in store["cold_load"].as_array().into_iter().flatten() {
        if let Some(reason) = row["skipped"].as_str() {
            let _ = writeln!(
                details,
                "| {} | SKIP: {reason} | | | | |",
                text(row, "variant")
            );
            continue;
        }
        let _ = writeln!(
            details,
            "| {} | {} | {} | {} | {:.2} | {:.2} |",
            text(row, "variant"),
            ms(num(row, "seconds")),
            show(num(row, "bandwidth"), "B/s"),
            mib(num(row, "read_bytes")),
            num(row, "ratio_vs_plain"),
            num(row, "ratio_vs_device")
        );
    }
    if !checks.is_empty() {
        let _ = writeln!(
            details,
            "\n### Against the device limit (issue 13's acceptance)\n\n\
             | measure | ours | reference | ratio (median) | per round | goal | met |\n\
             |---|---|---|---|---|---|---|"
        );
        for check in &checks {
            let unit = text(check, "unit");
            let goal = format!(
                "{} {}",
                if text(check, "goal_op") == "<=" {
                    "≤"
                } else {
                    "≥"
                },
                num(check, "goal")
            );
            if let Some(reason) = check["skipped"].as_str() {
                let _ = writeln!(
                    details,
                    "| {} | SKIP: {reason} | | | | {goal} | skipped |",
                    text(check, "measure")
                );
                continue;
            }
            let rounds: Vec<String> = check["per_round"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| r.as_f64().map_or("–".to_owned(), |r| format!("{r:.2}")))
                .collect();
            let _ = writeln!(
                details,
                "| {} | {} | {} | {:.3} | {} | {goal} | {} |",
                text(check, "measure"),
                show(num(check, "ours"), unit),
                show(num(check, "reference"), unit),
                num(check, "ratio"),
                rounds.join(", "),
                match check["met"].as_bool() {
                    Some(true) => "met",
                    Some(false) => "**missed**",
                    None => "–",
                }
            );
        }
    }
    let cgroup = &store["cgroup_streaming"];
    if let Some(reason) = cgroup["skipped"].as_str() {
        let _ = writeln!(details, "\nMemory-cgroup streaming: SKIP: {reason}.\n");
    } else if cgroup.is_object() {
        let _ = writeln!(
            details,
            "\nMemory-cgroup streaming: {} limit, {} model of {} layers, {} budget, {} passes \
             (first pass dropped), {} rounds, device {:.2} GB/s on the same file; each side in \
             its own process. Peak charged {}, peak mincore-resident {}.\n\n\
             | side | s/pass | read/pass |\n|---|---|---|",
            mib(num(cgroup, "limit")),
            mib(num(cgroup, "model_bytes")),
            mib(num(cgroup, "layer_bytes")),
            mib(num(cgroup, "budget")),
            cgroup["passes"],
            cgroup["rounds"],
            num(cgroup, "device_bandwidth") / 1e9,
            mib(num(cgroup, "peak_charged_bytes")),
            mib(num(cgroup, "peak_resident_bytes")),
        );
        for side in cgroup["sides"].as_array().into_iter().flatten() {
            let _ = writeln!(
                details,
                "| {} | {} | {} |",
                text(side, "side"),
                ms(num(side, "seconds_per_pass")),
                mib(num(side, "read_bytes_per_pass"))
            );
        }
    }
    let _ = writeln!(
        details,
        "\nStreaming ({} rounds): budget {}, model {}, device {:.2} GB/s on the same file, \
         compute per layer = its size / device bandwidth ({} per pass), Belady misses {} \
         per pass, bound max(compute, Belady misses / device bandwidth) = {}.\n\n\
         | variant | s/pass | vs bound | read/pass | peak RSS |\n|---|---|---|---|---|",
        store["stream_rounds"],
        mib(num(store, "stream_budget")),
        mib(num(store, "stream_model_bytes")),
        num(store, "stream_device_bandwidth") / 1e9,
        ms(num(store, "compute_seconds_per_pass")),
        mib(num(store, "belady_missed_bytes_per_pass")),
        ms(bound)
    );
    for row in store["streaming"].as_array().into_iter().flatten() {
        let _ = writeln!(
            details,
            "| {} | {} | {:.2} | {} | {} |",
            text(row, "variant"),
            ms(num(row, "seconds_per_pass")),
            num(row, "vs_bound"),
            mib(num(row, "read_bytes_per_pass")),
            mib(num(row, "peak_rss_bytes"))
        );
    }
    let points: Vec<(f64, f64, f64)> = store["pass_time_vs_budget"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| {
            (
                num(row, "budget_fraction"),
                num(row, "seconds_per_pass") * 1e3,
                num(row, "lower_bound_seconds") * 1e3,
            )
        })
        .collect();
    if !points.is_empty() {
        let svg = line_chart(
            "Pass time vs budget (model 2× the reference budget)",
            "budget / model size",
            "ms per pass",
            &[
                (
                    "default config",
                    points.iter().map(|p| (p.0, p.1)).collect(),
                ),
                ("lower bound", points.iter().map(|p| (p.0, p.2)).collect()),
            ],
        );
        write_file(&out.join("store_pass_time_vs_budget.svg"), &svg)?;
        let _ = writeln!(
            details,
            "\n![pass time vs budget](store_pass_time_vs_budget.svg)\n"
        );
    }
    let bars: Vec<(String, f64)> = std::iter::once((
        format!("device ({device_tool})"),
        num(store, "device_bandwidth"),
    ))
    .chain(std::iter::once((
        "plain read".to_owned(),
        num(store, "plain_read_bandwidth"),
    )))
    .chain(
        store["cold_load"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|row| (text(row, "variant").to_owned(), num(row, "bandwidth"))),
    )
    .filter(|(_, v)| v.is_finite())
    .collect();
    if bars.len() > 1 {
        write_file(
            &out.join("store_cold_load.svg"),
            &bar_chart(
                "Cold load per backend beside the device limit",
                "GB/s",
                &bars,
            ),
        )?;
        let _ = writeln!(details, "\n![cold load](store_cold_load.svg)\n");
    }
    Ok(())
}

/// A minimal horizontal SVG bar chart of `(label, bytes per second)`.
fn bar_chart(title: &str, unit: &str, bars: &[(String, f64)]) -> String {
    let (left, width, row) = (190.0, 620.0, 28.0);
    let plot = width - left - 80.0;
    let height = 50.0 + row * bars.len() as f64;
    let max = bars.iter().map(|b| b.1).fold(0.0f64, f64::max).max(1e-9);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">{title}</text>\n",
        width / 2.0
    );
    for (i, (label, value)) in bars.iter().enumerate() {
        let y = 35.0 + row * i as f64;
        let w = value / max * plot;
        let color = if i == 0 { "#555555" } else { "#1f77b4" };
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{label}</text>\
             <rect x=\"{left}\" y=\"{y}\" width=\"{w:.1}\" height=\"{}\" fill=\"{color}\"/>\
             <text x=\"{}\" y=\"{}\">{:.2} {unit}</text>",
            left - 8.0,
            y + 15.0,
            row - 8.0,
            left + w + 5.0,
            y + 15.0,
            value / 1e9
        );
    }
    svg.push_str("</svg>\n");
    svg
}
