//! The test upstream as a program, for benchmarks and trying routes by hand:
//!
//! ```sh
//! cargo run --release --example upstream -- --port 9001 --name a
//! ```
//!
//! Serves on 127.0.0.1 until killed (or Ctrl-C); prints
//! `listening on 127.0.0.1:<port>` once it accepts connections (`--port 0`,
//! the default, takes a free port). What it answers: see
//! `tests/contract/upstream.rs`.

#[path = "../tests/contract/upstream.rs"]
#[allow(
    clippy::expect_used,
    reason = "the test suite's upstream, shared as it is: it stops with its message when it cannot listen"
)]
mod upstream;

use std::process::ExitCode;

const USAGE: &str = "usage: upstream [--port PORT] [--name NAME]";

fn parse_args() -> Result<(u16, String), String> {
    let mut port = 0u16;
    let mut name = String::from("upstream");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
            None => (arg, None),
        };
        let mut value = |key: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{key} needs a value"))
        };
        match key.as_str() {
            "--port" | "-p" => {
                let v = value(&key)?;
                port = v.parse().map_err(|_| format!("bad port: {v}"))?;
            }
            "--name" | "-n" => name = value(&key)?,
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    Ok((port, name))
}

#[tokio::main]
async fn main() -> ExitCode {
    let (port, name) = match parse_args() {
        Ok(parsed) => parsed,
        Err(msg) if msg.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("upstream: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("upstream: cannot bind 127.0.0.1:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = upstream::Upstream::start_on(listener, &name).await;
    println!("listening on {}", server.addr);
    let _ = tokio::signal::ctrl_c().await;
    drop(server);
    ExitCode::SUCCESS
}
