//! The service model driven through ipvsadm: command lines parsed into
//! edits, refused with IPVS's wording, `-R` all or nothing.

use super::args::parse_line;
use super::{check_zero, parse_restore, restore, Command, Services};
use crate::limits::MAX_SERVICES;
use crate::service::{Applied, ApplyError, Edit, RealId, ServiceKey, ServiceModel};

fn edit(line: &str) -> Edit {
    match parse_line(line) {
        Ok(Command::Edit(e)) => e,
        other => panic!("{line}: {other:?}"),
    }
}

fn run(m: &mut ServiceModel, line: &str) -> Result<Applied, ApplyError> {
    m.apply(&edit(line))
}

#[test]
fn services_and_reals_with_ipvs_errors() {
    let mut m = ServiceModel::new(16);
    run(&mut m, "-A -t 192.0.2.1:80 -s rr").unwrap();
    assert_eq!(
        run(&mut m, "-A -t 192.0.2.1:80"),
        Err(ApplyError::ServiceExists)
    );
    assert_eq!(
        run(&mut m, "-E -t 192.0.2.1:81"),
        Err(ApplyError::NoSuchService)
    );
    assert_eq!(
        run(&mut m, "-D -u 192.0.2.1:80"),
        Err(ApplyError::NoSuchService)
    );
    assert_eq!(
        run(&mut m, "-a -t 192.0.2.1:81 -r 198.51.100.1"),
        Err(ApplyError::ServiceNotDefined)
    );
    run(&mut m, "-a -t 192.0.2.1:80 -r 198.51.100.1").unwrap();
    assert_eq!(
        run(&mut m, "-a -t 192.0.2.1:80 -r 198.51.100.1 -w 5"),
        Err(ApplyError::RealExists)
    );
    assert_eq!(
        run(&mut m, "-e -t 192.0.2.1:80 -r 198.51.100.2"),
        Err(ApplyError::NoSuchReal)
    );
    assert_eq!(
        run(&mut m, "-d -t 192.0.2.1:80 -r 198.51.100.2"),
        Err(ApplyError::NoSuchReal)
    );
    assert_eq!(
        run(&mut m, "-a -t 192.0.2.1:80 -r 198.51.100.3 -y 10"),
        Err(ApplyError::ThresholdRange)
    );
    assert_eq!(
        run(&mut m, "-a -t 192.0.2.1:80 -r 2001:db8::1 -i"),
        Err(ApplyError::AddressFamily)
    );
    assert_eq!(
        run(&mut m, "-a -t 192.0.2.1:80 -r 224.0.0.1"),
        Err(ApplyError::NotUnicast)
    );
    // Weight 0 quiesces: the server stays, with its id.
    run(&mut m, "-e -t 192.0.2.1:80 -r 198.51.100.1 -w 0").unwrap();
    let s = &m.services()[0];
    assert_eq!((s.reals[0].id, s.reals[0].weight), (RealId(0), 0));
    // -e without -w goes back to weight 1 and -g, as IPVS.
    run(&mut m, "-e -t 192.0.2.1:80 -r 198.51.100.1 -m -w 7").unwrap();
    assert_eq!(
        m.services()[0].reals[0].method,
        crate::service::ForwardMethod::Nat
    );
    run(&mut m, "-e -t 192.0.2.1:80 -r 198.51.100.1").unwrap();
    let r = &m.services()[0].reals[0];
    assert_eq!((r.weight, r.method), (1, crate::service::ForwardMethod::Dr));
    run(&mut m, "-e -t 192.0.2.1:80 -r 198.51.100.1 -w 0").unwrap();
    // -E without -s goes back to wlc, as IPVS.
    run(&mut m, "-E -t 192.0.2.1:80 -p").unwrap();
    let s = &m.services()[0];
    assert_eq!(s.scheduler, crate::service::SchedulerKind::Wlc);
    assert_eq!(s.persistence.map(|p| p.timeout_secs), Some(360));
    assert_eq!(m.snapshot().services().len(), 1);
    assert_eq!(check_zero(&m, None), Ok(()));
    assert_eq!(
        check_zero(&m, Some(&ServiceKey { port: 9, ..s.key })),
        Err(ApplyError::NoSuchService)
    );
    let removed = run(&mut m, "-D -t 192.0.2.1:80").unwrap().removed;
    assert_eq!(removed, vec![RealId(0)]);
    assert!(m.services().is_empty());
}

#[test]
fn a_real_server_added_back_gets_its_old_id() {
    let mut m = ServiceModel::new(100);
    run(&mut m, "-A -t 192.0.2.1:80").unwrap();
    run(&mut m, "-A -t 192.0.2.1:81").unwrap();
    for i in 1..=2 {
        run(&mut m, &format!("-a -t 192.0.2.1:80 -r 198.51.100.{i} -m")).unwrap();
    }
    let removed = run(&mut m, "-d -t 192.0.2.1:80 -r 198.51.100.1").unwrap();
    assert_eq!(removed.removed, vec![RealId(0)]);
    // Another service or port is someone else: a fresh id.
    run(&mut m, "-a -t 192.0.2.1:81 -r 198.51.100.1 -m").unwrap();
    run(&mut m, "-a -t 192.0.2.1:80 -r 198.51.100.1:8080 -m").unwrap();
    let ids = |m: &ServiceModel, i: usize| -> Vec<u32> {
        m.services()[i].reals.iter().map(|r| r.id.0).collect()
    };
    assert_eq!((ids(&m, 0), ids(&m, 1)), (vec![1, 3], vec![2]));
    // The same service and endpoint: id 0 again, even though the
    // daemon's predicate would refuse it (its connections are why).
    m.apply_with(&edit("-a -t 192.0.2.1:80 -r 198.51.100.1 -m"), &|_| false)
        .unwrap();
    assert_eq!(ids(&m, 0), vec![1, 3, 0]);
    // A deleted service's servers come back the same way.
    run(&mut m, "-D -t 192.0.2.1:81").unwrap();
    run(&mut m, "-A -t 192.0.2.1:81").unwrap();
    run(&mut m, "-a -t 192.0.2.1:81 -r 198.51.100.1 -m").unwrap();
    assert_eq!(ids(&m, 1), vec![2]);
}

#[test]
fn real_ids_fresh_first_then_oldest_freed_that_is_reusable() {
    let mut m = ServiceModel::new(3);
    run(&mut m, "-A -t 192.0.2.1:80").unwrap();
    for i in 1..=3 {
        run(&mut m, &format!("-a -t 192.0.2.1:80 -r 198.51.100.{i}")).unwrap();
    }
    let full = run(&mut m, "-a -t 192.0.2.1:80 -r 198.51.100.4");
    assert_eq!(full, Err(ApplyError::TooManyReals(3)));
    assert_eq!(
        full.unwrap_err().to_string(),
        "Memory allocation problem: xvs holds at most 3 real servers"
    );
    run(&mut m, "-d -t 192.0.2.1:80 -r 198.51.100.1").unwrap();
    run(&mut m, "-d -t 192.0.2.1:80 -r 198.51.100.2").unwrap();
    // Id 0 still has connections: id 1 is taken instead.
    let busy = |id: RealId| id != RealId(0);
    m.apply_with(&edit("-a -t 192.0.2.1:80 -r 198.51.100.5"), &busy)
        .unwrap();
    let ids: Vec<u32> = m.services()[0].reals.iter().map(|r| r.id.0).collect();
    assert_eq!(ids, vec![2, 1]);
    assert_eq!(
        m.apply_with(&edit("-a -t 192.0.2.1:80 -r 198.51.100.6"), &busy),
        Err(ApplyError::NoMemory)
    );
    // Clear frees everything.
    let mut removed = run(&mut m, "-C").unwrap().removed;
    removed.sort();
    assert_eq!(removed, vec![RealId(1), RealId(2)]);
}

/// One service past [`MAX_SERVICES`] (what the XDP `services` map
/// holds) is refused with the limit named, and the restore changes
/// nothing.
#[test]
fn services_past_the_limit_are_refused_by_name() {
    let text: String = (0..MAX_SERVICES + 1)
        .map(|i| format!("-A -u 192.0.2.{}:{}\n", i % 256, i / 256 + 1))
        .collect();
    let script = parse_restore(&text, &Services::builtin()).unwrap();
    let mut m = ServiceModel::new(8);
    run(&mut m, "-A -t 192.0.2.1:80").unwrap();
    // Up to the limit: taken.
    restore(&mut m, &script[..MAX_SERVICES - 1], &|_| true).unwrap();
    assert_eq!(m.services().len(), MAX_SERVICES);
    // Past it: refused, by line, naming the limit; nothing changes.
    let err = restore(&mut m, &script[MAX_SERVICES - 1..], &|_| true).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "line {MAX_SERVICES}: Memory allocation problem: xvs holds at most 65536 \
             virtual services"
        )
    );
    assert_eq!(m.services().len(), MAX_SERVICES);
    assert_eq!(
        run(&mut m, "-A -t 192.0.2.1:81"),
        Err(ApplyError::TooManyServices)
    );
}

#[test]
fn restore_is_all_or_nothing() {
    let mut m = ServiceModel::new(8);
    run(&mut m, "-A -t 192.0.2.1:80").unwrap();
    let script = parse_restore(
        "-A -t 192.0.2.2:80\n-a -t 192.0.2.2:80 -r 198.51.100.1\n--set 1 2 3\n-A -t 192.0.2.1:80\n",
        &Services::builtin(),
    )
    .unwrap();
    let err = restore(&mut m, &script, &|_| true).unwrap_err();
    assert_eq!(err.to_string(), "line 4: Service already exists");
    assert_eq!(m.services().len(), 1);
    let out = restore(&mut m, &script[..3], &|_| true).unwrap();
    assert_eq!(m.services().len(), 2);
    assert_eq!(
        out.deferred,
        vec![Command::SetTimeouts {
            tcp: 1,
            tcpfin: 2,
            udp: 3
        }]
    );
}
