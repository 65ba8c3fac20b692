//! Reef's image store: image references, registry pulls, digest-verified content and safely unpacked layers.
//! Knows nothing of gRPC or the CRI: node-agent maps its types and errors to the wire.

#![forbid(unsafe_code)]

pub mod error;
pub mod unpack;

pub use error::{ErrorKind, ImageError, Result};
pub mod manifest;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod store;
