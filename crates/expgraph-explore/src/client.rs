//! A minimal blocking HTTP/1.1 GET, enough to test and load-test the explorer over a real
//! socket without an HTTP client dependency (`Connection: close`, chunked bodies decoded).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

/// A response: status, header block and body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// The header lines, as received.
    pub headers: String,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

fn malformed(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("malformed HTTP response: {what}"))
}

/// `GET path` from the server at `addr`.
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<Reply> {
    let mut stream = TcpStream::connect(addr)?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    read_reply(stream)
}

/// `POST path` of an HTML form's fields (`application/x-www-form-urlencoded`; `fields` are
/// sent as given, so they must already be URL-encoded).
pub fn post_form(addr: SocketAddr, path: &str, fields: &[(&str, &str)]) -> std::io::Result<Reply> {
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let body = body.join("&");
    let mut stream = TcpStream::connect(addr)?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: \
         application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    read_reply(stream)
}

fn read_reply(mut stream: TcpStream) -> std::io::Result<Reply> {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| malformed("no header end"))?;
    let headers = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status =
        headers.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| malformed("no status"))?;
    let mut body = raw[split + 4..].to_vec();
    if headers.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = unchunk(&body)?;
    }
    Ok(Reply { status, headers, body })
}

fn unchunk(mut data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let end = data.windows(2).position(|w| w == b"\r\n").ok_or_else(|| malformed("chunk size"))?;
        let size = std::str::from_utf8(&data[..end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .ok_or_else(|| malformed("chunk size"))?;
        data = &data[end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err(malformed("short chunk"));
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Every `href="…"` and `src="…"` of an HTML page, `&amp;` decoded: what a crawl follows.
pub fn links(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["href=\"", "src=\""] {
        let mut rest = html;
        while let Some(at) = rest.find(attr) {
            rest = &rest[at + attr.len()..];
            let Some(end) = rest.find('"') else { break };
            out.push(rest[..end].replace("&amp;", "&"));
            rest = &rest[end..];
        }
    }
    out
}
