//! A tiny plain-HTTP app and client for the network-namespace test (`tests/tests/netns.rs`),
//! started inside a namespace with `ip netns exec`, so it has to be a process of its own.
//!
//! - `trustmesh-netns-app serve PORT...` listens on `0.0.0.0:PORT` for each port and answers
//!   every request with JSON of what it saw: `{"port", "method", "path", "host",
//!   "peer_identity": [...]}`. It prints one line per request to stdout (`PORT METHOD PATH`).
//! - `trustmesh-netns-app get URL` sends `GET` to `http://IP:PORT/path` as a plain app would
//!   and prints the status on the first line and the body after it. Exit 0 when an HTTP
//!   response came back, 3 when none did (refused, reset, closed, timed out).
//!
//! Only std: HTTP/1.1 with `connection: close`, one thread per connection.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

const IO_TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") if args.len() > 1 => serve(&args[1..]),
        Some("get") if args.len() == 2 => get(&args[1]),
        _ => {
            eprintln!("usage: trustmesh-netns-app serve PORT... | get http://IP:PORT/PATH");
            ExitCode::from(2)
        }
    }
}

fn serve(ports: &[String]) -> ExitCode {
    let mut threads = Vec::new();
    for p in ports {
        let Ok(port) = p.parse::<u16>() else {
            eprintln!("bad port {p:?}");
            return ExitCode::from(2);
        };
        let listener = match TcpListener::bind(("0.0.0.0", port)) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("binding 0.0.0.0:{port}: {e}");
                return ExitCode::from(1);
            }
        };
        threads.push(std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || answer(stream, port));
            }
        }));
    }
    println!("serving on {ports:?}");
    for t in threads {
        let _ = t.join();
    }
    ExitCode::SUCCESS
}

fn answer(stream: TcpStream, port: u16) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let (mut host, mut peer) = (String::new(), Vec::new());
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
            if name == "host" {
                host = value;
            } else if name == "x-trustmesh-peer-identity" {
                peer.push(value);
            }
        }
    }
    println!("{port} {method} {path}");
    let body = serde_json::json!({
        "port": port, "method": method, "path": path, "host": host, "peer_identity": peer,
    })
    .to_string();
    let resp = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = stream;
    let _ = stream.write_all(resp.as_bytes());
}

fn get(url: &str) -> ExitCode {
    let Some(rest) = url.strip_prefix("http://") else {
        eprintln!("only http://IP:PORT/PATH URLs");
        return ExitCode::from(2);
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let Ok(addr) = authority.parse::<SocketAddr>() else {
        eprintln!("{authority:?} is not IP:PORT");
        return ExitCode::from(2);
    };
    match fetch(addr, authority, path) {
        Ok((status, body)) => {
            println!("{status}\n{body}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("no HTTP response from {addr}: {e}");
            ExitCode::from(3)
        }
    }
}

fn fetch(addr: SocketAddr, authority: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nhost: {authority}\r\nuser-agent: trustmesh-netns-app\r\n\
         connection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| {
            std::io::Error::other(format!(
                "not an HTTP response ({} bytes: {:?})",
                raw.len(),
                text.chars().take(60).collect::<String>()
            ))
        })?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Ok((
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    ))
}

/// The payload of a `transfer-encoding: chunked` body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}
