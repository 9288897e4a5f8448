//! The closed vocabularies of Graph presence and the pairs each action accepts.
//!
//! Input is matched case-insensitively; output always uses Graph's spelling ([`Availability::as_str`]).
//! The value lists are the union of every list Microsoft has published (presence-spec.md section 2.2).

macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[allow(missing_docs)]
        pub enum $name { $($variant,)+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// Graph's spelling of this value.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }

            /// The value whose Graph spelling equals `text`, ignoring ASCII case.
            pub fn parse(text: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|value| value.as_str().eq_ignore_ascii_case(text))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

vocabulary! {
    /// The base presence state (`presence.availability`).
    Availability {
        Available => "Available",
        AvailableIdle => "AvailableIdle",
        Away => "Away",
        BeRightBack => "BeRightBack",
        Busy => "Busy",
        BusyIdle => "BusyIdle",
        DoNotDisturb => "DoNotDisturb",
        Offline => "Offline",
        OutOfOffice => "OutOfOffice",
        PresenceUnknown => "PresenceUnknown",
    }
}

vocabulary! {
    /// The supplemental detail to availability (`presence.activity`).
    Activity {
        Available => "Available",
        AvailableInactive => "AvailableInactive",
        Away => "Away",
        BeRightBack => "BeRightBack",
        Busy => "Busy",
        DoNotDisturb => "DoNotDisturb",
        Focusing => "Focusing",
        InACall => "InACall",
        InAConferenceCall => "InAConferenceCall",
        InAMeeting => "InAMeeting",
        Inactive => "Inactive",
        OffWork => "OffWork",
        Offline => "Offline",
        OutOfOffice => "OutOfOffice",
        PresenceUnknown => "PresenceUnknown",
        Presenting => "Presenting",
        UrgentInterruptionsOnly => "UrgentInterruptionsOnly",
    }
}

vocabulary! {
    /// `workLocationType`: where the user works today.
    WorkLocationType {
        Unspecified => "unspecified",
        Office => "office",
        Remote => "remote",
        TimeOff => "timeOff",
        UnknownFutureValue => "unknownFutureValue",
    }
}

vocabulary! {
    /// `workLocationSource`: which layer decided the aggregated work location.
    WorkLocationSource {
        None => "none",
        Manual => "manual",
        Scheduled => "scheduled",
        Automatic => "automatic",
        UnknownFutureValue => "unknownFutureValue",
    }
}

/// The five pairs an application session may set with `setPresence` (presence-spec.md 3.3).
pub const SET_PRESENCE_PAIRS: &[(Availability, Activity)] = &[
    (Availability::Available, Activity::Available),
    (Availability::Busy, Activity::InACall),
    (Availability::Busy, Activity::InAConferenceCall),
    (Availability::Away, Activity::Away),
    (Availability::DoNotDisturb, Activity::Presenting),
];

/// The six pairs `setUserPreferredPresence` accepts (presence-spec.md 3.3).
pub const PREFERRED_PRESENCE_PAIRS: &[(Availability, Activity)] = &[
    (Availability::Available, Activity::Available),
    (Availability::Busy, Activity::Busy),
    (Availability::DoNotDisturb, Activity::DoNotDisturb),
    (Availability::BeRightBack, Activity::BeRightBack),
    (Availability::Away, Activity::Away),
    (Availability::Offline, Activity::OffWork),
];

/// What an Available session shows after five minutes without a refresh.
///
/// Graph's documentation prints `Available`/`AvailableInactive`; the enum lists also know `AvailableIdle` and
/// `Inactive`. Kept in one place so that it can be switched if captures of the real service disagree.
pub const FADED_ONCE: (Availability, Activity) = (Availability::Available, Activity::AvailableInactive);

/// What an Available session shows after ten minutes without a refresh.
pub const FADED_TWICE: (Availability, Activity) = (Availability::Away, Activity::Away);

/// The precedence of a session's availability when sessions are aggregated: higher wins.
///
/// DoNotDisturb > Busy > Available > BeRightBack > Away; the rest never come from a session but are ranked
/// below so that the order is total.
pub const fn session_rank(availability: Availability) -> u8 {
    match availability {
        Availability::DoNotDisturb => 9,
        Availability::Busy => 8,
        Availability::BusyIdle => 7,
        Availability::Available => 6,
        Availability::AvailableIdle => 5,
        Availability::BeRightBack => 4,
        Availability::Away => 3,
        Availability::OutOfOffice => 2,
        Availability::Offline => 1,
        Availability::PresenceUnknown => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_ignores_case_and_emits_graph_spelling() {
        let check = |input: &str, expected: Option<&str>| {
            assert_eq!(Availability::parse(input).map(Availability::as_str), expected, "{input}");
        };
        check("Available", Some("Available"));
        check("available", Some("Available"));
        check("DONOTDISTURB", Some("DoNotDisturb"));
        check("beRightBack", Some("BeRightBack"));
        check("Sleeping", None);
        check("", None);
        check(" Available", None);
        assert_eq!(Activity::parse("inacall"), Some(Activity::InACall));
        assert_eq!(Activity::parse("availableinactive"), Some(Activity::AvailableInactive));
        assert_eq!(WorkLocationType::parse("Office"), Some(WorkLocationType::Office));
        assert_eq!(WorkLocationType::parse("timeoff").map(WorkLocationType::as_str), Some("timeOff"));
    }

    #[test]
    fn every_value_round_trips() {
        for value in Availability::ALL {
            assert_eq!(Availability::parse(value.as_str()), Some(*value));
        }
        for value in Activity::ALL {
            assert_eq!(Activity::parse(value.as_str()), Some(*value));
        }
    }

    #[test]
    fn pair_tables_have_the_documented_sizes() {
        assert_eq!(SET_PRESENCE_PAIRS.len(), 5);
        assert_eq!(PREFERRED_PRESENCE_PAIRS.len(), 6);
    }

    #[test]
    fn session_order_is_dnd_busy_available_brb_away() {
        let order = [
            Availability::DoNotDisturb,
            Availability::Busy,
            Availability::Available,
            Availability::BeRightBack,
            Availability::Away,
        ];
        for pair in order.windows(2) {
            assert!(session_rank(pair[0]) > session_rank(pair[1]), "{:?}", pair);
        }
    }
}
