//! Ethernet port setup, stats and xstats.
use super::{err, ffi, Mempool, PmdError};
use std::ffi::{CStr, CString};
use std::time::{Duration, Instant};

/// What the control plane asks of a port.
#[derive(Debug, Clone)]
pub struct PortSetup {
    pub name: String,
    /// PCI address or vdev string, as in the config.
    pub device: String,
    pub mtu: u32,
    pub queues: u16,
    pub rx_desc: u16,
    pub tx_desc: u16,
    /// Ask for the scatter rx offload (frames larger than an mbuf arrive chained).
    pub scatter: bool,
}

/// A started port.
#[derive(Debug, Clone)]
pub struct Port {
    pub id: u16,
    pub name: String,
    pub driver: String,
    pub mac: [u8; 6],
    pub queues: u16,
    pub mtu: u32,
    pub link_up: bool,
    /// Whether the RSS hash key could be programmed (RSS-aware NAT port choice).
    pub rss_key_programmable: bool,
    /// Set when flowgate programmed the RSS key and redirection table itself, so the
    /// queue of any 5-tuple can be computed in software (Toeplitz).
    pub rss_programmed: Option<RssProgram>,
}

/// The RSS key and redirection table flowgate programmed into a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RssProgram {
    pub key: [u8; 40],
    /// Queue of each redirection-table entry (entry = hash % len).
    pub reta: Vec<u16>,
}

/// The RSS key flowgate programs: Microsoft's verification key, the one the software
/// Toeplitz hash (`nat::toeplitz`) is tested against.
pub const RSS_KEY: [u8; 40] = crate::nat::toeplitz::MS_KEY;

/// Counters from rte_eth_stats_get.
#[derive(Debug, Default, Clone, Copy)]
pub struct PortStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_nombuf: u64,
}

/// True if `device` is a PCI address (`0000:00:06.0` or `00:06.0`) rather than a vdev.
pub fn is_pci_address(device: &str) -> bool {
    let d = device.split(',').next().unwrap_or("");
    let parts: Vec<&str> = d.split(':').collect();
    let hex = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit());
    match parts.as_slice() {
        [dom, bus, devfn] => hex(dom) && hex(bus) && devfn.split('.').all(hex),
        [bus, devfn] => hex(bus) && devfn.contains('.') && devfn.split('.').all(hex),
        _ => false,
    }
}

impl PortSetup {
    /// EAL arguments that make this device appear (`--vdev X` or `-a PCI`).
    pub fn eal_args(&self) -> Vec<String> {
        if is_pci_address(&self.device) {
            vec!["-a".into(), self.device.clone()]
        } else {
            vec!["--vdev".into(), self.device.clone()]
        }
    }

    /// The name DPDK registers the device under.
    fn dpdk_name(&self) -> String {
        self.device.split(',').next().unwrap_or("").to_string()
    }
}

impl Port {
    /// Configure and start the port: one rx and tx queue per `queues`, RSS when there is
    /// more than one queue, MTU as asked, offloads only where the device reports them.
    pub fn start(setup: &PortSetup, pool: Mempool) -> Result<Port, PmdError> {
        let dname = setup.dpdk_name();
        let cname = CString::new(dname.clone()).unwrap();
        let mut id: u16 = 0;
        // SAFETY: valid C string and out-pointer.
        let rc = unsafe { ffi::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
        if rc != 0 {
            return Err(err(
                format!("port {}: no DPDK device named {dname:?}", setup.name),
                rc,
            ));
        }
        let mut info = ffi::rte_eth_dev_info::default();
        // SAFETY: valid port id and out-pointer.
        let rc = unsafe { ffi::rte_eth_dev_info_get(id, &mut info) };
        if rc != 0 {
            return Err(err(
                format!("port {}: rte_eth_dev_info_get", setup.name),
                rc,
            ));
        }
        let driver = if info.driver_name.is_null() {
            String::from("?")
        } else {
            // SAFETY: driver_name is a static C string owned by the driver.
            unsafe { CStr::from_ptr(info.driver_name) }
                .to_string_lossy()
                .into_owned()
        };
        // net_af_packet reports a 1518-byte maximum frame to ethdev although its ring
        // frames (`framesz`) carry jumbo frames: there the ethdev MTU stays at the
        // driver's maximum and the data plane enforces the configured MTU itself.
        // net_tap likewise reports 1522 but reads jumbo frames (into mbuf chains with the
        // scatter offload, see mempool.scatter).
        let af_packet = driver == "net_af_packet" || driver == "net_tap";
        // ethdev checks mtu + overhead against max_rx_pktlen (overhead as ethdev derives it).
        let overhead = if info.max_mtu != u16::MAX && info.max_rx_pktlen > info.max_mtu as u32 {
            info.max_rx_pktlen - info.max_mtu as u32
        } else {
            18
        };
        let ethdev_mtu = if af_packet {
            setup
                .mtu
                .min(info.max_mtu as u32)
                .min(info.max_rx_pktlen.saturating_sub(overhead))
        } else {
            setup.mtu
        };
        if ethdev_mtu < info.min_mtu as u32 || ethdev_mtu > info.max_mtu as u32 {
            return Err(err(
                format!(
                    "port {}: mtu {} outside what {driver} supports ({}..={})",
                    setup.name, setup.mtu, info.min_mtu, info.max_mtu
                ),
                22,
            ));
        }
        if setup.queues > info.max_rx_queues || setup.queues > info.max_tx_queues {
            return Err(err(
                format!(
                    "port {}: {} queues asked, {driver} has {} rx / {} tx",
                    setup.name, setup.queues, info.max_rx_queues, info.max_tx_queues
                ),
                22,
            ));
        }

        let mut conf = ffi::rte_eth_conf::default();
        conf.rxmode.mtu = ethdev_mtu;
        // SAFETY: reading extern consts defined in the C shim.
        let (rss_hash, fast_free, rss_ipv4, rss_tcp, rss_udp) = unsafe {
            (
                ffi::FG_RX_OFFLOAD_RSS_HASH,
                ffi::FG_TX_OFFLOAD_MBUF_FAST_FREE,
                ffi::FG_RSS_IPV4,
                ffi::FG_RSS_NONFRAG_IPV4_TCP,
                ffi::FG_RSS_NONFRAG_IPV4_UDP,
            )
        };
        if setup.queues > 1 {
            let hf = (rss_ipv4 | rss_tcp | rss_udp) & info.flow_type_rss_offloads;
            if hf != 0 {
                conf.rxmode.mq_mode = ffi::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
                conf.rx_adv_conf.rss_conf.rss_hf = hf;
                conf.rxmode.offloads |= rss_hash & info.rx_offload_capa;
            }
        }
        if setup.scatter {
            // SAFETY: reading an extern const defined in the C shim.
            let scatter = unsafe { ffi::FG_RX_OFFLOAD_SCATTER };
            if scatter & info.rx_offload_capa == 0 {
                return Err(err(
                    format!(
                        "port {}: mempool.scatter asked, {driver} cannot scatter",
                        setup.name
                    ),
                    95,
                ));
            }
            conf.rxmode.offloads |= scatter;
        }
        // One mempool, refcount 1 everywhere: the fast-free precondition holds.
        conf.txmode.offloads |= fast_free & info.tx_offload_capa;

        // SAFETY: valid port id; conf lives across the call.
        let rc = unsafe { ffi::rte_eth_dev_configure(id, setup.queues, setup.queues, &conf) };
        if rc != 0 {
            return Err(err(
                format!("port {}: rte_eth_dev_configure", setup.name),
                rc,
            ));
        }
        let mut nb_rxd = setup.rx_desc;
        let mut nb_txd = setup.tx_desc;
        // SAFETY: valid port id and out-pointers.
        let rc = unsafe { ffi::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut nb_rxd, &mut nb_txd) };
        if rc != 0 {
            return Err(err(format!("port {}: adjust descriptors", setup.name), rc));
        }
        let mut rxconf = info.default_rxconf;
        rxconf.offloads = conf.rxmode.offloads;
        let mut txconf = info.default_txconf;
        txconf.offloads = conf.txmode.offloads;
        for q in 0..setup.queues {
            // SAFETY: valid port id/queue; rxconf and pool outlive the call.
            let rc = unsafe {
                ffi::rte_eth_rx_queue_setup(id, q, nb_rxd, u32::MAX, &rxconf, pool.as_ptr())
            };
            if rc != 0 {
                return Err(err(format!("port {}: rx queue {q} setup", setup.name), rc));
            }
            // SAFETY: as above.
            let rc = unsafe { ffi::rte_eth_tx_queue_setup(id, q, nb_txd, u32::MAX, &txconf) };
            if rc != 0 {
                return Err(err(format!("port {}: tx queue {q} setup", setup.name), rc));
            }
        }
        // SAFETY: configured port.
        let rc = unsafe { ffi::rte_eth_dev_start(id) };
        if rc != 0 {
            return Err(err(format!("port {}: rte_eth_dev_start", setup.name), rc));
        }
        let mut mac = ffi::rte_ether_addr::default();
        // SAFETY: valid port id and out-pointer.
        unsafe { ffi::rte_eth_macaddr_get(id, &mut mac) };

        let rss_key_programmable = probe_rss_key(id, &info);
        let rss_programmed = if rss_key_programmable && setup.queues > 1 {
            program_rss(id, &info, setup.queues, conf.rx_adv_conf.rss_conf.rss_hf)
        } else {
            None
        };
        let mut port = Port {
            id,
            name: setup.name.clone(),
            driver,
            mac: mac.addr_bytes,
            queues: setup.queues,
            mtu: setup.mtu,
            link_up: false,
            rss_key_programmable,
            rss_programmed,
        };
        port.link_up = port.wait_link(Duration::from_secs(5));
        Ok(port)
    }

    fn wait_link(&self, limit: Duration) -> bool {
        let t0 = Instant::now();
        loop {
            if self.link_up_now() {
                return true;
            }
            if t0.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn link_up_now(&self) -> bool {
        let mut link = ffi::rte_eth_link::default();
        // SAFETY: valid port id and out-pointer.
        unsafe { ffi::rte_eth_link_get_nowait(self.id, &mut link) };
        link.link_status() != 0
    }

    pub fn stop(&self) {
        // SAFETY: valid started port; called from the control thread after workers stop.
        unsafe {
            ffi::rte_eth_dev_stop(self.id);
        }
    }

    pub fn close(&self) {
        // SAFETY: stopped port; not used afterwards.
        unsafe {
            ffi::rte_eth_dev_close(self.id);
        }
    }

    pub fn stats(&self) -> PortStats {
        let mut s = ffi::rte_eth_stats::default();
        // SAFETY: valid port id and out-pointer.
        unsafe { ffi::rte_eth_stats_get(self.id, &mut s) };
        PortStats {
            rx_packets: s.ipackets,
            tx_packets: s.opackets,
            rx_bytes: s.ibytes,
            tx_bytes: s.obytes,
            rx_missed: s.imissed,
            rx_errors: s.ierrors,
            tx_errors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        }
    }

    /// Extended stats (ENA's `bw_in_allowance_exceeded` & co. on EC2).
    pub fn xstats(&self) -> Vec<(String, u64)> {
        // SAFETY: a null buffer asks for the count.
        let n = unsafe { ffi::rte_eth_xstats_get_names(self.id, std::ptr::null_mut(), 0) };
        if n <= 0 {
            return Vec::new();
        }
        let n = n as usize;
        let mut names = vec![ffi::rte_eth_xstat_name::default(); n];
        let mut vals = vec![ffi::rte_eth_xstat::default(); n];
        // SAFETY: buffers have room for n entries.
        let got = unsafe { ffi::rte_eth_xstats_get_names(self.id, names.as_mut_ptr(), n as u32) };
        // SAFETY: as above.
        let gotv = unsafe { ffi::rte_eth_xstats_get(self.id, vals.as_mut_ptr(), n as u32) };
        if got <= 0 || gotv <= 0 {
            return Vec::new();
        }
        let m = (got as usize).min(gotv as usize).min(n);
        (0..m)
            .map(|i| {
                // SAFETY: the PMD wrote a NUL-terminated name into a 64-byte array.
                let name = unsafe { CStr::from_ptr(names[i].name.as_ptr()) }
                    .to_string_lossy()
                    .into_owned();
                (name, vals[i].value)
            })
            .collect()
    }
}

/// Can this port's RSS key be rewritten? Reads the current key and writes it back
/// unchanged: harmless where it works, refused where the device cannot (82599 VF, some ENA).
fn probe_rss_key(id: u16, info: &ffi::rte_eth_dev_info) -> bool {
    if info.hash_key_size == 0 || info.flow_type_rss_offloads == 0 {
        return false;
    }
    let mut key = vec![0u8; info.hash_key_size as usize];
    let mut conf = ffi::rte_eth_rss_conf {
        rss_key: key.as_mut_ptr(),
        rss_key_len: info.hash_key_size,
        rss_hf: 0,
    };
    // SAFETY: key buffer has hash_key_size bytes.
    if unsafe { ffi::rte_eth_dev_rss_hash_conf_get(id, &mut conf) } != 0 {
        return false;
    }
    // SAFETY: conf points at the key we just read.
    unsafe { ffi::rte_eth_dev_rss_hash_update(id, &mut conf) == 0 }
}

/// Program RSS_KEY and a redirection table spreading entries round-robin over the
/// queues. None if the device refuses either (then NAT falls back to handoff rings).
fn program_rss(id: u16, info: &ffi::rte_eth_dev_info, queues: u16, hf: u64) -> Option<RssProgram> {
    if info.hash_key_size as usize != RSS_KEY.len() || info.reta_size == 0 {
        return None;
    }
    let mut key = RSS_KEY;
    let mut conf = ffi::rte_eth_rss_conf {
        rss_key: key.as_mut_ptr(),
        rss_key_len: RSS_KEY.len() as u8,
        rss_hf: hf,
    };
    // SAFETY: conf points at a 40-byte key that outlives the call.
    if unsafe { ffi::rte_eth_dev_rss_hash_update(id, &mut conf) } != 0 {
        return None;
    }
    let size = info.reta_size as usize;
    let group = ffi::RTE_ETH_RETA_GROUP_SIZE as usize;
    let mut entries = vec![ffi::rte_eth_rss_reta_entry64::default(); size.div_ceil(group)];
    let reta: Vec<u16> = (0..size).map(|i| (i % queues as usize) as u16).collect();
    for (i, q) in reta.iter().enumerate() {
        let e = &mut entries[i / group];
        e.mask |= 1u64 << (i % group);
        e.reta[i % group] = *q;
    }
    // SAFETY: `entries` holds reta_size / 64 groups as the API requires.
    let rc = unsafe { ffi::rte_eth_dev_rss_reta_update(id, entries.as_mut_ptr(), info.reta_size) };
    (rc == 0).then_some(RssProgram { key: RSS_KEY, reta })
}

#[cfg(test)]
mod tests {
    use super::is_pci_address;

    #[test]
    fn pci_vs_vdev() {
        assert!(is_pci_address("0000:00:06.0"));
        assert!(is_pci_address("00:06.0"));
        assert!(!is_pci_address("net_af_packet0,iface=veth1"));
        assert!(!is_pci_address("net_tap0,iface=fg0"));
    }
}
