//! A subscription record of version 1 (the sample the embedded store's sample holds, written by an earlier
//! version) reads back field by field and encodes to the same text: the record's format is a contract.

use presence_notify::record::SubscriptionRecord;

const SAMPLE: &str = include_str!("../../presence-store/tests/stored-format/subscription-v1.json");

#[test]
fn a_subscription_record_of_version_1_reads_back_and_encodes_to_the_same_text() {
    let record = SubscriptionRecord::decode(SAMPLE.trim()).expect("a version 1 record decodes");
    assert_eq!(record.id, "4c1a9f0e-1111-4b2b-9c3d-2e4f5a6b7c8d");
    assert_eq!(record.user_ids, ["7d3b5e0a-2c61-4f3e-9d1a-5a2b8c9e0f11"]);
    assert_eq!(record.user_id, None);
    assert_eq!(record.lifecycle_notification_url.as_deref(), Some("https://hooks.example.org/lifecycle"));
    assert_eq!((record.renewed_at, record.expiration), (1_764_547_200_000, 1_764_550_800_000));
    assert_eq!(record.client_state.as_deref(), Some("secret-state"));
    assert!(record.include_resource_data && record.reauthorization_sent);
    assert_eq!(record.encryption_certificate_id.as_deref(), Some("cert-1"));
    assert_eq!(record.latest_supported_tls_version, "v1_2");
    assert_eq!(record.encode(), SAMPLE.trim(), "the format did not change");
}
