//! Reading a server-sent event stream (the parts MCP uses: `data`, and
//! events of type `message`), with a bound on an event's size.
//!
//! Hand-written because the crates that parse SSE want the body as a
//! `Stream`, which reqwest gives only with a feature this workspace does not
//! otherwise need, and none bounds what one event may hold.

use bytes::{Buf, BytesMut};

/// The largest event taken, in bytes.
pub const MAX_EVENT: usize = 16 * 1024 * 1024;

/// Why a stream stopped early.
#[derive(Debug, thiserror::Error)]
pub enum SseError {
    /// The body could not be read.
    #[error("the event stream broke off")]
    Body,
    /// An event was larger than [`MAX_EVENT`].
    #[error("an event was larger than {MAX_EVENT} bytes")]
    TooLarge,
}

/// A source of body chunks.
pub trait Chunks {
    /// The next chunk; `None` at the end.
    fn chunk(&mut self) -> impl Future<Output = Result<Option<bytes::Bytes>, SseError>> + Send;
}

impl Chunks for reqwest::Response {
    async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, SseError> {
        reqwest::Response::chunk(self)
            .await
            .map_err(|_| SseError::Body)
    }
}

/// Yields the data of each `message` event (and, for the legacy
/// transport, the `endpoint` event).
#[derive(Debug)]
pub struct EventReader<C> {
    body: C,
    buf: BytesMut,
    data: Vec<u8>,
    kind: Kind,
    done: bool,
}

/// The type of an event mcpgate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kind {
    /// `message` (or no type): a JSON-RPC message.
    #[default]
    Message,
    /// `endpoint`: where the legacy HTTP+SSE transport takes POSTs.
    Endpoint,
    /// Anything else: skipped.
    Other,
}

impl<C: Chunks> EventReader<C> {
    /// Reads events from `body`.
    pub fn new(body: C) -> Self {
        Self {
            body,
            buf: BytesMut::new(),
            data: Vec::new(),
            kind: Kind::Message,
            done: false,
        }
    }

    /// The next `message` event's data; `None` at the end of the stream.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, SseError> {
        loop {
            match self.next_event().await? {
                Some((Kind::Message, data)) => return Ok(Some(data)),
                Some(_) => {}
                None => return Ok(None),
            }
        }
    }

    /// The next event of a type mcpgate reads, with its data.
    pub async fn next_event(&mut self) -> Result<Option<(Kind, Vec<u8>)>, SseError> {
        loop {
            while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let mut line = self.buf.split_to(end + 1);
                line.truncate(end);
                if line.last() == Some(&b'\r') {
                    line.truncate(end - 1);
                }
                if let Some(event) = self.line(&line)? {
                    return Ok(Some(event));
                }
            }
            if self.done {
                return Ok(None);
            }
            if self.buf.len() > MAX_EVENT {
                return Err(SseError::TooLarge);
            }
            match self.body.chunk().await? {
                Some(chunk) => self.buf.extend_from_slice(chunk.chunk()),
                None => {
                    self.done = true;
                    // A last event without its blank line still counts.
                    self.buf.extend_from_slice(b"\n\n");
                }
            }
        }
    }

    fn line(&mut self, line: &[u8]) -> Result<Option<(Kind, Vec<u8>)>, SseError> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.data);
            let kind = std::mem::take(&mut self.kind);
            return Ok((kind != Kind::Other && !event.is_empty()).then_some((kind, event)));
        }
        if line.starts_with(b":") {
            return Ok(None);
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.data.len() + value.len() > MAX_EVENT {
                    return Err(SseError::TooLarge);
                }
                if !self.data.is_empty() {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
            }
            b"event" => {
                self.kind = match value {
                    b"message" => Kind::Message,
                    b"endpoint" => Kind::Endpoint,
                    _ => Kind::Other,
                }
            }
            _ => {}
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Parts(Vec<&'static [u8]>);

    impl Chunks for Parts {
        async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, SseError> {
            Ok((!self.0.is_empty()).then(|| bytes::Bytes::from_static(self.0.remove(0))))
        }
    }

    #[tokio::test]
    async fn events_are_read_across_chunks() {
        let mut reader = EventReader::new(Parts(vec![
            b": comment\r\nevent: mess",
            b"age\ndata: {\"a\":\ndata: 1}\n\nid: 7\ndata:",
            b" {}\n\nevent: other\ndata: x\n\ndata: last",
        ]));
        assert_eq!(
            reader.next().await.expect("ok"),
            Some(b"{\"a\":\n1}".to_vec())
        );
        assert_eq!(reader.next().await.expect("ok"), Some(b"{}".to_vec()));
        // Events of other types are skipped; a last event without its blank
        // line is kept.
        assert_eq!(reader.next().await.expect("ok"), Some(b"last".to_vec()));
        assert_eq!(reader.next().await.expect("ok"), None);
    }

    #[tokio::test]
    async fn the_legacy_endpoint_event_is_told_apart() {
        let mut reader = EventReader::new(Parts(vec![
            b"event: endpoint\ndata: /messages?sessionId=1\n\ndata: {}\n\n",
        ]));
        assert_eq!(
            reader.next_event().await.expect("ok"),
            Some((Kind::Endpoint, b"/messages?sessionId=1".to_vec()))
        );
        assert_eq!(
            reader.next_event().await.expect("ok"),
            Some((Kind::Message, b"{}".to_vec()))
        );
    }

    #[tokio::test]
    async fn a_huge_event_stops_the_stream() {
        static BIG: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
            let mut v = b"data: ".to_vec();
            v.resize(MAX_EVENT + 16, b'x');
            v
        });
        let mut reader = EventReader::new(Parts(vec![&BIG[..]]));
        assert!(matches!(reader.next().await, Err(SseError::TooLarge)));
    }
}
