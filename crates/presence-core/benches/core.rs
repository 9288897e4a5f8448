//! Criterion benchmarks of the pure core: aggregation, next-change computation, duration parsing, and
//! evaluating 650 users (a getPresencesByUserId call). `cargo bench -p presence-core`.

#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use presence_core::{duration, evaluate, next_change, observe, Command, Timestamp, UserFacts};

const T0: i64 = 1_788_000_000_000;
const MINUTE: i64 = 60_000;

fn app(index: usize) -> String {
    format!("0a0f1e5c-8f62-4d3f-9d52-{index:012}")
}

/// A user with `sessions` sessions of different applications, one of them Available (so it fades), a
/// preferred presence and a status message.
fn user(sessions: usize) -> UserFacts {
    let mut facts = UserFacts::default();
    let pairs = [("Available", "Available"), ("Busy", "InACall"), ("Away", "Away"), ("DoNotDisturb", "Presenting")];
    for index in 0..sessions {
        let (availability, activity) = pairs[index % pairs.len()];
        let app = app(index);
        Command::set_presence(&app, Some(&app), Some(availability), Some(activity), Some("PT1H"))
            .unwrap()
            .apply(&mut facts, Timestamp(T0 + index as i64 * MINUTE))
            .unwrap();
    }
    Command::set_preferred(Some("Busy"), Some("Busy"), Some("PT30M"))
        .unwrap()
        .apply(&mut facts, Timestamp(T0 + 2 * MINUTE))
        .unwrap();
    facts
}

fn benches(c: &mut Criterion) {
    let two = user(2);
    let eight = user(8);
    let at = Timestamp(T0 + 7 * MINUTE);
    c.bench_function("evaluate, 2 sessions", |b| b.iter(|| evaluate(black_box(&two), black_box(at))));
    c.bench_function("evaluate, 8 sessions", |b| b.iter(|| evaluate(black_box(&eight), black_box(at))));
    c.bench_function("next_change, 2 sessions", |b| b.iter(|| next_change(black_box(&two), black_box(at))));
    c.bench_function("observe, 2 sessions", |b| b.iter(|| observe(black_box(&two), black_box(at))));
    c.bench_function("setPresence apply, 2 sessions", |b| {
        let command =
            Command::set_presence(&app(0), Some(&app(0)), Some("Busy"), Some("InACall"), Some("PT1H")).unwrap();
        b.iter(|| {
            let mut facts = two.clone();
            command.apply(&mut facts, black_box(at)).unwrap()
        })
    });
    for text in ["PT1H", "P1DT2H30M15.5S", "1:00:00"] {
        c.bench_function(&format!("duration::parse {text}"), |b| b.iter(|| duration::parse(black_box(text))));
    }
    let users: Vec<UserFacts> = (0..650).map(|index| user(1 + index % 3)).collect();
    c.bench_function("evaluate 650 users", |b| {
        b.iter(|| users.iter().map(|facts| evaluate(facts, black_box(at)).sequence_number).sum::<u64>())
    });
}

criterion_group!(core, benches);
criterion_main!(core);
