use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::route::{format_duration, parse_duration, HeaderEdits};

#[test]
fn durations_follow_gep_2257() {
    for (s, ms) in [
        ("0s", 0),
        ("10s", 10_000),
        ("1h2m3s4ms", 3_723_004),
        ("500ms", 500),
        ("99999ms", 99_999),
    ] {
        assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s}");
    }
    for s in [
        "", "10", "1.5s", "-1s", "1d", "30s1m", "1s1s", "100000s", "1h 2m", "s",
    ] {
        assert!(parse_duration(s).is_err(), "{s:?} was accepted");
    }
    assert_eq!(format_duration(Duration::from_millis(90_250)), "1m30s250ms");
    assert_eq!(format_duration(Duration::ZERO), "0s");
}

#[test]
fn query_parameters_are_decoded_in_order() {
    assert_eq!(
        query_pairs(Some("a=1&b=%41%2&&c")),
        [
            ("a".into(), "1".into()),
            ("b".into(), "A%2".into()),
            ("c".into(), String::new())
        ]
    );
    assert!(query_pairs(None).is_empty());
}

fn rule_with(weights: &[u32]) -> CompiledRule {
    CompiledRule {
        backends: weights
            .iter()
            .enumerate()
            .map(|(i, w)| Backend {
                namespace: "ns".into(),
                name: format!("b{i}"),
                port: Some(80),
                weight: *w,
            })
            .collect(),
        request_headers: HeaderEdits::default(),
        response_headers: HeaderEdits::default(),
        request_timeout: None,
        backend_request_timeout: None,
        retry: None,
    }
}

#[test]
fn the_weighted_pick_covers_the_whole_random_range() {
    let rule = rule_with(&[90, 0, 10]);
    let name = |r: u64| rule.pick(r).map(|b| b.name.clone());
    assert_eq!(name(0).as_deref(), Some("b0"));
    assert_eq!(name(u64::MAX / 100 * 89).as_deref(), Some("b0"));
    assert_eq!(name(u64::MAX / 100 * 91).as_deref(), Some("b2"));
    assert_eq!(name(u64::MAX).as_deref(), Some("b2"));
    assert!(rule_with(&[0, 0]).pick(7).is_none());
}

proptest! {
    #[test]
    fn the_weighted_pick_follows_the_weights(
        weights in proptest::collection::vec(0u32..100, 1..5),
        seed in any::<u64>(),
    ) {
        prop_assume!(weights.iter().any(|w| *w > 0));
        let rule = rule_with(&weights);
        let total: u32 = weights.iter().sum();
        let n = 20_000u32;
        let mut counts = vec![0u32; weights.len()];
        // splitmix64: a seeded, deterministic stream of uniform u64s.
        let mut state = seed;
        for _ in 0..n {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            let b = rule.pick(z ^ (z >> 31)).unwrap();
            counts[b.name[1..].parse::<usize>().unwrap()] += 1;
        }
        for (w, c) in weights.iter().zip(&counts) {
            let want = f64::from(*w) / f64::from(total);
            let got = f64::from(*c) / f64::from(n);
            prop_assert!((want - got).abs() < 0.03, "weights {weights:?} counts {counts:?}");
            if *w == 0 {
                prop_assert_eq!(*c, 0);
            }
        }
    }
}
