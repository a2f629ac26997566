use std::collections::BTreeMap;
use std::time::Duration;

use trustmesh_certs::SpiffeId;

use super::*;
use crate::domain::tokens::{create, load_or_create_key, verify};

fn claims(dir: &Path) -> Claims {
    let key = load_or_create_key(dir).unwrap();
    let id = SpiffeId::parse("spiffe://cluster.local/ns/a/sa/b").unwrap();
    let t = create(&key, &id, BTreeMap::new(), Duration::from_secs(60)).unwrap();
    verify(&key, t.expose(), SystemTime::now()).unwrap()
}

fn enrolled(key: &str, serial: &str) -> Enrolled {
    Enrolled {
        key_sha256: key.repeat(64),
        chain_pem: format!("chain {serial}"),
        not_after: SystemTime::now(),
        serial_hex: serial.to_string(),
    }
}

#[test]
fn a_token_is_spent_once_and_stays_spent_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let c = claims(dir.path());
    let used = UsedTokens::load(dir.path(), SystemTime::now()).unwrap();
    used.spend(&c, enrolled("a", "1")).unwrap();
    let other_key = used.spend(&c, enrolled("b", "2"));
    assert_eq!(other_key.unwrap_err(), TokenError::AlreadyUsed);
    let reloaded = UsedTokens::load(dir.path(), SystemTime::now()).unwrap();
    let after = reloaded.spend(&c, enrolled("b", "3"));
    assert_eq!(after.unwrap_err(), TokenError::AlreadyUsed);
}

#[test]
fn a_retry_of_the_same_enrolment_gets_the_same_answer() {
    let dir = tempfile::tempdir().unwrap();
    let c = claims(dir.path());
    let used = UsedTokens::load(dir.path(), SystemTime::now()).unwrap();
    assert_eq!(used.spend(&c, enrolled("a", "1")).unwrap().serial_hex, "1");
    // The same key again: the chain issued the first time, not the new one.
    assert_eq!(used.spend(&c, enrolled("a", "2")).unwrap().serial_hex, "1");
    // Another replica (or after a restart) signs the same key again.
    let other = UsedTokens::load(dir.path(), SystemTime::now()).unwrap();
    assert_eq!(other.spend(&c, enrolled("a", "3")).unwrap().serial_hex, "3");
    assert_eq!(
        other.spend(&c, enrolled("b", "4")).unwrap_err(),
        TokenError::AlreadyUsed
    );
}

#[test]
fn a_token_spent_on_one_replica_is_refused_by_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let c = claims(dir.path());
    // Two replicas opened the record before either spent anything.
    let one = UsedTokens::load(dir.path(), SystemTime::now()).unwrap();
    let two = UsedTokens::load(dir.path(), SystemTime::now()).unwrap();
    one.spend(&c, enrolled("a", "1")).unwrap();
    assert_eq!(
        two.spend(&c, enrolled("b", "2")).unwrap_err(),
        TokenError::AlreadyUsed
    );
}

#[test]
fn lines_of_older_builds_stay_spent_for_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let c = claims(dir.path());
    let old = format!("{} {}\n", c.jti, c.exp);
    std::fs::write(dir.path().join(USED_FILE), old).unwrap();
    let used = UsedTokens::load(dir.path(), SystemTime::now()).unwrap();
    assert_eq!(
        used.spend(&c, enrolled("a", "1")).unwrap_err(),
        TokenError::AlreadyUsed
    );
}

#[test]
fn a_damaged_line_stops_the_start_with_the_file_and_line_and_is_left_alone() {
    let jti = "0123456789abcdef0123456789abcdef";
    let exp = unix(SystemTime::now()) + 3600;
    let good = format!("{jti} {exp}\n");
    let cases = [
        format!("{good}{}", &good[..20]),
        format!("{good}{}\n", &good[..20]),
        format!("{good}{jti} {exp} abc\n"),
        format!("{good}{jti} 12x4\n"),
        format!("{good}\n"),
        format!("{good}{jti}  {exp}\n"),
    ];
    for text in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(USED_FILE);
        std::fs::write(&path, &text).unwrap();
        let err = match UsedTokens::load(dir.path(), SystemTime::now()) {
            Ok(_) => panic!("{text:?} was accepted"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            err.contains(&format!("{}:2:", path.display())),
            "{text:?}: {err}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "rewritten");
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(USED_FILE), b"\xff\xfe\n").unwrap();
    assert!(UsedTokens::load(dir.path(), SystemTime::now()).is_err());
}
