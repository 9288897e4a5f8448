//! Criterion benchmarks of encoding presences to Graph's JSON: one presence, and the 650 of a
//! getPresencesByUserId answer. `cargo bench -p presence-api`.

#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use presence_api::encode_presences;
use presence_core::{evaluate, Command, NewStatusMessage, Presence, Timestamp, UserFacts};

const T0: i64 = 1_788_000_000_000;
const APP: &str = "0a0f1e5c-8f62-4d3f-9d52-3b1c3b0d5e11";

/// A user with a Busy session and, every other user, a status message.
fn presence(index: usize) -> Presence {
    let mut facts = UserFacts::default();
    let now = Timestamp(T0);
    Command::set_presence(APP, Some(APP), Some("Busy"), Some("InACall"), Some("PT1H"))
        .unwrap()
        .apply(&mut facts, now)
        .unwrap();
    if index.is_multiple_of(2) {
        let message = NewStatusMessage { content: format!("In a meeting until 3 ({index})"), expiry: None };
        Command::SetStatusMessage(Some(message)).apply(&mut facts, now).unwrap();
    }
    evaluate(&facts, now)
}

fn benches(c: &mut Criterion) {
    let context = "https://graph.microsoft.com/v1.0/$metadata#Collection(microsoft.graph.presence)";
    let ids: Vec<String> = (0..650).map(|index| format!("00000000-0000-4000-8000-{index:012}")).collect();
    let one = presence(0);
    c.bench_function("encode 1 presence", |b| {
        b.iter_batched(
            || vec![(ids[0].as_str(), one.clone())],
            |items| encode_presences(context, items),
            BatchSize::SmallInput,
        )
    });
    let many: Vec<Presence> = (0..650).map(presence).collect();
    c.bench_function("encode 650 presences", |b| {
        b.iter_batched(
            || ids.iter().map(String::as_str).zip(many.iter().cloned()).collect::<Vec<_>>(),
            |items| encode_presences(context, items),
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(encode, benches);
criterion_main!(encode);
