//! NAT rewrite helpers (stub: being written).
