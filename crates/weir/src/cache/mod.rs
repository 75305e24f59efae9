//! Response caching: keys, tiers (memory, SQLite, Redis), single-flight, semantic lookup.

pub mod flight;
pub mod key;
pub mod memory;
pub mod redis;
pub mod replay;
pub mod semantic;
pub mod sqlite;
pub mod store;
pub mod tiered;
