//! Protocol state machines (stub: being written).
