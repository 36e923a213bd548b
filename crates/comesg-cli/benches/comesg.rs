//! `cargo bench -p comesg-cli`: the same benchmark as `comesg bench`, with
//! the `comesg` binary cargo built for it as the peer process. Pass `--json`
//! after `--` for the JSON report.

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    let cfg = comesg_bench::BenchConfig {
        exe: env!("CARGO_BIN_EXE_comesg").into(),
        long: std::env::args().any(|a| a == "--long"),
        short: false,
        progress: !json,
    };
    match comesg_bench::run(&cfg) {
        Ok(report) if json => println!("{}", report.to_json()),
        Ok(report) => print!("{}", report.table()),
        Err(e) => {
            eprintln!("bench failed: {e}");
            std::process::exit(1);
        }
    }
}
