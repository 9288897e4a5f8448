//! Each rule of presence-spec.md sections 2 and 3, at given instants.

use presence_core::command::{LocationLayer, NewStatusMessage};
use presence_core::{
    evaluate, next_change, Activity, Availability, Command, CommandError, StatusExpiry, Timestamp, UserFacts,
    WorkLocationSource, WorkLocationType,
};

const APP_A: &str = "0a0f1e5c-8f62-4d3f-9d52-3b1c3b0d5e11";
const APP_B: &str = "1b1f2e6d-9073-4e40-8e63-4c2d4c1e6f22";
const MINUTE: i64 = 60_000;
const T0: i64 = 1_788_000_000_000;

fn at(minutes: i64) -> Timestamp {
    Timestamp(T0 + minutes * MINUTE)
}

fn set(facts: &mut UserFacts, app: &str, availability: &str, activity: &str, duration: Option<&str>, minute: i64) {
    Command::set_presence(app, Some(app), Some(availability), Some(activity), duration)
        .unwrap()
        .apply(facts, at(minute))
        .unwrap();
}

fn shows(facts: &UserFacts, minute: i64) -> (&'static str, &'static str) {
    let presence = evaluate(facts, at(minute));
    (presence.availability.as_str(), presence.activity.as_str())
}

#[test]
fn set_presence_accepts_exactly_the_five_documented_pairs() {
    let check = |availability: &str, activity: &str, ok: bool| {
        let result = Command::set_presence(APP_A, Some(APP_A), Some(availability), Some(activity), None);
        assert_eq!(result.is_ok(), ok, "{availability}/{activity}: {result:?}");
    };
    check("Available", "Available", true);
    check("Busy", "InACall", true);
    check("Busy", "InAConferenceCall", true);
    check("Away", "Away", true);
    check("DoNotDisturb", "Presenting", true);
    check("busy", "inacall", true);
    check("Busy", "Busy", false);
    check("BeRightBack", "BeRightBack", false);
    check("Offline", "OffWork", false);
    check("Busy", "InAMeeting", false);
    check("Available", "OutOfOffice", false);
    check("DoNotDisturb", "DoNotDisturb", false);
    check("Available", "InACall", false);
    check("Busy", "Available", false);
}

#[test]
fn preferred_presence_accepts_exactly_the_six_documented_pairs() {
    let check = |availability: &str, activity: &str, ok: bool| {
        let result = Command::set_preferred(Some(availability), Some(activity), None);
        assert_eq!(result.is_ok(), ok, "{availability}/{activity}: {result:?}");
    };
    check("Available", "Available", true);
    check("Busy", "Busy", true);
    check("DoNotDisturb", "DoNotDisturb", true);
    check("BeRightBack", "BeRightBack", true);
    check("Away", "Away", true);
    check("Offline", "OffWork", true);
    check("Busy", "InACall", false);
    check("DoNotDisturb", "Presenting", false);
    check("Offline", "Offline", false);
}

#[test]
fn unknown_values_and_missing_parameters_are_named() {
    let err = Command::set_presence(APP_A, Some(APP_A), Some("Sleeping"), Some("Available"), None).unwrap_err();
    assert_eq!(err, CommandError::UnknownAvailability("Sleeping".into()));
    let err = Command::set_presence(APP_A, Some(APP_A), Some("Available"), Some("Napping"), None).unwrap_err();
    assert_eq!(err, CommandError::UnknownActivity("Napping".into()));
    let err = Command::set_presence(APP_A, Some(APP_A), None, Some("Available"), None).unwrap_err();
    assert_eq!(err, CommandError::MissingParameter("availability"));
    let err = Command::set_presence(APP_A, None, Some("Available"), Some("Available"), None).unwrap_err();
    assert_eq!(err, CommandError::MissingParameter("sessionId"));
}

#[test]
fn set_presence_duration_range_and_default() {
    let check = |duration: Option<&str>, expected_minutes: Option<i64>| {
        let result = Command::set_presence(APP_A, Some(APP_A), Some("Busy"), Some("InACall"), duration);
        match (result, expected_minutes) {
            (Ok(Command::SetPresence { expires_after, .. }), Some(minutes)) => {
                assert_eq!(expires_after.as_secs() as i64, minutes * 60, "{duration:?}")
            }
            (Err(_), None) => {}
            (other, _) => panic!("{duration:?}: {other:?}"),
        }
    };
    check(None, Some(5));
    check(Some("PT5M"), Some(5));
    check(Some("PT4H"), Some(240));
    check(Some("PT1H"), Some(60));
    check(Some("PT4M59S"), None);
    check(Some("PT1M"), None);
    check(Some("PT4H0M1S"), None);
    check(Some("PT5H"), None);
    check(Some("PT0S"), None);
    check(Some("-PT10M"), None);
    check(Some("soon"), None);
    check(Some("P1D"), None);
}

#[test]
fn preferred_duration_defaults_depend_on_availability() {
    let check = |availability: &str, activity: &str, days: u64| match Command::set_preferred(
        Some(availability),
        Some(activity),
        None,
    ) {
        Ok(Command::SetPreferred { expires_after, .. }) => {
            assert_eq!(expires_after.as_secs(), days * 86_400)
        }
        other => panic!("{other:?}"),
    };
    check("Busy", "Busy", 1);
    check("DoNotDisturb", "DoNotDisturb", 1);
    check("Available", "Available", 7);
    check("Away", "Away", 7);
    check("BeRightBack", "BeRightBack", 7);
    check("Offline", "OffWork", 7);
    assert!(Command::set_preferred(Some("Busy"), Some("Busy"), Some("P30D")).is_ok());
    assert!(Command::set_preferred(Some("Busy"), Some("Busy"), Some("PT0S")).is_err());
    assert!(Command::set_preferred(Some("Busy"), Some("Busy"), Some("-P1D")).is_err());
    assert!(Command::set_preferred(Some("Busy"), Some("Busy"), Some("tomorrow")).is_err());
}

#[test]
fn session_id_must_be_the_callers_app_id() {
    let err = Command::set_presence(APP_A, Some(APP_B), Some("Available"), Some("Available"), None).unwrap_err();
    assert!(matches!(err, CommandError::SessionIdMismatch { .. }));
    assert!(err.to_string().contains("must be the calling application's id"));
    assert!(Command::set_presence(APP_A, Some(&APP_A.to_uppercase()), Some("Away"), Some("Away"), None).is_ok());
    assert!(matches!(Command::clear_presence(APP_A, Some(APP_B)), Err(CommandError::SessionIdMismatch { .. })));
}

#[test]
fn a_user_without_sessions_is_offline() {
    let facts = UserFacts::default();
    assert_eq!(shows(&facts, 0), ("Offline", "Offline"));
    assert_eq!(next_change(&facts, at(0)), None);
}

#[test]
fn available_fades_after_five_and_ten_minutes_even_with_a_long_expiry() {
    let mut facts = UserFacts::default();
    set(&mut facts, APP_A, "Available", "Available", Some("PT1H"), 0);
    assert_eq!(shows(&facts, 0), ("Available", "Available"));
    assert_eq!(evaluate(&facts, Timestamp(at(5).0 - 1)).activity, Activity::Available);
    assert_eq!(shows(&facts, 5), ("Available", "AvailableInactive"));
    assert_eq!(shows(&facts, 9), ("Available", "AvailableInactive"));
    assert_eq!(shows(&facts, 10), ("Away", "Away"));
    assert_eq!(shows(&facts, 59), ("Away", "Away"));
    assert_eq!(shows(&facts, 60), ("Offline", "Offline"));
    assert_eq!(next_change(&facts, at(0)), Some(at(5)));
    assert_eq!(next_change(&facts, at(5)), Some(at(10)));
    assert_eq!(next_change(&facts, at(10)), Some(at(60)));
    assert_eq!(next_change(&facts, at(60)), None);
}

#[test]
fn refreshing_keeps_a_session_from_fading_and_expiring() {
    let mut facts = UserFacts::default();
    set(&mut facts, APP_A, "Available", "Available", None, 0);
    set(&mut facts, APP_A, "Available", "Available", None, 4);
    assert_eq!(shows(&facts, 8), ("Available", "Available"));
    assert_eq!(shows(&facts, 9), ("Offline", "Offline"), "default expiry is five minutes after the refresh");
}

#[test]
fn only_available_fades() {
    for (availability, activity) in [("Busy", "InACall"), ("DoNotDisturb", "Presenting"), ("Away", "Away")] {
        let mut facts = UserFacts::default();
        set(&mut facts, APP_A, availability, activity, Some("PT4H"), 0);
        assert_eq!(shows(&facts, 30), (availability, activity));
        assert_eq!(shows(&facts, 239), (availability, activity));
        assert_eq!(shows(&facts, 240), ("Offline", "Offline"));
    }
}

#[test]
fn sessions_aggregate_dnd_over_busy_over_available_over_away() {
    let mut facts = UserFacts::default();
    set(&mut facts, APP_A, "Away", "Away", Some("PT1H"), 0);
    set(&mut facts, APP_B, "Available", "Available", Some("PT30M"), 0);
    assert_eq!(shows(&facts, 1), ("Available", "Available"));
    set(&mut facts, "app-c", "Busy", "InACall", Some("PT20M"), 1);
    assert_eq!(shows(&facts, 2), ("Busy", "InACall"));
    set(&mut facts, "app-d", "DoNotDisturb", "Presenting", Some("PT10M"), 2);
    assert_eq!(shows(&facts, 3), ("DoNotDisturb", "Presenting"));
    assert_eq!(shows(&facts, 12), ("Busy", "InACall"), "DoNotDisturb expired");
    assert_eq!(shows(&facts, 21), ("Away", "Away"), "Busy expired, Available faded to Away; ties: latest refresh");
    assert_eq!(shows(&facts, 30), ("Away", "Away"));
    assert_eq!(shows(&facts, 60), ("Offline", "Offline"));
}

#[test]
fn ties_go_to_the_most_recently_refreshed_session() {
    let mut facts = UserFacts::default();
    set(&mut facts, APP_A, "Busy", "InACall", Some("PT1H"), 0);
    set(&mut facts, APP_B, "Busy", "InAConferenceCall", Some("PT1H"), 1);
    assert_eq!(shows(&facts, 2), ("Busy", "InAConferenceCall"));
    set(&mut facts, APP_A, "Busy", "InACall", Some("PT1H"), 3);
    assert_eq!(shows(&facts, 4), ("Busy", "InACall"));
}

#[test]
fn clear_presence_removes_only_the_callers_session_and_404s_otherwise() {
    let mut facts = UserFacts::default();
    let err = Command::clear_presence(APP_A, Some(APP_A)).unwrap().apply(&mut facts, at(0)).unwrap_err();
    assert_eq!(err, CommandError::SessionNotFound(APP_A.into()));
    set(&mut facts, APP_A, "Busy", "InACall", Some("PT1H"), 0);
    set(&mut facts, APP_B, "Away", "Away", Some("PT1H"), 0);
    Command::clear_presence(APP_A, Some(APP_A)).unwrap().apply(&mut facts, at(1)).unwrap();
    assert_eq!(shows(&facts, 1), ("Away", "Away"));
    Command::clear_presence(APP_B, Some(APP_B)).unwrap().apply(&mut facts, at(2)).unwrap();
    assert_eq!(shows(&facts, 2), ("Offline", "Offline"));
    set(&mut facts, APP_A, "Busy", "InACall", None, 3);
    let err = Command::clear_presence(APP_A, Some(APP_A)).unwrap().apply(&mut facts, at(8)).unwrap_err();
    assert_eq!(err, CommandError::SessionNotFound(APP_A.into()), "an expired session does not exist");
}

#[test]
fn preferred_presence_overrides_sessions_but_needs_one() {
    let mut facts = UserFacts::default();
    Command::set_preferred(Some("DoNotDisturb"), Some("DoNotDisturb"), Some("PT8H"))
        .unwrap()
        .apply(&mut facts, at(0))
        .unwrap();
    assert_eq!(shows(&facts, 0), ("Offline", "Offline"), "no session: preferred has no effect");
    set(&mut facts, APP_A, "Available", "Available", Some("PT1H"), 1);
    assert_eq!(shows(&facts, 1), ("DoNotDisturb", "DoNotDisturb"));
    assert_eq!(shows(&facts, 30), ("DoNotDisturb", "DoNotDisturb"), "preferred does not fade");
    assert_eq!(shows(&facts, 61), ("Offline", "Offline"));
    set(&mut facts, APP_A, "Busy", "InACall", Some("PT4H"), 62);
    assert_eq!(shows(&facts, 62), ("DoNotDisturb", "DoNotDisturb"));
    set(&mut facts, APP_A, "Busy", "InACall", Some("PT4H"), 300);
    assert_eq!(shows(&facts, 479), ("DoNotDisturb", "DoNotDisturb"));
    assert_eq!(shows(&facts, 480), ("Busy", "InACall"), "the preference lapsed after eight hours");
    Command::set_preferred(Some("Offline"), Some("OffWork"), None).unwrap().apply(&mut facts, at(481)).unwrap();
    assert_eq!(shows(&facts, 481), ("Offline", "OffWork"));
    Command::ClearPreferred.apply(&mut facts, at(482)).unwrap();
    assert_eq!(shows(&facts, 482), ("Busy", "InACall"));
}

#[test]
fn status_message_shows_until_its_expiry_and_empty_clears_it() {
    let mut facts = UserFacts::default();
    let expiry = StatusExpiry { at: at(30), date_time: "2026-09-01T17:00:00.0000000".into(), time_zone: "UTC".into() };
    Command::SetStatusMessage(Some(NewStatusMessage { content: "Back at 3".into(), expiry: Some(expiry) }))
        .apply(&mut facts, at(0))
        .unwrap();
    let presence = evaluate(&facts, at(10));
    let message = presence.status_message.expect("shown");
    assert_eq!(message.content, "Back at 3");
    assert_eq!(message.published_at, at(0));
    assert!(evaluate(&facts, at(30)).status_message.is_none());
    assert_eq!(next_change(&facts, at(0)), Some(at(30)));

    Command::SetStatusMessage(Some(NewStatusMessage { content: "Lab".into(), expiry: None }))
        .apply(&mut facts, at(40))
        .unwrap();
    assert!(evaluate(&facts, at(100_000)).status_message.is_some(), "no expiry: never expires");
    Command::SetStatusMessage(Some(NewStatusMessage { content: String::new(), expiry: None }))
        .apply(&mut facts, at(41))
        .unwrap();
    assert!(evaluate(&facts, at(41)).status_message.is_none());
}

#[test]
fn work_location_manual_beats_automatic_and_ends_at_midnight() {
    let mut facts = UserFacts::default();
    let location = evaluate(&facts, at(0)).work_location;
    assert_eq!((location.location_type, location.source), (WorkLocationType::Unspecified, WorkLocationSource::None));
    Command::set_location(LocationLayer::Automatic, Some("remote"), None).unwrap().apply(&mut facts, at(0)).unwrap();
    Command::set_location(LocationLayer::Manual, Some("office"), Some("b1")).unwrap().apply(&mut facts, at(1)).unwrap();
    let location = evaluate(&facts, at(2)).work_location;
    assert_eq!((location.location_type, location.source), (WorkLocationType::Office, WorkLocationSource::Manual));
    assert_eq!(location.place_id.as_deref(), Some("b1"));
    Command::ClearAutomaticLocation.apply(&mut facts, at(3)).unwrap();
    assert_eq!(evaluate(&facts, at(3)).work_location.source, WorkLocationSource::Manual);
    Command::set_location(LocationLayer::Automatic, Some("remote"), None).unwrap().apply(&mut facts, at(4)).unwrap();
    Command::ClearLocation.apply(&mut facts, at(5)).unwrap();
    assert_eq!(evaluate(&facts, at(5)).work_location.source, WorkLocationSource::None);
    Command::set_location(LocationLayer::Automatic, Some("timeoff"), None).unwrap().apply(&mut facts, at(6)).unwrap();
    let midnight = at(6).next_utc_midnight();
    assert_eq!(evaluate(&facts, Timestamp(midnight.0 - 1)).work_location.location_type, WorkLocationType::TimeOff);
    assert_eq!(evaluate(&facts, midnight).work_location.source, WorkLocationSource::None);
    assert!(Command::set_location(LocationLayer::Manual, Some("moon"), None).is_err());
    assert!(Command::set_location(LocationLayer::Manual, None, None).is_err());
}

#[test]
fn sequence_number_counts_writes_and_timer_changes_but_not_no_ops() {
    let mut facts = UserFacts::default();
    let seq = |facts: &UserFacts, minute: i64| evaluate(facts, at(minute)).sequence_number;
    assert_eq!(seq(&facts, 0), 0);
    set(&mut facts, APP_A, "Available", "Available", Some("PT1H"), 0);
    assert_eq!(seq(&facts, 0), 1);
    assert_eq!(seq(&facts, 4), 1);
    assert_eq!(seq(&facts, 5), 2, "fade");
    assert_eq!(seq(&facts, 10), 3, "away");
    assert_eq!(seq(&facts, 60), 4, "expiry");
    let change = Command::ClearPreferred.apply(&mut facts, at(61)).unwrap();
    assert!(!change.is_visible());
    assert_eq!(seq(&facts, 61), 4, "a write that changes nothing visible keeps the number");
    set(&mut facts, APP_A, "Busy", "InACall", None, 62);
    assert_eq!(seq(&facts, 62), 5);
    set(&mut facts, APP_A, "Busy", "InACall", None, 63);
    assert_eq!(seq(&facts, 63), 5, "a keep-alive changes nothing visible");
}

#[test]
fn an_instant_before_the_last_write_reads_as_the_last_write() {
    let mut facts = UserFacts::default();
    set(&mut facts, APP_A, "Busy", "InACall", None, 10);
    let presence = evaluate(&facts, at(0));
    assert_eq!(presence.availability, Availability::Busy);
    assert_eq!(presence.sequence_number, 1);
    set(&mut facts, APP_A, "Away", "Away", None, 5);
    assert_eq!(evaluate(&facts, at(10)).availability, Availability::Away);
    assert_eq!(evaluate(&facts, at(10)).sequence_number, 2);
}

#[test]
fn a_late_timer_reports_every_owed_change_once_and_in_order() {
    let mut facts = UserFacts::default();
    set(&mut facts, APP_A, "Available", "Available", Some("PT15M"), 0);
    let due = presence_core::next_change(&facts, at(0));
    assert_eq!(due, Some(at(5)));
    let (none, still_due) = presence_core::due_changes(&facts, due, at(4));
    assert!(none.is_empty(), "nothing is owed before the first change");
    assert_eq!(still_due, Some(at(5)));
    // Woken only at minute 20: the fade (5), the second fade (10) and the expiry (15) are all owed.
    let (owed, next) = presence_core::due_changes(&facts, due, at(20));
    let shown: Vec<_> =
        owed.iter().map(|p| (p.availability.as_str(), p.activity.as_str(), p.sequence_number)).collect();
    assert_eq!(
        shown,
        [("Available", "AvailableInactive", 2), ("Away", "Away", 3), ("Offline", "Offline", 4)],
        "each change once, with the sequence number a reader at that instant saw"
    );
    assert_eq!(next, None, "nothing changes by itself any more");
}
