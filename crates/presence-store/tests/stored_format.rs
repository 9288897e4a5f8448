//! The stored format is a contract: the samples of `tests/stored-format/` (written by an earlier version)
//! are read by this one. A change that cannot read them fails here; a format change comes with a migration
//! and a new sample beside the old ones.

use std::path::Path;

use presence_core::Timestamp;
use presence_store::{codec, DirectoryUser, PresenceStore, QueueId, SqliteStore, UserKey, DATABASE_FILE};

const TENANT: &str = "5f1d3c2a-7b6e-4d8f-9a01-23456789abcd";
const ADELE: &str = "7d3b5e0a-2c61-4f3e-9d1a-5a2b8c9e0f11";
const SUBSCRIPTION: &str = "4c1a9f0e-1111-4b2b-9c3d-2e4f5a6b7c8d";
const FACTS: &str = include_str!("stored-format/facts-v1.json");

#[test]
fn facts_of_version_1_read_back_and_encode_to_the_same_text() {
    let facts = codec::decode(FACTS.trim()).expect("a version 1 record decodes");
    assert_eq!(facts.sessions.len(), 2);
    assert_eq!(facts.sessions[0].availability.as_str(), "Busy");
    assert_eq!(facts.sessions[0].activity.as_str(), "InACall");
    assert_eq!(facts.sessions[1].expires_at, Timestamp(1_764_547_400_000));
    let preferred = facts.preferred.as_ref().expect("the preferred presence");
    assert_eq!((preferred.availability.as_str(), preferred.activity.as_str()), ("DoNotDisturb", "Presenting"));
    let message = facts.status_message.as_ref().expect("the status message");
    assert_eq!(message.content, "In Lisbon — \"back\" <Monday>");
    let expiry = message.expiry.as_ref().expect("its expiry");
    assert_eq!(
        (expiry.date_time.as_str(), expiry.time_zone.as_str()),
        ("2025-12-02T00:00:00.0000000", "W. Europe Standard Time")
    );
    assert_eq!(facts.manual_location.as_ref().map(|entry| entry.location_type.as_str()), Some("office"));
    let automatic = facts.automatic_location.as_ref().expect("the automatic location");
    assert_eq!((automatic.location_type.as_str(), automatic.place_id.as_deref()), ("remote", Some("home-office")));
    assert_eq!((facts.sequence_base, facts.sequence_at), (41, Timestamp(1_764_547_200_000)));
    assert_eq!(codec::encode(&facts), FACTS.trim(), "the format did not change");
}

#[test]
fn an_embedded_store_of_version_1_opens_and_reads_back() {
    let dir = opens_and_reads_back("sqlite-v1");
    // Its indexed timer column is gone: timers are kept in memory now.
    let connection = rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
    let columns: Vec<String> = connection
        .prepare("SELECT name FROM pragma_table_info('presence')")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(columns, ["tenant_id", "user_id", "facts", "due_at", "version"]);
    let indexes: i64 = connection
        .query_row("SELECT COUNT(*) FROM pragma_index_list('presence') WHERE origin = 'c'", [], |row| row.get(0))
        .unwrap();
    assert_eq!(indexes, 0, "no index beside the key");
}

#[test]
fn an_embedded_store_of_version_2_opens_and_reads_back() {
    opens_and_reads_back("sqlite-v2");
}

/// Opens a copy of the sample in `stored-format/{sample}` and reads back what it holds.
fn opens_and_reads_back(sample: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stored-format").join(sample).join(DATABASE_FILE);
    std::fs::copy(&sample, dir.path().join(DATABASE_FILE)).expect("the sample is checked in");
    let store = SqliteStore::open(dir.path()).expect("the sample's data directory opens");

    let key = UserKey { tenant_id: TENANT.into(), user_id: ADELE.into() };
    let record = store.get_many(std::slice::from_ref(&key)).unwrap().pop().flatten().expect("Adele's record");
    assert_eq!(record.facts, codec::decode(FACTS.trim()).unwrap());
    assert_eq!(record.due_at, Some(1_764_547_400_000));
    assert_eq!(store.next_due().unwrap(), Some(1_764_547_400_000));

    let subscription = store.subscription(SUBSCRIPTION).unwrap().expect("the subscription");
    assert_eq!(subscription.body, include_str!("stored-format/subscription-v1.json").trim());
    assert_eq!((subscription.tenant_id.as_str(), subscription.version), (TENANT, 1));

    let changes = store.queue_head(&QueueId::changes(SUBSCRIPTION), 10).unwrap();
    assert_eq!(changes.iter().map(|row| row.item.as_str()).collect::<Vec<_>>(), [r#"{"changeType":"updated"}"#]);
    assert_eq!(changes[0].resource_data.as_deref(), Some(r#"{"availability":"Busy"}"#));
    assert_eq!(changes[0].url, "https://hooks.example.org/presence");
    let lifecycle = store.queue_head(&QueueId::lifecycle(SUBSCRIPTION), 10).unwrap();
    assert_eq!(lifecycle.len(), 1);

    let bob = "0b000000-0000-4000-8000-00000000000b";
    assert_eq!(
        store.directory_user_by_upn(TENANT, "bob@contoso.example").unwrap(),
        Some(DirectoryUser {
            id: bob.into(),
            user_principal_name: "bob@contoso.example".into(),
            display_name: "Bob".into()
        })
    );
    store.close().unwrap();
    dir
}
