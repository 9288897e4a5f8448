//! The presence engine: Microsoft Graph presence semantics with no I/O and no clock.
//!
//! This crate owns what a user's presence *is*: the availability and activity values and the pairs each
//! action allows ([`values`]), ISO 8601 durations and their per-action ranges ([`duration`]), the stored
//! facts about one user ([`facts`]), the write commands that change them ([`command`]), and the one function
//! that turns facts and an instant into a visible presence plus the next instant at which it changes
//! ([`engine::observe`]).
//!
//! What it must never do: read the clock (every function that depends on time takes a [`Timestamp`]),
//! perform I/O, know about JSON, HTTP, tokens or storage. Callers at the edge convert wire types into the
//! types here by hand.
//!
//! # Aggregation laws
//!
//! For facts `f` and instant `t`, [`engine::evaluate`] satisfies:
//! - *order independence*: the result does not depend on the order in which sessions were created;
//! - *piecewise constancy*: the visible presence is constant on `[t, next)` where `next` is
//!   [`engine::next_change`], and differs at `next`;
//! - *monotone versions*: the sequence number never decreases as `t` grows or as commands are applied.
//!
//! These are checked by property tests in `tests/laws.rs`.

pub mod command;
pub mod duration;
pub mod engine;
pub mod facts;
pub mod time;
pub mod values;

pub use command::{Change, Command, CommandError, LocationLayer, NewStatusMessage};
pub use engine::{
    due_changes, evaluate, next_change, observe, Observation, Presence, StatusMessageView, WorkLocationView,
};
pub use facts::{LocationEntry, PreferredPresence, Session, StatusExpiry, StatusMessage, UserFacts};
pub use time::Timestamp;
pub use values::{Activity, Availability, WorkLocationSource, WorkLocationType};
