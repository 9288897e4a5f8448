//! Property tests of the aggregation laws stated in the crate documentation.

use presence_core::command::{LocationLayer, NewStatusMessage};
use presence_core::{evaluate, observe, Command, Session, StatusExpiry, Timestamp, UserFacts};
use proptest::prelude::*;

const APPS: [&str; 4] = ["app-1", "app-2", "app-3", "app-4"];
const SET_PAIRS: [(&str, &str); 5] = [
    ("Available", "Available"),
    ("Busy", "InACall"),
    ("Busy", "InAConferenceCall"),
    ("Away", "Away"),
    ("DoNotDisturb", "Presenting"),
];
const PREFERRED_PAIRS: [(&str, &str); 6] = [
    ("Available", "Available"),
    ("Busy", "Busy"),
    ("DoNotDisturb", "DoNotDisturb"),
    ("BeRightBack", "BeRightBack"),
    ("Away", "Away"),
    ("Offline", "OffWork"),
];
const DURATIONS: [&str; 5] = ["PT5M", "PT7M", "PT15M", "PT1H", "PT4H"];

/// A write, and the gap (in seconds) since the previous write.
#[derive(Debug, Clone)]
enum Step {
    Set { app: usize, pair: usize, duration: usize },
    Clear { app: usize },
    Prefer { pair: usize, minutes: i64 },
    ClearPreferred,
    Status { minutes: Option<i64> },
    Location { manual: bool },
    ClearLocation,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..APPS.len(), 0..SET_PAIRS.len(), 0..DURATIONS.len()).prop_map(|(app, pair, duration)| Step::Set { app, pair, duration }),
        1 => (0..APPS.len()).prop_map(|app| Step::Clear { app }),
        1 => (0..PREFERRED_PAIRS.len(), 1..120i64).prop_map(|(pair, minutes)| Step::Prefer { pair, minutes }),
        1 => Just(Step::ClearPreferred),
        1 => proptest::option::of(1..60i64).prop_map(|minutes| Step::Status { minutes }),
        1 => any::<bool>().prop_map(|manual| Step::Location { manual }),
        1 => Just(Step::ClearLocation),
    ]
}

fn command(step: &Step, now: Timestamp) -> Command {
    match *step {
        Step::Set { app, pair, duration } => {
            let (availability, activity) = SET_PAIRS[pair];
            Command::set_presence(
                APPS[app],
                Some(APPS[app]),
                Some(availability),
                Some(activity),
                Some(DURATIONS[duration]),
            )
            .unwrap()
        }
        Step::Clear { app } => Command::clear_presence(APPS[app], Some(APPS[app])).unwrap(),
        Step::Prefer { pair, minutes } => {
            let (availability, activity) = PREFERRED_PAIRS[pair];
            Command::set_preferred(Some(availability), Some(activity), Some(&format!("PT{minutes}M"))).unwrap()
        }
        Step::ClearPreferred => Command::ClearPreferred,
        Step::Status { minutes } => Command::SetStatusMessage(Some(NewStatusMessage {
            content: "note".into(),
            expiry: minutes.map(|minutes| StatusExpiry {
                at: Timestamp(now.0 + minutes * 60_000),
                date_time: String::new(),
                time_zone: "UTC".into(),
            }),
        })),
        Step::Location { manual } => {
            let layer = if manual { LocationLayer::Manual } else { LocationLayer::Automatic };
            Command::set_location(layer, Some("office"), None).unwrap()
        }
        Step::ClearLocation => Command::ClearLocation,
    }
}

/// Steps with the gap in seconds since the previous one. Gaps are never negative: the engine's
/// precondition is that facts are never written at an instant earlier than one they were read at (the
/// server's clock is monotonic). Writes at an instant earlier than the last *write* are covered by
/// `a_write_stamped_before_the_last_write_never_lowers_the_version`.
fn history() -> impl Strategy<Value = Vec<(Step, i64)>> {
    proptest::collection::vec((step(), 0..900i64), 0..24)
}

fn run(steps: &[(Step, i64)], mut check: impl FnMut(&UserFacts, Timestamp)) -> (UserFacts, Timestamp) {
    let mut facts = UserFacts::default();
    let mut now = Timestamp(1_788_000_000_000);
    for (step, gap_seconds) in steps {
        now = Timestamp(now.0 + gap_seconds * 1000);
        let _ = command(step, now).apply(&mut facts, now);
        check(&facts, now);
    }
    (facts, now)
}

fn visible(facts: &UserFacts, at: Timestamp) -> impl PartialEq + std::fmt::Debug {
    let presence = evaluate(facts, at);
    (presence.availability, presence.activity, presence.status_message, presence.work_location)
}

proptest! {
    #[test]
    fn aggregation_does_not_depend_on_arrival_order(
        sessions in proptest::collection::vec((0..SET_PAIRS.len(), 0..600i64, 1..240i64), 1..6),
        seed in any::<u64>(),
        probe in 0..20_000i64,
    ) {
        let base = 1_788_000_000_000i64;
        let make = |index: usize, &(pair, refreshed, minutes): &(usize, i64, i64)| {
            let (availability, activity) = SET_PAIRS[pair];
            Session {
                app_id: format!("app-{index}"),
                availability: presence_core::Availability::parse(availability).unwrap(),
                activity: presence_core::Activity::parse(activity).unwrap(),
                refreshed_at: Timestamp(base + refreshed * 1000),
                expires_at: Timestamp(base + refreshed * 1000 + minutes * 60_000),
            }
        };
        let ordered: Vec<Session> = sessions.iter().enumerate().map(|(i, s)| make(i, s)).collect();
        let mut shuffled = ordered.clone();
        let len = shuffled.len();
        let mut state = seed;
        for i in (1..len).rev() {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (state >> 33) as usize % (i + 1));
        }
        let at = Timestamp(base + probe * 1000);
        let left = UserFacts { sessions: ordered, ..UserFacts::default() };
        let right = UserFacts { sessions: shuffled, ..UserFacts::default() };
        prop_assert_eq!(evaluate(&left, at), evaluate(&right, at));
    }

    #[test]
    fn presence_is_constant_until_next_change_and_differs_there(
        steps in history(),
        offset in 0..20_000i64,
        probes in proptest::collection::vec(0.0..1.0f64, 1..8),
    ) {
        let (facts, last) = run(&steps, |_, _| {});
        let t = Timestamp(last.0 + offset * 1000);
        let here = visible(&facts, t);
        match observe(&facts, t).next_change {
            Some(next) => {
                prop_assert!(next > t);
                for fraction in probes {
                    let probe = Timestamp(t.0 + ((next.0 - t.0) as f64 * fraction) as i64);
                    if probe < next {
                        prop_assert_eq!(&visible(&facts, probe), &here);
                    }
                }
                prop_assert_eq!(&visible(&facts, Timestamp(next.0 - 1)), &here);
                prop_assert_ne!(&visible(&facts, next), &here);
            }
            None => {
                for fraction in probes {
                    let probe = Timestamp(t.0 + (fraction * 1.0e10) as i64);
                    prop_assert_eq!(&visible(&facts, probe), &here);
                }
            }
        }
    }

    #[test]
    fn sequence_numbers_never_decrease(steps in history(), probes in proptest::collection::vec(0..20_000i64, 1..8)) {
        let mut last_seen = 0u64;
        let mut ok = true;
        let (facts, last) = run(&steps, |facts, now| {
            let seq = evaluate(facts, now).sequence_number;
            ok &= seq >= last_seen;
            last_seen = seq;
        });
        prop_assert!(ok);
        let mut probes = probes;
        probes.sort_unstable();
        let mut previous = evaluate(&facts, last).sequence_number;
        prop_assert!(previous >= last_seen);
        for probe in probes {
            let seq = evaluate(&facts, Timestamp(last.0 + probe * 1000)).sequence_number;
            prop_assert!(seq >= previous);
            previous = seq;
        }
    }

    #[test]
    fn a_write_stamped_before_the_last_write_never_lowers_the_version(
        steps in history(),
        late in step(),
        back in 1..600i64,
    ) {
        let (mut facts, _) = run(&steps, |_, _| {});
        // The last write that took effect: a refused step (say clearPresence of a session that had
        // expired) writes nothing, so it is not "the last write".
        let last = facts.sequence_at;
        let before = evaluate(&facts, last).sequence_number;
        let _ = command(&late, Timestamp(last.0 - back * 1000)).apply(&mut facts, Timestamp(last.0 - back * 1000));
        prop_assert!(evaluate(&facts, last).sequence_number >= before);
    }

    #[test]
    fn sequence_number_grows_exactly_when_the_visible_presence_changes(steps in history(), offset in 0..20_000i64) {
        let (facts, last) = run(&steps, |_, _| {});
        let t = Timestamp(last.0 + offset * 1000);
        if let Some(next) = observe(&facts, t).next_change {
            prop_assert_eq!(evaluate(&facts, Timestamp(next.0 - 1)).sequence_number, evaluate(&facts, t).sequence_number);
            prop_assert_eq!(evaluate(&facts, next).sequence_number, evaluate(&facts, t).sequence_number + 1);
        }
    }
}
