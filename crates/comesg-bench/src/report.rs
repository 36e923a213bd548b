//! Benchmark results: JSON for tools, a table with ratios for people.

use serde::Serialize;

/// One round-trip latency figure.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyRow {
    /// Transport name.
    pub transport: String,
    /// Message size in bytes.
    pub size: u64,
    /// Median round trip.
    pub median_ns: f64,
    /// 99th percentile round trip.
    pub p99_ns: f64,
}

/// One throughput figure.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputRow {
    /// Transport name.
    pub transport: String,
    /// Message size in bytes.
    pub size: u64,
    /// Messages per second.
    pub msgs_per_s: f64,
    /// Payload gigabytes (1e9 bytes) per second.
    pub gb_per_s: f64,
}

/// Everything one run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Round trips.
    pub latency: Vec<LatencyRow>,
    /// One-way streams.
    pub throughput: Vec<ThroughputRow>,
    /// One-way wake-up of a sleeping receiver, per way of waiting.
    pub wakeup: Vec<LatencyRow>,
    /// Where it ran.
    pub machine: String,
}

/// A duration in nanoseconds as ns, us or ms.
pub fn human_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} us", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// A message size as B, KiB or MiB.
pub fn human_size(b: u64) -> String {
    match b {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

impl Report {
    /// Median round trip of `transport` at `size`.
    pub fn latency_of(&self, transport: &str, size: u64) -> Option<f64> {
        self.latency.iter().find(|r| r.transport == transport && r.size == size).map(|r| r.median_ns)
    }

    /// Throughput row of `transport` at `size`.
    pub fn throughput_of(&self, transport: &str, size: u64) -> Option<&ThroughputRow> {
        self.throughput.iter().find(|r| r.transport == transport && r.size == size)
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The report as tables with ratios to the baselines.
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("machine: {}\n\n", self.machine));
        out.push_str("Round trip (ping-pong between two processes)\n");
        out.push_str(&format!(
            "{:<12} {:>7} {:>11} {:>11} {:>9} {:>15}\n",
            "transport", "size", "median", "p99", "x spin", "seqpacket / it"
        ));
        for r in self.latency.iter().filter(|r| r.size > 0) {
            let spin = self.latency_of("spin", r.size);
            let seq = self.latency_of("seqpacket", r.size);
            out.push_str(&format!(
                "{:<12} {:>7} {:>11} {:>11} {:>9} {:>15}\n",
                r.transport,
                human_size(r.size),
                human_ns(r.median_ns),
                human_ns(r.p99_ns),
                spin.map(|s| format!("{:.2}x", r.median_ns / s)).unwrap_or_default(),
                seq.map(|s| format!("{:.1}x", s / r.median_ns)).unwrap_or_default(),
            ));
        }
        let locks: Vec<&LatencyRow> = self.latency.iter().filter(|r| r.size == 0).collect();
        ratio_table(
            &mut out,
            "Locks (one lock+unlock; contended: two processes on one comutex)",
            ("lock", "x std_mutex"),
            &locks,
            self.latency_of("std_mutex", 0),
        );
        let wake: Vec<&LatencyRow> = self.wakeup.iter().collect();
        let blocking = self.wakeup.iter().find(|r| r.transport == "blocking_wake").map(|r| r.median_ns);
        ratio_table(
            &mut out,
            "Wake-up (one way, 64 B, to a receiver asleep: blocking receive, copoll, tokio)",
            ("waiting in", "x blocking"),
            &wake,
            blocking,
        );
        out.push_str("\nOne-way throughput (second process receives)\n");
        out.push_str(&format!(
            "{:<12} {:>7} {:>13} {:>9} {:>9} {:>10}\n",
            "transport", "size", "msgs/s", "GB/s", "x pipe", "x memcpy"
        ));
        for r in &self.throughput {
            let pipe = self.throughput_of("pipe", r.size).map(|p| p.gb_per_s);
            let mem = self.throughput_of("memcpy", r.size).map(|p| p.gb_per_s);
            out.push_str(&format!(
                "{:<12} {:>7} {:>13} {:>9.2} {:>9} {:>10}\n",
                r.transport,
                human_size(r.size),
                format!("{:.2} M", r.msgs_per_s / 1e6),
                r.gb_per_s,
                pipe.map(|p| format!("{:.2}x", r.gb_per_s / p)).unwrap_or_default(),
                mem.map(|m| format!("{:.3}x", r.gb_per_s / m)).unwrap_or_default(),
            ));
        }
        let rt = self.latency_of("cochannel", 64).zip(self.latency_of("bare_ring", 64));
        let one_way = self.throughput_of("cochannel", 64).zip(self.throughput_of("bare_ring", 64));
        if let (Some((co, bare)), Some((co_tp, bare_tp))) = (rt, one_way) {
            out.push_str(&format!(
                "\nCOCHANNEL against the bare ring it builds on (64 B): round trip {:.2}x its time, \
                 one-way {:.2}x its rate\n",
                co / bare,
                co_tp.msgs_per_s / bare_tp.msgs_per_s
            ));
        }
        out
    }
}

/// A titled table of latency rows with each median's ratio to `base`
/// (nothing when there are no rows).
fn ratio_table(out: &mut String, title: &str, (first, ratio): (&str, &str), rows: &[&LatencyRow], base: Option<f64>) {
    if rows.is_empty() {
        return;
    }
    out.push_str(&format!("\n{title}\n"));
    out.push_str(&format!("{:<18} {:>11} {:>11} {:>13}\n", first, "median", "p99", ratio));
    for r in rows {
        out.push_str(&format!(
            "{:<18} {:>11} {:>11} {:>13}\n",
            r.transport,
            human_ns(r.median_ns),
            human_ns(r.p99_ns),
            base.map(|b| format!("{:.2}x", r.median_ns / b)).unwrap_or_default(),
        ));
    }
}

/// One line saying where a run ran: the CPU model, how many CPUs, and how
/// the two processes were pinned (`cpus`).
pub fn machine_line(cpus: Option<(usize, usize)>, n: usize) -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let pin = match cpus {
        Some((a, b)) => format!("processes pinned to cpu {a} and {b}"),
        None => "processes not pinned".into(),
    };
    format!("{model}, {n} cpus, {pin}")
}

/// Waits up to `grace` for `child` to exit (after it was asked to), then
/// kills it; either way it is reaped.
pub fn reap(child: &mut std::process::Child, grace: std::time::Duration) {
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Median and 99th percentile of samples (sorted in place).
pub fn percentiles(samples: &mut [f64]) -> (f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0);
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_right_samples() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentiles(&mut v), (51.0, 99.0));
        assert_eq!(percentiles(&mut []), (0.0, 0.0));
    }
}
