//! # dirigo-net: wire format and transports
//!
//! Length-prefixed rkyv frames, TCP ingress and egress, node-to-node links. (Filled by the
//! networking work.)
