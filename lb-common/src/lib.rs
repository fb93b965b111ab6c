//! The contract between the kernel datapath (`lb-ebpf`) and userspace (`lb-userspace`).
//!
//! # Layout
//! - [`pod`]: the macro that makes a map type plain old data on both sides.
//! - [`addr`]: the one address representation both sides use (IPv4-mapped IPv6).
//! - [`maps`]: every map's name, key and value type, and its default capacity.
//! - [`counters`]: per-backend/per-service counters and typed drop reasons.
//! - [`flow`]: the 5-tuple hash that indexes Maglev tables, shared so `lbctl` can
//!   explain a decision with the very function the datapath runs.
//! - [`maglev`] (userspace only): the Maglev table builder.
//!
//! Only integers and byte arrays cross the kernel/user boundary: no `bool`, `Option` or enums.
//! Byte order is in every field's name (`_be`) or doc.
#![cfg_attr(not(feature = "std"), no_std)]

#[macro_use]
pub mod pod;

pub mod addr;
pub mod counters;
pub mod flow;
pub mod maps;

#[cfg(feature = "user")]
pub mod maglev;
