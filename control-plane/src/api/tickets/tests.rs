use std::os::unix::fs::PermissionsExt as _;

use rustls::server::ProducesTickets as _;

use super::*;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

const T0: u64 = 1_800_000_000;

#[test]
fn the_key_file_is_0600_and_a_restart_opens_the_tickets_of_before() {
    let dir = tempfile::tempdir().unwrap();
    let before = TicketKeys::load(dir.path(), at(T0)).unwrap();
    let ticket = before.seal(b"session state").unwrap();
    let mode = std::fs::metadata(dir.path().join(TICKET_KEYS))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    drop(before);
    let after = TicketKeys::load(dir.path(), at(T0 + 60)).unwrap();
    assert_eq!(
        after.open(&ticket, T0 + 60).as_deref(),
        Some(&b"session state"[..])
    );
}

#[test]
fn a_rotated_key_opens_for_one_more_period_then_never() {
    let dir = tempfile::tempdir().unwrap();
    let keys = TicketKeys::load(dir.path(), at(T0)).unwrap();
    let old = keys.seal(b"old").unwrap();
    let r = ROTATE.as_secs();
    assert!(!keys.rotate_if_due(at(T0 + r - 1)).unwrap());
    assert!(keys.rotate_if_due(at(T0 + r)).unwrap());
    let new = keys.seal(b"new").unwrap();
    assert_eq!(keys.open(&old, T0 + r).as_deref(), Some(&b"old"[..]));
    assert_eq!(keys.open(&new, T0 + r).as_deref(), Some(&b"new"[..]));
    // Two periods after it was made, the first key opens nothing, even before the next
    // rotation drops it.
    assert_eq!(keys.open(&old, T0 + 2 * r), None);
    assert!(keys.rotate_if_due(at(T0 + 2 * r)).unwrap());
    assert_eq!(keys.open(&old, T0 + 2 * r - 1), None, "erased by rotation");
    assert_eq!(keys.open(&new, T0 + 2 * r).as_deref(), Some(&b"new"[..]));
    // A restart late enough finds no key it may still use and makes a fresh one.
    let later = TicketKeys::load(dir.path(), at(T0 + 4 * r)).unwrap();
    assert_eq!(later.open(&new, T0 + 4 * r), None);
}

#[test]
fn a_replica_on_the_same_folder_follows_the_key_another_rotated_to() {
    let dir = tempfile::tempdir().unwrap();
    let a = TicketKeys::load(dir.path(), at(T0)).unwrap();
    let b = TicketKeys::load(dir.path(), at(T0 + 1)).unwrap();
    let r = ROTATE.as_secs();
    assert!(a.rotate_if_due(at(T0 + r)).unwrap());
    assert!(b.rotate_if_due(at(T0 + r + 5)).unwrap());
    let ticket = a.seal(b"from a").unwrap();
    assert_eq!(b.open(&ticket, T0 + r + 5).as_deref(), Some(&b"from a"[..]));
}

#[test]
fn forged_cut_and_foreign_tickets_open_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let keys = TicketKeys::load(dir.path(), at(T0)).unwrap();
    let other = tempfile::tempdir().unwrap();
    let foreign = TicketKeys::load(other.path(), at(T0)).unwrap();
    let ticket = keys.seal(b"state").unwrap();
    let mut flipped = ticket.clone();
    if let Some(b) = flipped.last_mut() {
        *b ^= 1;
    }
    for bad in [
        &[][..],
        &ticket[..5],
        &ticket[..NONCE_LEN + 3],
        &flipped[..],
        &foreign.seal(b"state").unwrap()[..],
    ] {
        assert_eq!(keys.open(bad, T0), None);
    }
    assert!(keys.enabled());
    assert_eq!(keys.decrypt(&[0u8; 40]), None);
}

#[test]
fn a_damaged_or_readable_key_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(TicketKeys::load(dir.path(), at(T0)).unwrap());
    let path = dir.path().join(TICKET_KEYS);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = TicketKeys::load(dir.path(), at(T0 + ROTATE.as_secs()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("chmod 600"), "{err}");
    files::write_atomic(
        &path,
        br#"{"keys":[{"created":1,"key":"c2hvcnQ="}]}"#,
        0o600,
    )
    .unwrap();
    assert!(TicketKeys::load(dir.path(), at(T0)).is_err());
}
