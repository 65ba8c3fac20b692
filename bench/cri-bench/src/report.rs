//! Percentiles, the result of one run (printed as a table and as one JSON line), and the comparison of runs.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::lifecycle::{self, Timings};
use crate::procs::Snapshot;

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Stat {
    pub n: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn stat(samples: &[Duration]) -> Stat {
    let mut v = samples.to_vec();
    v.sort();
    let total: Duration = v.iter().sum();
    Stat {
        n: v.len(),
        p50_ms: ms(percentile(&v, 50.0)),
        p90_ms: ms(percentile(&v, 90.0)),
        p99_ms: ms(percentile(&v, 99.0)),
        max_ms: ms(v.last().copied().unwrap_or_default()),
        mean_ms: if v.is_empty() { 0.0 } else { ms(total) / v.len() as f64 },
    }
}

/// Per step name, the statistics of its samples, in `lifecycle::STEPS` order.
pub fn stats(t: &Timings) -> Vec<(String, Stat)> {
    lifecycle::STEPS
        .iter()
        .filter_map(|step| {
            let samples: Vec<Duration> = t.iter().filter(|(s, _)| s == step).map(|(_, d)| *d).collect();
            (!samples.is_empty()).then(|| (step.to_string(), stat(&samples)))
        })
        .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PerPod {
    pub rss: f64,
    pub pss: f64,
    pub private: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub name: String,
    pub runtime: String,
    pub sequential_pods: usize,
    pub parallel: usize,
    pub parallel_pods: usize,
    /// Phase ("sequential", "parallel") → step → statistics.
    pub phases: Vec<(String, Vec<(String, Stat)>)>,
    /// Pods brought up per second one after another (sum of "pod up" times), and full lifecycles per second
    /// with `parallel` pods in flight (wall clock).
    pub sequential_pods_per_s: f64,
    pub parallel_lifecycles_per_s: f64,
    pub memory: Vec<Snapshot>,
    /// Runtime memory (daemon + helpers + sandboxes) added per running pod, between the 0-pod snapshot and the
    /// one with the most pods. Bytes.
    pub per_pod: Option<PerPod>,
}

impl RunResult {
    pub fn step(&self, phase: &str, step: &str) -> Option<&Stat> {
        self.phases.iter().find(|(p, _)| p == phase)?.1.iter().find(|(s, _)| s == step).map(|(_, st)| st)
    }

    pub fn snapshot(&self, label: &str) -> Option<&Snapshot> {
        self.memory.iter().find(|s| s.label == label)
    }
}

fn mib(b: f64) -> String {
    format!("{:.2}", b / (1024.0 * 1024.0))
}

pub fn print_table(r: &RunResult) {
    println!("== {} ({}) ==", r.name, r.runtime);
    for (phase, rows) in &r.phases {
        let detail = if phase == "parallel" {
            format!("{} pods, {} at a time", r.parallel_pods, r.parallel)
        } else {
            format!("{} pods one after another", r.sequential_pods)
        };
        println!("{phase} ({detail}), milliseconds:");
        println!("  {:<28} {:>5} {:>9} {:>9} {:>9} {:>9}", "step", "n", "p50", "p90", "p99", "max");
        for (step, s) in rows {
            println!(
                "  {:<28} {:>5} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                step, s.n, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms
            );
        }
    }
    println!(
        "pods/s: {:.1} brought up one after another, {:.1} full lifecycles with {} in flight",
        r.sequential_pods_per_s, r.parallel_lifecycles_per_s, r.parallel
    );
    println!("memory, MiB (RSS / PSS / private):");
    println!(
        "  {:<16} {:>5} {:>22} {:>6} {:>22} {:>6} {:>22} {:>22}",
        "when", "pods", "daemon", "#help", "helpers", "#sbox", "sandboxes", "runtime total"
    );
    let triple =
        |m: &crate::procs::Mem| format!("{} / {} / {}", mib(m.rss as f64), mib(m.pss as f64), mib(m.private as f64));
    for s in &r.memory {
        println!(
            "  {:<16} {:>5} {:>22} {:>6} {:>22} {:>6} {:>22} {:>22}",
            s.label,
            s.pods,
            triple(&s.daemon),
            s.helper.count,
            triple(&s.helper),
            s.sandbox.count,
            triple(&s.sandbox),
            triple(&s.runtime())
        );
    }
    if let Some(p) = &r.per_pod {
        println!(
            "runtime memory per running pod: RSS {} MiB, PSS {} MiB, private {} MiB",
            mib(p.rss),
            mib(p.pss),
            mib(p.private)
        );
    }
}

/// One figure of a run, where it has it.
type Figure = Box<dyn Fn(&RunResult) -> Option<f64>>;

/// The figures issue 3 sets targets on, side by side, each other run against the first.
pub fn compare(runs: &[RunResult]) {
    let Some(base) = runs.first() else { return };
    let rows: Vec<(&str, Figure, bool)> = vec![
        ("RunPodSandbox p50 ms", Box::new(|r| r.step("sequential", lifecycle::RUN_POD).map(|s| s.p50_ms)), true),
        (
            "Create+StartContainer p50 ms",
            Box::new(|r| r.step("sequential", lifecycle::CREATE_START).map(|s| s.p50_ms)),
            true,
        ),
        ("pod up p50 ms", Box::new(|r| r.step("sequential", lifecycle::POD_UP).map(|s| s.p50_ms)), false),
        ("pod up p99 ms", Box::new(|r| r.step("sequential", lifecycle::POD_UP).map(|s| s.p99_ms)), false),
        ("pod down p50 ms", Box::new(|r| r.step("sequential", lifecycle::POD_DOWN).map(|s| s.p50_ms)), false),
        ("parallel lifecycle p50 ms", Box::new(|r| r.step("parallel", lifecycle::LIFECYCLE).map(|s| s.p50_ms)), false),
        ("pods/s sequential (up)", Box::new(|r| Some(r.sequential_pods_per_s)), false),
        ("lifecycles/s parallel", Box::new(|r| Some(r.parallel_lifecycles_per_s)), false),
        ("per-pod RSS MiB", Box::new(|r| r.per_pod.as_ref().map(|p| p.rss / 1048576.0)), true),
        ("per-pod PSS MiB", Box::new(|r| r.per_pod.as_ref().map(|p| p.pss / 1048576.0)), false),
        ("per-pod private MiB", Box::new(|r| r.per_pod.as_ref().map(|p| p.private / 1048576.0)), false),
        ("daemon idle RSS MiB", Box::new(|r| r.snapshot("0 pods").map(|s| s.daemon.rss as f64 / 1048576.0)), false),
        ("daemon idle PSS MiB", Box::new(|r| r.snapshot("0 pods").map(|s| s.daemon.pss as f64 / 1048576.0)), false),
    ];
    print!("{:<30}", "comparison");
    for r in runs {
        print!(" {:>16}", r.name);
    }
    for r in &runs[1..] {
        print!(" {:>14}", format!("{}/{}", r.name, base.name).chars().take(14).collect::<String>());
    }
    println!();
    for (label, f, target) in &rows {
        print!("{:<30}", format!("{label}{}", if *target { " *" } else { "" }));
        for r in runs {
            print!(" {:>16}", f(r).map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into()));
        }
        for r in &runs[1..] {
            // How many times better the first run is: lower is better, except for rates.
            let ratio = match (f(r), f(base)) {
                (Some(a), Some(b)) if label.contains("/s") && a > 0.0 => format!("{:.1}x", b / a),
                (Some(a), Some(b)) if b > 0.0 => format!("{:.1}x", a / b),
                _ => "-".into(),
            };
            print!(" {ratio:>14}");
        }
        println!();
    }
    println!("ratios: how many times better the first run is (lower latency or memory, higher rate)");
    println!("* issue 3 target: the first run at most 1/10 of the others (ratio >= 10x); reefd idle RSS <= 10 MiB");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = stat(&samples);
        assert_eq!((s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(stat(&[Duration::from_millis(7)]).p99_ms, 7.0);
        assert_eq!(stat(&[]).n, 0);
    }
}
