//! Writes the stored-format sample of the embedded store (the newest, `tests/stored-format/sqlite-v2`) into the
//! directory given as the argument: what `tests/stored_format.rs` expects to read back.

use presence_store::{
    codec, DirectoryUser, Effects, NewNotification, PresenceStore, QueueId, SqliteStore, StoredSubscription, UserKey,
};

const TENANT: &str = "5f1d3c2a-7b6e-4d8f-9a01-23456789abcd";
const ADELE: &str = "7d3b5e0a-2c61-4f3e-9d1a-5a2b8c9e0f11";
const APP: &str = "0a0f1e5c-8f62-4d3f-9d52-3b1c3b0d5e11";
const SUBSCRIPTION: &str = "4c1a9f0e-1111-4b2b-9c3d-2e4f5a6b7c8d";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).ok_or("usage: stored_format_sample DIR")?;
    let store = SqliteStore::open(std::path::Path::new(&dir))?;
    let record = include_str!("../tests/stored-format/subscription-v1.json").trim();
    let subscription = StoredSubscription {
        id: SUBSCRIPTION.into(),
        tenant_id: TENANT.into(),
        application_id: APP.into(),
        version: 1,
        body: record.into(),
    };
    store.create_subscription(&subscription, 100)?;
    let facts = codec::decode(include_str!("../tests/stored-format/facts-v1.json").trim())?;
    let note = |queue: QueueId, item: &str| NewNotification {
        queue,
        url: "https://hooks.example.org/presence".into(),
        created_at: 1_764_547_200_000,
        item: item.into(),
        resource_data: Some(r#"{"availability":"Busy"}"#.into()),
    };
    let key = UserKey { tenant_id: TENANT.into(), user_id: ADELE.into() };
    store.update(&key, &mut |stored, _| {
        *stored = facts.clone();
        Some(Effects {
            due_at: Some(1_764_547_400_000),
            notifications: vec![note(QueueId::changes(SUBSCRIPTION), r#"{"changeType":"updated"}"#)],
            ..Effects::default()
        })
    })?;
    store.enqueue(&[note(QueueId::lifecycle(SUBSCRIPTION), r#"{"lifecycleEvent":"reauthorizationRequired"}"#)])?;
    let added = DirectoryUser {
        id: "0b000000-0000-4000-8000-00000000000b".into(),
        user_principal_name: "bob@contoso.example".into(),
        display_name: "Bob".into(),
    };
    store.put_directory_user(TENANT, &added)?;
    store.close()?;
    Ok(())
}
