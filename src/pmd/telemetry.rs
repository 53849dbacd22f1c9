//! flowgate's commands on DPDK's telemetry socket (`/var/run/dpdk/PREFIX/dpdk_telemetry.v2`,
//! read with `dpdk-telemetry.py -f PREFIX`). A command is a Rust function returning a flat
//! dictionary; one C-ABI callback, run on DPDK's telemetry thread, finds it by name and
//! copies the answer into the `rte_tel_data` DPDK serialises to JSON. Workers are never
//! involved: the functions read what the control side already publishes.
use super::ffi;
use std::ffi::{c_char, c_int, CStr, CString};
use std::sync::{Mutex, OnceLock};

/// A value in an answer (DPDK 22.11 nests only arrays, so answers are flat dictionaries
/// with `/`-separated keys).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U64(u64),
    Str(String),
}

/// A command's answer: (key, value) pairs; keys are made of `[A-Za-z0-9_/]` (see [`key`]).
pub type Dict = Vec<(String, Value)>;
type Handler = Box<dyn Fn(&str) -> Dict + Send + Sync>;

fn handlers() -> &'static Mutex<Vec<(String, Handler)>> {
    static H: OnceLock<Mutex<Vec<(String, Handler)>>> = OnceLock::new();
    H.get_or_init(|| Mutex::new(Vec::new()))
}

/// DPDK accepts only alphanumerics, `_` and `/` in names, at most 63 bytes here.
pub fn key(parts: &[&str]) -> String {
    let mut k: String = parts
        .join("/")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '/' {
                c
            } else {
                '_'
            }
        })
        .collect();
    k.truncate(63);
    k
}

/// Registers `cmd` (e.g. "/flowgate/stats"); `f` gets the command's parameter string.
pub fn register(
    cmd: &str,
    help: &str,
    f: impl Fn(&str) -> Dict + Send + Sync + 'static,
) -> Result<(), String> {
    let c = CString::new(cmd).map_err(|e| e.to_string())?;
    let h = CString::new(help).map_err(|e| e.to_string())?;
    handlers()
        .lock()
        .map_err(|e| e.to_string())?
        .push((cmd.to_string(), Box::new(f)));
    // DPDK keeps the pointers for the life of the process: the strings are leaked on
    // purpose (a handful, once).
    let (c, h) = (c.into_raw(), h.into_raw());
    // SAFETY: `c` and `h` are NUL-terminated and never freed; `callback` matches telemetry_cb.
    let rc = unsafe { ffi::rte_telemetry_register_cmd(c, Some(callback), h) };
    if rc < 0 {
        return Err(format!("rte_telemetry_register_cmd {cmd}: errno {}", -rc));
    }
    Ok(())
}

/// Runs the Rust handler for `cmd` (also what the tests call).
pub fn answer(cmd: &str, params: &str) -> Option<Dict> {
    let hs = handlers().lock().ok()?;
    hs.iter().find(|(c, _)| c == cmd).map(|(_, f)| f(params))
}

unsafe extern "C" fn callback(
    cmd: *const c_char,
    params: *const c_char,
    d: *mut ffi::rte_tel_data,
) -> c_int {
    let text = |p: *const c_char| {
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: DPDK passes NUL-terminated strings valid for this call.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    let Some(dict) = answer(&text(cmd), &text(params)) else {
        return -1;
    };
    // SAFETY: `d` is the rte_tel_data DPDK handed to this callback.
    unsafe { ffi::rte_tel_data_start_dict(d) };
    for (k, v) in dict.iter().take(ffi::RTE_TEL_MAX_DICT_ENTRIES as usize) {
        let Ok(name) = CString::new(k.as_str()) else {
            continue;
        };
        match v {
            // SAFETY: `d` was started as a dict; `name` is NUL-terminated (DPDK copies it).
            Value::U64(x) => unsafe {
                ffi::rte_tel_data_add_dict_u64(d, name.as_ptr(), *x);
            },
            Value::Str(s) => {
                let mut s = s.clone();
                s.truncate(ffi::RTE_TEL_MAX_STRING_LEN as usize - 1);
                if let Ok(val) = CString::new(s) {
                    // SAFETY: as above; DPDK copies the value.
                    unsafe { ffi::rte_tel_data_add_dict_string(d, name.as_ptr(), val.as_ptr()) };
                }
            }
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_use_only_what_dpdk_accepts() {
        assert_eq!(
            key(&["port", "vpc-a", "rx_packets"]),
            "port/vpc_a/rx_packets"
        );
        assert_eq!(key(&["x".repeat(100).as_str()]).len(), 63);
    }
}
