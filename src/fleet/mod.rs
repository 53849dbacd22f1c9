//! A fleet of flowgate nodes (SPEC §5, §8): which nodes serve which tenant.
//!
//! - [`hash`]: the fixed, documented hash every node and tool uses (never `DefaultHasher`).
//! - [`shard`]: the stateless rendezvous sharder (k of N, stable under node churn).
//! - [`stateful`]: the Infima-style stateful sharder that bounds any two tenants' overlap to m.
//! - [`sim`]: the `flowgate shard` simulation against the hypergeometric prediction.
//! - [`keys`], [`store`]: the fleet's layout in etcd and the etcd-client helpers.
//! - [`controller`]: the elected placement writer; [`agent`]: a node's membership and the
//!   tenants it serves ([`apply`]: the hook into the node's data-path config);
//!   [`fabric`]: the router in front of the fleet, programmed from the placements.
//!
//! etcd is talked to only from these control-side processes, never from a worker.
//!
//! Tenants are opaque ids (`nat/gw1`, `lb/web`): placement does not care about their kind.
pub mod agent;
pub mod apply;
pub mod cli;
pub mod controller;
pub mod fabric;
pub mod hash;
pub mod keys;
pub mod shard;
pub mod sim;
pub mod stateful;
pub mod status;
pub mod store;
pub mod supervise;
