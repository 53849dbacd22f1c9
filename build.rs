//! Finds DPDK 22.11 with pkg-config, generates bindings with bindgen (explicit allowlist),
//! and compiles the wrappers for DPDK's `static inline` functions plus a small C shim.
use std::env;
use std::path::PathBuf;

const DEBIAN_PACKAGES: &str = "dpdk dpdk-dev libdpdk-dev libclang-dev pkg-config";

fn main() {
    println!("cargo:rerun-if-changed=src/pmd/dpdk.h");
    println!("cargo:rerun-if-changed=src/pmd/shim.h");
    println!("cargo:rerun-if-changed=src/pmd/shim.c");

    let dpdk = match pkg_config::Config::new()
        .atleast_version("22.11")
        .probe("libdpdk")
    {
        Ok(lib) => lib,
        Err(e) => panic!(
            "flowgate needs DPDK 22.11 found by pkg-config (libdpdk.pc): {e}\n\
             On Debian 12 install it with: apt-get install {DEBIAN_PACKAGES}"
        ),
    };
    if !dpdk.version.starts_with("22.11") {
        panic!(
            "flowgate is written against DPDK 22.11.x but pkg-config found {}; \
             install Debian 12's packages: apt-get install {DEBIAN_PACKAGES}",
            dpdk.version
        );
    }

    // pkg-config's cflags carry `-include rte_config.h` and `-march=...`; both are needed
    // for the headers to describe the same structs the libraries were built with.
    let cflags = pkg_config::get_variable("libdpdk", "cflags").unwrap_or_default();
    let cflags_out = std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .expect("pkg-config --cflags libdpdk");
    let mut clang_args: Vec<String> = String::from_utf8_lossy(&cflags_out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if clang_args.is_empty() {
        clang_args = cflags.split_whitespace().map(str::to_owned).collect();
    }
    clang_args.push("-Isrc/pmd".into());

    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let wrappers = out.join("dpdk_static_wrappers");

    let bindings = bindgen::Builder::default()
        .header("src/pmd/dpdk.h")
        .clang_args(&clang_args)
        .wrap_static_fns(true)
        .wrap_static_fns_path(&wrappers)
        .allowlist_function("rte_eal_init")
        .allowlist_function("rte_eal_cleanup")
        .allowlist_function("rte_eal_mp_wait_lcore")
        .allowlist_function("rte_eal_remote_launch")
        .allowlist_function("rte_eal_wait_lcore")
        .allowlist_function("rte_lcore_id")
        .allowlist_function("rte_lcore_count")
        .allowlist_function("rte_get_main_lcore")
        .allowlist_function("rte_get_next_lcore")
        .allowlist_function("rte_lcore_to_socket_id")
        .allowlist_function("rte_socket_id")
        .allowlist_function("rte_strerror")
        .allowlist_function("rte_version")
        .allowlist_function("rte_get_tsc_cycles")
        .allowlist_function("rte_rdtsc")
        .allowlist_function("rte_get_tsc_hz")
        .allowlist_function("rte_delay_us_block")
        .allowlist_function("rte_pktmbuf_pool_create")
        .allowlist_function("rte_pktmbuf_alloc")
        .allowlist_function("rte_pktmbuf_alloc_bulk")
        .allowlist_function("rte_pktmbuf_free")
        .allowlist_function("rte_pktmbuf_free_bulk")
        .allowlist_function("rte_mempool_avail_count")
        .allowlist_function("rte_mempool_in_use_count")
        .allowlist_function("rte_mempool_free")
        .allowlist_function("rte_eth_dev_count_avail")
        .allowlist_function("rte_eth_dev_get_port_by_name")
        .allowlist_function("rte_eth_dev_info_get")
        .allowlist_function("rte_eth_dev_configure")
        .allowlist_function("rte_eth_dev_adjust_nb_rx_tx_desc")
        .allowlist_function("rte_eth_rx_queue_setup")
        .allowlist_function("rte_eth_tx_queue_setup")
        .allowlist_function("rte_eth_dev_start")
        .allowlist_function("rte_eth_dev_stop")
        .allowlist_function("rte_eth_dev_close")
        .allowlist_function("rte_eth_dev_set_mtu")
        .allowlist_function("rte_eth_dev_get_mtu")
        .allowlist_function("rte_eth_promiscuous_enable")
        .allowlist_function("rte_eth_macaddr_get")
        .allowlist_function("rte_eth_link_get_nowait")
        .allowlist_function("rte_eth_stats_get")
        .allowlist_function("rte_eth_stats_reset")
        .allowlist_function("rte_eth_xstats_get")
        .allowlist_function("rte_eth_xstats_get_names")
        .allowlist_function("rte_eth_dev_rss_hash_update")
        .allowlist_function("rte_eth_dev_rss_hash_conf_get")
        .allowlist_function("rte_eth_dev_rss_reta_update")
        .allowlist_function("rte_eth_rx_burst")
        .allowlist_function("rte_eth_tx_burst")
        .allowlist_function("rte_eal_process_type")
        .allowlist_function("rte_pdump_init")
        .allowlist_function("rte_pdump_uninit")
        .allowlist_function("rte_telemetry_register_cmd")
        .allowlist_function("rte_tel_data_start_dict")
        .allowlist_function("rte_tel_data_add_dict_u64")
        .allowlist_function("rte_tel_data_add_dict_string")
        .allowlist_type("telemetry_cb")
        .allowlist_function("fg_.*")
        .allowlist_var("FG_.*")
        .allowlist_var("RTE_MAX_LCORE")
        .allowlist_var("RTE_TEL_MAX_.*")
        .allowlist_var("RTE_MAX_ETHPORTS")
        .allowlist_var("RTE_PKTMBUF_HEADROOM")
        .allowlist_var("RTE_MBUF_DEFAULT_BUF_SIZE")
        .allowlist_var("RTE_ETHER_.*")
        .allowlist_var("RTE_ETH_MQ_.*")
        .allowlist_var("RTE_ETH_LINK_.*")
        .allowlist_var("RTE_CACHE_LINE_SIZE")
        .allowlist_var("SOCKET_ID_ANY")
        .allowlist_type("rte_mbuf")
        .allowlist_type("rte_mempool")
        .allowlist_type("rte_eth_conf")
        .allowlist_type("rte_eth_dev_info")
        .allowlist_type("rte_eth_rxconf")
        .allowlist_type("rte_eth_txconf")
        .allowlist_type("rte_eth_stats")
        .allowlist_type("rte_eth_xstat")
        .allowlist_type("rte_eth_xstat_name")
        .allowlist_type("rte_eth_link")
        .allowlist_type("rte_eth_rss_conf")
        .allowlist_type("rte_eth_rss_reta_entry64")
        .allowlist_var("RTE_ETH_RETA_GROUP_SIZE")
        .allowlist_type("rte_ether_addr")
        .allowlist_type("lcore_function_t")
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .generate()
        .expect("bindgen could not generate DPDK bindings");
    bindings
        .write_to_file(out.join("dpdk_bindings.rs"))
        .expect("write bindings");

    // The generated wrappers (one extern "C" function per static inline) and the shim are
    // compiled with the same flags DPDK's headers expect.
    let mut build = cc::Build::new();
    build
        .file(wrappers.with_extension("c"))
        .file("src/pmd/shim.c")
        .include("src/pmd")
        .include(env::current_dir().unwrap())
        .opt_level(3)
        .warnings(false);
    for arg in &clang_args {
        build.flag(arg);
    }
    // The generated wrapper file #includes the header by the path given to bindgen.
    build.compile("flowgate_dpdk_shim");

    // Link every DPDK library pkg-config names (shared), so the PMD plugins Debian ships
    // (net_ena, net_ixgbe, net_tap, net_af_packet, net_memif, ...) load at EAL init.
    for lib in &dpdk.libs {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }
    for path in &dpdk.link_paths {
        println!("cargo:rustc-link-search=native={}", path.display());
    }
}
