//! Bad input against a real server: every case gets a clear error (or, for a broken
//! stream, a closed connection) and nothing else is disturbed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use common::{test_dir, Server};
use ringkv::protocol::{encode_request, Consistency, FrameHeader, Request, Status, HEADER_LEN};

fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

/// Reads one response frame: (header, status, message).
fn read_response(stream: &mut TcpStream) -> (FrameHeader, Status, String) {
    let mut header = [0u8; HEADER_LEN];
    stream.read_exact(&mut header).unwrap();
    let header = FrameHeader::decode(&header).unwrap();
    let mut body = vec![0u8; header.body_len as usize];
    stream.read_exact(&mut body).unwrap();
    let status = Status::from_u8(body[0]).unwrap();
    let len = u16::from_le_bytes([body[1], body[2]]) as usize;
    let message = String::from_utf8_lossy(&body[3..3 + len]).into_owned();
    (header, status, message)
}

fn frame(request: &Request, id: u32) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_request(request, id, &mut buf);
    buf
}

fn ping_works(stream: &mut TcpStream, id: u32) {
    stream.write_all(&frame(&Request::Ping, id)).unwrap();
    let (header, status, _) = read_response(stream);
    assert_eq!((header.request_id, status), (id, Status::Ok));
}

fn put(key: Vec<u8>, value: Vec<u8>) -> Request {
    Request::Put {
        key: Bytes::from(key),
        value: Bytes::from(value),
        context: Bytes::new(),
        consistency: Consistency::Default,
        quorum: ringkv::protocol::QuorumMode::Sloppy,
    }
}

#[test]
fn bad_requests_get_error_frames_and_the_connection_goes_on() {
    let dir = test_dir("bad-input");
    let server = Server::start(&dir.join("data"), 2, &["--sync", "none"]);
    let mut stream = connect(&server);

    // A key over 1 KiB.
    stream
        .write_all(&frame(&put(vec![b'k'; 1025], b"v".to_vec()), 1))
        .unwrap();
    let (header, status, message) = read_response(&mut stream);
    assert_eq!(
        (header.request_id, status),
        (1, Status::TooLarge),
        "{message}"
    );
    ping_works(&mut stream, 2);

    // A value over 1 MiB (the frame itself is within the frame limit).
    stream
        .write_all(&frame(&put(b"k".to_vec(), vec![0; (1 << 20) + 1]), 3))
        .unwrap();
    let (header, status, message) = read_response(&mut stream);
    assert_eq!(
        (header.request_id, status),
        (3, Status::TooLarge),
        "{message}"
    );
    ping_works(&mut stream, 4);

    // An unknown opcode.
    let mut unknown = Vec::new();
    FrameHeader {
        opcode: 0x3E,
        flags: 0,
        request_id: 5,
        body_len: 3,
    }
    .encode_into(&mut unknown);
    unknown.extend_from_slice(b"abc");
    stream.write_all(&unknown).unwrap();
    let (header, status, message) = read_response(&mut stream);
    assert_eq!((header.request_id, status), (5, Status::BadRequest));
    assert!(message.contains("opcode"), "{message}");
    ping_works(&mut stream, 6);

    // A body that does not parse (key length overruns the body).
    let mut broken = Vec::new();
    FrameHeader {
        opcode: 0x02,
        flags: 0,
        request_id: 7,
        body_len: 3,
    }
    .encode_into(&mut broken);
    broken.extend_from_slice(&[0, 200, 0]);
    stream.write_all(&broken).unwrap();
    let (header, status, _) = read_response(&mut stream);
    assert_eq!((header.request_id, status), (7, Status::BadRequest));
    ping_works(&mut stream, 8);

    // None of the refused writes happened.
    let mut client = server.client();
    assert!(client.get(b"k").unwrap().values.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_oversized_frame_is_refused_from_its_header_and_skipped() {
    let dir = test_dir("oversize");
    let server = Server::start(&dir.join("data"), 1, &["--sync", "none"]);
    let mut stream = connect(&server);
    let body_len: u32 = 3 << 20; // over the 1 MiB + 64 KiB frame limit
    let mut header = Vec::new();
    FrameHeader {
        opcode: 0x03,
        flags: 0,
        request_id: 9,
        body_len,
    }
    .encode_into(&mut header);
    stream.write_all(&header).unwrap();
    // The answer comes before a single body byte is sent: nothing was buffered for it.
    let (response, status, message) = read_response(&mut stream);
    assert_eq!(
        (response.request_id, status),
        (9, Status::TooLarge),
        "{message}"
    );
    // The body is skipped, and the connection goes on.
    let junk = vec![0x55u8; body_len as usize];
    stream.write_all(&junk).unwrap();
    ping_works(&mut stream, 10);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_garbage_stream_closes_only_its_own_connection() {
    let dir = test_dir("garbage");
    let server = Server::start(&dir.join("data"), 2, &["--sync", "none"]);
    let mut good = connect(&server);
    ping_works(&mut good, 1);
    let mut bad = connect(&server);
    bad.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (header, status, message) = read_response(&mut bad);
    assert_eq!(status, Status::BadRequest, "{message}");
    assert_eq!(header.opcode & 0x80, 0x80);
    let mut rest = Vec::new();
    assert_eq!(
        bad.read_to_end(&mut rest).unwrap(),
        0,
        "connection must be closed"
    );
    ping_works(&mut good, 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_client_that_disconnects_mid_request_leaves_no_write() {
    let dir = test_dir("disconnect");
    let server = Server::start(&dir.join("data"), 2, &["--sync", "batch"]);
    for i in 0..20 {
        let key = format!("half-{i}").into_bytes();
        let whole = frame(&put(key.clone(), vec![b'x'; 4000]), 1);
        let mut stream = connect(&server);
        stream
            .write_all(&whole[..whole.len() - 1 - i * 100])
            .unwrap();
        drop(stream);
        // A complete request on another connection still works...
        let mut client = server.client();
        client.put(b"other", b"fine", &[]).unwrap();
        // ...and the half-sent write never happened.
        assert!(
            client.get(&key).unwrap().values.is_empty(),
            "half write {i} applied"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_client_that_never_reads_is_throttled_not_buffered() {
    let dir = test_dir("overload");
    let server = Server::start(&dir.join("data"), 1, &["--sync", "none"]);
    let mut flood = connect(&server);
    flood.set_nonblocking(true).unwrap();
    // GETs of a 64 KiB value: the responses fill the socket, the connection's in-flight
    // limit stops the reader, and then the server stops reading our requests.
    let mut client = server.client();
    client.put(b"big", &vec![7u8; 64 << 10], &[]).unwrap();
    let get = frame(
        &Request::Get {
            key: Bytes::from_static(b"big"),
            consistency: Consistency::Default,
        },
        1,
    );
    let mut sent = 0usize;
    let total = 5_000_000 * get.len();
    let mut stalled_for = Duration::ZERO;
    while sent < total && stalled_for < Duration::from_secs(2) {
        match flood.write(&get[sent % get.len()..]) {
            Ok(n) => {
                sent += n;
                stalled_for = Duration::ZERO;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
                stalled_for += Duration::from_millis(50);
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    assert!(
        sent < total / 4,
        "server kept reading: {sent} of {total} bytes taken"
    );
    // Others are still served while that connection is stalled.
    let mut other = server.client();
    other.ping().unwrap();
    assert_eq!(other.get(b"big").unwrap().values[0].value.len(), 64 << 10);
    // And the server did not buffer the flood in memory.
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", server.pid().unwrap())).unwrap();
    let rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    eprintln!("flood: {sent} bytes accepted of {total}; server RSS {rss_kb} KiB");
    assert!(rss_kb < 512 * 1024, "server RSS {rss_kb} KiB");
    let _ = std::fs::remove_dir_all(&dir);
}
