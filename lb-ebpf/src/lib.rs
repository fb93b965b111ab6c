//! Empty library target: lets lb-userspace name this crate as a build-dependency so cargo
//! rebuilds it when the kernel code changes. The programs are the `lb-ebpf` binary.
#![no_std]
