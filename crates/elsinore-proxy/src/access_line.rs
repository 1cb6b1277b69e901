//! One access-log line, formatted straight into a byte buffer: as text
//! (`<timestamp>  INFO elsinore::access: request client=… host=… …`, the
//! shape tracing's text formatter gave it) or as one JSON object (the keys
//! tracing's JSON formatter gave it: `timestamp`, `level`, `target`,
//! `message` and the fields). No allocation, no tracing: this runs once per
//! request on the request thread, into that thread's buffer.
//!
//! Values are escaped so that no path can break the format: in text, a
//! byte that is not printable ASCII, a space, `"` or `\` becomes `\xHH`
//! (nginx's `escape=default`), so a line is always one line of
//! whitespace-separated `key=value` fields; in JSON, strings are escaped
//! as RFC 8259 says.

use std::cell::Cell;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use elsinore_config::LogFormat;

use crate::access::ACCESS_TARGET;

/// What one access-log line says, borrowed from the finished request.
pub(crate) struct Line<'a> {
    /// When the line is written (the response is complete).
    pub(crate) at: SystemTime,
    /// The connection's peer.
    pub(crate) peer: SocketAddr,
    /// The client a trusted proxy named, when it is not the peer itself.
    pub(crate) named_client: Option<IpAddr>,
    /// The routed host, `-` when none.
    pub(crate) host: &'a str,
    pub(crate) project: &'a str,
    pub(crate) handler: &'a str,
    pub(crate) method: &'a str,
    /// The path as the client sent it.
    pub(crate) path: &'a str,
    /// The query, secrets already redacted.
    pub(crate) query: Option<&'a str>,
    pub(crate) status: u16,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) total: Duration,
    /// Until the handler's response headers, when a handler was asked.
    pub(crate) handler_time: Option<Duration>,
    /// The `rate_limits` scope that refused the request (`per_ip`, …).
    pub(crate) limited: Option<&'static str>,
    pub(crate) request_id: &'a str,
    /// The W3C trace id (32 hex digits), the client's or a new one.
    pub(crate) trace: Option<&'a [u8; 32]>,
}

impl Line<'_> {
    /// Appends the line, `\n` included, in `format`.
    pub(crate) fn write(&self, format: LogFormat, out: &mut Vec<u8>) {
        match format {
            LogFormat::Text => self.write_text(out),
            LogFormat::Json => self.write_json(out),
        }
    }

    fn write_text(&self, out: &mut Vec<u8>) {
        write_timestamp(self.at, out);
        out.extend_from_slice(b"  INFO ");
        out.extend_from_slice(ACCESS_TARGET.as_bytes());
        out.extend_from_slice(b": request client=");
        // Addresses never need escaping.
        match self.named_client {
            Some(client) => {
                ip_addr(client, out);
                out.extend_from_slice(b" peer=");
                socket_addr(self.peer, out);
            }
            None => socket_addr(self.peer, out),
        }
        for (key, value) in [
            (" host=", self.host),
            (" project=", self.project),
            (" handler=", self.handler),
            (" method=", self.method),
            (" path=", self.path),
        ] {
            out.extend_from_slice(key.as_bytes());
            text_value(value, out);
        }
        if let Some(query) = self.query {
            out.push(b'?');
            text_value(query, out);
        }
        out.extend_from_slice(b" status=");
        number(u64::from(self.status), out);
        out.extend_from_slice(b" bytes_in=");
        number(self.bytes_in, out);
        out.extend_from_slice(b" bytes_out=");
        number(self.bytes_out, out);
        out.extend_from_slice(b" total_ms=");
        millis(self.total, out);
        if let Some(handler_time) = self.handler_time {
            out.extend_from_slice(b" handler_ms=");
            millis(handler_time, out);
        }
        if let Some(scope) = self.limited {
            out.extend_from_slice(b" limited=");
            out.extend_from_slice(scope.as_bytes());
        }
        out.extend_from_slice(b" request_id=");
        text_value(self.request_id, out);
        if let Some(trace) = self.trace {
            // Hex digits only: never needs escaping.
            out.extend_from_slice(b" trace=");
            out.extend_from_slice(trace);
        }
        out.push(b'\n');
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"timestamp\":\"");
        write_timestamp(self.at, out);
        out.extend_from_slice(b"\",\"level\":\"INFO\",\"target\":\"");
        out.extend_from_slice(ACCESS_TARGET.as_bytes());
        out.extend_from_slice(b"\",\"message\":\"request\",\"client\":\"");
        match self.named_client {
            Some(client) => {
                ip_addr(client, out);
                out.extend_from_slice(b"\",\"peer\":\"");
                socket_addr(self.peer, out);
            }
            None => socket_addr(self.peer, out),
        }
        out.push(b'"');
        for (key, value) in [
            (",\"host\":", self.host),
            (",\"project\":", self.project),
            (",\"handler\":", self.handler),
            (",\"method\":", self.method),
        ] {
            out.extend_from_slice(key.as_bytes());
            json_string(&[value], out);
        }
        out.extend_from_slice(b",\"path\":");
        match self.query {
            Some(query) => json_string(&[self.path, "?", query], out),
            None => json_string(&[self.path], out),
        }
        out.extend_from_slice(b",\"status\":");
        number(u64::from(self.status), out);
        out.extend_from_slice(b",\"bytes_in\":");
        number(self.bytes_in, out);
        out.extend_from_slice(b",\"bytes_out\":");
        number(self.bytes_out, out);
        out.extend_from_slice(b",\"total_ms\":");
        millis(self.total, out);
        if let Some(handler_time) = self.handler_time {
            out.extend_from_slice(b",\"handler_ms\":");
            millis(handler_time, out);
        }
        if let Some(scope) = self.limited {
            out.extend_from_slice(b",\"limited\":");
            json_string(&[scope], out);
        }
        out.extend_from_slice(b",\"request_id\":");
        json_string(&[self.request_id], out);
        if let Some(trace) = self.trace {
            out.extend_from_slice(b",\"trace\":\"");
            out.extend_from_slice(trace);
            out.push(b'"');
        }
        out.extend_from_slice(b"}\n");
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// The bytes a text value keeps as they are: visible ASCII except `"`
/// and `\`. A table: one load per byte instead of three comparisons.
const TEXT_PLAIN: [bool; 256] = {
    let mut plain = [false; 256];
    let mut byte = 0x21;
    while byte <= 0x7e {
        plain[byte] = byte != b'"' as usize && byte != b'\\' as usize;
        byte += 1;
    }
    plain
};

/// `value` with every byte that could split or blur a `key=value` field
/// written as `\xHH`. The bytes between two escapes go in one copy: a
/// push per byte cost more than the rest of the line.
fn text_value(value: &str, out: &mut Vec<u8>) {
    let mut rest = value.as_bytes();
    while let Some(at) = rest.iter().position(|&byte| !TEXT_PLAIN[usize::from(byte)]) {
        let byte = rest[at];
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(&[
            b'\\',
            b'x',
            HEX[usize::from(byte >> 4)],
            HEX[usize::from(byte & 0xf)],
        ]);
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
}

/// The concatenation of `parts` as one JSON string, quotes included. The
/// bytes between two escapes go in one copy.
fn json_string(parts: &[&str], out: &mut Vec<u8>) {
    out.push(b'"');
    for part in parts {
        let bytes = part.as_bytes();
        let mut clean = 0;
        for (at, &byte) in bytes.iter().enumerate() {
            let escaped: &[u8] = match byte {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0..=0x1f | 0x7f => &[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(byte >> 4)],
                    HEX[usize::from(byte & 0xf)],
                ],
                // UTF-8 as it is: `part` is a `str`.
                _ => continue,
            };
            out.extend_from_slice(&bytes[clean..at]);
            out.extend_from_slice(escaped);
            clean = at + 1;
        }
        out.extend_from_slice(&bytes[clean..]);
    }
    out.push(b'"');
}

/// `ip` as `Display` writes it; IPv4 without the formatter (about 1,000
/// instructions through `core::fmt`, a fifth of the whole line).
fn ip_addr(ip: IpAddr, out: &mut Vec<u8>) {
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, c, d] = ip.octets();
            octet(a, out);
            for byte in [b, c, d] {
                out.push(b'.');
                octet(byte, out);
            }
        }
        // Writing into a Vec cannot fail.
        IpAddr::V6(ip) => {
            let _ = write!(out, "{ip}");
        }
    }
}

/// `byte` in decimal, no leading zeros.
fn octet(byte: u8, out: &mut Vec<u8>) {
    if byte >= 100 {
        out.push(b'0' + byte / 100);
    }
    if byte >= 10 {
        out.push(b'0' + byte / 10 % 10);
    }
    out.push(b'0' + byte % 10);
}

/// `addr` as `Display` writes it (`1.2.3.4:80`, `[::1]:80`).
fn socket_addr(addr: SocketAddr, out: &mut Vec<u8>) {
    match addr {
        SocketAddr::V4(addr) => {
            ip_addr(IpAddr::V4(*addr.ip()), out);
            out.push(b':');
            number(u64::from(addr.port()), out);
        }
        SocketAddr::V6(addr) => {
            let _ = write!(out, "{addr}");
        }
    }
}

fn number(value: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Milliseconds with microsecond precision, always with a decimal point
/// (`12.092`, `3.000`): a JSON reader sees a float every time.
fn millis(duration: Duration, out: &mut Vec<u8>) {
    let micros = duration.as_micros();
    let whole = u64::try_from(micros / 1000).unwrap_or(u64::MAX);
    number(whole, out);
    out.push(b'.');
    // < 1000: always three digits.
    padded((micros % 1000) as u32, 3, out);
}

/// `value` in `width` decimal digits, zero-padded (`value` fits).
fn padded(value: u32, width: usize, out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + width, b'0');
    let mut value = value;
    for at in (start..start + width).rev() {
        out[at] = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// RFC 3339 in UTC with microseconds, as tracing wrote it:
/// `2026-11-22T06:05:30.838441Z`.
///
/// The part up to the second is made once a second per thread and copied
/// (nginx caches its `$time_local` the same way): the date arithmetic and
/// twelve digits cost more than the rest of a timestamp.
fn write_timestamp(at: SystemTime, out: &mut Vec<u8>) {
    thread_local! {
        /// The second last written and its `YYYY-MM-DDTHH:MM:SS.` text.
        static SECOND: Cell<(u64, [u8; 20])> = const { Cell::new((u64::MAX, [0; 20])) };
    }
    // A clock before 1970 is logged as 1970.
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (cached, mut prefix) = SECOND.get();
    if cached != secs {
        let mut text = Vec::with_capacity(20);
        second_prefix(secs, &mut text);
        prefix.copy_from_slice(&text);
        SECOND.set((secs, prefix));
    }
    out.extend_from_slice(&prefix);
    padded(since.subsec_micros(), 6, out);
    out.push(b'Z');
}

/// `YYYY-MM-DDTHH:MM:SS.` (20 bytes) for `secs` after the epoch.
fn second_prefix(secs: u64, out: &mut Vec<u8>) {
    let (year, month, day) = civil_from_days(secs / 86_400);
    let of_day = (secs % 86_400) as u32;
    padded(year, 4, out);
    out.push(b'-');
    padded(month, 2, out);
    out.push(b'-');
    padded(day, 2, out);
    out.push(b'T');
    padded(of_day / 3600, 2, out);
    out.push(b':');
    padded(of_day / 60 % 60, 2, out);
    out.push(b':');
    padded(of_day % 60, 2, out);
    out.push(b'.');
}

/// The proleptic Gregorian date of day `days` after 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u32, u32, u32) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (
        u32::try_from(year).unwrap_or(9999).min(9999),
        month as u32,
        day as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(path: &str, query: Option<&str>) -> Line<'static> {
        let path: &'static str = Box::leak(path.to_owned().into_boxed_str());
        let query = query.map(|q| &*Box::leak(q.to_owned().into_boxed_str()));
        Line {
            // 2026-11-22T06:05:30.838441Z
            at: UNIX_EPOCH + Duration::from_micros(1_795_327_530_838_441),
            peer: "127.0.0.1:34728".parse().expect("addr"),
            named_client: None,
            host: "blog.localhost",
            project: "horatio",
            handler: "web",
            method: "GET",
            path,
            query,
            status: 200,
            bytes_in: 0,
            bytes_out: 674,
            total: Duration::from_micros(12_092),
            handler_time: Some(Duration::from_micros(11_836)),
            limited: None,
            request_id: "927f7573000000000000",
            trace: None,
        }
    }

    fn text(line: &Line<'_>) -> String {
        let mut out = Vec::new();
        line.write(LogFormat::Text, &mut out);
        String::from_utf8(out).expect("UTF-8")
    }

    fn json(line: &Line<'_>) -> serde_json::Value {
        let mut out = Vec::new();
        line.write(LogFormat::Json, &mut out);
        let text = String::from_utf8(out).expect("UTF-8");
        assert!(text.ends_with('\n'), "{text}");
        assert_eq!(text.matches('\n').count(), 1, "one line: {text}");
        serde_json::from_str(&text).unwrap_or_else(|err| panic!("not JSON ({err}): {text}"))
    }

    #[test]
    fn text_line_reads_as_tracing_wrote_it() {
        assert_eq!(
            text(&line("/posts", Some("page=2&project_key=[redacted]"))),
            "2026-11-22T06:05:30.838441Z  INFO elsinore::access: request client=127.0.0.1:34728 \
             host=blog.localhost project=horatio handler=web method=GET \
             path=/posts?page=2&project_key=[redacted] status=200 bytes_in=0 bytes_out=674 \
             total_ms=12.092 handler_ms=11.836 request_id=927f7573000000000000\n"
        );
        let mut quick = line("/", None);
        quick.handler_time = None;
        quick.total = Duration::from_micros(101);
        quick.peer = "10.0.0.1:4000".parse().expect("addr");
        quick.named_client = Some("203.0.113.7".parse().expect("ip"));
        let quick = text(&quick);
        assert!(
            quick.contains(" client=203.0.113.7 peer=10.0.0.1:4000 host="),
            "the peer after the client: {quick}"
        );
        assert!(quick.contains(" total_ms=0.101 request_id="), "{quick}");
        assert!(!quick.contains("handler_ms"), "{quick}");
    }

    #[test]
    fn json_line_has_tracings_keys() {
        let entry = json(&line("/posts", Some("page=2")));
        assert_eq!(entry["timestamp"], "2026-11-22T06:05:30.838441Z");
        assert_eq!(entry["level"], "INFO");
        assert_eq!(entry["target"], "elsinore::access");
        assert_eq!(entry["message"], "request");
        assert_eq!(entry["client"], "127.0.0.1:34728");
        assert_eq!(entry["path"], "/posts?page=2");
        assert_eq!(entry["status"], 200);
        assert_eq!(entry["bytes_out"], 674);
        assert!(entry["total_ms"].is_f64());
        assert_eq!(entry["total_ms"].as_f64(), Some(12.092));
        assert_eq!(entry["handler_ms"].as_f64(), Some(11.836));
        assert_eq!(entry["request_id"], "927f7573000000000000");
        assert!(entry.get("peer").is_none());
        let mut whole = line("/", None);
        whole.total = Duration::from_secs(3);
        assert!(json(&whole)["total_ms"].is_f64(), "3.000, not 3");
    }

    #[test]
    fn quotes_and_control_characters_cannot_break_a_line() {
        let hostile = "/a\"b\\c\nFAKE  INFO elsinore::access: request status=200\r\t\u{1}\u{7f} é";
        let text = text(&line(hostile, Some("q=\"x\" y")));
        assert_eq!(text.matches('\n').count(), 1, "one line: {text:?}");
        assert!(
            text.contains(
                r" path=/a\x22b\x5Cc\x0AFAKE\x20\x20INFO\x20elsinore::access:\x20request\x20status=200\x0D\x09\x01\x7F\x20\xC3\xA9?q=\x22x\x22\x20y status=200 "
            ),
            "{text}"
        );
        // Every field is still one whitespace-separated `key=value`.
        assert_eq!(
            text.split_whitespace()
                .filter(|part| part.starts_with("status="))
                .count(),
            1,
            "{text}"
        );
        let entry = json(&line(hostile, Some("q=\"x\" y")));
        assert_eq!(entry["path"], format!("{hostile}?q=\"x\" y"));
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for addr in [
            "0.0.0.0:0",
            "127.0.0.1:34728",
            "255.255.255.255:65535",
            "10.20.3.4:80",
            "1.99.100.109:9",
            "192.168.0.10:443",
            "[::1]:8080",
            "[2001:db8::7]:443",
            "[::ffff:192.0.2.1]:1",
            "[fe80::1%2]:9",
        ] {
            let addr: SocketAddr = addr.parse().expect(addr);
            let mut out = Vec::new();
            socket_addr(addr, &mut out);
            assert_eq!(String::from_utf8(out).expect("ascii"), addr.to_string());
            let mut out = Vec::new();
            ip_addr(addr.ip(), &mut out);
            assert_eq!(
                String::from_utf8(out).expect("ascii"),
                addr.ip().to_string()
            );
        }
        let json = json(&Line {
            named_client: Some("2001:db8::7".parse().expect("ip")),
            ..line("/", None)
        });
        assert_eq!(json["client"], "2001:db8::7");
        assert_eq!(json["peer"], "127.0.0.1:34728");
    }

    #[test]
    fn dates_are_right_across_leap_years_and_centuries() {
        let at = |secs: u64| {
            let mut out = Vec::new();
            write_timestamp(UNIX_EPOCH + Duration::from_secs(secs), &mut out);
            String::from_utf8(out).expect("UTF-8")
        };
        assert_eq!(at(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00.000000Z");
        assert_eq!(at(1_709_251_199), "2024-02-29T23:59:59.000000Z");
        assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00.000000Z");
        // The cached second is only reused within that second.
        let micros = |micros: u64| {
            let mut out = Vec::new();
            write_timestamp(UNIX_EPOCH + Duration::from_micros(micros), &mut out);
            String::from_utf8(out).expect("UTF-8")
        };
        assert_eq!(micros(1_709_251_199_000_001), "2024-02-29T23:59:59.000001Z");
        assert_eq!(micros(1_709_251_199_999_999), "2024-02-29T23:59:59.999999Z");
        assert_eq!(micros(1_709_251_200_000_000), "2024-03-01T00:00:00.000000Z");
        assert_eq!(micros(1_709_251_199_500_000), "2024-02-29T23:59:59.500000Z");
    }

    #[test]
    fn the_trace_id_ends_the_text_line_and_is_a_json_key() {
        let trace = *b"4bf92f3577b34da6a3ce929d0e0e4736";
        let mut traced = line("/", None);
        traced.trace = Some(&trace);
        let written = text(&traced);
        assert!(
            written.ends_with(
                " request_id=927f7573000000000000 trace=4bf92f3577b34da6a3ce929d0e0e4736\n"
            ),
            "{written}"
        );
        assert_eq!(json(&traced)["trace"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(!text(&line("/", None)).contains("trace="));
    }
}
