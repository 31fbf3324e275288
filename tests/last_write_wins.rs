//! A node started with `--conflicts lww`: blind writes to one key leave one value (the
//! last), deletes win over older writes, both survive kill -9, and the data dir refuses
//! to start in the other mode.

mod common;

use common::{free_ports, test_dir, Server, BIN};

#[test]
fn lww_node_keeps_the_last_write_and_remembers_its_mode() {
    let dir = test_dir("lww");
    let data = dir.join("data");
    let mut server = Server::start(&data, 2, &["--sync", "batch", "--conflicts", "lww"]);
    assert!(
        server.output().contains("conflicts lww"),
        "{}",
        server.output()
    );
    let mut a = server.client();
    let mut b = server.client();
    for i in 0..20u32 {
        let client = if i % 2 == 0 { &mut a } else { &mut b };
        // Blind: no context. Under dvv these would pile up as 20 siblings.
        client
            .put(b"shared", format!("v{i}").as_bytes(), &[])
            .unwrap();
    }
    let got = a.get(b"shared").unwrap();
    assert_eq!(got.values.len(), 1, "one value, no siblings");
    assert_eq!(&got.values[0].value[..], b"v19");
    // A stale context changes nothing: the write is the newest, so it wins.
    a.put(b"shared", b"last", &got.context).unwrap();
    a.put(b"gone", b"x", &[]).unwrap();
    b.delete(b"gone", &[]).unwrap();
    assert!(b.get(b"gone").unwrap().values.is_empty());

    server.kill9();
    server.restart();
    let mut c = server.client();
    let got = c.get(b"shared").unwrap();
    assert_eq!(got.values.len(), 1);
    assert_eq!(&got.values[0].value[..], b"last");
    assert!(c.get(b"gone").unwrap().values.is_empty());
    server.stop();

    // The same data dir in dvv mode (the default) is refused, naming the fix.
    let port = free_ports(3).to_string();
    let output = std::process::Command::new(BIN)
        .args([
            "server",
            "--data-dir",
            data.to_str().unwrap(),
            "--port",
            &port,
        ])
        .args(["--shards", "2", "--no-pin"])
        .output()
        .unwrap();
    assert!(!output.status.success(), "started in the wrong mode");
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("--conflicts lww"), "{message}");
    let _ = std::fs::remove_dir_all(&dir);
}
