//! Control-plane logging (never used on the packet path) through the `log` facade, written
//! to stderr by `env_logger`. Under systemd (stderr is the journal stream named by
//! `JOURNAL_STREAM`) every line starts with its syslog priority `<N>`, which journald turns
//! into the entry's PRIORITY; otherwise lines read `flowgate LEVEL: message`.
//!
//! The crate's `error!`/`warn!`/`info!`/`debug!` macros forward to the facade, so any other
//! `log` user (a dependency) lands in the same stream with the same level.
use crate::config::LogLevel;
use std::io::Write;
use std::sync::Once;

/// The facade, re-exported so the macros work from the benches and tests too.
pub use ::log as facade;
use ::log::{Level, LevelFilter};

static INIT: Once = Once::new();

fn filter(l: LogLevel) -> LevelFilter {
    match l {
        LogLevel::Error => LevelFilter::Error,
        LogLevel::Warn => LevelFilter::Warn,
        LogLevel::Info => LevelFilter::Info,
        LogLevel::Debug => LevelFilter::Debug,
    }
}

/// syslog(3) priority of a level (sd-daemon(3): `<3>` error ... `<7>` debug).
pub fn syslog_priority(l: Level) -> u8 {
    match l {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// True when stderr is the journal stream systemd set up for this service: `JOURNAL_STREAM`
/// is `DEV:INODE` of that stream, compared with stderr's own (a child process that inherits
/// the variable but writes elsewhere must not emit prefixes).
pub fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    match std::fs::metadata("/proc/self/fd/2") {
        Ok(m) => dev.parse() == Ok(m.dev()) && ino.parse() == Ok(m.ino()),
        Err(_) => false,
    }
}

/// One formatted line (without the newline).
pub fn format_line(journal: bool, level: Level, msg: &std::fmt::Arguments<'_>) -> String {
    if journal {
        format!("<{}>{msg}", syslog_priority(level))
    } else {
        format!("flowgate {}: {msg}", level.as_str().to_ascii_lowercase())
    }
}

/// Installs the logger on first use and sets the level (the config's `log_level`; a reload
/// changes it).
pub fn set_level(l: LogLevel) {
    INIT.call_once(|| {
        let journal = stderr_is_journal();
        let _ = env_logger::Builder::new()
            .filter_level(LevelFilter::Trace)
            .target(env_logger::Target::Stderr)
            .format(move |buf, r| writeln!(buf, "{}", format_line(journal, r.level(), r.args())))
            .try_init();
    });
    ::log::set_max_level(filter(l));
}

/// Whether a message at `level` (0 error .. 3 debug) would be written.
pub fn enabled(level: u8) -> bool {
    let l = match level {
        0 => Level::Error,
        1 => Level::Warn,
        2 => Level::Info,
        _ => Level::Debug,
    };
    l <= ::log::max_level()
}

#[macro_export]
macro_rules! error { ($($arg:tt)*) => { $crate::log::facade::error!(target: "flowgate", $($arg)*) }; }
#[macro_export]
macro_rules! warn { ($($arg:tt)*) => { $crate::log::facade::warn!(target: "flowgate", $($arg)*) }; }
#[macro_export]
macro_rules! info { ($($arg:tt)*) => { $crate::log::facade::info!(target: "flowgate", $($arg)*) }; }
#[macro_export]
macro_rules! debug { ($($arg:tt)*) => { $crate::log::facade::debug!(target: "flowgate", $($arg)*) }; }

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_lines_carry_syslog_priorities() {
        assert_eq!(
            format_line(true, Level::Error, &format_args!("port {} up", 0)),
            "<3>port 0 up"
        );
        assert_eq!(
            format_line(true, Level::Warn, &format_args!("port {} up", 0)),
            "<4>port 0 up"
        );
        assert_eq!(
            format_line(true, Level::Info, &format_args!("port {} up", 0)),
            "<6>port 0 up"
        );
        assert_eq!(
            format_line(true, Level::Debug, &format_args!("port {} up", 0)),
            "<7>port 0 up"
        );
        assert_eq!(
            format_line(false, Level::Info, &format_args!("port {} up", 0)),
            "flowgate info: port 0 up"
        );
    }

    #[test]
    fn level_follows_the_config() {
        set_level(LogLevel::Warn);
        assert!(enabled(1) && !enabled(2));
        set_level(LogLevel::Debug);
        assert!(enabled(3));
        set_level(LogLevel::Info);
    }

    #[test]
    fn journal_stream_of_another_file_is_not_ours() {
        // The variable alone is not enough: it must name stderr's device and inode.
        std::env::set_var("JOURNAL_STREAM", "1:1");
        assert!(!stderr_is_journal());
        std::env::remove_var("JOURNAL_STREAM");
        assert!(!stderr_is_journal());
    }
}
