//! The stored form of [`UserFacts`]: a small JSON document per user.
//!
//! The shape is shared by every backend (so a record reads the same whichever stores it) and versioned
//! (`v`), so it can change without touching the core.
//! Enumerations are stored as their Graph spellings.

use presence_core::{
    Activity, Availability, LocationEntry, PreferredPresence, Session, StatusExpiry, StatusMessage, Timestamp,
    UserFacts, WorkLocationType,
};
use serde::{Deserialize, Serialize};

const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Stored {
    v: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    sessions: Vec<StoredSession>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    preferred: Option<StoredPreferred>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<StoredStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    manual: Option<StoredLocation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    automatic: Option<StoredLocation>,
    seq: u64,
    seq_at: i64,
}

#[derive(Serialize, Deserialize)]
struct StoredSession {
    app: String,
    availability: String,
    activity: String,
    refreshed: i64,
    expires: i64,
}

#[derive(Serialize, Deserialize)]
struct StoredPreferred {
    availability: String,
    activity: String,
    expires: i64,
}

#[derive(Serialize, Deserialize)]
struct StoredStatus {
    content: String,
    published: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expiry: Option<StoredExpiry>,
}

#[derive(Serialize, Deserialize)]
struct StoredExpiry {
    at: i64,
    date_time: String,
    time_zone: String,
}

#[derive(Serialize, Deserialize)]
struct StoredLocation {
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    place: Option<String>,
    until: i64,
}

/// The stored text of `facts`.
pub fn encode(facts: &UserFacts) -> String {
    let location = |entry: &LocationEntry| StoredLocation {
        kind: entry.location_type.as_str().to_owned(),
        place: entry.place_id.clone(),
        until: entry.until.as_millis(),
    };
    let stored = Stored {
        v: VERSION,
        sessions: facts
            .sessions
            .iter()
            .map(|session| StoredSession {
                app: session.app_id.clone(),
                availability: session.availability.as_str().to_owned(),
                activity: session.activity.as_str().to_owned(),
                refreshed: session.refreshed_at.as_millis(),
                expires: session.expires_at.as_millis(),
            })
            .collect(),
        preferred: facts.preferred.as_ref().map(|preferred| StoredPreferred {
            availability: preferred.availability.as_str().to_owned(),
            activity: preferred.activity.as_str().to_owned(),
            expires: preferred.expires_at.as_millis(),
        }),
        status: facts.status_message.as_ref().map(|message| StoredStatus {
            content: message.content.clone(),
            published: message.published_at.as_millis(),
            expiry: message.expiry.as_ref().map(|expiry| StoredExpiry {
                at: expiry.at.as_millis(),
                date_time: expiry.date_time.clone(),
                time_zone: expiry.time_zone.clone(),
            }),
        }),
        manual: facts.manual_location.as_deref().map(location),
        automatic: facts.automatic_location.as_deref().map(location),
        seq: facts.sequence_base,
        seq_at: facts.sequence_at.as_millis(),
    };
    serde_json::to_string(&stored).expect("serialising plain structs cannot fail")
}

/// The facts of a stored text, or why it is not one.
pub fn decode(text: &str) -> Result<UserFacts, String> {
    let stored: Stored = serde_json::from_str(text).map_err(|error| error.to_string())?;
    if stored.v != VERSION {
        return Err(format!("unknown record version {}", stored.v));
    }
    let availability = |text: &str| Availability::parse(text).ok_or_else(|| format!("unknown availability {text}"));
    let activity = |text: &str| Activity::parse(text).ok_or_else(|| format!("unknown activity {text}"));
    let location = |entry: StoredLocation| -> Result<Box<LocationEntry>, String> {
        Ok(Box::new(LocationEntry {
            location_type: WorkLocationType::parse(&entry.kind)
                .ok_or_else(|| format!("unknown work location {}", entry.kind))?,
            place_id: entry.place,
            until: Timestamp(entry.until),
        }))
    };
    Ok(UserFacts {
        sessions: stored
            .sessions
            .into_iter()
            .map(|session| {
                Ok(Session {
                    availability: availability(&session.availability)?,
                    activity: activity(&session.activity)?,
                    app_id: session.app,
                    refreshed_at: Timestamp(session.refreshed),
                    expires_at: Timestamp(session.expires),
                })
            })
            .collect::<Result<_, String>>()?,
        preferred: stored
            .preferred
            .map(|preferred| -> Result<_, String> {
                Ok(PreferredPresence {
                    availability: availability(&preferred.availability)?,
                    activity: activity(&preferred.activity)?,
                    expires_at: Timestamp(preferred.expires),
                })
            })
            .transpose()?,
        status_message: stored.status.map(|status| {
            Box::new(StatusMessage {
                content: status.content,
                published_at: Timestamp(status.published),
                expiry: status.expiry.map(|expiry| StatusExpiry {
                    at: Timestamp(expiry.at),
                    date_time: expiry.date_time,
                    time_zone: expiry.time_zone,
                }),
            })
        }),
        manual_location: stored.manual.map(location).transpose()?,
        automatic_location: stored.automatic.map(location).transpose()?,
        sequence_base: stored.seq,
        sequence_at: Timestamp(stored.seq_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_round_trips() {
        let facts = UserFacts {
            sessions: vec![Session {
                app_id: "app".into(),
                availability: Availability::Busy,
                activity: Activity::InACall,
                refreshed_at: Timestamp(10),
                expires_at: Timestamp(20),
            }],
            preferred: Some(PreferredPresence {
                availability: Availability::Offline,
                activity: Activity::OffWork,
                expires_at: Timestamp(30),
            }),
            status_message: Some(Box::new(StatusMessage {
                content: "hi \"there\"".into(),
                published_at: Timestamp(5),
                expiry: Some(StatusExpiry {
                    at: Timestamp(40),
                    date_time: "2026-01-01T00:00:00".into(),
                    time_zone: "UTC".into(),
                }),
            })),
            manual_location: Some(Box::new(LocationEntry {
                location_type: WorkLocationType::Office,
                place_id: Some("p".into()),
                until: Timestamp(50),
            })),
            automatic_location: Some(Box::new(LocationEntry {
                location_type: WorkLocationType::Remote,
                place_id: None,
                until: Timestamp(60),
            })),
            sequence_base: 7,
            sequence_at: Timestamp(9),
        };
        assert_eq!(decode(&encode(&facts)).unwrap(), facts);
        assert_eq!(decode(&encode(&UserFacts::default())).unwrap(), UserFacts::default());
    }

    #[test]
    fn corrupt_records_are_reported() {
        assert!(decode("{").is_err());
        assert!(decode(r#"{"v":2,"seq":0,"seq_at":0}"#).is_err());
        assert!(decode(
            r#"{"v":1,"seq":0,"seq_at":0,"preferred":{"availability":"Sleepy","activity":"Away","expires":1}}"#
        )
        .is_err());
    }
}
