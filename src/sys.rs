//! The binary's calls into the operating system and C libraries: the only `unsafe`
//! code of keygate, each call with the invariant it relies on. The library forbids
//! `unsafe`; it receives these as plain function pointers.

/// Ignore SIGHUP and SIGUSR1 until keygate's handlers are installed (the reloader's and
/// the access-log reopener's): their default action would kill the process, and a
/// `systemctl reload` or a logrotate run can arrive while keygate is still starting.
pub fn ignore_signals_until_handled() {
    for signal in [libc::SIGHUP, libc::SIGUSR1] {
        // SAFETY: installs the predefined SIG_IGN disposition; no handler code runs.
        #[allow(unsafe_code)]
        unsafe {
            libc::signal(signal, libc::SIG_IGN);
        }
    }
}

/// Nice value of the reload thread: it yields to request threads whenever they run.
const RELOAD_NICE: libc::c_int = 10;

/// Lower the calling thread's priority (Linux: `setpriority` on a thread id sets that thread).
pub fn background_priority() {
    // SAFETY: plain syscalls with integer arguments; no memory is shared with the kernel.
    #[allow(unsafe_code)]
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, RELOAD_NICE);
    }
}

/// Give memory freed by a configuration load back to the OS.
///
/// mimalloc returns freed pages lazily, when the freeing thread allocates again; a
/// loading thread may never do so, and a million-key parse frees hundreds of MiB.
pub fn release_memory() {
    // SAFETY: mi_collect takes no pointers; it only purges the calling thread's heap.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true)
    }
}

/// OpenSSL's allocations go to mimalloc too: with the system allocator, each upstream
/// TLS record's buffers (released when idle, `SSL_MODE_RELEASE_BUFFERS`) grew and trimmed
/// a glibc arena (`mprotect`) on every request.
pub fn openssl_uses_mimalloc() {
    use std::ffi::{c_char, c_int, c_void};
    extern "C" fn m(n: usize, _: *const c_char, _: c_int) -> *mut c_void {
        // SAFETY: mi_malloc has malloc's contract.
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_malloc(n)
        }
    }
    extern "C" fn r(p: *mut c_void, n: usize, _: *const c_char, _: c_int) -> *mut c_void {
        // SAFETY: `p` comes from `m` or `r` (OpenSSL pairs its own calls).
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_realloc(p, n)
        }
    }
    extern "C" fn f(p: *mut c_void, _: *const c_char, _: c_int) {
        // SAFETY: `p` comes from `m` or `r`, or is null.
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_free(p)
        }
    }
    #[allow(unsafe_code)]
    extern "C" {
        fn CRYPTO_set_mem_functions(
            m: extern "C" fn(usize, *const c_char, c_int) -> *mut c_void,
            r: extern "C" fn(*mut c_void, usize, *const c_char, c_int) -> *mut c_void,
            f: extern "C" fn(*mut c_void, *const c_char, c_int),
        ) -> c_int;
    }
    // SAFETY: called first thing in main, before OpenSSL has allocated anything (it
    // refuses, returning 0, once it has); the three functions are a consistent set.
    #[allow(unsafe_code)]
    unsafe {
        CRYPTO_set_mem_functions(m, r, f);
    }
}

/// Read whole TLS records from an origin in one system call instead of three (record
/// header, body, then a read that would block): OpenSSL's read-ahead, which Pingora's
/// connector leaves off and its upstream TCP streams do not buffer either.
pub fn tune_upstream_tls(ssl: &openssl::ssl::SslRef) {
    use foreign_types_shared::ForeignTypeRef;
    #[allow(unsafe_code)]
    extern "C" {
        fn SSL_set_read_ahead(s: *mut openssl_sys::SSL, yes: std::ffi::c_int);
    }
    // SAFETY: `ssl` is a live SSL* for the duration of the call; read-ahead is a plain flag.
    #[allow(unsafe_code)]
    unsafe {
        SSL_set_read_ahead(ssl.as_ptr(), 1)
    }
}

/// Send SIGHUP to process `pid` (`keygate reload`).
///
/// # Errors
/// The operating system's error (no such process, not permitted).
pub fn send_sighup(pid: u32) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no such pid"))?;
    // SAFETY: kill(2) takes plain integers.
    #[allow(unsafe_code)]
    let r = unsafe { libc::kill(pid, libc::SIGHUP) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
