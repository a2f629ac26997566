use super::*;

fn args(extra: &[&str]) -> InitArgs {
    let mut argv = vec!["init"];
    argv.extend_from_slice(extra);
    InitArgs::try_parse_from(argv).unwrap()
}

fn text(rules: &[Vec<String>]) -> Vec<String> {
    rules.iter().map(|r| r.join(" ")).collect()
}

#[test]
fn default_rules_redirect_inbound_and_outbound_and_exempt_the_proxy() {
    let rules = text(&install_rules(&args(&[]), Family::V4));
    assert_eq!(
        rules,
        [
            "-N TRUSTMESH_IN_REDIRECT",
            "-N TRUSTMESH_REDIRECT",
            "-N TRUSTMESH_INBOUND",
            "-N TRUSTMESH_OUTPUT",
            "-A TRUSTMESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
            "-A TRUSTMESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
            "-A TRUSTMESH_INBOUND -p tcp --dport 15006 -j RETURN",
            "-A TRUSTMESH_INBOUND -p tcp --dport 15001 -j RETURN",
            "-A TRUSTMESH_INBOUND -p tcp --dport 15000 -j RETURN",
            "-A TRUSTMESH_INBOUND -p tcp -j TRUSTMESH_IN_REDIRECT",
            "-A TRUSTMESH_OUTPUT -m owner --uid-owner 1337 -j RETURN",
            "-A TRUSTMESH_OUTPUT -o lo -j RETURN",
            "-A TRUSTMESH_OUTPUT -d 127.0.0.1/32 -j RETURN",
            "-A TRUSTMESH_OUTPUT -p tcp -j TRUSTMESH_REDIRECT",
            "-A PREROUTING -p tcp -j TRUSTMESH_INBOUND",
            "-A OUTPUT -p tcp -j TRUSTMESH_OUTPUT",
        ]
    );
}

#[test]
fn exclusions_go_before_the_redirects_and_cidrs_go_to_their_family() {
    let a = args(&[
        "--proxy-uid",
        "2000",
        "--inbound-port",
        "16006",
        "--outbound-port",
        "16001",
        "--exclude-inbound-ports",
        "15020,22",
        "--exclude-inbound-ports",
        "22",
        "--exclude-outbound-ports",
        "53",
        "--exclude-outbound-cidrs",
        "10.96.0.1/32,fd00::/8",
        "--exclude-outbound-cidrs",
        "169.254.169.254",
    ]);
    let v4 = text(&install_rules(&a, Family::V4));
    let v6 = text(&install_rules(&a, Family::V6));
    let pos = |rules: &[String], r: &str| {
        rules
            .iter()
            .position(|x| x == r)
            .unwrap_or_else(|| panic!("{r} missing in {rules:#?}"))
    };
    let redirect_in = pos(&v4, "-A TRUSTMESH_INBOUND -p tcp -j TRUSTMESH_IN_REDIRECT");
    for r in [
        "-A TRUSTMESH_INBOUND -p tcp --dport 16006 -j RETURN",
        "-A TRUSTMESH_INBOUND -p tcp --dport 16001 -j RETURN",
        "-A TRUSTMESH_INBOUND -p tcp --dport 15020 -j RETURN",
        "-A TRUSTMESH_INBOUND -p tcp --dport 22 -j RETURN",
    ] {
        assert!(pos(&v4, r) < redirect_in);
    }
    assert_eq!(v4.iter().filter(|r| r.contains("--dport 22")).count(), 1);
    let redirect_out = pos(&v4, "-A TRUSTMESH_OUTPUT -p tcp -j TRUSTMESH_REDIRECT");
    for r in [
        "-A TRUSTMESH_OUTPUT -m owner --uid-owner 2000 -j RETURN",
        "-A TRUSTMESH_OUTPUT -d 10.96.0.1/32 -j RETURN",
        "-A TRUSTMESH_OUTPUT -d 169.254.169.254/32 -j RETURN",
        "-A TRUSTMESH_OUTPUT -p tcp --dport 53 -j RETURN",
    ] {
        assert!(pos(&v4, r) < redirect_out);
    }
    assert!(v4.contains(&"-A TRUSTMESH_REDIRECT -p tcp -j REDIRECT --to-ports 16001".into()));
    assert!(!v4.iter().any(|r| r.contains("fd00::")));
    assert!(v6.contains(&"-A TRUSTMESH_OUTPUT -d fd00::/8 -j RETURN".to_string()));
    assert!(v6.contains(&"-A TRUSTMESH_OUTPUT -d ::1/128 -j RETURN".to_string()));
    assert!(!v6.iter().any(|r| r.contains("10.96.0.1")));
    // The jumps into our chains come last.
    assert_eq!(
        v6[v6.len() - 2],
        "-A PREROUTING -p tcp -j TRUSTMESH_INBOUND"
    );
    assert_eq!(v6[v6.len() - 1], "-A OUTPUT -p tcp -j TRUSTMESH_OUTPUT");
}

#[test]
fn bad_cidrs_and_ports_are_refused() {
    for bad in [
        &["--exclude-outbound-cidrs", "10.0.0.0/33"][..],
        &["--exclude-outbound-cidrs", "fd00::/129"],
        &["--exclude-outbound-cidrs", "example.com/8"],
        &["--exclude-inbound-ports", "70000"],
        &["--ipv6", "maybe"],
    ] {
        let mut argv = vec!["init"];
        argv.extend_from_slice(bad);
        assert!(InitArgs::try_parse_from(argv).is_err(), "{bad:?}");
    }
}

#[test]
fn every_chain_we_create_is_one_uninstall_removes() {
    let rules = install_rules(&args(&[]), Family::V4);
    let created: Vec<&str> = rules
        .iter()
        .filter(|r| r[0] == "-N")
        .map(|r| r[1].as_str())
        .collect();
    assert_eq!(created, CHAINS);
    let jumps: Vec<String> = rules
        .iter()
        .filter(|r| r[1] == "PREROUTING" || r[1] == "OUTPUT")
        .map(|r| r[1..].join(" "))
        .collect();
    let removed: Vec<String> = JUMPS
        .iter()
        .map(|j| {
            j.iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert_eq!(jumps, removed);
}
