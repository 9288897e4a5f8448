//! What is stored about one user: the inputs from which the visible presence is computed.
//!
//! Facts never contain a derived value that could go stale with time: fading and expiry are computed by
//! the engine from the instants recorded here.

use crate::time::Timestamp;
use crate::values::{Activity, Availability, WorkLocationType};

/// Everything known about one user's presence. The default is a user who has never been touched.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserFacts {
    /// One session per application, keyed by the application's client id; kept sorted by `app_id`.
    pub sessions: Vec<Session>,
    /// The user-preferred presence, if one was set.
    pub preferred: Option<PreferredPresence>,
    /// The status message, if one was set (boxed, as are the location layers: most users have none, and
    /// a million cached records then take 80 bytes each instead of 224).
    pub status_message: Option<Box<StatusMessage>>,
    /// The manual work-location layer.
    pub manual_location: Option<Box<LocationEntry>>,
    /// The automatic work-location layer.
    pub automatic_location: Option<Box<LocationEntry>>,
    /// The sequence number the visible presence had at `sequence_at`.
    pub sequence_base: u64,
    /// The instant at which `sequence_base` was stamped (the last write).
    pub sequence_at: Timestamp,
}

/// One application's presence session for a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The application's client id (the session id).
    pub app_id: String,
    /// The availability the application set.
    pub availability: Availability,
    /// The activity the application set.
    pub activity: Activity,
    /// The last setPresence for this session: fading counts from here.
    pub refreshed_at: Timestamp,
    /// When the session ends unless refreshed.
    pub expires_at: Timestamp,
}

/// The presence the user chose, overriding all sessions while any session lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreferredPresence {
    /// The preferred availability.
    pub availability: Availability,
    /// The preferred activity.
    pub activity: Activity,
    /// When the preference lapses.
    pub expires_at: Timestamp,
}

/// A status message (plain text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusMessage {
    /// The message text.
    pub content: String,
    /// When the service accepted the message.
    pub published_at: Timestamp,
    /// When the message disappears, if ever.
    pub expiry: Option<StatusExpiry>,
}

/// The expiry of a status message: the instant, and the wall-clock form the caller gave, echoed on reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusExpiry {
    /// The instant the message disappears.
    pub at: Timestamp,
    /// `dateTime` exactly as the caller wrote it (no offset).
    pub date_time: String,
    /// `timeZone` exactly as the caller wrote it.
    pub time_zone: String,
}

/// One layer of the work location (manual or automatic), valid until the end of the day it was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocationEntry {
    /// Where the user works.
    pub location_type: WorkLocationType,
    /// The place (building, desk) if known.
    pub place_id: Option<String>,
    /// When this layer lapses (the end of the day it was set on).
    pub until: Timestamp,
}

impl UserFacts {
    /// The session of `app_id`, if any.
    pub fn session(&self, app_id: &str) -> Option<&Session> {
        self.sessions.iter().find(|session| session.app_id == app_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn facts_keep_their_rare_parts_boxed() {
        // A store caches a million of these: the status message and the location layers, which most users
        // never set, take a pointer each.
        assert_eq!(std::mem::size_of::<UserFacts>(), 80);
    }
}
