//! End-to-end tests that drive the real `medledger` binary over TCP.
