//! Calls the coservice `/example-service/words` COUNT times, several calls
//! in flight at once.
//!
//! Usage: `service-client COUNT`

use comesg::Connection;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).ok_or("usage: service-client COUNT")?;
    let conn = Connection::connect_default()?;
    let words = conn.service("/example-service/words")?;
    let mut right = 0;
    for batch in (0..count).collect::<Vec<_>>().chunks(4) {
        // Start a few calls, then collect them: workers run them in parallel.
        let requests: Vec<String> = batch.iter().map(|&i| "word ".repeat(i % 7 + 1)).collect();
        let pending = requests.iter().map(|r| words.start(r.as_bytes())).collect::<Result<Vec<_>, _>>()?;
        for (r, p) in requests.iter().zip(pending) {
            let answer = String::from_utf8(p.wait()?)?;
            let want = format!("{} words", r.split_whitespace().count());
            if answer.starts_with(&want) {
                right += 1;
            } else {
                eprintln!("asked {r:?}, got {answer:?}");
            }
        }
    }
    println!("{right} of {count} answers right");
    Ok(())
}
