//! A fault-injecting HTTP/1.1 proxy on 127.0.0.1, in front of the real S3-compatible server.
//!
//! Each request the client sends is matched against the proxy's [`Rule`]s; the first rule that
//! matches (and is still due, see [`When`]) decides its [`Fault`], otherwise it is relayed
//! untouched. Requests are told apart by method and path (query included), so "the first
//! attempt of each request" is well defined however the client orders or parallelises them:
//! the SDK's retries, and the pipeline's own re-reads of a broken body, repeat the same line.
//!
//! It speaks just enough HTTP for the AWS SDK and moto: keep-alive, `Content-Length` and
//! chunked bodies both ways, responses without a body (`HEAD`, 204, 304).

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answers itself with this status and S3 error code (`500 InternalError`,
    /// `503 SlowDown`); the server never sees the request.
    Status(u16, &'static str),
    /// Resets the connection (RST) once the request has arrived, without an answer.
    Reset,
    /// Relays the request, sends the response head (with its true `Content-Length`) and half
    /// the body, then closes the connection.
    Truncate,
    /// Relays the response, its body in pieces of `bytes` with `pause` between them.
    Slow { bytes: usize, pause: Duration },
    /// Relays the response head, then sends nothing more and keeps the connection open.
    Stall,
    /// Takes the request and never answers (nor closes).
    Silent,
}

/// When a matching rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// The first time each distinct request (method and path) is seen: its retry goes through.
    FirstAttempt,
    /// Every time: the request can never succeed.
    Always,
}

/// Which requests a rule applies to.
#[derive(Debug, Clone, PartialEq)]
pub struct Matcher {
    /// `GET`, `PUT`, ...; `None` for any.
    pub method: Option<&'static str>,
    /// The path (with its query) starts with this.
    pub path_prefix: String,
    /// Only requests that carry this header (lower case), when set: copies carry
    /// `x-amz-copy-source`.
    pub header: Option<&'static str>,
    /// Exclude listings (`?list-type=`), so that object reads can be targeted.
    pub objects_only: bool,
}

impl Matcher {
    /// Every request.
    pub fn any() -> Matcher {
        Matcher {
            method: None,
            path_prefix: "/".into(),
            header: None,
            objects_only: false,
        }
    }

    /// GETs of objects (not listings) under `/bucket/prefix`.
    pub fn object_gets(path_prefix: impl Into<String>) -> Matcher {
        Matcher {
            method: Some("GET"),
            path_prefix: path_prefix.into(),
            header: None,
            objects_only: true,
        }
    }

    /// Server-side copies (`PUT` with `x-amz-copy-source`) into `/bucket/prefix`.
    pub fn copies(path_prefix: impl Into<String>) -> Matcher {
        Matcher {
            method: Some("PUT"),
            path_prefix: path_prefix.into(),
            header: Some("x-amz-copy-source"),
            objects_only: true,
        }
    }

    fn matches(&self, request: &Head) -> bool {
        self.method.is_none_or(|m| m == request.method)
            && request.path.starts_with(&self.path_prefix)
            && self.header.is_none_or(|h| request.header(h).is_some())
            && !(self.objects_only && request.path.contains("list-type="))
    }
}

/// A fault for the requests a [`Matcher`] selects, [`When`] due.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub matcher: Matcher,
    pub when: When,
    pub fault: Fault,
}

impl Rule {
    pub fn new(matcher: Matcher, when: When, fault: Fault) -> Rule {
        Rule {
            matcher,
            when,
            fault,
        }
    }
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    /// Times each `METHOD path` was seen.
    seen: HashMap<String, u64>,
}

/// The running proxy; stops when dropped.
pub struct FaultProxy {
    /// `http://127.0.0.1:port`, to use as the S3 endpoint.
    pub url: String,
    state: Arc<Mutex<State>>,
    requests: Arc<AtomicU64>,
    injected: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// A proxy in front of `upstream` (`http://127.0.0.1:59100`), relaying everything until
    /// [`FaultProxy::set_rules`].
    pub async fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let state = Arc::new(Mutex::new(State::default()));
        let requests = Arc::new(AtomicU64::new(0));
        let injected = Arc::new(AtomicU64::new(0));
        let shared = Shared {
            upstream,
            state: state.clone(),
            requests: requests.clone(),
            injected: injected.clone(),
        };
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, shared.clone()));
            }
        });
        FaultProxy {
            url,
            state,
            requests,
            injected,
            task,
        }
    }

    /// Replaces the rules; the record of requests seen starts afresh.
    pub fn set_rules(&self, rules: Vec<Rule>) {
        let mut state = self.state.lock().unwrap();
        state.rules = rules;
        state.seen.clear();
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Shared {
    upstream: String,
    state: Arc<Mutex<State>>,
    requests: Arc<AtomicU64>,
    injected: Arc<AtomicU64>,
}

impl Shared {
    /// The fault for this request, if a rule is due.
    fn decide(&self, request: &Head) -> Option<Fault> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.lock().unwrap();
        let id = format!("{} {}", request.method, request.path);
        let seen = state.seen.entry(id).or_insert(0);
        *seen += 1;
        let first = *seen == 1;
        let fault = state
            .rules
            .iter()
            .find(|r| r.matcher.matches(request) && (r.when == When::Always || first))
            .map(|r| r.fault.clone());
        if fault.is_some() {
            self.injected.fetch_add(1, Ordering::Relaxed);
        }
        fault
    }
}

/// A request or response head: its first line and headers, as received.
struct Head {
    raw: Vec<u8>,
    method: String,
    path: String,
    /// For responses: the status code.
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn parse(raw: Vec<u8>) -> Head {
        let text = String::from_utf8_lossy(&raw).into_owned();
        let mut lines = text.split("\r\n");
        let first = lines.next().unwrap_or_default().to_owned();
        let mut parts = first.split(' ');
        let (a, b) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Head {
            method: a.to_owned(),
            path: b.to_owned(),
            status: b.parse().unwrap_or(0),
            raw,
            headers,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    fn length(&self) -> Option<u64> {
        self.header("content-length").and_then(|v| v.parse().ok())
    }
}

/// Reads a head up to its empty line; `None` at the end of the stream.
async fn read_head(r: &mut (impl AsyncBufRead + Unpin)) -> Option<Head> {
    let mut raw = Vec::new();
    loop {
        let start = raw.len();
        if r.read_until(b'\n', &mut raw).await.ok()? == 0 {
            return None;
        }
        if &raw[start..] == b"\r\n" {
            return Some(Head::parse(raw));
        }
    }
}

/// Reads a message body framed as `head` says (bytes as sent, chunk framing included).
async fn read_body(r: &mut (impl AsyncBufRead + Unpin), head: &Head, has_body: bool) -> Vec<u8> {
    let mut body = Vec::new();
    if !has_body {
        return body;
    }
    if head.chunked() {
        loop {
            let start = body.len();
            r.read_until(b'\n', &mut body).await.unwrap();
            let line = String::from_utf8_lossy(&body[start..]).into_owned();
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    let at = body.len();
                    if r.read_until(b'\n', &mut body).await.unwrap() == 0 || &body[at..] == b"\r\n"
                    {
                        return body;
                    }
                }
            }
            let at = body.len();
            body.resize(at + size + 2, 0);
            r.read_exact(&mut body[at..]).await.unwrap();
        }
    } else if let Some(n) = head.length() {
        body.resize(n as usize, 0);
        r.read_exact(&mut body).await.unwrap();
    } else if head.method.starts_with("HTTP/") {
        // A response without length: it runs to the end of the connection.
        r.read_to_end(&mut body).await.unwrap();
    }
    body
}

/// Serves one client connection, request after request.
async fn serve(client: TcpStream, shared: Shared) {
    let _ = client.set_nodelay(true);
    let (client_read, mut client_write) = client.into_split();
    let mut client_read = BufReader::new(client_read);
    let mut upstream: Option<(
        BufReader<tokio::net::tcp::OwnedReadHalf>,
        tokio::net::tcp::OwnedWriteHalf,
    )> = None;
    while let Some(request) = read_head(&mut client_read).await {
        let fault = shared.decide(&request);
        if matches!(fault, Some(Fault::Reset)) {
            // RST instead of FIN: what a crashed server or a middlebox does.
            let client = client_read.into_inner().reunite(client_write).unwrap();
            let _ = client.set_zero_linger();
            drop(client);
            return;
        }
        if matches!(fault, Some(Fault::Silent)) {
            hold(&mut client_read).await;
            return;
        }
        let body = read_body(&mut client_read, &request, true).await;
        if let Some(Fault::Status(code, s3_code)) = fault {
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{s3_code}</Code><Message>injected by the fault proxy</Message><RequestId>fault</RequestId></Error>"
            );
            let reason = if code == 503 {
                "Slow Down"
            } else {
                "Internal Server Error"
            };
            let response = format!(
                "HTTP/1.1 {code} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{xml}",
                xml.len()
            );
            if client_write.write_all(response.as_bytes()).await.is_err() {
                return;
            }
            continue;
        }
        // Relay to the server, on this client connection's own upstream connection.
        if upstream.is_none() {
            let server = TcpStream::connect(&shared.upstream).await.unwrap();
            let _ = server.set_nodelay(true);
            let (r, w) = server.into_split();
            upstream = Some((BufReader::new(r), w));
        }
        let Some((server_read, server_write)) = upstream.as_mut() else {
            return;
        };
        if server_write.write_all(&request.raw).await.is_err()
            || server_write.write_all(&body).await.is_err()
        {
            return;
        }
        let mut response = match read_head(server_read).await {
            Some(r) => r,
            None => return,
        };
        while response.status == 100 {
            if client_write.write_all(&response.raw).await.is_err() {
                return;
            }
            response = match read_head(server_read).await {
                Some(r) => r,
                None => return,
            };
        }
        let has_body = request.method != "HEAD" && !matches!(response.status, 204 | 304);
        let response_body = read_body(server_read, &response, has_body).await;
        let closes = has_body && !response.chunked() && response.length().is_none();
        if client_write.write_all(&response.raw).await.is_err() {
            return;
        }
        match fault {
            Some(Fault::Truncate) if !response_body.is_empty() => {
                let _ = client_write
                    .write_all(&response_body[..response_body.len() / 2])
                    .await;
                let _ = client_write.shutdown().await;
                return;
            }
            Some(Fault::Slow { bytes, pause }) => {
                for piece in response_body.chunks(bytes.max(1)) {
                    if client_write.write_all(piece).await.is_err() {
                        return;
                    }
                    let _ = client_write.flush().await;
                    tokio::time::sleep(pause).await;
                }
            }
            Some(Fault::Stall) if has_body => {
                let _ = client_write.flush().await;
                hold(&mut client_read).await;
                return;
            }
            _ => {
                if client_write.write_all(&response_body).await.is_err() {
                    return;
                }
            }
        }
        if closes {
            let _ = client_write.shutdown().await;
            return;
        }
    }
}

/// Keeps a connection open, answering nothing, until the client gives up on it.
async fn hold(client: &mut (impl AsyncBufRead + Unpin)) {
    let mut sink = [0u8; 4096];
    while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
}
