//! Process signals for the control thread: SIGINT/SIGTERM stop, SIGHUP reloads.
//! `signal-hook` installs handlers that only set flags (async-signal-safe); the control loop
//! polls them.
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};

static STOP: LazyLock<Arc<AtomicBool>> = LazyLock::new(|| Arc::new(AtomicBool::new(false)));
/// Set once the stop sequence is over (the HTTP server answers until then).
static FINISHED: AtomicBool = AtomicBool::new(false);
static RELOAD: LazyLock<Arc<AtomicBool>> = LazyLock::new(|| Arc::new(AtomicBool::new(false)));

/// Install the handlers (once, before workers start).
pub fn install() {
    for sig in [SIGINT, SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, STOP.clone()) {
            crate::error!("cannot handle signal {sig}: {e}");
        }
    }
    if let Err(e) = signal_hook::flag::register(SIGHUP, RELOAD.clone()) {
        crate::error!("cannot handle SIGHUP: {e}");
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

/// The stop sequence (drain, log flush) is over: the HTTP server may go.
pub fn set_finished() {
    FINISHED.store(true, Ordering::SeqCst);
}

/// True once `set_finished` was called (the HTTP threads' loop condition: they keep
/// answering `/healthz` "not ready" while the stop drains).
pub fn finished() -> bool {
    FINISHED.load(Ordering::SeqCst)
}
