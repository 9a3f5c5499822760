//! A validator: consensus engine, networking, mempool, sync and API server.

pub mod consensus;
