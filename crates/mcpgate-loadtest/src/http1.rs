//! Just enough HTTP/1.1 for the driver: pre-serialised requests and an
//! incremental response parser (Content-Length and chunked bodies). Headers
//! are parsed by `httparse`, the parser hyper itself uses.

use std::fmt;

/// One request, serialised once and written as-is for every send.
#[derive(Debug, Clone, Default)]
pub struct Request {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    /// A JSON POST body; `content-type` and `content-length` are added by
    /// [`Request::to_bytes`].
    pub fn json(body: &serde_json::Value) -> Self {
        Self {
            headers: Vec::new(),
            body: body.to_string().into_bytes(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// `POST {path}` to `host` with this request's headers and body.
    pub fn to_bytes(&self, host: &str, path: &str) -> Vec<u8> {
        let mut out = format!(
            "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n\
             accept: application/json, text/event-stream\r\n"
        );
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str(&format!("content-length: {}\r\n\r\n", self.body.len()));
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// A complete response: status, the one header the load test reads, and
/// the decoded body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub session_id: Option<String>,
    pub body: Vec<u8>,
    /// The server said `connection: close`.
    pub close: bool,
}

impl Response {
    /// Status 200 and a JSON-RPC result somewhere in the body (a JSON body
    /// or an SSE event).
    pub fn is_good(&self) -> bool {
        self.status == 200 && contains(&self.body, b"\"result\"")
    }

    /// A JSON-RPC "method not found": the server does not offer the method
    /// on this wire, which the benchmark reports rather than fails on.
    pub fn is_method_not_found(&self) -> bool {
        contains(&self.body, b"\"code\":-32601")
    }

    /// The first `n` bytes of the body, lossily as text, for error reports.
    pub fn body_prefix(&self, n: usize) -> String {
        String::from_utf8_lossy(&self.body[..self.body.len().min(n)]).into_owned()
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A response the parser cannot read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    Head(httparse::Error),
    ChunkSize,
    ChunkTerminator,
    ContentLength,
    /// Neither Content-Length nor chunked: the body would run to the end of
    /// the connection, which the driver does not support.
    NoLength(u16),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Head(e) => write!(f, "bad response head: {e}"),
            Self::ChunkSize => f.write_str("bad chunk size line"),
            Self::ChunkTerminator => f.write_str("a chunk not followed by CRLF"),
            Self::ContentLength => f.write_str("bad content-length"),
            Self::NoLength(s) => write!(f, "status {s} with a body of unknown length"),
        }
    }
}

impl std::error::Error for ParseError {}

enum Framing {
    Length(usize),
    Chunked,
}

/// Parses one response from the front of `buf`: `Ok(None)` while it is
/// incomplete, else the response and how many bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(Response, usize)>, ParseError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut head = httparse::Response::new(&mut headers);
    let head_len = match head.parse(buf).map_err(ParseError::Head)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let status = head.code.unwrap_or(0);
    let mut framing = None;
    let mut session_id = None;
    let mut close = false;
    for h in head.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or(ParseError::ContentLength)?;
            framing.get_or_insert(Framing::Length(n));
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked wins over any Content-Length (RFC 9112, 6.3).
            if contains(&h.value.to_ascii_lowercase(), b"chunked") {
                framing = Some(Framing::Chunked);
            }
        } else if h.name.eq_ignore_ascii_case("mcp-session-id") {
            session_id = Some(String::from_utf8_lossy(h.value).into_owned());
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = h.value.eq_ignore_ascii_case(b"close");
        }
    }
    let framing = match framing {
        Some(f) => f,
        // These never have a body.
        None if status == 204 || status == 304 || (100..200).contains(&status) => {
            Framing::Length(0)
        }
        None => return Err(ParseError::NoLength(status)),
    };
    let rest = &buf[head_len..];
    let (body, body_len) = match framing {
        Framing::Length(n) if rest.len() >= n => (rest[..n].to_vec(), n),
        Framing::Length(_) => return Ok(None),
        Framing::Chunked => match dechunk(rest)? {
            Some(done) => done,
            None => return Ok(None),
        },
    };
    let response = Response {
        status,
        session_id,
        body,
        close,
    };
    Ok(Some((response, head_len + body_len)))
}

/// Decodes a chunked body from the front of `buf`: the body and the bytes
/// consumed, or `None` while incomplete. Trailers are skipped.
fn dechunk(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, ParseError> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let (size_len, size) = match httparse::parse_chunk_size(&buf[at..]) {
            Ok(httparse::Status::Complete(v)) => v,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(ParseError::ChunkSize),
        };
        at += size_len;
        let size = usize::try_from(size).map_err(|_| ParseError::ChunkSize)?;
        if size == 0 {
            // Trailer fields, then an empty line.
            loop {
                let Some(eol) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                at += eol + 2;
                if eol == 0 {
                    return Ok(Some((body, at)));
                }
            }
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size;
        if &buf[at..at + 2] != b"\r\n" {
            return Err(ParseError::ChunkTerminator);
        }
        at += 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(raw: &[u8]) -> (Response, usize) {
        parse(raw).expect("valid").expect("complete")
    }

    #[test]
    fn content_length_body() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 13\r\n\r\n{\"result\":{}}EXTRA";
        let (r, used) = parsed(raw);
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"{\"result\":{}}");
        assert_eq!(used, raw.len() - 5, "the next response's bytes are left");
        assert!(r.is_good());
        assert!(!r.close);
    }

    #[test]
    fn chunked_sse_body_with_session_header() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nmcp-session-id: abc\r\n\
            transfer-encoding: chunked\r\n\r\n5\r\ndata:\r\n17\r\n {\"id\":1,\"result\":{}}\n\n\r\n0\r\n\r\n";
        let (r, used) = parsed(raw);
        assert_eq!(used, raw.len());
        assert_eq!(r.session_id.as_deref(), Some("abc"));
        assert_eq!(r.body, b"data: {\"id\":1,\"result\":{}}\n\n");
        assert!(r.is_good());
    }

    #[test]
    fn chunked_with_extension_and_trailer() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nx-t: 1\r\n\r\n";
        let (r, used) = parsed(raw);
        assert_eq!((r.body.as_slice(), used), (&b"abc"[..], raw.len()));
    }

    #[test]
    fn incomplete_at_every_cut() {
        let raw: &[u8] =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nwxyz\r\n0\r\n\r\n";
        for cut in 0..raw.len() {
            assert_eq!(parse(&raw[..cut]), Ok(None), "cut at {cut}");
        }
        let raw: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nwxyz";
        for cut in 0..raw.len() {
            assert_eq!(parse(&raw[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn accepted_without_body_and_errors() {
        let (r, _) = parsed(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n");
        assert_eq!((r.status, r.body.len()), (202, 0));
        assert!(!r.is_good());
        let (r, _) = parsed(
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 46\r\n\r\n{\"id\":1,\"error\":{\"code\":-32601,\"message\":\"x\"}}",
        );
        assert!(r.is_method_not_found() && !r.is_good());
        let (r, _) = parsed(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n");
        assert!(r.close && r.body.is_empty());
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\n\r\n"),
            Err(ParseError::NoLength(200))
        );
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n"),
            Err(ParseError::ContentLength)
        );
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabXY"),
            Err(ParseError::ChunkTerminator)
        );
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"),
            Err(ParseError::ChunkSize)
        );
    }

    #[test]
    fn request_bytes() {
        let req = Request::json(&serde_json::json!({"a": 1})).header("mcp-method", "ping");
        let text = String::from_utf8(req.to_bytes("127.0.0.1:9", "/mcp")).expect("utf-8");
        assert!(text.starts_with("POST /mcp HTTP/1.1\r\nhost: 127.0.0.1:9\r\n"));
        assert!(text.contains("\r\nmcp-method: ping\r\n"));
        assert!(text.ends_with("content-length: 7\r\n\r\n{\"a\":1}"));
    }
}
