//! Raw-socket clients for streams: reading until a marker, and a minimal
//! WebSocket client (RFC 6455), enough for an echo.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::WAIT;

/// Reads from `stream` until `needle` has arrived (bounded); returns all
/// bytes read.
pub async fn read_until(stream: &mut TcpStream, needle: &[u8]) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        while !seen.windows(needle.len()).any(|w| w == needle) {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(
                n > 0,
                "connection closed before {:?}; got {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no {:?} within {WAIT:?}; got {:?}",
            String::from_utf8_lossy(needle),
            String::from_utf8_lossy(&seen)
        )
    });
    seen
}

// ---- a minimal WebSocket client (RFC 6455), enough for an echo ----------

pub struct WebSocket {
    pub stream: TcpStream,
}

impl WebSocket {
    pub async fn connect(addr: SocketAddr, host: &str, path: &str) -> Self {
        Self::connect_with(addr, host, path, &[]).await
    }

    /// [`WebSocket::connect`] with `extra` request headers.
    pub async fn connect_with(
        addr: SocketAddr,
        host: &str,
        path: &str,
        extra: &[(&str, &str)],
    ) -> Self {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let extra: String = extra
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let head = read_until(&mut stream, b"\r\n\r\n").await;
        let head = String::from_utf8_lossy(&head).to_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(head.contains("upgrade: websocket"), "{head}");
        assert!(head.contains("connection: upgrade"), "{head}");
        // The RFC 6455 example key and its accept value.
        assert!(
            head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{head}"
        );
        assert!(head.ends_with("\r\n\r\n"), "no frame before a message");
        Self { stream }
    }

    pub async fn send(&mut self, opcode: u8, payload: &[u8]) {
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        let mut frame = vec![0x80 | opcode];
        assert!(payload.len() < 126, "short frames only");
        frame.push(0x80 | payload.len() as u8);
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await.unwrap();
    }

    pub async fn receive(&mut self) -> (u8, Vec<u8>) {
        tokio::time::timeout(WAIT, async {
            let mut head = [0u8; 2];
            self.stream.read_exact(&mut head).await.unwrap();
            let len = usize::from(head[1] & 0x7F);
            assert!(len < 126, "short frames only");
            let mut payload = vec![0u8; len];
            self.stream.read_exact(&mut payload).await.unwrap();
            (head[0] & 0x0F, payload)
        })
        .await
        .expect("no WebSocket frame in time")
    }

    pub async fn echo(&mut self, text: &str) {
        self.send(0x1, text.as_bytes()).await;
        assert_eq!(self.receive().await, (0x1, text.as_bytes().to_vec()));
    }
}
