//! Times one password verification with authgate's own PBKDF2 code, for the
//! benchmark's sign-in ceiling (`bench/suite.py`):
//!
//! ```sh
//! cargo run --release --example hash_time -- '<stored $pbkdf2-sha256$ hash>' '<password>' [repeats]
//! ```
//!
//! Verifies the password against the stored hash `repeats` times (default 5)
//! on one thread and prints the fastest time in seconds. Exits 1 when the
//! password does not match: a ceiling timed on a failing check would mean
//! nothing.

use std::process::ExitCode;
use std::time::Instant;

use authgate::password::PasswordHasher;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (stored, password) = match (args.first(), args.get(1)) {
        (Some(stored), Some(password)) => (stored, password),
        _ => {
            eprintln!("usage: hash_time STORED_HASH PASSWORD [REPEATS]");
            return ExitCode::from(2);
        }
    };
    let repeats: u32 = match args.get(2).map(|r| r.parse()) {
        None => 5,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("hash_time: REPEATS must be a positive whole number");
            return ExitCode::from(2);
        }
    };
    // The legacy salt only matters for hashes made by the old service.
    let hasher = PasswordHasher::new(1, b"");
    let mut best = f64::INFINITY;
    for _ in 0..repeats {
        let started = Instant::now();
        let verified = hasher.verify(stored, password);
        best = best.min(started.elapsed().as_secs_f64());
        match verified {
            Ok(true) => {}
            Ok(false) => {
                eprintln!("hash_time: the password does not match the hash");
                return ExitCode::FAILURE;
            }
            Err(err) => {
                eprintln!("hash_time: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!("{best:.6}");
    ExitCode::SUCCESS
}
