//! A minimal loopback HTTP forward proxy (absolute-form requests), counting
//! what passes through, to test that `HTTP_PROXY` is honoured.

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
/// on a fresh connection to `host`, then relay bytes both ways.
async fn forward(conn: TcpStream, counter: Arc<AtomicU64>) -> std::io::Result<()> {
    let mut client = BufReader::new(conn);
    let mut line = String::new();
    client.read_line(&mut line).await?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
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
    let mut upstream = TcpStream::connect(authority).await?;
    upstream.write_all(head.as_bytes()).await?;
    let mut client = client.into_inner();
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    Ok(())
}
