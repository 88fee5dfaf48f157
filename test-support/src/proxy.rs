//! A minimal loopback HTTP forward proxy, counting what passes through, to
//! test that `HTTP_PROXY` (absolute-form requests) and `HTTPS_PROXY`
//! (`CONNECT` tunnels) are honoured for every request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

pub struct ForwardProxy {
    url: String,
    requests: Arc<AtomicU64>,
    _thread: std::thread::JoinHandle<()>,
}

impl ForwardProxy {
    pub fn start() -> ForwardProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicU64::new(0));
        let counter = requests.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                while let Ok((conn, _)) = listener.accept().await {
                    let counter = counter.clone();
                    tokio::spawn(async move {
                        let _ = forward(conn, counter).await;
                    });
                }
            });
        });
        ForwardProxy {
            url,
            requests,
            _thread: thread,
        }
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

/// One request per connection: rewrite `GET http://host/path` to `GET /path`
/// on a fresh connection to `host`, or open a `CONNECT host:port` tunnel;
/// then relay bytes both ways.
async fn forward(conn: TcpStream, counter: Arc<AtomicU64>) -> std::io::Result<()> {
    let mut client = BufReader::new(conn);
    let mut line = String::new();
    client.read_line(&mut line).await?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method.eq_ignore_ascii_case("CONNECT") {
        return tunnel(client, target, counter).await;
    }
    let Some(rest) = target.strip_prefix("http://") else {
        return Ok(());
    };
    let (authority, path) = rest
        .split_once('/')
        .map(|(a, p)| (a, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    counter.fetch_add(1, Ordering::SeqCst);
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    loop {
        let mut h = String::new();
        if client.read_line(&mut h).await? == 0 || h == "\r\n" {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if !lower.starts_with("proxy-") && !lower.starts_with("connection:") {
            head.push_str(&h);
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut upstream = TcpStream::connect(resolve(authority)).await?;
    upstream.write_all(head.as_bytes()).await?;
    let mut client = client.into_inner();
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    Ok(())
}

/// `CONNECT host:port`: answer 200, then pass the (TLS) bytes through untouched.
async fn tunnel(
    mut client: BufReader<TcpStream>,
    authority: &str,
    counter: Arc<AtomicU64>,
) -> std::io::Result<()> {
    loop {
        let mut h = String::new();
        if client.read_line(&mut h).await? == 0 || h == "\r\n" {
            break;
        }
    }
    counter.fetch_add(1, Ordering::SeqCst);
    let mut upstream = TcpStream::connect(resolve(authority)).await?;
    let early = client.buffer().to_vec();
    let mut client = client.into_inner();
    client
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await?;
    upstream.write_all(&early).await?;
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    Ok(())
}

/// `openwrk.test:<port>` is loopback, for the proxy only (see [`crate::tls::PROXIED_HOST`]).
fn resolve(authority: &str) -> String {
    match authority.rsplit_once(':') {
        Some((host, port)) if host == crate::tls::PROXIED_HOST => format!("127.0.0.1:{port}"),
        _ => authority.to_string(),
    }
}
