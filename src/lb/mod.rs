//! Network load balancer (SPEC.md §3).
pub mod maglev;
