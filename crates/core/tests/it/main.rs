//! Integration tests of trailwatch-core: the conformance suite against the
//! in-memory ports, and the model and reader against fixture files.

mod fixtures;
mod identity;
mod memory_ports;
