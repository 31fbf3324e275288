//! The server's start-up over a damaged commit log: a torn tail of the newest segment is
//! cut and logged and the node serves; damage anywhere else refuses the start with an
//! error naming the file and the byte.

mod common;

use std::path::{Path, PathBuf};

use common::{test_dir, Server};

fn segments(data: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data.join("shard-000/commitlog"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

/// Where the records of a segment end: the last non-zero byte, plus one.
fn data_end(path: &Path) -> usize {
    let bytes = std::fs::read(path).unwrap();
    bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1)
}

fn write_keys(server: &Server, prefix: &str, count: usize) {
    let mut client = server.client();
    for i in 0..count {
        client
            .put(format!("{prefix}{i}").as_bytes(), b"value", &[])
            .unwrap();
    }
}

fn assert_keys(server: &Server, prefix: &str, count: usize) {
    let mut client = server.client();
    for i in 0..count {
        let got = client.get(format!("{prefix}{i}").as_bytes()).unwrap();
        assert_eq!(got.values.len(), 1, "{prefix}{i} missing");
    }
}

#[test]
fn a_torn_tail_is_cut_and_logged_and_the_node_serves() {
    let dir = test_dir("torn-tail");
    let data = dir.join("data");
    let mut server = Server::start(&data, 1, &["--sync", "batch"]);
    write_keys(&server, "k", 200);
    server.kill9();
    // A write that was being made when the power went: half a record of garbage.
    let last = segments(&data).pop().unwrap();
    // The last record may end in zero bytes (an empty count): leave room past it.
    let end = data_end(&last) + 8;
    let mut bytes = std::fs::read(&last).unwrap();
    bytes[end..end + 300].copy_from_slice(&[0xAB; 300]);
    std::fs::write(&last, &bytes).unwrap();

    server.restart();
    assert_keys(&server, "k", 200);
    let output = server.output();
    assert!(output.contains("torn tail cut at byte"), "{output}");
    // The cut is durable: a second restart starts clean.
    server.restart();
    assert!(
        !server.output().contains("torn tail"),
        "{}",
        server.output()
    );
    assert_keys(&server, "k", 200);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn damage_in_an_older_segment_refuses_the_start() {
    let dir = test_dir("mid-log");
    let data = dir.join("data");
    let mut server = Server::start(&data, 1, &["--sync", "batch"]);
    write_keys(&server, "a", 100);
    server.stop();
    server.restart(); // a new segment: the first one is now older
    write_keys(&server, "b", 10);
    server.stop();
    let first = segments(&data).remove(0);
    let mut bytes = std::fs::read(&first).unwrap();
    let offset = 4096 + 40; // inside the first record
    bytes[offset] ^= 0x01;
    std::fs::write(&first, &bytes).unwrap();

    let message = match Server::start_on(&data, server.port, 1, &["--sync", "batch"]) {
        Ok(_) => panic!("started over a corrupt commit log"),
        Err(message) => message,
    };
    let name = first.file_name().unwrap().to_str().unwrap();
    assert!(
        message.contains(name) && message.contains("at byte 4096"),
        "{message}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
