//! flowgate: a DPDK poll-mode NAT gateway and network load balancer.
pub mod config;
pub mod packet;
pub mod pmd;
pub mod wire;
pub mod pipeline;
