use super::*;
use std::collections::BTreeSet;

fn members(keys: &[&str], me: Option<&str>) -> Vec<Member> {
    keys.iter()
        .map(|k| Member {
            key: (*k).to_owned(),
            host: (*k).to_owned(),
            me: Some(*k) == me,
        })
        .collect()
}

fn names(targets: &[Arc<TargetConfig>]) -> Vec<&str> {
    targets.iter().map(|t| &*t.name).collect()
}

const THREE: [&str; 3] = ["198.18.0.1", "198.18.0.2", "198.18.0.3"];

#[test]
fn every_peer_but_itself_with_the_source_label_and_the_defaults() {
    let defaults = TargetOptions {
        interval: Duration::from_millis(250),
        kind: crate::probe::ProbeKind::Tcp,
        ..TargetOptions::default()
    };
    let t = peer_targets(&members(&THREE, Some("198.18.0.2")), "b", None, &defaults);
    assert_eq!(names(&t), ["198.18.0.1", "198.18.0.3"]);
    for target in &t {
        assert_eq!(target.host, target.name);
        assert_eq!(
            target.labels.get(SOURCE_LABEL).map(String::as_str),
            Some("b")
        );
        assert_eq!(target.options.interval, Duration::from_millis(250));
        // Mesh monitors are ICMP whatever kind the defaults give other targets.
        assert_eq!(target.options.kind, crate::probe::ProbeKind::Icmp);
        assert_eq!(target.options.port.port, None);
    }
}

#[test]
fn max_peers_one_covers_every_member_once() {
    let defaults = TargetOptions::default();
    let mut pinged = Vec::new();
    for me in THREE {
        let t = peer_targets(&members(&THREE, Some(me)), me, Some(1), &defaults);
        assert_eq!(t.len(), 1, "{me}");
        assert_ne!(&*t[0].name, me);
        pinged.push(t[0].name.clone());
    }
    let set: BTreeSet<&Arc<str>> = pinged.iter().collect();
    assert_eq!(
        set.len(),
        3,
        "every member is pinged by someone: {pinged:?}"
    );
}

#[test]
fn an_instance_outside_the_list_pings_k_of_them() {
    let t = peer_targets(
        &members(&THREE, None),
        "elsewhere",
        Some(2),
        &TargetOptions::default(),
    );
    assert_eq!(t.len(), 2);
    let t = peer_targets(
        &members(&THREE, None),
        "elsewhere",
        None,
        &TargetOptions::default(),
    );
    assert_eq!(names(&t), THREE);
}

#[test]
fn no_members_no_peers() {
    assert!(peer_targets(&[], "a", None, &TargetOptions::default()).is_empty());
}

#[test]
fn a_static_name_pings_its_host() {
    let m = vec![
        Member {
            key: "a.example".into(),
            host: "a.example".into(),
            me: true,
        },
        Member {
            key: "b.example".into(),
            host: "b.example".into(),
            me: false,
        },
    ];
    let t = peer_targets(&m, "a", None, &TargetOptions::default());
    assert_eq!(names(&t), ["b.example"]);
    assert_eq!(&*t[0].host, "b.example");
}

#[test]
fn family_selection() {
    let addrs: Vec<IpAddr> = ["2001:db8::2", "198.18.0.2", "198.18.0.1", "198.18.0.1"]
        .iter()
        .map(|a| a.parse().unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let s = |f| {
        select_family(&addrs, f)
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(s(Family::Auto), ["198.18.0.1", "198.18.0.2"]);
    assert_eq!(s(Family::Ip4), ["198.18.0.1", "198.18.0.2"]);
    assert_eq!(s(Family::Ip6), ["2001:db8::2"]);
    assert_eq!(s(Family::All), ["198.18.0.1", "198.18.0.2", "2001:db8::2"]);
    let v6only = [addrs[0]];
    assert_eq!(select_family(&v6only, Family::Auto), v6only);
}

#[test]
fn loopback_is_local_and_a_documentation_address_is_not() {
    assert!(is_local(IpAddr::from([127, 0, 0, 1])));
    // Binding only asks the kernel; nothing is sent.
    assert!(!is_local(IpAddr::from([192, 0, 2, 77])));
}

#[tokio::test]
async fn static_discovery_marks_the_own_entry_by_name_and_by_address() {
    let mesh = MeshConfig {
        peers: MeshPeers::Static(vec!["a".into(), "198.18.0.9".into(), "192.0.2.5".into()]),
        max_peers: None,
        name: Some("a".into()),
        web_port: 10060,
        web_timeout: Duration::from_secs(2),
    };
    let resolver = Resolver::system().unwrap_or_else(|e| panic!("{e}"));
    let local = |ip: IpAddr| ip == IpAddr::from([198, 18, 0, 9]);
    let (m, _) = discover(&mesh, "a", Family::Auto, &resolver, &local)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let me: Vec<bool> = m.iter().map(|m| m.me).collect();
    assert_eq!(me, [true, true, false]);
    // Literals only from here: no name goes to the system resolver.
    let literals = MeshConfig {
        peers: MeshPeers::Static(vec!["198.18.0.9".into(), "192.0.2.5".into()]),
        ..mesh
    };
    let (m, until) = discover(&literals, "b", Family::Auto, &resolver, &|_| false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(m.iter().all(|m| !m.me));
    assert_eq!(until, None);
}
