//! A validator: consensus engine, networking, mempool, sync and API server.

pub mod api;
pub mod app;
pub mod config;
pub mod consensus;
pub mod forward;
pub mod janitor;
pub mod keyring;
pub mod metrics;
pub mod peers;
pub mod ratelimit;
pub mod receipt;
pub mod replay;
pub mod reshare;
pub mod run;
pub mod sync;
pub mod tls;
pub mod verify;
