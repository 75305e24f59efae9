use serde_json::json;

use super::*;

fn record() -> KeyRecord {
    let mut key = NewKey::new(
        "key_0123456789abcdef",
        KeyHash([7; 32]),
        "wk-Abcd…wxyz",
        "ci",
    );
    key.user = Some("alice".into());
    key.team = Some("platform".into());
    key.limits = KeyLimits {
        rpm: Some(60),
        tpm: Some(1000),
    };
    key.expires_at = Some(2_000_000_000);
    key.to_record(1_700_000_000)
}

#[test]
fn key_hash_debug_shows_only_a_prefix() {
    let hash = KeyHash([0xab; 32]);
    assert_eq!(format!("{hash:?}"), "KeyHash(abababab…)");
    assert_eq!(KeyHash::from_slice(&[0xab; 32]), Some(hash));
    assert_eq!(KeyHash::from_slice(&[0xab; 31]), None);
}

#[test]
fn update_absent_null_and_value() {
    let update: KeyUpdate = serde_json::from_value(json!({
        "name": "ci-2",
        "user": null,
        "project": "p",
        "limits": {"rpm": null},
        "expires_at": null,
        "metadata": {"owner": "ops"}
    }))
    .expect("parses");
    assert_eq!(update.name.as_deref(), Some("ci-2"));
    assert_eq!(update.user, Some(None), "null clears");
    assert_eq!(update.team, None, "absent is unchanged");
    assert_eq!(update.project, Some(Some("p".into())));
    assert_eq!(
        update.limits,
        Some(KeyLimitsUpdate {
            rpm: Some(None),
            tpm: None
        })
    );

    let mut r = record();
    update.apply(&mut r);
    assert_eq!(r.name, "ci-2");
    assert_eq!(r.user, None);
    assert_eq!(r.team.as_deref(), Some("platform"));
    assert_eq!(r.project.as_deref(), Some("p"));
    assert_eq!(
        r.limits,
        KeyLimits {
            rpm: None,
            tpm: Some(1000)
        }
    );
    assert_eq!(r.expires_at, None);
    assert_eq!(r.metadata.get("owner"), Some(&json!("ops")));
    assert!(r.enabled, "untouched");
}

#[test]
fn update_serializes_back_to_the_same_json() {
    let text = json!({"team": null, "enabled": false, "limits": {"tpm": 5}});
    let update: KeyUpdate = serde_json::from_value(text.clone()).expect("parses");
    assert_eq!(serde_json::to_value(&update).expect("serializes"), text);
    assert_eq!(
        serde_json::to_value(KeyUpdate::default()).expect("serializes"),
        json!({})
    );
}

#[test]
fn update_rejects_unknown_fields_and_bad_values() {
    let err = serde_json::from_value::<KeyUpdate>(json!({"nme": "x"})).expect_err("typo");
    assert!(err.to_string().contains("unknown field `nme`"), "{err}");
    let blank = KeyUpdate {
        name: Some("  ".into()),
        ..KeyUpdate::default()
    };
    assert!(matches!(blank.validate(), Err(StoreError::InvalidData(_))));
    let huge = KeyUpdate {
        limits: Some(KeyLimitsUpdate {
            rpm: Some(Some(u64::MAX)),
            tpm: None,
        }),
        ..KeyUpdate::default()
    };
    assert!(matches!(huge.validate(), Err(StoreError::InvalidData(_))));
    assert!(KeyUpdate::default().validate().is_ok());
}

#[test]
fn new_key_validation() {
    let ok = NewKey::new("key_1", KeyHash([1; 32]), "wk-1…", "n");
    assert!(ok.validate().is_ok());
    for bad in [
        NewKey {
            id: String::new(),
            ..ok.clone()
        },
        NewKey {
            name: " ".into(),
            ..ok.clone()
        },
        NewKey {
            hint: String::new(),
            ..ok.clone()
        },
        NewKey {
            limits: KeyLimits {
                rpm: None,
                tpm: Some(u64::MAX),
            },
            ..ok.clone()
        },
    ] {
        assert!(
            matches!(bad.validate(), Err(StoreError::InvalidData(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn usable_means_enabled_unrevoked_unexpired() {
    let mut r = record();
    assert!(r.is_usable(1_900_000_000));
    assert!(!r.is_usable(2_000_000_000), "expired at expires_at");
    r.enabled = false;
    assert!(!r.is_usable(0));
    r.enabled = true;
    r.revoked_at = Some(1);
    assert!(!r.is_usable(0));
}

#[test]
fn stored_json_must_have_the_right_shape() {
    assert_eq!(
        models_from_json("k", json!(["gpt-*"])).expect("list"),
        vec!["gpt-*".to_string()]
    );
    assert!(models_from_json("k", json!({"a": 1})).is_err());
    assert!(metadata_from_json("k", json!([])).is_err());
    assert!(limit_from_db("k", Some(-1)).is_err());
    assert_eq!(limit_from_db("k", Some(5)).expect("fits"), Some(5));
}
