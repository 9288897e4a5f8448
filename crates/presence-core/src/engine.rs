//! From stored facts and an instant to the visible presence, its version, and the next instant it changes.
//!
//! Rules (presence-spec.md sections 3.1 to 3.9):
//! - a session ends at its `expires_at`; an `Available` session not refreshed for 5 minutes shows
//!   [`FADED_ONCE`], after 10 minutes [`FADED_TWICE`], whatever its expiry;
//! - no live session: `Offline`/`Offline`, whatever else is stored;
//! - otherwise an unexpired preferred presence wins; otherwise the session with the highest
//!   [`session_rank`], ties going to the most recently refreshed session (then the smaller app id, so that
//!   the result never depends on arrival order);
//! - the status message shows until its expiry; the work location is manual, else automatic, else none;
//! - the sequence number counts every change of the visible presence, timer-driven ones included.

use std::time::Duration;

use crate::facts::{LocationEntry, Session, StatusExpiry, StatusMessage, UserFacts};
use crate::time::Timestamp;
use crate::values::{
    session_rank, Activity, Availability, WorkLocationSource, WorkLocationType, FADED_ONCE, FADED_TWICE,
};

/// Time without a refresh after which an Available session shows [`FADED_ONCE`].
pub const FADE_AFTER: Duration = Duration::from_secs(5 * 60);
/// Time without a refresh after which an Available session shows [`FADED_TWICE`].
pub const AWAY_AFTER: Duration = Duration::from_secs(10 * 60);

/// The presence a reader sees at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// The aggregated availability.
    pub availability: Availability,
    /// The aggregated activity.
    pub activity: Activity,
    /// The status message, while it has not expired.
    pub status_message: Option<StatusMessageView>,
    /// The aggregated work location.
    pub work_location: WorkLocationView,
    /// The version of this presence: it grows with every visible change.
    pub sequence_number: u64,
}

/// The status message as it shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusMessageView {
    /// The text.
    pub content: String,
    /// When it was published.
    pub published_at: Timestamp,
    /// When it expires, as the caller gave it.
    pub expiry: Option<StatusExpiry>,
}

/// The aggregated work location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkLocationView {
    /// Where the user works.
    pub location_type: WorkLocationType,
    /// Which layer decided.
    pub source: WorkLocationSource,
    /// The place, when known.
    pub place_id: Option<String>,
}

/// The visible part of a presence: everything but the sequence number.
type Visible = (Availability, Activity, Option<StatusMessageView>, WorkLocationView);

/// What one session shows at `at`, or `None` once it has expired.
pub fn session_state(session: &Session, at: Timestamp) -> Option<(Availability, Activity)> {
    if at >= session.expires_at {
        return None;
    }
    if session.availability == Availability::Available {
        if at >= session.refreshed_at.saturating_add(AWAY_AFTER) {
            return Some(FADED_TWICE);
        }
        if at >= session.refreshed_at.saturating_add(FADE_AFTER) {
            return Some(FADED_ONCE);
        }
    }
    Some((session.availability, session.activity))
}

/// The availability and activity at `at`.
fn aggregate(facts: &UserFacts, at: Timestamp) -> (Availability, Activity) {
    let winner =
        facts.sessions.iter().filter_map(|session| session_state(session, at).map(|state| (state, session))).max_by(
            |(left_state, left), (right_state, right)| {
                session_rank(left_state.0)
                    .cmp(&session_rank(right_state.0))
                    .then(left.refreshed_at.cmp(&right.refreshed_at))
                    .then(right.app_id.cmp(&left.app_id))
            },
        );
    let Some((state, _)) = winner else {
        return (Availability::Offline, Activity::Offline);
    };
    match &facts.preferred {
        Some(preferred) if at < preferred.expires_at => (preferred.availability, preferred.activity),
        _ => state,
    }
}

/// What shows at an instant, borrowed from the facts, so that instants are compared without copying a
/// string: the status message and the work location layer that show, if any.
#[derive(PartialEq, Eq)]
struct Shown<'a> {
    availability: Availability,
    activity: Activity,
    status_message: Option<&'a StatusMessage>,
    location: Option<(WorkLocationSource, &'a LocationEntry)>,
}

/// What shows at `at`. Two instants show the same presence exactly when their [`visible`] are equal: the
/// message and the layers are each one stored fact, shown or not.
fn shown(facts: &UserFacts, at: Timestamp) -> Shown<'_> {
    let (availability, activity) = aggregate(facts, at);
    let status_message =
        facts.status_message.as_deref().filter(|message| message.expiry.as_ref().is_none_or(|expiry| at < expiry.at));
    let live = |entry: &&LocationEntry| at < entry.until;
    let location =
        match (facts.manual_location.as_deref().filter(live), facts.automatic_location.as_deref().filter(live)) {
            (Some(entry), _) => Some((WorkLocationSource::Manual, entry)),
            (None, Some(entry)) => Some((WorkLocationSource::Automatic, entry)),
            (None, None) => None,
        };
    Shown { availability, activity, status_message, location }
}

/// What shows at `at`, as the values a presence holds.
fn visible(facts: &UserFacts, at: Timestamp) -> Visible {
    let Shown { availability, activity, status_message, location } = shown(facts, at);
    let status_message = status_message.map(|message| StatusMessageView {
        content: message.content.clone(),
        published_at: message.published_at,
        expiry: message.expiry.clone(),
    });
    let work_location = match location {
        Some((source, entry)) => {
            WorkLocationView { location_type: entry.location_type, source, place_id: entry.place_id.clone() }
        }
        None => WorkLocationView {
            location_type: WorkLocationType::Unspecified,
            source: WorkLocationSource::None,
            place_id: None,
        },
    };
    (availability, activity, status_message, work_location)
}

/// Every instant at which some stored fact starts or stops showing, sorted and without duplicates.
///
/// The visible presence can only change at one of these instants; between two of them it is constant.
fn boundaries(facts: &UserFacts) -> Vec<Timestamp> {
    let mut instants = Vec::with_capacity(facts.sessions.len() * 3 + 4);
    for session in &facts.sessions {
        instants.push(session.expires_at);
        if session.availability == Availability::Available {
            instants.push(session.refreshed_at.saturating_add(FADE_AFTER));
            instants.push(session.refreshed_at.saturating_add(AWAY_AFTER));
        }
    }
    instants.extend(facts.preferred.as_ref().map(|preferred| preferred.expires_at));
    instants.extend(facts.status_message.as_ref().and_then(|message| message.expiry.as_ref()).map(|expiry| expiry.at));
    instants.extend(facts.manual_location.as_ref().map(|entry| entry.until));
    instants.extend(facts.automatic_location.as_ref().map(|entry| entry.until));
    instants.sort_unstable();
    instants.dedup();
    instants
}

/// The number of visible changes in `(from, to]`.
fn changes_between(facts: &UserFacts, from: Timestamp, to: Timestamp) -> u64 {
    let mut instants = boundaries(facts).into_iter().filter(|instant| *instant > from && *instant <= to).peekable();
    if instants.peek().is_none() {
        // Nothing started or stopped showing since `from`, as with most reads soon after a write.
        return 0;
    }
    let mut previous = shown(facts, from);
    let mut count = 0;
    for instant in instants {
        let current = shown(facts, instant);
        if current != previous {
            count += 1;
            previous = current;
        }
    }
    count
}

/// The presence at `at`.
///
/// Instants before the last write are read as the instant of the last write, so a clock that steps back
/// never shows an older version. The sequence number is a version only if callers never write facts at an
/// instant earlier than one they evaluated them at (a monotonic clock, and reads and writes of one user
/// ordered with it): the engine cannot know about reads.
pub fn evaluate(facts: &UserFacts, at: Timestamp) -> Presence {
    let at = at.max(facts.sequence_at);
    let (availability, activity, status_message, work_location) = visible(facts, at);
    Presence {
        availability,
        activity,
        status_message,
        work_location,
        sequence_number: facts.sequence_base.saturating_add(changes_between(facts, facts.sequence_at, at)),
    }
}

/// The first instant after `at` at which the visible presence differs from the one at `at`, if any.
pub fn next_change(facts: &UserFacts, at: Timestamp) -> Option<Timestamp> {
    let at = at.max(facts.sequence_at);
    let now = shown(facts, at);
    boundaries(facts).into_iter().filter(|instant| *instant > at).find(|instant| shown(facts, *instant) != now)
}

/// What a reader sees at an instant, and until when it stays so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The presence at the instant.
    pub presence: Presence,
    /// The first later instant at which the presence differs; `None` when it never changes by itself.
    pub next_change: Option<Timestamp>,
}

/// The presence at `at` and the next instant it changes: [`evaluate`] and [`next_change`] in one call.
///
/// This is what a timer needs: show `presence` now, wake at `next_change`.
pub fn observe(facts: &UserFacts, at: Timestamp) -> Observation {
    Observation { presence: evaluate(facts, at), next_change: next_change(facts, at) }
}

/// True when `left` and `right` show the same presence (the sequence number aside).
pub fn same_visible(left: &Presence, right: &Presence) -> bool {
    left.availability == right.availability
        && left.activity == right.activity
        && left.status_message == right.status_message
        && left.work_location == right.work_location
}

/// The time-driven changes owed by a timer, in order, and the next instant one is owed.
///
/// `due` is the first instant whose change has not been reported yet (the `next_change` computed when the
/// facts were last written or last caught up). Every change at an instant up to and including `until` is
/// returned with the presence from that instant on, so a timer that wakes late, or a server that was down,
/// still reports each change once and in order. The returned instant is the first change after `until`.
pub fn due_changes(facts: &UserFacts, due: Option<Timestamp>, until: Timestamp) -> (Vec<Presence>, Option<Timestamp>) {
    let mut changes = Vec::new();
    let mut next = due;
    while let Some(at) = next.filter(|at| *at <= until) {
        changes.push(evaluate(facts, at));
        next = next_change(facts, at);
    }
    (changes, next)
}
