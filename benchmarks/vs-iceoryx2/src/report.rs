//! The figures of one run: JSON for tools, a table of comesg beside
//! iceoryx2 for people, and the targets the project set.

use comesg_bench::report::{human_ns as ns, human_size as size, LatencyRow, ThroughputRow};
use serde::Serialize;

/// Everything one run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Round trips.
    pub latency: Vec<LatencyRow>,
    /// One-way streams.
    pub throughput: Vec<ThroughputRow>,
    /// Where it ran.
    pub machine: String,
}

/// Round-trip pairs: (how, comesg's transport, iceoryx2's transport).
const LATENCY_PAIRS: [(&str, &str, &str); 4] = [
    ("busy-polling", "cochannel", "iceoryx2"),
    ("blocking", "cochannel_blocking", "iceoryx2_event"),
    ("asleep in epoll", "cochannel_copoll", "iceoryx2_waitset"),
    ("request/response", "coservice", "iceoryx2_rr"),
];

/// Throughput pairs.
const THROUGHPUT_PAIRS: [(&str, &str, &str); 2] =
    [("zero-copy loan", "cochannel_loan", "iceoryx2_loan"), ("copy", "cochannel", "iceoryx2")];

impl Report {
    fn latency(&self, t: &str, size: u64) -> Option<&LatencyRow> {
        self.latency.iter().find(|r| r.transport == t && r.size == size)
    }

    fn throughput(&self, t: &str, size: u64) -> Option<&ThroughputRow> {
        self.throughput.iter().find(|r| r.transport == t && r.size == size)
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The targets: (what, ratio, bound, met).
    pub fn targets(&self) -> Vec<(String, Option<f64>, f64, bool)> {
        let lat = |t: &str, s: u64| self.latency(t, s).map(|r| r.median_ns);
        let thr = |t: &str, s: u64| self.throughput(t, s).map(|r| r.msgs_per_s);
        let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
        let polling = ratio(lat("cochannel", 64), lat("iceoryx2", 64));
        let blocking = ratio(lat("iceoryx2_event", 64), lat("cochannel_blocking", 64));
        let loan = ratio(thr("cochannel_loan", 65536), thr("iceoryx2_loan", 65536));
        vec![
            ("64 B polling round trip <= 0.5x iceoryx2's".into(), polling, 0.5, polling.is_some_and(|r| r <= 0.5)),
            (
                "64 B blocking round trip >= 2x faster than iceoryx2's event wake-up".into(),
                blocking,
                2.0,
                blocking.is_some_and(|r| r >= 2.0),
            ),
            ("64 KiB zero-copy throughput >= iceoryx2's loan mode".into(), loan, 1.0, loan.is_some_and(|r| r >= 1.0)),
        ]
    }

    /// The report as tables: each comesg figure beside iceoryx2's, their
    /// ratio, and the ratio to the raw spin round trip.
    pub fn table(&self) -> String {
        let mut out = format!("machine: {}\n\n", self.machine);
        let spin = self.latency("spin", 64).map(|r| r.median_ns);
        out.push_str("Round trip (median / p99), comesg beside iceoryx2\n");
        out.push_str(&format!(
            "{:<7} {:<17} {:<19} {:>17}   {:<17} {:>17} {:>10} {:>8}\n",
            "size", "how", "comesg", "", "iceoryx2", "", "co / iox2", "co/spin"
        ));
        for s in [64u64, 4096, 65536] {
            for (how, co, ice) in LATENCY_PAIRS {
                let (c, i) = (self.latency(co, s), self.latency(ice, s));
                if c.is_none() && i.is_none() {
                    continue;
                }
                let fig = |r: Option<&LatencyRow>| {
                    r.map(|r| format!("{} / {}", ns(r.median_ns), ns(r.p99_ns))).unwrap_or_else(|| "-".into())
                };
                let ratio = c.zip(i).map(|(c, i)| format!("{:.3}x", c.median_ns / i.median_ns)).unwrap_or_default();
                let vs_spin = c.zip(spin).map(|(c, sp)| format!("{:.2}x", c.median_ns / sp)).unwrap_or_default();
                out.push_str(&format!(
                    "{:<7} {:<17} {:<19} {:>17}   {:<17} {:>17} {:>10} {:>8}\n",
                    size(s),
                    how,
                    co,
                    fig(c),
                    ice,
                    fig(i),
                    ratio,
                    vs_spin
                ));
            }
        }
        if let Some(sp) = self.latency("spin", 64) {
            out.push_str(&format!(
                "raw shared-memory spin ping-pong (the hardware limit): {} / {}\n",
                ns(sp.median_ns),
                ns(sp.p99_ns)
            ));
        }
        out.push_str("\nOne-way throughput (messages per second; the receiver polls), comesg beside iceoryx2\n");
        out.push_str(&format!(
            "{:<7} {:<15} {:>14} {:>8} {:>14} {:>8} {:>10}\n",
            "size", "how", "comesg msg/s", "GB/s", "iox2 msg/s", "GB/s", "co / iox2"
        ));
        for s in [64u64, 4096, 65536] {
            for (how, co, ice) in THROUGHPUT_PAIRS {
                let (c, i) = (self.throughput(co, s), self.throughput(ice, s));
                let m =
                    |r: Option<&ThroughputRow>| r.map(|r| format!("{:.2} M", r.msgs_per_s / 1e6)).unwrap_or_default();
                let g = |r: Option<&ThroughputRow>| r.map(|r| format!("{:.2}", r.gb_per_s)).unwrap_or_default();
                let ratio = c.zip(i).map(|(c, i)| format!("{:.2}x", c.msgs_per_s / i.msgs_per_s)).unwrap_or_default();
                out.push_str(&format!(
                    "{:<7} {:<15} {:>14} {:>8} {:>14} {:>8} {:>10}\n",
                    size(s),
                    how,
                    m(c),
                    g(c),
                    m(i),
                    g(i),
                    ratio
                ));
            }
        }
        out.push_str(
            "(zero-copy: the sender writes only an 8-byte header in place and the receiver reads only that;\n \
             GB/s there is the message rate times the size, not bytes moved)\n",
        );
        out.push_str("\nTargets\n");
        for (what, ratio, _, met) in self.targets() {
            let r = ratio.map(|r| format!("ratio {r:.2}")).unwrap_or_else(|| "rows missing".into());
            out.push_str(&format!("{}  {what}: {r}\n", if met { "MEETS" } else { "SHORT" }));
        }
        out
    }
}
