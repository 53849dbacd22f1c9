use super::*;
use std::net::Ipv4Addr;

/// A valid config; tests replace single lines (1-based) to break one rule at a time.
const BASE: &str = "\
lcores:
  main: 0
  workers: [1, 2]
ports:
  - name: inside
    device: net_tap0,iface=a
    addresses:
      - 10.0.1.1/24
    mtu: 1500
  - name: outside
    device: net_tap1,iface=b
    addresses:
      - 198.51.100.1/24
    mtu: 9001
  - name: host
    device: net_tap2,iface=x
    role: exception
exception:
  port: host
routes:
  - prefix: 0.0.0.0/0
    port: outside
    via: 198.51.100.2
    mtu: 1500
mempool:
  mbufs: 4095
  cache: 256
  data_room: 10240
worker:
  burst: 32
  tx_drain_us: 100
  idle_sleep_us: 0
neighbor:
  timeout_s: 300
  pending_max: 64
";

/// BASE with line `n` (1-based) replaced by `new` (which may hold several lines).
fn edit(n: usize, new: &str) -> String {
    edits(&[(n, new)])
}

fn edits(changes: &[(usize, &str)]) -> String {
    let mut out = String::new();
    for (i, line) in BASE.lines().enumerate() {
        match changes.iter().find(|(n, _)| *n == i + 1) {
            Some((_, new)) => out.push_str(new),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

fn err(text: &str) -> ConfigError {
    match parse_str(text, "t.yaml") {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e,
    }
}

/// Asserts the error's field and line, and that its message contains `needle`.
#[track_caller]
fn rejects(text: &str, field: &str, line: usize, needle: &str) -> ConfigError {
    let e = err(text);
    assert_eq!(e.field, field, "{e}");
    assert_eq!(e.line, line, "{e}");
    assert_eq!(e.file, "t.yaml");
    assert!(e.message.contains(needle), "{e}\nshould mention {needle:?}");
    e
}

/// Asserts the exact `file:line:col: field: ` prefix of the error's Display.
#[track_caller]
fn rejects_at(text: &str, prefix: &str) -> ConfigError {
    let e = err(text);
    let shown = e.to_string();
    assert!(
        shown.starts_with(prefix),
        "{shown}\nshould start with {prefix:?}"
    );
    e
}

fn conf_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf")
}

// ---------------------------------------------------------------------------------------
// Ipv4Net

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

#[test]
fn ipv4net_parses_and_displays() {
    let n = net("10.0.1.1/24");
    assert_eq!(n.addr, Ipv4Addr::new(10, 0, 1, 1));
    assert_eq!(n.len, 24);
    assert_eq!(n.to_string(), "10.0.1.1/24");
    assert_eq!(net("0.0.0.0/0").to_string(), "0.0.0.0/0");
    assert_eq!(net("1.2.3.4/32").len, 32);
}

#[test]
fn ipv4net_rejects_bad_strings() {
    for bad in [
        "10.0.1.1",
        "10.0.1.1/",
        "10.0.1.1/33",
        "10.0.1.1/+8",
        "10.0.1.1/-1",
        "10.0.1/24",
        "10.0.1.256/24",
        "/24",
        "10.0.1.1/24/1",
        "",
    ] {
        assert!(bad.parse::<Ipv4Net>().is_err(), "{bad} accepted");
    }
    assert!("10.0.1.1"
        .parse::<Ipv4Net>()
        .unwrap_err()
        .contains("no prefix length"));
}

#[test]
fn ipv4net_mask_network_contains() {
    let n = net("10.0.1.77/24");
    assert_eq!(n.mask(), 0xffff_ff00);
    assert_eq!(n.network(), Ipv4Addr::new(10, 0, 1, 0));
    assert_eq!(n.broadcast(), Ipv4Addr::new(10, 0, 1, 255));
    assert!(n.contains(Ipv4Addr::new(10, 0, 1, 0)));
    assert!(n.contains(Ipv4Addr::new(10, 0, 1, 255)));
    assert!(!n.contains(Ipv4Addr::new(10, 0, 2, 1)));

    let all = net("0.0.0.0/0");
    assert_eq!(all.mask(), 0);
    assert_eq!(all.network(), Ipv4Addr::UNSPECIFIED);
    assert!(all.contains(Ipv4Addr::new(203, 0, 113, 9)));

    let host = net("192.0.2.9/32");
    assert_eq!(host.mask(), u32::MAX);
    assert_eq!(host.network(), Ipv4Addr::new(192, 0, 2, 9));
    assert!(host.contains(Ipv4Addr::new(192, 0, 2, 9)));
    assert!(!host.contains(Ipv4Addr::new(192, 0, 2, 8)));

    assert_eq!(net("10.255.255.255/1").network(), Ipv4Addr::new(0, 0, 0, 0));
    assert_eq!(net("10.0.0.1/31").mask(), 0xffff_fffe);

    assert!(net("10.0.0.0/8").overlaps(&net("10.1.2.3/24")));
    assert!(net("10.1.2.3/24").overlaps(&net("10.0.0.0/8")));
    assert!(!net("10.0.1.0/24").overlaps(&net("10.0.2.0/24")));
    assert!(Ipv4Net::new(Ipv4Addr::LOCALHOST, 33).is_none());
}

#[test]
fn ipv4net_deserializes_from_yaml() {
    let v: Vec<Ipv4Net> = serde_yaml::from_str("[10.0.0.1/8, '192.0.2.1/32']").unwrap();
    assert_eq!(v, vec![net("10.0.0.1/8"), net("192.0.2.1/32")]);
    assert!(serde_yaml::from_str::<Ipv4Net>("10.0.0.1").is_err());
    assert!(serde_yaml::from_str::<Ipv4Net>("42").is_err());
}

// ---------------------------------------------------------------------------------------
// ConfigError, FieldPath

#[test]
fn config_error_display() {
    let e = ConfigError {
        file: "conf/a.yaml".into(),
        line: 12,
        column: 5,
        field: "ports[1].mtu".into(),
        message: "too big".into(),
    };
    assert_eq!(e.to_string(), "conf/a.yaml:12:5: ports[1].mtu: too big");
    let boxed: Box<dyn std::error::Error> = Box::new(e);
    assert!(boxed.to_string().ends_with("too big"));
}

#[test]
fn field_path_round_trips() {
    for s in [
        "ports[1].mtu",
        "lcores.workers[0]",
        "ports",
        "a[1][2].b",
        "mempool.data_room",
    ] {
        assert_eq!(FieldPath::parse(s).to_string(), s);
    }
    let p = FieldPath::root().key("ports").index(1).key("mtu");
    assert_eq!(p, FieldPath::from("ports[1].mtu"));
    assert_eq!(p.parent().unwrap().to_string(), "ports[1]");
    assert_eq!(FieldPath::root().to_field(), "(file)");
    assert!(FieldPath::root().parent().is_none());
}

// ---------------------------------------------------------------------------------------
// Locator

#[test]
fn locator_finds_values_keys_and_items() {
    let l = Locator::new(BASE);
    let at = |p: &str| {
        let pos = l
            .find(&FieldPath::parse(p))
            .unwrap_or_else(|| panic!("{p}"));
        (pos.line, pos.column)
    };
    assert_eq!(at("lcores"), (1, 1));
    assert_eq!(at("lcores.main"), (2, 9));
    assert_eq!(at("lcores.workers"), (3, 3));
    assert_eq!(at("lcores.workers[0]"), (3, 13));
    assert_eq!(at("lcores.workers[1]"), (3, 16));
    assert_eq!(at("ports"), (4, 1));
    assert_eq!(at("ports[0]"), (5, 5));
    assert_eq!(at("ports[0].name"), (5, 11));
    assert_eq!(at("ports[0].addresses"), (7, 5));
    assert_eq!(at("ports[0].addresses[0]"), (8, 9));
    assert_eq!(at("ports[1].mtu"), (14, 10));
    assert_eq!(at("ports[2].role"), (17, 11));
    assert_eq!(at("routes[0].via"), (23, 10));
    assert_eq!(at("neighbor.pending_max"), (35, 16));
}

#[test]
fn locator_falls_back_to_nearest_parent() {
    let l = Locator::new(BASE);
    let at = |p: &str| {
        let pos = l.locate(&FieldPath::parse(p));
        (pos.line, pos.column)
    };
    // queues is not written: reported at the port.
    assert_eq!(at("ports[1].queues"), (10, 5));
    assert_eq!(at("ports[7].mtu"), (4, 1));
    assert_eq!(at("metrics.listen"), (1, 1));
    assert_eq!(at(""), (1, 1));
    assert!(l.find(&FieldPath::parse("ports[1].queues")).is_none());
}

#[test]
fn locator_handles_comments_flow_style_and_document_markers() {
    let text = "\
# comment
---
lcores: {main: 0, workers: [1, 2]}   # flow mapping
ports:
-   name: 'a'
    device: \"0000:00:06.0\"
    addresses: [10.0.0.10/24]
-
    name: b
";
    let l = Locator::new(text);
    let at = |p: &str| {
        let pos = l
            .find(&FieldPath::parse(p))
            .unwrap_or_else(|| panic!("{p}"));
        (pos.line, pos.column)
    };
    assert_eq!(at("lcores"), (3, 1));
    assert_eq!(at("lcores.main"), (3, 16));
    assert_eq!(at("lcores.workers[1]"), (3, 32));
    assert_eq!(at("ports[0].name"), (5, 11));
    assert_eq!(at("ports[0].device"), (6, 13));
    assert_eq!(at("ports[0].addresses[0]"), (7, 17));
    assert_eq!(at("ports[1]"), (9, 5));
    assert_eq!(at("ports[1].name"), (9, 11));
}

#[test]
fn locator_survives_broken_yaml() {
    let l = Locator::new("lcores:\n  main: 0\nports: [\n");
    assert_eq!(l.locate(&FieldPath::parse("lcores.main")).line, 2);
    assert_eq!(Locator::new("").locate(&"a.b".into()), Pos::START);
}

// ---------------------------------------------------------------------------------------
// Parse errors (serde_yaml)

#[test]
fn base_is_valid() {
    let cfg = parse_str(BASE, "t.yaml").unwrap();
    assert_eq!(cfg.ports.len(), 3);
    assert_eq!(cfg.ports[1].mtu, 9001);
    assert_eq!(cfg.ports[0].queues, 1);
    assert_eq!(cfg.routes[0].via, Some(Ipv4Addr::new(198, 51, 100, 2)));
    assert!(cfg.validate_all(BASE, "t.yaml").is_empty());
    // Validation also works without the text (everything at 1:1).
    assert!(cfg.validate("", "x").is_ok());
}

#[test]
fn typo_field_is_named() {
    let e = rejects_at(&edit(9, "    mtux: 1500"), "t.yaml:9:5: ports[0].mtux: ");
    assert!(e.message.contains("unknown field `mtux`"), "{e}");
    assert!(!e.message.contains("at line"), "{e}");

    let e = rejects_at(&format!("{BASE}wokrer: {{}}\n"), "t.yaml:36:1: wokrer: ");
    assert!(e.message.contains("unknown field `wokrer`"), "{e}");
}

#[test]
fn wrong_type_has_line() {
    let e = rejects_at(&edit(9, "    mtu: big"), "t.yaml:9:10: ports[0].mtu: ");
    assert!(e.message.starts_with("invalid type: string \"big\""), "{e}");
    rejects_at(
        &edit(3, "  workers: [1, x]"),
        "t.yaml:3:16: lcores.workers[1]: ",
    );
    rejects(
        &edit(17, "    role: router"),
        "ports[2].role",
        17,
        "unknown variant",
    );
    rejects(
        &edit(31, "  tx_drain_us: -1"),
        "worker.tx_drain_us",
        31,
        "invalid",
    );
}

#[test]
fn bad_prefix_strings_are_parse_errors() {
    let e = rejects_at(
        &edit(8, "      - 10.0.1.1"),
        "t.yaml:8:9: ports[0].addresses[0]: ",
    );
    assert!(e.message.contains("no prefix length"), "{e}");
    rejects(
        &edit(21, "  - prefix: 10.0.0.0/33"),
        "routes[0].prefix",
        21,
        "0..=32",
    );
    rejects(&edit(23, "    via: 198.51.100"), "routes[0].via", 23, "");
}

#[test]
fn missing_field_is_named() {
    let e = err(&edit(6, ""));
    assert_eq!(e.field, "ports[0].device", "{e}");
    assert_eq!(e.line, 5, "{e}");
    assert!(e.message.contains("missing field `device`"));

    let e = err("lcores:\n  workers: [1]\n");
    assert_eq!(e.field, "ports", "{e}");
    let e = err("");
    assert_eq!(
        (e.line, e.column, e.field.as_str()),
        (1, 1, "lcores"),
        "{e}"
    );
}

#[test]
fn duplicate_field_is_placed_at_its_second_occurrence() {
    rejects_at(
        &edit(2, "  main: 0\n  main: 1"),
        "t.yaml:3:9: lcores.main: duplicate field",
    );
}

#[test]
fn syntax_error_has_line() {
    let e = err(&edit(9, "    mtu: [1500"));
    assert!(e.line >= 9, "{e}");
    assert!(!e.message.is_empty());
    let e = err(&edit(10, "   - name: outside"));
    assert!((9..=11).contains(&e.line), "{e}");
    let e = err("- just\n- a list\n");
    assert_eq!((e.line, e.field.as_str()), (1, "(file)"), "{e}");
}

#[test]
fn unreadable_file_is_a_file_error() {
    let e = load(std::path::Path::new("/nonexistent/flowgate.yaml")).unwrap_err();
    assert_eq!((e.line, e.column), (1, 1));
    assert_eq!(e.field, "(file)");
    assert!(e
        .to_string()
        .starts_with("/nonexistent/flowgate.yaml:1:1: (file): cannot read"));
}

// ---------------------------------------------------------------------------------------
// Semantic rules

#[test]
fn lcores_rules() {
    rejects_at(&edit(3, "  workers: []"), "t.yaml:3:3: lcores.workers: ");
    let e = rejects_at(
        &edit(3, "  workers: [0, 2]"),
        "t.yaml:3:13: lcores.workers[0]: ",
    );
    assert!(e.message.contains("main lcore"));
    let e = rejects_at(
        &edit(3, "  workers: [1, 1]"),
        "t.yaml:3:16: lcores.workers[1]: ",
    );
    assert!(e.message.contains("twice"));
    rejects(
        &edit(3, "  workers: [1, 128]"),
        "lcores.workers[1]",
        3,
        "127",
    );
    assert!(parse_str(&edit(3, "  workers: [1, 127]"), "t.yaml").is_ok());
    rejects(&edit(2, "  main: 200"), "lcores.main", 2, "0..=127");
}

#[test]
fn at_least_one_port_and_one_data_port() {
    rejects(
        "lcores:\n  workers: [1]\nports: []\n",
        "ports",
        3,
        "at least one port",
    );
    let only_tap = "lcores:\n  workers: [1]\nports:\n  - name: t\n    device: net_tap0\n    \
                    role: exception\nexception:\n  port: t\n";
    rejects(only_tap, "ports", 3, "role `data`");
}

#[test]
fn port_name_rules() {
    rejects_at(&edit(5, "  - name: Inside"), "t.yaml:5:11: ports[0].name: ");
    rejects(
        &edit(5, "  - name: in side"),
        "ports[0].name",
        5,
        "[a-z0-9_-]+",
    );
    rejects(&edit(5, "  - name: ''"), "ports[0].name", 5, "[a-z0-9_-]+");
    let e = rejects_at(
        &edit(10, "  - name: inside"),
        "t.yaml:10:11: ports[1].name: ",
    );
    assert!(e.message.contains("ports[0]"), "{e}");
    assert!(parse_str(&edit(5, "  - name: in_side-2"), "t.yaml").is_ok());
}

#[test]
fn device_rules() {
    let e = rejects_at(
        &edit(11, "    device: net_tap0,iface=zz"),
        "t.yaml:11:13: ports[1].device: ",
    );
    assert!(e.message.contains("ports[0]"), "{e}");
    // The same PCI function written with and without its domain.
    let text = edits(&[
        (6, "    device: \"0000:00:06.0\""),
        (11, "    device: \"00:06.0\""),
    ]);
    rejects(&text, "ports[1].device", 11, "already used");
    rejects(&edit(6, "    device: ''"), "ports[0].device", 6, "empty");
}

#[test]
fn mtu_queue_and_descriptor_rules() {
    let e = rejects_at(&edit(9, "    mtu: 9217"), "t.yaml:9:10: ports[0].mtu: ");
    assert!(e.message.contains("9001"), "{e}");
    rejects(&edit(9, "    mtu: 67"), "ports[0].mtu", 9, "68..=9216");
    assert!(parse_str(&edit(9, "    mtu: 68"), "t.yaml").is_ok());

    rejects_at(
        &edit(9, "    mtu: 1500\n    queues: 0"),
        "t.yaml:10:13: ports[0].queues: ",
    );
    rejects(
        &edit(9, "    mtu: 1500\n    queues: 17"),
        "ports[0].queues",
        10,
        "1..=16",
    );
    assert!(parse_str(&edit(9, "    mtu: 1500\n    queues: 16"), "t.yaml").is_ok());

    for bad in ["100", "32", "8192", "0"] {
        let text = edit(9, &format!("    mtu: 1500\n    rx_desc: {bad}"));
        rejects(&text, "ports[0].rx_desc", 10, "power of two");
        let text = edit(14, &format!("    mtu: 9001\n    tx_desc: {bad}"));
        rejects(&text, "ports[1].tx_desc", 15, "power of two");
    }
    for good in ["64", "512", "4096"] {
        let text = edit(
            9,
            &format!("    mtu: 1500\n    rx_desc: {good}\n    tx_desc: {good}"),
        );
        assert!(parse_str(&text, "t.yaml").is_ok(), "{good}");
    }
}

#[test]
fn address_rules() {
    // Same subnet on two ports.
    let e = rejects_at(
        &edit(13, "      - 10.0.1.2/24"),
        "t.yaml:13:9: ports[1].addresses[0]: ",
    );
    assert!(e.message.contains("overlaps"), "{e}");
    // A supernet of another port's subnet.
    rejects(
        &edit(13, "      - 10.0.0.1/16"),
        "ports[1].addresses[0]",
        13,
        "overlaps",
    );
    // The same address twice on one port.
    let e = rejects(
        &edit(8, "      - 10.0.1.1/24\n      - 10.0.1.1/25"),
        "ports[0].addresses[1]",
        9,
        "already assigned",
    );
    assert!(e.message.contains("ports[0].addresses[0]"), "{e}");
    // The same address on two ports (reported as a duplicate, not as an overlap).
    rejects(
        &edit(13, "      - 10.0.1.1/32"),
        "ports[1].addresses[0]",
        13,
        "already assigned",
    );
    // Two addresses of one subnet on one port are fine.
    assert!(parse_str(
        &edit(8, "      - 10.0.1.1/24\n      - 10.0.1.2/24"),
        "t.yaml"
    )
    .is_ok());
    // Prefix length 0, network and broadcast addresses.
    rejects(
        &edit(8, "      - 10.0.1.1/0"),
        "ports[0].addresses[0]",
        8,
        "1..=32",
    );
    rejects(
        &edit(8, "      - 10.0.1.0/24"),
        "ports[0].addresses[0]",
        8,
        "network",
    );
    rejects(
        &edit(8, "      - 10.0.1.255/24"),
        "ports[0].addresses[0]",
        8,
        "broadcast",
    );
    assert!(parse_str(&edit(8, "      - 10.0.1.0/31"), "t.yaml").is_ok());
    assert!(parse_str(&edit(8, "      - 10.0.1.7/32"), "t.yaml").is_ok());
}

#[test]
fn mempool_rules() {
    rejects_at(&edit(26, "  mbufs: 1023"), "t.yaml:26:10: mempool.mbufs: ");
    assert!(parse_str(&edit(26, "  mbufs: 1024"), "t.yaml").is_ok());
    rejects(&edit(27, "  cache: 513"), "mempool.cache", 27, "512");
    assert!(parse_str(&edit(27, "  cache: 512"), "t.yaml").is_ok());
    // cache <= mbufs / 1.5 only binds below 768 mbufs, which is already too few: it shows up
    // as the second error.
    let text = edits(&[(26, "  mbufs: 700"), (27, "  cache: 467")]);
    let cfg = parse_unvalidated(&text, "t.yaml").unwrap();
    let all = cfg.validate_all(&text, "t.yaml");
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[1].to_string(), "t.yaml:27:10: mempool.cache: cache 467 is more than mbufs / 1.5 (466); DPDK refuses such a pool");
    let text = edits(&[(26, "  mbufs: 700"), (27, "  cache: 466")]);
    let cfg = parse_unvalidated(&text, "t.yaml").unwrap();
    assert_eq!(cfg.validate_all(&text, "t.yaml").len(), 1);

    let e = rejects_at(
        &edit(28, "  data_room: 9018"),
        "t.yaml:28:14: mempool.data_room: ",
    );
    assert!(
        e.message.contains("`outside`") && e.message.contains("9019"),
        "{e}"
    );
    assert!(parse_str(&edit(28, "  data_room: 9019"), "t.yaml").is_ok());
    rejects(
        &edit(28, "  data_room: 65408"),
        "mempool.data_room",
        28,
        "65407",
    );
    assert!(parse_str(&edit(28, "  data_room: 65407"), "t.yaml").is_ok());
}

#[test]
fn mempool_defaults_are_checked_against_ports() {
    // No mempool section: defaults (data_room 10240) suffice for any valid mtu.
    let text: String = BASE.lines().take(24).map(|l| format!("{l}\n")).collect();
    let cfg = parse_str(&text, "t.yaml").unwrap();
    assert_eq!(cfg.mempool, MempoolConfig::default());
}

#[test]
fn route_rules() {
    let e = rejects_at(
        &edit(22, "    port: nowhere"),
        "t.yaml:22:11: routes[0].port: ",
    );
    assert!(e.message.contains("`inside`"), "{e}");
    let e = rejects(
        &edit(22, "    port: host"),
        "routes[0].port",
        22,
        "exception",
    );
    assert!(e.message.contains("no routes"), "{e}");

    let e = rejects_at(
        &edit(23, "    via: 10.0.1.254"),
        "t.yaml:23:10: routes[0].via: ",
    );
    assert!(e.message.contains("198.51.100.1/24"), "{e}");
    rejects(
        &edit(23, "    via: 198.51.100.1"),
        "routes[0].via",
        23,
        "own address",
    );
    // On-link route (no via).
    assert!(parse_str(&edit(23, ""), "t.yaml").is_ok());

    rejects_at(&edit(24, "    mtu: 9002"), "t.yaml:24:10: routes[0].mtu: ");
    rejects(&edit(24, "    mtu: 67"), "routes[0].mtu", 24, "68..=9001");
    assert!(parse_str(&edit(24, "    mtu: 9001"), "t.yaml").is_ok());
    // Route mtu is bounded by its own port's mtu (inside is 1500).
    let text = edits(&[
        (22, "    port: inside"),
        (23, "    via: 10.0.1.2"),
        (24, "    mtu: 9000"),
    ]);
    rejects(&text, "routes[0].mtu", 24, "68..=1500");

    let dup = edit(
        24,
        "    mtu: 1500\n  - prefix: 0.0.0.0/0\n    port: inside\n    via: 10.0.1.2",
    );
    rejects_at(&dup, "t.yaml:25:13: routes[1].prefix: ");
    let e = rejects(
        &edit(21, "  - prefix: 10.1.2.3/8"),
        "routes[0].prefix",
        21,
        "host bits",
    );
    assert!(e.message.contains("10.0.0.0/8"), "{e}");
}

#[test]
fn exception_rules() {
    let e = rejects_at(&edit(19, "  port: inside"), "t.yaml:19:9: exception.port: ");
    assert!(e.message.contains("role: exception"), "{e}");
    rejects(
        &edit(19, "  port: nope"),
        "exception.port",
        19,
        "no port named",
    );
    // An exception port nobody names.
    let text = edits(&[(18, ""), (19, "")]);
    rejects(&text, "ports[2].role", 17, "not the exception port");
    // No exception port at all is fine.
    let text: String = BASE
        .lines()
        .enumerate()
        .filter(|(i, _)| !(14..19).contains(i))
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    let cfg = parse_str(&text, "t.yaml").unwrap();
    assert!(cfg.exception.is_none());
}

#[test]
fn worker_and_neighbor_rules() {
    rejects_at(&edit(30, "  burst: 0"), "t.yaml:30:10: worker.burst: ");
    rejects(&edit(30, "  burst: 33"), "worker.burst", 30, "1..=32");
    rejects(
        &edit(31, "  tx_drain_us: 0"),
        "worker.tx_drain_us",
        31,
        "1..=100000",
    );
    rejects(
        &edit(31, "  tx_drain_us: 100001"),
        "worker.tx_drain_us",
        31,
        "",
    );
    assert!(parse_str(&edit(31, "  tx_drain_us: 100000"), "t.yaml").is_ok());
    rejects(
        &edit(32, "  idle_sleep_us: 10001"),
        "worker.idle_sleep_us",
        32,
        "0..=10000",
    );
    assert!(parse_str(&edit(32, "  idle_sleep_us: 10000"), "t.yaml").is_ok());

    rejects_at(
        &edit(34, "  timeout_s: 0"),
        "t.yaml:34:14: neighbor.timeout_s: ",
    );
    rejects(
        &edit(34, "  timeout_s: 86401"),
        "neighbor.timeout_s",
        34,
        "1..=86400",
    );
    rejects(
        &edit(35, "  pending_max: 0"),
        "neighbor.pending_max",
        35,
        "1..=4096",
    );
    rejects(
        &edit(35, "  pending_max: 4097"),
        "neighbor.pending_max",
        35,
        "",
    );
}

#[test]
fn defaulted_field_errors_point_at_the_parent() {
    // A config built in code, validated against text that does not write the field.
    let mut cfg = parse_str(BASE, "t.yaml").unwrap();
    cfg.ports[1].queues = 99;
    let e = cfg.validate(BASE, "t.yaml").unwrap_err();
    assert_eq!(
        e.to_string(),
        "t.yaml:10:5: ports[1].queues: 99 is out of range 1..=16"
    );
    cfg.ports[1].queues = 1;
    cfg.metrics.listen = "0.0.0.0:1".parse().unwrap();
    cfg.neighbor.timeout_s = 0;
    let e = cfg.validate("", "mem").unwrap_err();
    assert_eq!(
        (e.line, e.column, e.field.as_str()),
        (1, 1, "neighbor.timeout_s")
    );
}

#[test]
fn validate_all_collects_every_error_in_check_order() {
    let text = edits(&[
        (3, "  workers: [0]"),
        (9, "    mtu: 10"),
        (30, "  burst: 0"),
        (35, "  pending_max: 0"),
    ]);
    let cfg = parse_unvalidated(&text, "t.yaml").unwrap();
    let all = cfg.validate_all(&text, "t.yaml");
    let fields: Vec<&str> = all.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "lcores.workers[0]",
            "ports[0].mtu",
            "worker.burst",
            "neighbor.pending_max"
        ]
    );
    assert_eq!(cfg.validate(&text, "t.yaml").unwrap_err(), all[0]);
    assert_eq!(err(&text), all[0]);
}

#[test]
fn validator_helper_reports_any_path() {
    let mut v = Validator::new(BASE, "t.yaml");
    v.fail("ports[1].addresses[0]", "custom");
    v.fail(
        FieldPath::root().key("nat_gateways").index(0),
        "not written",
    );
    assert!(v.in_range("worker.burst", 5u16, 1, 32, ""));
    let errs = v.into_errors();
    assert_eq!(
        errs[0].to_string(),
        "t.yaml:13:9: ports[1].addresses[0]: custom"
    );
    assert_eq!(
        errs[1].to_string(),
        "t.yaml:1:1: nat_gateways[0]: not written"
    );
    assert_eq!(errs.len(), 2);
}

// ---------------------------------------------------------------------------------------
// conf/ examples

#[test]
fn every_conf_example_loads() {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(conf_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        if let Err(e) = load(&path) {
            panic!("{e}");
        }
        names.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    for want in [
        "test-af-packet.yaml",
        "test-tap.yaml",
        "ec2-ena-one-armed.yaml",
        "ec2-ixgbe-vf.yaml",
    ] {
        assert!(names.iter().any(|n| n == want), "conf/{want} missing");
    }
}

#[test]
fn conf_examples_say_what_the_brief_says() {
    let af = load(&conf_dir().join("test-af-packet.yaml")).unwrap();
    assert_eq!(
        af.ports[0].device,
        "net_af_packet0,iface=fgc0,framesz=10240,blocksz=20480"
    );
    assert_eq!(af.ports[0].addresses, vec![net("10.0.1.1/24")]);
    assert!(af.ports[1].device.starts_with("net_af_packet1,iface=fgs0,"));
    assert_eq!(af.ports[1].addresses, vec![net("198.51.100.1/24")]);
    assert_eq!(
        af.eal.args,
        [
            "--file-prefix",
            "fg-test",
            "--no-pci",
            "--no-huge",
            "-m",
            "512"
        ]
    );
    assert_eq!(
        (af.lcores.main, af.lcores.workers.as_slice()),
        (0, &[1][..])
    );
    assert_eq!(af.mempool.mbufs, 4095);
    assert_eq!(af.metrics.listen, "127.0.0.1:9100".parse().unwrap());
    assert_eq!(af.worker.idle_sleep_us, 50);

    let tap = load(&conf_dir().join("test-tap.yaml")).unwrap();
    assert_eq!(tap.ports[0].device, "net_tap0,iface=fgtc0");
    assert_eq!(tap.ports[1].device, "net_tap1,iface=fgts0");
    assert_eq!(tap.ports[0].addresses, af.ports[0].addresses);
    assert_eq!(tap.ports[1].addresses, af.ports[1].addresses);
    assert_eq!(tap.eal, af.eal);

    for file in ["ec2-ena-one-armed.yaml", "ec2-ixgbe-vf.yaml"] {
        let c = load(&conf_dir().join(file)).unwrap();
        let data = &c.ports[0];
        assert_eq!((data.mtu, data.queues), (9001, 2), "{file}");
        assert_eq!(data.addresses, vec![net("10.0.0.10/24")], "{file}");
        assert_eq!(c.lcores.workers, [1, 2], "{file}");
        let default = &c.routes[0];
        assert_eq!(default.prefix, net("0.0.0.0/0"), "{file}");
        assert_eq!(default.via, Some(Ipv4Addr::new(10, 0, 0, 1)), "{file}");
        assert_eq!(default.mtu, Some(1500), "{file}");
        assert_eq!(c.routes[1].prefix, net("10.0.0.0/16"), "{file}");
        assert_eq!(c.routes[1].mtu, Some(9001), "{file}");
        let exc = c.exception.as_ref().unwrap();
        let port = c.ports.iter().find(|p| p.name == exc.port).unwrap();
        assert_eq!(port.device, "net_tap0,iface=fgx0", "{file}");
        assert_eq!(port.role, PortRole::Exception, "{file}");
    }
}

#[test]
fn scatter_allows_a_data_room_below_the_mtu() {
    let text = |scatter: &str| {
        format!(
            "lcores: {{workers: [1]}}
mempool: {{data_room: 2048{scatter}}}
ports:
  - {{name: a, device: net_tap0, mtu: 9001}}
"
        )
    };
    let e = parse_str(&text(""), "t.yaml").unwrap_err();
    assert_eq!(e.field, "mempool.data_room", "{e}");
    let c = parse_str(&text(", scatter: true"), "t.yaml").unwrap();
    assert!(c.mempool.scatter);
    assert_eq!(c.mempool.linear_mbufs, 1023);
}
