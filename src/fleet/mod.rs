//! A fleet of flowgate nodes (SPEC §5, §8): which nodes serve which tenant.
//!
//! - [`hash`]: the fixed, documented hash every node and tool uses (never `DefaultHasher`).
//! - [`shard`]: the stateless rendezvous sharder (k of N, stable under node churn).
//! - [`stateful`]: the Infima-style stateful sharder that bounds any two tenants' overlap to m.
//! - [`sim`]: the `flowgate shard` simulation against the hypergeometric prediction.
//!
//! Tenants are opaque ids (`nat/gw1`, `lb/web`): placement does not care about their kind.
pub mod cli;
pub mod hash;
pub mod shard;
pub mod sim;
pub mod stateful;
