//! Process signals for the control thread: SIGINT/SIGTERM stop, SIGHUP reloads.
//! The handlers only set flags; the control loop polls them.
use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);
static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

extern "C" fn on_hup(_: libc::c_int) {
    RELOAD.store(true, Ordering::SeqCst);
}

/// Install the handlers (once, before workers start).
pub fn install() {
    let stop: extern "C" fn(libc::c_int) = on_stop;
    let hup: extern "C" fn(libc::c_int) = on_hup;
    // SAFETY: the handlers are async-signal-safe (a single atomic store each).
    unsafe {
        libc::signal(libc::SIGINT, stop as libc::sighandler_t);
        libc::signal(libc::SIGTERM, stop as libc::sighandler_t);
        libc::signal(libc::SIGHUP, hup as libc::sighandler_t);
    }
}

pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// True once per SIGHUP received.
pub fn take_reload() -> bool {
    RELOAD.swap(false, Ordering::SeqCst)
}

/// Ask the control loop to stop (tests, errors).
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}
