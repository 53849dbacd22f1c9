//! Network load balancer (SPEC.md §3): `maglev` chooses targets for new flows, `health`
//! probes targets from the control side.
pub mod health;
pub mod maglev;
