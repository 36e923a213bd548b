//! The README's main job and the benchmark's JSON, run for real.

mod util;

use std::process::{Command, Stdio};
use std::time::Duration;

use util::{unique_dir, wait_output};

#[test]
fn the_tour_moves_messages_between_processes_exactly_once() {
    let dir = unique_dir("tour");
    let socket = dir.join("k.sock");
    let child = Command::new(util::exe())
        .args(["tour", "--messages", "20000", "--no-bench", "--socket"])
        .arg(&socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, Duration::from_secs(120));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("every message received exactly once: yes"), "{text}");
    assert!(text.contains("HOLDERS"), "the tour shows comesg ls: {text}");
    assert!(text.contains("each reported once, found through its bell (no polling loop): yes"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_json_has_every_transport() {
    let child = Command::new(util::exe())
        .args(["bench", "--json", "--quick"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, Duration::from_secs(300));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names = |key: &str| -> Vec<String> {
        v[key].as_array().unwrap().iter().map(|r| r["transport"].as_str().unwrap().to_string()).collect()
    };
    for t in ["spin", "futex", "pipe", "seqpacket", "cochannel"] {
        assert!(names("latency").contains(&t.to_string()), "latency lacks {t}");
    }
    for t in ["pipe", "seqpacket", "cochannel", "memcpy"] {
        assert!(names("throughput").contains(&t.to_string()), "throughput lacks {t}");
    }
    for r in v["latency"].as_array().unwrap() {
        assert!(
            r["median_ns"].as_f64().unwrap() > 0.0 && r["p99_ns"].as_f64().unwrap() >= r["median_ns"].as_f64().unwrap()
        );
    }
    for r in v["throughput"].as_array().unwrap() {
        assert!(r["msgs_per_s"].as_f64().unwrap() > 0.0 && r["gb_per_s"].as_f64().unwrap() > 0.0);
    }
}

/// The scaling run fails by itself if the receivers' counts do not add up to
/// what the senders sent; here every row must also be present.
#[test]
fn bench_scaling_runs_every_load() {
    let child = Command::new(util::exe())
        .args(["bench", "--scaling", "--json", "--quick"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, Duration::from_secs(300));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pairs: Vec<u64> = v["anycast"].as_array().unwrap().iter().map(|r| r["pairs"].as_u64().unwrap()).collect();
    assert_eq!(pairs, [1, 2, 4, 8]);
    for r in v["anycast"].as_array().unwrap() {
        assert!(r["rt_median_ns"].as_f64().unwrap() > 0.0 && r["msgs_per_s"].as_f64().unwrap() > 0.0);
    }
    let objects: Vec<u64> =
        v["by_objects"].as_array().unwrap().iter().map(|r| r["objects"].as_u64().unwrap()).collect();
    assert_eq!(objects, [10, 100, 1_000, 10_000]);
    let clients: Vec<u64> =
        v["by_clients"].as_array().unwrap().iter().map(|r| r["clients"].as_u64().unwrap()).collect();
    assert_eq!(clients, [1, 10, 100, 1_000]);
    for r in v["by_objects"].as_array().unwrap().iter().chain(v["by_clients"].as_array().unwrap()) {
        assert!(r["cycles_per_s"].as_f64().unwrap() > 0.0 && r["channels"].as_u64().unwrap() > 0);
    }
}
