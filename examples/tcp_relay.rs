//! A byte relay, for the benchmark's floor: what any proxy in front of the
//! upstream costs on this machine before it does any work of its own.
//!
//! ```sh
//! cargo run --release --example tcp_relay -- --port 9002 --to 127.0.0.1:9001
//! ```
//!
//! Listens on 127.0.0.1, opens one connection to `--to` for each client
//! connection and copies bytes both ways until either side closes: no HTTP
//! parsing, no headers, no token, no pool, one thread. Prints
//! `listening on 127.0.0.1:<port>` once it accepts connections (`--port 0`,
//! the default, takes a free port).

use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::net::{TcpListener, TcpStream};

const USAGE: &str = "usage: tcp_relay [--port PORT] --to HOST:PORT";

fn parse_args() -> Result<(u16, SocketAddr), String> {
    let mut port = 0u16;
    let mut to = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--port" | "-p" => {
                let v = value()?;
                port = v.parse().map_err(|_| format!("bad port: {v}"))?;
            }
            "--to" => {
                let v = value()?;
                to = Some(v.parse().map_err(|_| format!("bad address: {v}"))?);
            }
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    Ok((port, to.ok_or("--to is required")?))
}

async fn relay(mut client: TcpStream, to: SocketAddr) {
    let Ok(mut upstream) = TcpStream::connect(to).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let (port, to) = match parse_args() {
        Ok(parsed) => parsed,
        Err(err) => {
            if !err.is_empty() {
                eprintln!("tcp_relay: {err}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(("127.0.0.1", port)).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("tcp_relay: cannot listen on 127.0.0.1:{port}: {err}");
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("listening on {addr}"),
        Err(err) => {
            eprintln!("tcp_relay: {err}");
            return ExitCode::FAILURE;
        }
    }
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    tokio::spawn(relay(client, to));
                }
                Err(err) => eprintln!("tcp_relay: accept: {err}"),
            },
            _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
        }
    }
}
