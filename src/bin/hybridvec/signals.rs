//! Cleaning up on Ctrl-C, SIGTERM and SIGHUP: the signals are blocked in the calling thread
//! (and so in every thread started after it) and one thread waits for them with
//! `sigwait`, so the clean-up runs as ordinary code, not in a signal handler.

use std::io::Write;

/// Runs `cleanup` and exits with status 128 + the signal when SIGINT, SIGTERM or SIGHUP
/// arrives. Call it before any other thread starts: threads started earlier keep the
/// default action and would die without cleaning up.
pub fn on_interrupt(cleanup: impl FnOnce() -> Option<String> + Send + 'static) {
    // SAFETY: sigset_t is plain data that sigemptyset initialises; the calls only touch
    // `set` and this thread's signal mask.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::spawn(move || {
        let mut sig = 0;
        // SAFETY: `set` is initialised above; sigwait writes the signal number to `sig`.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
            let said = cleanup();
            let mut err = std::io::stderr();
            let _ = writeln!(
                err,
                "\ninterrupted{}",
                said.map_or(String::new(), |s| format!("; {s}"))
            );
            std::process::exit(128 + sig);
        }
    });
}

/// Removes `dir` and everything in it, retrying while other threads of this process still
/// add files to it (a writer growing its store when the signal came).
pub fn remove_dir_retrying(dir: &std::path::Path) {
    for _ in 0..500 {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                std::thread::sleep(std::time::Duration::from_millis(1))
            }
            _ => return,
        }
    }
}
