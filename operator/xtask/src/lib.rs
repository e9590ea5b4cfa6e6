//! Project chores, run as `cargo xtask <task>` (an alias in
//! `.cargo/config.toml`), kept out of the operator's library.
//!
//! - [`readme`]: the docs' generated regions (find, replace, compare).
//! - [`reference`]: the TwitterStream field reference, from the CRD schema.

pub mod readme;
pub mod reference;
