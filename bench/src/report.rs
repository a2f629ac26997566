//! The table: direct, trustmesh and nginx side by side, with trustmesh/nginx ratios.

use std::fmt::Write;

use crate::measure::{CaseResult, Closed};
use crate::run::RunResult;

/// Reads a figure from a case, given the direct case (None where it does not apply).
type Getter = fn(&CaseResult, &CaseResult) -> Option<f64>;

/// One row: a label and how to read the figure from a case.
struct Row {
    label: &'static str,
    value: Getter,
    decimals: usize,
    /// Whether the direct column has a value for this row.
    direct: bool,
    /// Whether trustmesh/nginx means something for this row (not for counts).
    ratio: bool,
}

fn row(label: &'static str, decimals: usize, direct: bool, value: Getter) -> Row {
    Row {
        label,
        value,
        decimals,
        direct,
        ratio: true,
    }
}

/// A row of counts: no ratio.
fn count(label: &'static str, direct: bool, value: Getter) -> Row {
    Row {
        ratio: false,
        ..row(label, 0, direct, value)
    }
}

const MIB: f64 = 1024.0;

fn rows() -> Vec<Row> {
    vec![
        row("latency p50 @ fixed rate (us)", 1, true, |c, _| {
            Some(c.latency.p50_us)
        }),
        row("latency p99 @ fixed rate (us)", 1, true, |c, _| {
            Some(c.latency.p99_us)
        }),
        row("latency p99.9 @ fixed rate (us)", 1, true, |c, _| {
            Some(c.latency.p999_us)
        }),
        row("added p50 over direct (us)", 1, false, |c, d| {
            Some(c.latency.p50_us - d.latency.p50_us)
        }),
        row("added p99 over direct (us)", 1, false, |c, d| {
            Some(c.latency.p99_us - d.latency.p99_us)
        }),
        row("max rate, closed loop (req/s)", 0, true, |c, _| {
            Some(c.max_rps)
        }),
        row("  p50 latency at max rate (us)", 1, true, |c, _| {
            Some(c.max_p50_us)
        }),
        row("CPU per request, sidecar A (us)", 1, false, |c, _| {
            c.cpu_us_per_req.map(|v| v[0])
        }),
        row("CPU per request, sidecar B (us)", 1, false, |c, _| {
            c.cpu_us_per_req.map(|v| v[1])
        }),
        row("CPU per request, both hops (us)", 1, false, |c, _| {
            c.cpu_us_per_req.map(|v| v[0] + v[1])
        }),
        row("RSS idle, sidecar A (MiB)", 1, false, |c, _| {
            c.rss_idle_kib.map(|v| v[0] as f64 / MIB)
        }),
        row("RSS idle, sidecar B (MiB)", 1, false, |c, _| {
            c.rss_idle_kib.map(|v| v[1] as f64 / MIB)
        }),
        row("RSS under load, sidecar A (MiB)", 1, false, |c, _| {
            c.rss_load_kib.map(|v| v[0] as f64 / MIB)
        }),
        row("RSS under load, sidecar B (MiB)", 1, false, |c, _| {
            c.rss_load_kib.map(|v| v[1] as f64 / MIB)
        }),
        row("PSS idle, sidecar A (MiB)", 1, false, |c, _| {
            c.pss_idle_kib.map(|v| v[0] as f64 / MIB)
        }),
        row("PSS idle, sidecar B (MiB)", 1, false, |c, _| {
            c.pss_idle_kib.map(|v| v[1] as f64 / MIB)
        }),
        row("PSS under load, sidecar A (MiB)", 1, false, |c, _| {
            c.pss_load_kib.map(|v| v[0] as f64 / MIB)
        }),
        row("PSS under load, sidecar B (MiB)", 1, false, |c, _| {
            c.pss_load_kib.map(|v| v[1] as f64 / MIB)
        }),
        row("full mTLS handshakes/s (wall)", 0, false, |c, _| {
            c.handshake.as_ref().map(|h| h.per_second)
        }),
        row("  server CPU-seconds used", 2, false, |c, _| {
            c.handshake.as_ref().map(|h| h.server_cpu_s)
        }),
        row("full mTLS handshakes/s per core", 0, false, |c, _| {
            c.handshake.as_ref().map(|h| h.per_core_second)
        }),
        count("threads, sidecar A", false, |c, _| {
            c.threads.map(|v| v[0] as f64)
        }),
        count("threads, sidecar B", false, |c, _| {
            c.threads.map(|v| v[1] as f64)
        }),
        count("requests measured @ fixed rate", true, |c, _| {
            Some(c.latency.completed as f64)
        }),
        count("errors @ fixed rate", true, |c, _| {
            Some(c.latency.errors as f64)
        }),
        count("errors @ max rate", true, |c, _| Some(c.max_errors as f64)),
        count("handshake failures", false, |c, _| {
            c.handshake.as_ref().map(|h| h.failures as f64)
        }),
    ]
}

fn cell(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "-".to_owned(),
    }
}

/// Renders the whole report as text.
pub fn render(r: &RunResult) -> String {
    let s = &r.settings;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "trustmesh-bench: {} cores, one backend, one load generator",
        cores()
    );
    if s.closed_only {
        let _ = writeln!(out, "  closed loop only (--closed-only)");
    } else {
        let _ = writeln!(
            out,
            "  fixed rate: {} req/s open loop, {} keep-alive connections; latency from the scheduled send time",
            s.rate, s.open_connections
        );
        let _ = writeln!(
            out,
            "  max rate: closed loop, {} keep-alive connections",
            s.closed_connections
        );
    }
    let _ = writeln!(
        out,
        "  each mode: {:?} measured per case, as {} interleaved segments of {:?} (cases in rotating order); \
         {:?} warm-up before a case's first segment, {:?} before the others",
        s.duration,
        s.rounds,
        s.duration / s.rounds.max(1),
        s.warmup,
        crate::run::SEGMENT_WARMUP
    );
    if !s.closed_only {
        let _ = writeln!(
            out,
            "  handshakes: {} clients, {:?}, TLS 1.3 with client certificate, no resumption",
            s.handshake_concurrency, s.handshake_duration
        );
    }
    if !s.pinned_connections.is_empty() {
        let _ = writeln!(
            out,
            "  pinned: servers on CPU {}, load generator on CPU {}; closed loop also at {:?} connections, same rounds",
            crate::pin::SERVER_CPU,
            crate::pin::CLIENT_CPU,
            s.pinned_connections
        );
    }
    let _ = writeln!(out);

    let tm = r.trustmesh.as_ref().and_then(|x| x.as_ref().ok());
    let ng = r.nginx.as_ref().and_then(|x| x.as_ref().ok());
    let _ = writeln!(
        out,
        "{:<34}{:>12}{:>12}{:>12}{:>18}",
        "", "direct", "trustmesh", "nginx", "trustmesh/nginx"
    );
    let _ = writeln!(out, "{}", "-".repeat(34 + 12 * 3 + 18));
    for row in rows() {
        if s.closed_only && !row.label.starts_with("RSS idle") && !row.label.starts_with("threads")
        {
            continue;
        }
        let d = &r.direct;
        let dv = if row.direct { (row.value)(d, d) } else { None };
        let tv = tm.and_then(|c| (row.value)(c, d));
        let nv = ng.and_then(|c| (row.value)(c, d));
        line(&mut out, row.label, [dv, tv, nv], row.decimals, row.ratio);
    }
    closed_rows(&mut out, &r.direct, tm, ng);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "pacer lateness p99 (us, part of every latency): direct {}, trustmesh {}, nginx {}",
        cell(Some(r.direct.latency.pacer_late_p99_us), 1),
        cell(tm.map(|c| c.latency.pacer_late_p99_us), 1),
        cell(ng.map(|c| c.latency.pacer_late_p99_us), 1)
    );
    let worst_pacer = [
        Some(r.direct.latency.pacer_late_p99_us),
        tm.map(|c| c.latency.pacer_late_p99_us),
        ng.map(|c| c.latency.pacer_late_p99_us),
    ]
    .into_iter()
    .flatten()
    .fold(0.0, f64::max);
    if worst_pacer > 200.0 {
        let _ = writeln!(
            out,
            "WARNING: the pacer ran up to {worst_pacer:.0} us late (p99): the machine was busy; latency figures are inflated"
        );
    }
    if let Some(p) = &r.pinning {
        let _ = writeln!(out, "pinned: {p}");
    }
    for (name, case) in [("trustmesh", &r.trustmesh), ("nginx", &r.nginx)] {
        match case {
            None => {
                let _ = writeln!(out, "{name}: skipped");
            }
            Some(Err(e)) => {
                let _ = writeln!(out, "{name}: NOT MEASURED: {e}");
            }
            Some(Ok(c)) => {
                if let Some(h) = &c.handshake {
                    let _ = writeln!(out, "{name}: handshake negotiated {}", h.negotiated);
                }
                for n in &c.notes {
                    let _ = writeln!(out, "{name}: {n}");
                }
            }
        }
    }
    out
}

/// One table line: direct, trustmesh, nginx and (when `ratio`) trustmesh/nginx.
fn line(out: &mut String, label: &str, v: [Option<f64>; 3], decimals: usize, ratio: bool) {
    let [dv, tv, nv] = v;
    let r = match (tv, nv) {
        (Some(t), Some(n)) if ratio && n != 0.0 => Some(t / n),
        _ => None,
    };
    let _ = writeln!(
        out,
        "{:<34}{:>12}{:>12}{:>12}{:>18}",
        label,
        cell(dv, decimals),
        cell(tv, decimals),
        cell(nv, decimals),
        cell(r, 2)
    );
}

/// The `--pinned` closed-loop runs: for each connection count the rate, the median latency,
/// the p50 added over direct and the CPU per request per hop at that rate.
fn closed_rows(out: &mut String, d: &CaseResult, tm: Option<&CaseResult>, ng: Option<&CaseResult>) {
    for dc in &d.closed {
        let c = dc.connections;
        fn at(case: Option<&CaseResult>, c: usize) -> Option<&Closed> {
            case.and_then(|x| x.closed.iter().find(|k| k.connections == c))
        }
        let (t, n) = (at(tm, c), at(ng, c));
        let _ = writeln!(out, "closed loop, {c} connection(s), pinned:");
        let both = |f: &dyn Fn(&Closed) -> Option<f64>| {
            [Some(dc).and_then(f), t.and_then(f), n.and_then(f)]
        };
        line(out, "  rate (req/s)", both(&|k| Some(k.rps)), 0, true);
        line(
            out,
            "  p50 latency (us)",
            both(&|k| Some(k.p50_us)),
            1,
            true,
        );
        let added = |k: &Closed| Some(k.p50_us - dc.p50_us);
        line(
            out,
            "  added p50 over direct (us)",
            [None, t.and_then(added), n.and_then(added)],
            1,
            true,
        );
        let cpu = |i: Option<usize>| {
            move |k: &Closed| k.cpu_us_per_req.map(|v| i.map_or(v[0] + v[1], |i| v[i]))
        };
        line(
            out,
            "  CPU per request, sidecar A (us)",
            both(&cpu(Some(0))),
            1,
            true,
        );
        line(
            out,
            "  CPU per request, sidecar B (us)",
            both(&cpu(Some(1))),
            1,
            true,
        );
        line(
            out,
            "  CPU per request, both hops (us)",
            both(&cpu(None)),
            1,
            true,
        );
        let user = |k: &Closed| k.user_us_per_req.map(|v| v[0] + v[1]);
        line(out, "    of which user space (us)", both(&user), 1, true);
        if let (Some(t), Some(n)) = (t, n) {
            round_ratios(out, &t.rounds_us_per_req, &n.rounds_us_per_req);
        }
        line(out, "  errors", both(&|k| Some(k.errors as f64)), 0, false);
    }
}

/// The trustmesh/nginx ratio of CPU per request, both hops, round by round (each round
/// measures both pairs within seconds of each other, so a change in the machine's load
/// between rounds moves both), and their median.
fn round_ratios(out: &mut String, tm: &[f64], ng: &[f64]) {
    let mut ratios: Vec<f64> = tm
        .iter()
        .zip(ng)
        .filter(|(_, n)| **n > 0.0)
        .map(|(t, n)| t / n)
        .collect();
    if ratios.is_empty() {
        return;
    }
    let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    ratios.sort_by(f64::total_cmp);
    let mid = ratios.len() / 2;
    let median = if ratios.len() % 2 == 1 {
        ratios[mid]
    } else {
        (ratios[mid - 1] + ratios[mid]) / 2.0
    };
    let _ = writeln!(
        out,
        "  CPU both hops, trustmesh/nginx by round: {} (median {median:.2})",
        each.join(" ")
    );
}

fn cores() -> usize {
    crate::pin::machine_cpus()
}
