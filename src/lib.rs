//! flowgate: a DPDK poll-mode NAT gateway and network load balancer.
pub mod config;
pub mod control;
pub mod lb;
pub mod packet;
pub mod pipeline;
pub mod pmd;
pub mod stages;
pub mod wire;
#[macro_use]
pub mod log;
pub mod ctl;
pub mod fleet;
pub mod flowlog;
pub mod health;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod nat;
pub mod repl;
pub mod rng;
pub mod telemetry;
