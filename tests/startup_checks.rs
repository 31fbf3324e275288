//! The server refuses to start, with a message that says what to change, when the
//! machine or the data dir would make it misbehave.

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;

use common::{free_ports, test_dir, Server, BIN};

/// Runs `ringkv server ARGS` expecting it to refuse; returns what it printed.
fn refused(args: &[&str], memlock_bytes: Option<u64>) -> String {
    let mut command = Command::new(BIN);
    command.arg("server").args(args).arg("--no-pin");
    if let Some(limit) = memlock_bytes {
        unsafe {
            command.pre_exec(move || {
                let rlimit = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlimit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let output = command.output().unwrap();
    assert!(
        !output.status.success(),
        "server started but should not have"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_port_served_by_another_ringkv_is_refused() {
    let dir = test_dir("port-taken");
    let server = Server::start(&dir.join("a"), 1, &["--sync", "none"]);
    let port = server.port.to_string();
    let b = dir.join("b").display().to_string();
    let message = refused(&["--data-dir", &b, "--port", &port, "--shards", "1"], None);
    assert!(message.contains("SO_REUSEPORT"), "{message}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_data_dir_in_use_is_refused() {
    let dir = test_dir("dir-taken");
    let data = dir.join("data");
    let _server = Server::start(&data, 1, &["--sync", "none"]);
    let port = free_ports(2).to_string();
    let message = refused(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--port",
            &port,
            "--shards",
            "1",
        ],
        None,
    );
    assert!(message.contains("in use by another ringkv"), "{message}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn another_shard_count_is_refused() {
    let dir = test_dir("reshard");
    let data = dir.join("data");
    let mut server = Server::start(&data, 2, &["--sync", "none"]);
    server.stop();
    let port = free_ports(4).to_string();
    let message = refused(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--port",
            &port,
            "--shards",
            "3",
        ],
        None,
    );
    assert!(message.contains("--shards 2"), "{message}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_low_memlock_limit_is_refused_with_the_fix() {
    let dir = test_dir("memlock");
    let port = free_ports(2).to_string();
    let data = dir.join("data").display().to_string();
    let message = refused(
        &["--data-dir", &data, "--port", &port, "--shards", "1"],
        Some(64 << 10),
    );
    assert!(
        message.contains("RLIMIT_MEMLOCK") && message.contains("ulimit -l"),
        "{message}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn io_memory_that_cannot_fit_the_limit_is_refused() {
    let dir = test_dir("io-memory");
    let port = free_ports(3).to_string();
    let data = dir.join("data").display().to_string();
    let message = refused(
        &[
            "--data-dir",
            &data,
            "--port",
            &port,
            "--shards",
            "2",
            "--io-memory",
            "8388608",
        ],
        Some(8 << 20),
    );
    assert!(message.contains("--io-memory"), "{message}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_tmpfs_data_dir_is_refused() {
    let shm = std::path::Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("no /dev/shm on this machine: nothing to check");
        return;
    }
    let data = shm.join(format!("ringkv-test-{}", std::process::id()));
    let port = free_ports(2).to_string();
    let message = refused(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--port",
            &port,
            "--shards",
            "1",
        ],
        None,
    );
    let _ = std::fs::remove_dir_all(&data);
    assert!(message.contains("tmpfs"), "{message}");
}

/// A seccomp profile that blocks io_uring (as Docker's default does) gets a message
/// that names io_uring and seccomp, not a glommio panic.
#[cfg(target_arch = "x86_64")]
#[test]
fn io_uring_blocked_by_seccomp_is_refused_with_the_reason() {
    const SYS_IO_URING_SETUP: u32 = 425;
    let dir = test_dir("seccomp");
    let port = free_ports(2).to_string();
    let data = dir.join("data").display().to_string();
    let mut command = Command::new(BIN);
    command.args([
        "server",
        "--data-dir",
        &data,
        "--port",
        &port,
        "--shards",
        "1",
        "--no-pin",
    ]);
    unsafe {
        command.pre_exec(|| {
            // Load the syscall number; io_uring_setup → ENOSYS, everything else allowed.
            let filter = [
                libc::sock_filter {
                    code: 0x20,
                    jt: 0,
                    jf: 0,
                    k: 0,
                },
                libc::sock_filter {
                    code: 0x15,
                    jt: 0,
                    jf: 1,
                    k: SYS_IO_URING_SETUP,
                },
                libc::sock_filter {
                    code: 0x06,
                    jt: 0,
                    jf: 0,
                    k: 0x0005_0000 | libc::ENOSYS as u32,
                },
                libc::sock_filter {
                    code: 0x06,
                    jt: 0,
                    jf: 0,
                    k: 0x7fff_0000,
                },
            ];
            let program = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut _,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &program) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = command.output().unwrap();
    assert!(!output.status.success(), "server started without io_uring");
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains("io_uring is unavailable") && message.contains("seccomp"),
        "{message}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
