//! The registry transport: a snapshot pushed to and pulled from any OCI Distribution registry
//! (the reference `registry`, Harbor, zot, GHCR, ECR), chunked into fixed windows so that a
//! child shares every unchanged window's blob with its parent, deduplicated against what the
//! registry and the local store already hold, resumable, and checked blob by blob.
//!
//! `format` is the artifact (documented for other tools in `docs/registry-format.md`), `window`
//! cuts files into data runs, `record` keeps their digests beside a snapshot, `client` speaks
//! HTTP, `blob` takes one blob into its window of a `dest` (a pulled file, written past the
//! page cache), and `push`, `pull` and `verify` are the three operations. Like `archive`, this
//! sits below the store and never imports it: a pull fetches into staging, and the store
//! commits it through its one create path.

mod auth;
mod blob;
mod client;
mod dest;
mod digest;
pub(crate) mod format;
pub(crate) mod pull;
pub(crate) mod push;
pub(crate) mod record;
mod reference;
pub(crate) mod verify;
mod window;

pub use auth::Credentials;
pub use client::Connection;
pub use digest::Digest;
pub use format::{DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
pub use pull::{PullOptions, PullReport};
pub use push::{LayerCompression, PushOptions, PushReport};
pub use reference::Reference;
pub(crate) use reference::{Version, is_tag};
pub use verify::{Mismatch, VerifiedSnapshot, VerifyOptions, VerifyReport, VerifyStatus};
