//! Sluice's sans-IO core: everything a Kafka broker decides, with none of the I/O.
//!
//! Read it in the order a request meets it:
//! 1. [`frame`] cuts the byte stream from a socket into size-checked frames.
//! 2. [`codec`] decodes a frame into a header and a typed request (schemas from the
//!    `kafka-protocol` crate), and encodes responses with the right header version.
//! 3. [`broker`] handles the request: topics, partitions, offsets, configs.
//! 4. [`log`] is a partition's segmented log of record [`batch`]es, written through the
//!    [`storage`] interface so that tests run on memory and the server on files.
//! 5. [`runtime`] is the interface an async runtime adapter (io-tokio, io-smol) implements so the
//!    server can run on it.
//!
//! Nothing here opens a socket or a file, reads a clock or spawns a task: time comes in as an
//! argument, storage as a trait object.
#![deny(missing_docs)]

pub mod batch;
pub mod broker;
pub mod cluster;
pub mod codec;
pub mod compression;
pub mod frame;
pub mod log;
pub mod runtime;
pub mod security;
pub mod storage;
pub mod throttle;
pub mod topic_config;
pub mod versions;
