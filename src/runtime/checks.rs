//! Start-up checks: find what would make glommio or O_DIRECT fail, before they fail with
//! a message nobody can act on, and say what to change.

use std::net::TcpListener as StdListener;
use std::path::Path;

use crate::error::StartupError;

/// glommio refuses to start below this RLIMIT_MEMLOCK (it says `MemLockLimit(x/524288)`).
pub const GLOMMIO_MEMLOCK_MIN_BYTES: u64 = 512 * 1024;
/// glommio's default registered I/O memory per executor.
pub const IO_MEMORY_DEFAULT_BYTES: usize = 10 << 20;
/// Below this per shard, registered buffers are not worth having; glommio still works
/// (it falls back to unregistered buffers when registration fails).
pub const IO_MEMORY_MIN_BYTES: usize = 256 << 10;

fn env_err(message: String) -> StartupError {
    StartupError::Environment(message)
}

/// io_uring must exist and be allowed: kernel ≥ 5.8, not disabled by sysctl, not
/// blocked by a seccomp profile (Docker's default blocks it).
pub fn check_io_uring() -> Result<(), StartupError> {
    if let Ok(text) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        match text.trim() {
            "0" => {}
            "1" => {} // allowed for the io_uring_group; the probe below decides
            value => {
                return Err(env_err(format!(
                    "io_uring is disabled on this machine (kernel.io_uring_disabled = {value}); \
                     ringkv needs it: run `sysctl -w kernel.io_uring_disabled=0`"
                )))
            }
        }
    }
    // io_uring_setup(1, &params): the cheapest way to ask the kernel.
    let mut params = [0u8; 120];
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd >= 0 {
        unsafe { libc::close(fd as i32) };
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    let hint = match err.raw_os_error() {
        Some(libc::ENOSYS) => {
            "the kernel has no io_uring (Linux 5.8 or newer is needed) or a seccomp \
             profile blocks it (Docker: --security-opt seccomp=unconfined or a profile that \
             allows io_uring_setup/io_uring_enter/io_uring_register)"
        }
        Some(libc::EPERM) | Some(libc::EACCES) => {
            "io_uring is not permitted for this user: kernel.io_uring_disabled = 1 allows \
             only the io_uring_group; run `sysctl -w kernel.io_uring_disabled=0` or add the \
             user to that group, or allow it in the seccomp profile"
        }
        Some(libc::ENOMEM) => {
            "the kernel could not allocate an io_uring: raise RLIMIT_MEMLOCK (`ulimit -l`)"
        }
        _ => "io_uring_setup failed",
    };
    Err(env_err(format!("io_uring is unavailable: {err}: {hint}")))
}

/// Raises the soft RLIMIT_MEMLOCK to the hard limit and returns it (bytes; `u64::MAX` for
/// unlimited). Refuses if even the hard limit is below what glommio requires.
pub fn raise_memlock() -> Result<u64, StartupError> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return Err(env_err(format!(
            "getrlimit(RLIMIT_MEMLOCK): {}",
            std::io::Error::last_os_error()
        )));
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        }
    }
    let current = limit.rlim_cur;
    if current < GLOMMIO_MEMLOCK_MIN_BYTES {
        return Err(env_err(format!(
            "RLIMIT_MEMLOCK is {} KiB but glommio needs at least {} KiB (it would fail with \
             MemLockLimit({current}/{GLOMMIO_MEMLOCK_MIN_BYTES})): run `ulimit -l unlimited` \
             (or at least `ulimit -l 65536`) before starting ringkv, set LimitMEMLOCK=infinity \
             in its systemd unit, or raise `memlock` in /etc/security/limits.conf",
            current / 1024,
            GLOMMIO_MEMLOCK_MIN_BYTES / 1024
        )));
    }
    Ok(current)
}

/// Registered I/O memory per shard so that `shards × io_memory` fits under the memlock
/// limit (with the glommio minimum kept in reserve). `configured` > 0 is taken as is,
/// but refused if it cannot fit.
pub fn size_io_memory(
    memlock_bytes: u64,
    shards: usize,
    configured: usize,
) -> Result<usize, StartupError> {
    let budget = memlock_bytes.saturating_sub(GLOMMIO_MEMLOCK_MIN_BYTES) / shards.max(1) as u64;
    if configured > 0 {
        if configured as u64 > budget && memlock_bytes != u64::MAX {
            return Err(env_err(format!(
                "--io-memory {configured} bytes × {shards} shards does not fit RLIMIT_MEMLOCK \
                 ({memlock_bytes} bytes): lower --io-memory to at most {budget} or raise \
                 `ulimit -l`"
            )));
        }
        return Ok(configured);
    }
    let sized = (budget.min(IO_MEMORY_DEFAULT_BYTES as u64) as usize) & !4095;
    Ok(sized.max(IO_MEMORY_MIN_BYTES.min(IO_MEMORY_DEFAULT_BYTES)))
}

/// `statfs` magic of tmpfs.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// The data dir must be on a disk that keeps data and takes O_DIRECT writes. tmpfs is
/// refused outright: it is memory (nothing survives a reboot) and before Linux 6.6 it
/// refuses O_DIRECT. Creates the dir if missing.
pub fn check_data_dir(dir: &Path) -> Result<(), StartupError> {
    std::fs::create_dir_all(dir).map_err(|source| StartupError::Io {
        op: "create data dir",
        path: dir.to_path_buf(),
        source,
    })?;
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| env_err(format!("data dir {} has a NUL byte", dir.display())))?;
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut stat) } == 0 && stat.f_type as i64 == TMPFS_MAGIC {
        return Err(env_err(format!(
            "data dir {} is on tmpfs: that is memory, so nothing written there survives a \
             reboot (and before Linux 6.6 tmpfs refuses the O_DIRECT writes of the commit \
             log): put --data-dir on a real disk (ext4, xfs)",
            dir.display()
        )));
    }
    probe_direct_write(dir).map_err(|err| {
        env_err(format!(
            "data dir {} does not take O_DIRECT writes ({err}); ringkv writes its commit \
             log with direct I/O, which some overlay and network filesystems refuse: put \
             --data-dir on a real disk (ext4, xfs)",
            dir.display()
        ))
    })
}

/// Writes one aligned 4 KiB block with O_DIRECT to a probe file, then removes it.
fn probe_direct_write(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let probe = dir.join(".odirect-probe");
    let result = (|| {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&probe)?;
        let layout = std::alloc::Layout::from_size_align(4096, 4096).expect("valid layout");
        // SAFETY: the layout is non-zero; the block is zeroed, used, then freed below.
        let block = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!block.is_null(), "out of memory");
        let slice = unsafe { std::slice::from_raw_parts(block, 4096) };
        let written = std::os::unix::fs::FileExt::write_at(&file, slice, 0);
        unsafe { std::alloc::dealloc(block, layout) };
        match written? {
            4096 => Ok(()),
            n => Err(std::io::Error::other(format!(
                "short direct write of {n} bytes"
            ))),
        }
    })();
    let _ = std::fs::remove_file(&probe);
    result
}

/// No socket may be listening on any of `ports`. glommio binds with SO_REUSEPORT, so a
/// second ringkv on the same port would silently share its traffic instead of failing.
/// The check reads the kernel's socket tables (a trial bind would also trip over the
/// TIME_WAIT sockets a killed server leaves behind, which do not matter).
pub fn check_ports_free(host: &str, ports: &[u16]) -> Result<(), StartupError> {
    let listening = listening_sockets();
    for &port in ports {
        let taken = if listening.is_empty() {
            // No /proc: fall back to asking the port itself.
            StdListener::bind((host, port)).is_err()
        } else {
            listening.iter().any(|&(p, _)| p == port)
        };
        if taken {
            return Err(port_taken(host, port));
        }
    }
    Ok(())
}

/// Every socket listening on `ports` is one of `ours` (inodes, from [`socket_inode`]).
/// [`check_ports_free`] runs before the shards bind; a second process starting at the
/// same moment passes it too, and SO_REUSEPORT then lets both bind. This check, made
/// once every socket is bound, is the one that cannot be raced: each of the two sees
/// the other's socket.
pub fn check_ports_ours(host: &str, ports: &[u16], ours: &[u64]) -> Result<(), StartupError> {
    for (port, inode) in listening_sockets() {
        if ports.contains(&port) && !ours.contains(&inode) {
            return Err(port_taken(host, port));
        }
    }
    Ok(())
}

fn port_taken(host: &str, port: u16) -> StartupError {
    env_err(format!(
        "cannot use {host}:{port}: another process (perhaps another ringkv) is \
         listening there; ringkv refuses to share a port because SO_REUSEPORT would \
         silently split the traffic between the two. Stop it or choose another \
         --port (ringkv uses --port and the next --shards ports) or --resp-port"
    ))
}

/// The inode of the socket `fd`, as /proc/net/tcp names it.
pub fn socket_inode(fd: std::os::fd::RawFd) -> u64 {
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut stat) } != 0 {
        return 0;
    }
    stat.st_ino
}

/// The TCP sockets in LISTEN state, as (port, inode), from /proc/net/tcp and
/// /proc/net/tcp6.
fn listening_sockets() -> Vec<(u16, u64)> {
    const LISTEN_STATE: &str = "0A";
    let mut sockets = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            if *state != LISTEN_STATE {
                continue;
            }
            let port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if let (Some(port), Ok(inode)) = (port, inode.parse()) {
                sockets.push((port, inode));
            }
        }
    }
    sockets
}

/// Takes an exclusive `flock` on `dir/LOCK` for the life of the process, so that two
/// servers never share one data dir.
pub fn lock_data_dir(dir: &Path) -> Result<std::fs::File, StartupError> {
    use std::os::fd::AsRawFd;
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StartupError::Io {
            op: "open",
            path: path.clone(),
            source,
        })?;
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(StartupError::DataDir(format!(
            "{} is in use by another ringkv process (its LOCK is held); give each server \
             its own --data-dir",
            dir.display()
        )));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn io_memory_fits_the_memlock_limit() {
        // 8 MiB limit, 2 shards: (8 MiB - 512 KiB) / 2, rounded down to 4 KiB.
        let sized = size_io_memory(8 << 20, 2, 0).unwrap();
        assert!(sized * 2 + GLOMMIO_MEMLOCK_MIN_BYTES as usize <= 8 << 20);
        assert_eq!(sized % 4096, 0);
        assert_eq!(
            size_io_memory(u64::MAX, 4, 0).unwrap(),
            IO_MEMORY_DEFAULT_BYTES
        );
        let err = size_io_memory(8 << 20, 2, 10 << 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("lower --io-memory"), "{err}");
    }

    #[test]
    fn a_listening_port_is_refused() {
        let taken = StdListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let err = check_ports_free("127.0.0.1", &[port])
            .unwrap_err()
            .to_string();
        assert!(err.contains("SO_REUSEPORT"), "{err}");
    }

    /// A loopback listener with SO_REUSEPORT, as glommio binds them (port 0: any).
    fn reuseport_listener(port: u16) -> StdListener {
        use std::os::fd::FromRawFd;
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0);
            let one: libc::c_int = 1;
            let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            let on = &one as *const libc::c_int as *const libc::c_void;
            assert_eq!(
                libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, on, size),
                0
            );
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_port = port.to_be();
            addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
            let addr_len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let addr_ptr = &addr as *const libc::sockaddr_in as *const libc::sockaddr;
            assert_eq!(libc::bind(fd, addr_ptr, addr_len), 0, "bind :{port}");
            assert_eq!(libc::listen(fd, 16), 0);
            StdListener::from_raw_fd(fd)
        }
    }

    #[test]
    fn a_socket_that_shares_our_port_is_found_once_we_are_bound() {
        let ours = reuseport_listener(0);
        let port = ours.local_addr().unwrap().port();
        let inode = socket_inode(ours.as_raw_fd());
        check_ports_ours("127.0.0.1", &[port], &[inode]).unwrap();
        // Another process that passed check_ports_free at the same moment joins the group.
        let other = reuseport_listener(port);
        let err = check_ports_ours("127.0.0.1", &[port], &[inode])
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!(":{port}:")), "{err}");
        let both = [inode, socket_inode(other.as_raw_fd())];
        check_ports_ours("127.0.0.1", &[port], &both).unwrap();
    }

    #[test]
    fn a_data_dir_is_locked_once() {
        let dir = tempfile::tempdir_in(concat!(env!("CARGO_MANIFEST_DIR"), "/target")).unwrap();
        let _held = lock_data_dir(dir.path()).unwrap();
        let err = lock_data_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("in use"), "{err}");
    }

    #[test]
    fn tmpfs_is_refused_when_present() {
        // /dev/shm is tmpfs on Linux machines that have it.
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            return;
        }
        let dir = shm.join(format!("ringkv-probe-{}", std::process::id()));
        let result = check_data_dir(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        let err = result.unwrap_err().to_string();
        assert!(err.contains("tmpfs"), "{err}");
    }

    #[test]
    fn io_uring_is_available_here() {
        check_io_uring().unwrap();
    }
}
