//! The write actions, validated on construction and applied to a user's facts at a given instant.
//!
//! Construction ([`Command::set_presence`] and friends) checks everything that does not depend on stored
//! state, so a bad request is refused before any storage is touched. [`Command::apply`] checks the rest,
//! changes the facts, and stamps the new sequence number.

use std::time::Duration;

use crate::duration::{self, DurationError};
use crate::engine::{evaluate, same_visible, Presence};
use crate::facts::{LocationEntry, PreferredPresence, Session, StatusExpiry, StatusMessage, UserFacts};
use crate::time::Timestamp;
use crate::values::{Activity, Availability, WorkLocationType, PREFERRED_PRESENCE_PAIRS, SET_PRESENCE_PAIRS};

/// Why a command was refused. Every variant is the caller's mistake except none: the core cannot fail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// A required parameter was absent or null.
    #[error("The parameter '{0}' is required.")]
    MissingParameter(&'static str),
    /// The availability is not a Graph availability value.
    #[error("'{0}' is not a valid availability value.")]
    UnknownAvailability(String),
    /// The activity is not a Graph activity value.
    #[error("'{0}' is not a valid activity value.")]
    UnknownActivity(String),
    /// Both values exist, but this action does not accept them together.
    #[error("The combination of availability '{availability}' and activity '{activity}' is not supported by {action}. Supported combinations: {supported}.")]
    UnsupportedPair {
        /// The action's name.
        action: &'static str,
        /// The availability given.
        availability: Availability,
        /// The activity given.
        activity: Activity,
        /// The pairs the action accepts, for the message.
        supported: String,
    },
    /// The duration is not a valid ISO 8601 duration.
    #[error("Invalid expirationDuration: {0}.")]
    Duration(#[from] DurationError),
    /// The duration is valid but outside the action's range.
    #[error("expirationDuration '{given}' is out of range: it must be between {min} and {max}.")]
    DurationOutOfRange {
        /// The duration given.
        given: String,
        /// The shortest allowed.
        min: &'static str,
        /// The longest allowed.
        max: &'static str,
    },
    /// setPresence or clearPresence named a session other than the caller's own.
    #[error("The sessionId '{session_id}' must be the calling application's id ('{app_id}').")]
    SessionIdMismatch {
        /// The session id given.
        session_id: String,
        /// The caller's application id.
        app_id: String,
    },
    /// clearPresence for a session that does not exist (or has expired).
    #[error("The presence session '{0}' was not found for this user.")]
    SessionNotFound(String),
    /// The work-location type is not a Graph value.
    #[error("'{0}' is not a valid workLocationType value.")]
    UnknownWorkLocationType(String),
}

/// Which work-location layer a set action writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocationLayer {
    /// `setManualLocation`: overrides everything else for the rest of the day.
    Manual,
    /// `setAutomaticLocation`: used when no manual location is set.
    Automatic,
}

/// A status message to publish: the text and an optional expiry already resolved to an instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewStatusMessage {
    /// The text; empty clears the message.
    pub content: String,
    /// When it expires.
    pub expiry: Option<StatusExpiry>,
}

/// A validated write action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Create or refresh the calling application's session.
    SetPresence {
        /// The caller's application id, which is the session id.
        app_id: String,
        /// The availability to show.
        availability: Availability,
        /// The activity to show.
        activity: Activity,
        /// How long the session lives without a refresh.
        expires_after: Duration,
    },
    /// Remove the calling application's session.
    ClearPresence {
        /// The caller's application id, which is the session id.
        app_id: String,
    },
    /// Set the user-preferred presence.
    SetPreferred {
        /// The preferred availability.
        availability: Availability,
        /// The preferred activity.
        activity: Activity,
        /// How long the preference lasts.
        expires_after: Duration,
    },
    /// Remove the user-preferred presence.
    ClearPreferred,
    /// Publish or clear (with `None`) the status message.
    SetStatusMessage(Option<NewStatusMessage>),
    /// Set one work-location layer until the end of the day.
    SetLocation {
        /// The layer.
        layer: LocationLayer,
        /// Where the user works.
        location_type: WorkLocationType,
        /// The place, if known.
        place_id: Option<String>,
    },
    /// Clear the manual and automatic work-location layers.
    ClearLocation,
    /// Clear the automatic work-location layer.
    ClearAutomaticLocation,
}

/// The presence just before and just after a command, at the same instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What showed before.
    pub before: Presence,
    /// What shows now.
    pub after: Presence,
}

impl Change {
    /// True when the command changed what readers see.
    pub fn is_visible(&self) -> bool {
        !same_visible(&self.before, &self.after)
    }
}

fn parse_pair(
    action: &'static str,
    allowed: &[(Availability, Activity)],
    availability: Option<&str>,
    activity: Option<&str>,
) -> Result<(Availability, Activity), CommandError> {
    let availability = availability.ok_or(CommandError::MissingParameter("availability"))?;
    let activity = activity.ok_or(CommandError::MissingParameter("activity"))?;
    let availability =
        Availability::parse(availability).ok_or_else(|| CommandError::UnknownAvailability(availability.to_owned()))?;
    let activity = Activity::parse(activity).ok_or_else(|| CommandError::UnknownActivity(activity.to_owned()))?;
    if !allowed.contains(&(availability, activity)) {
        let supported = allowed.iter().map(|(a, b)| format!("{a}/{b}")).collect::<Vec<_>>().join(", ");
        return Err(CommandError::UnsupportedPair { action, availability, activity, supported });
    }
    Ok((availability, activity))
}

fn check_session_id(app_id: &str, session_id: Option<&str>) -> Result<String, CommandError> {
    let session_id = session_id.ok_or(CommandError::MissingParameter("sessionId"))?;
    if !session_id.eq_ignore_ascii_case(app_id) {
        return Err(CommandError::SessionIdMismatch { session_id: session_id.to_owned(), app_id: app_id.to_owned() });
    }
    Ok(app_id.to_ascii_lowercase())
}

impl Command {
    /// setPresence: `sessionId` must be the caller's application id; five pairs; `PT5M`..`PT4H`, default `PT5M`.
    pub fn set_presence(
        caller_app_id: &str,
        session_id: Option<&str>,
        availability: Option<&str>,
        activity: Option<&str>,
        expiration_duration: Option<&str>,
    ) -> Result<Self, CommandError> {
        let (availability, activity) = parse_pair("setPresence", SET_PRESENCE_PAIRS, availability, activity)?;
        let expires_after = match expiration_duration {
            None => duration::SET_PRESENCE_DEFAULT,
            Some(text) => {
                let parsed = duration::parse(text)?;
                if !(duration::SET_PRESENCE_MIN..=duration::SET_PRESENCE_MAX).contains(&parsed) {
                    return Err(CommandError::DurationOutOfRange { given: text.to_owned(), min: "PT5M", max: "PT4H" });
                }
                parsed
            }
        };
        let app_id = check_session_id(caller_app_id, session_id)?;
        Ok(Command::SetPresence { app_id, availability, activity, expires_after })
    }

    /// clearPresence: `sessionId` must be the caller's application id.
    pub fn clear_presence(caller_app_id: &str, session_id: Option<&str>) -> Result<Self, CommandError> {
        Ok(Command::ClearPresence { app_id: check_session_id(caller_app_id, session_id)? })
    }

    /// setUserPreferredPresence: six pairs; any positive duration, default 1 day (Busy, DoNotDisturb) or 7 days.
    pub fn set_preferred(
        availability: Option<&str>,
        activity: Option<&str>,
        expiration_duration: Option<&str>,
    ) -> Result<Self, CommandError> {
        let (availability, activity) =
            parse_pair("setUserPreferredPresence", PREFERRED_PRESENCE_PAIRS, availability, activity)?;
        let expires_after = match expiration_duration {
            Some(text) => duration::parse(text)?,
            None if matches!(availability, Availability::Busy | Availability::DoNotDisturb) => {
                duration::PREFERRED_DEFAULT_SHORT
            }
            None => duration::PREFERRED_DEFAULT_LONG,
        };
        Ok(Command::SetPreferred { availability, activity, expires_after })
    }

    /// setManualLocation / setAutomaticLocation.
    pub fn set_location(
        layer: LocationLayer,
        location_type: Option<&str>,
        place_id: Option<&str>,
    ) -> Result<Self, CommandError> {
        let text = location_type.ok_or(CommandError::MissingParameter("workLocationType"))?;
        let location_type =
            WorkLocationType::parse(text).ok_or_else(|| CommandError::UnknownWorkLocationType(text.to_owned()))?;
        Ok(Command::SetLocation { layer, location_type, place_id: place_id.map(str::to_owned) })
    }

    /// Applies the command to `facts` at `now`, stamping the sequence number.
    ///
    /// On error `facts` is left exactly as it was.
    pub fn apply(&self, facts: &mut UserFacts, now: Timestamp) -> Result<Change, CommandError> {
        let now = now.max(facts.sequence_at);
        let before = evaluate(facts, now);
        if let Command::ClearPresence { app_id } = self {
            if facts.session(app_id).is_none_or(|session| now >= session.expires_at) {
                return Err(CommandError::SessionNotFound(app_id.clone()));
            }
        }
        forget_expired(facts, now);
        match self {
            Command::SetPresence { app_id, availability, activity, expires_after } => {
                let session = Session {
                    app_id: app_id.clone(),
                    availability: *availability,
                    activity: *activity,
                    refreshed_at: now,
                    expires_at: now.saturating_add(*expires_after),
                };
                match facts.sessions.binary_search_by(|existing| existing.app_id.as_str().cmp(app_id)) {
                    Ok(index) => facts.sessions[index] = session,
                    Err(index) => facts.sessions.insert(index, session),
                }
            }
            Command::ClearPresence { app_id } => facts.sessions.retain(|session| &session.app_id != app_id),
            Command::SetPreferred { availability, activity, expires_after } => {
                facts.preferred = Some(PreferredPresence {
                    availability: *availability,
                    activity: *activity,
                    expires_at: now.saturating_add(*expires_after),
                });
            }
            Command::ClearPreferred => facts.preferred = None,
            Command::SetStatusMessage(message) => {
                facts.status_message = message.as_ref().filter(|message| !message.content.is_empty()).map(|message| {
                    Box::new(StatusMessage {
                        content: message.content.clone(),
                        published_at: now,
                        expiry: message.expiry.clone(),
                    })
                });
            }
            Command::SetLocation { layer, location_type, place_id } => {
                let entry = Some(Box::new(LocationEntry {
                    location_type: *location_type,
                    place_id: place_id.clone(),
                    until: now.next_utc_midnight(),
                }));
                match layer {
                    LocationLayer::Manual => facts.manual_location = entry,
                    LocationLayer::Automatic => facts.automatic_location = entry,
                }
            }
            Command::ClearLocation => {
                facts.manual_location = None;
                facts.automatic_location = None;
            }
            Command::ClearAutomaticLocation => facts.automatic_location = None,
        }
        facts.sequence_at = now;
        facts.sequence_base = before.sequence_number;
        let unstamped = evaluate(facts, now);
        if !same_visible(&before, &unstamped) {
            facts.sequence_base = before.sequence_number.saturating_add(1);
        }
        let after = evaluate(facts, now);
        Ok(Change { before, after })
    }
}

/// Drops whatever has stopped showing by `now`; what shows at or after `now` is unchanged.
fn forget_expired(facts: &mut UserFacts, now: Timestamp) {
    facts.sessions.retain(|session| now < session.expires_at);
    if facts.preferred.as_ref().is_some_and(|preferred| now >= preferred.expires_at) {
        facts.preferred = None;
    }
    let status_expired = facts
        .status_message
        .as_ref()
        .and_then(|message| message.expiry.as_ref())
        .is_some_and(|expiry| now >= expiry.at);
    if status_expired {
        facts.status_message = None;
    }
    for entry in [&mut facts.manual_location, &mut facts.automatic_location] {
        if entry.as_ref().is_some_and(|entry| now >= entry.until) {
            *entry = None;
        }
    }
}
