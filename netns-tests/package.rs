//! The Debian package (`tools/package`): its contents, and the package
//! installed into a fresh Debian root, where the ipvsadm alternative, the
//! unit file, the man pages and the installed binary are checked: a
//! director started as xvs.service starts it (the shipped config, the
//! rules of /etc/ipvsadm.rules, the unit's capabilities and no root) in a
//! namespace answers `/usr/sbin/ipvsadm -L -n` with those rules.
//!
//! The root is a `debootstrap --variant=minbase` of bookworm, made once
//! and kept under `target/pkg-test/` (the first run downloads it, about
//! 40 MB); each test installs into an overlay of it, removed afterwards.
//! The package is built from the debug binary the tests already built
//! (`tools/package --debug`).
//!
//! ```text
//! [pkg] d0 ── p0     d0: 192.0.2.1/24, the director's interface
//! ```

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::{root_or_skip, run, sh, temp_path, Netns};

/// The packages the root needs beyond minbase: the binary's libelf, and
/// systemd for `systemd-analyze verify --root` (its targets). The cache's
/// name carries them, so changing them makes a new root.
const INCLUDE: &str = "libelf1,systemd";

/// What tests load into `/etc/ipvsadm.rules`, in `ipvsadm -S -n` format.
const RULES: &str = "-A -t 192.0.2.10:80 -s rr\n\
                     -a -t 192.0.2.10:80 -r 198.51.100.2:80 -m -w 1\n\
                     -a -t 192.0.2.10:80 -r 198.51.100.3:80 -m -w 2\n";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tools/package --debug`, once per test run: the .deb it made.
fn package() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let out = sh(&format!("cd {} && tools/package --debug", repo().display()));
        let deb = out
            .lines()
            .rev()
            .find(|l| l.ends_with(".deb"))
            .unwrap_or_else(|| panic!("tools/package named no .deb:\n{out}"));
        PathBuf::from(deb.trim())
    })
}

/// The minbase root, made by debootstrap the first time.
fn base_root() -> PathBuf {
    let base = repo().join(format!(
        "target/pkg-test/bookworm-minbase-{}",
        INCLUDE.replace(',', "-")
    ));
    if !base.join(".complete").exists() {
        let tmp = base.with_extension("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        sh(&format!(
            "debootstrap --variant=minbase --include={INCLUDE} bookworm {} \
             http://deb.debian.org/debian >&2",
            tmp.display()
        ));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::rename(&tmp, &base).expect("rename the new root");
        std::fs::write(base.join(".complete"), "").expect("mark the root complete");
    }
    base
}

/// A root of its own over the base (an overlay, or a copy where overlays
/// cannot be mounted), removed on drop.
struct Root {
    top: PathBuf,
    path: PathBuf,
    overlay: bool,
}

impl Root {
    fn new() -> Root {
        let base = base_root();
        // Beside the base: an overlay's upper layer wants a plain
        // filesystem, which the temporary directory may not be.
        let name = temp_path("root");
        let top = base.with_file_name(name.file_name().expect("a name"));
        let path = top.join("root");
        for d in ["upper", "work", "root"] {
            std::fs::create_dir_all(top.join(d)).expect("root dirs");
        }
        let overlay = run(&format!(
            "mount -t overlay overlay -o lowerdir={},upperdir={},workdir={} {}",
            base.display(),
            top.join("upper").display(),
            top.join("work").display(),
            path.display()
        ))
        .status
        .success();
        if !overlay {
            sh(&format!("cp -a {}/. {}", base.display(), path.display()));
        }
        Root { top, path, overlay }
    }

    /// `cmd` in the root (as root), panicking if it fails.
    fn sh(&self, cmd: &str) -> String {
        sh(&self.chroot(cmd))
    }

    fn chroot(&self, cmd: &str) -> String {
        format!(
            "chroot {} sh -c '{}'",
            self.path.display(),
            cmd.replace('\'', "'\\''")
        )
    }

    fn file(&self, path: &str) -> PathBuf {
        self.path.join(path.trim_start_matches('/'))
    }

    fn install(&self, deb: &Path) {
        std::fs::copy(deb, self.file("/tmp/xvs.deb")).expect("copy the package");
        self.sh("dpkg -i /tmp/xvs.deb");
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        if self.overlay {
            let _ = run(&format!("umount -l {}", self.path.display()));
        }
        let _ = std::fs::remove_dir_all(&self.top);
    }
}

/// The unit's `Key=` value.
fn unit_value<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("xvs.service has no {key}="))
}

#[test]
fn the_package_holds_the_binary_unit_config_man_pages_and_completions() {
    if !root_or_skip("the_package_holds_the_binary_unit_config_man_pages_and_completions") {
        return;
    }
    let deb = package();
    let listing = sh(&format!("dpkg-deb -c {}", deb.display()));
    for path in [
        "./usr/sbin/xvs",
        "./lib/systemd/system/xvs.service",
        "./etc/xvs/xvs.toml",
        "./usr/share/man/man8/xvs.8.gz",
        "./usr/share/man/man8/xvs-director.8.gz",
        "./usr/share/man/man8/xvs-ipvsadm.8.gz",
        "./usr/share/bash-completion/completions/xvs",
        "./usr/share/zsh/vendor-completions/_xvs",
        "./usr/share/fish/vendor_completions.d/xvs.fish",
        "./usr/lib/xvs/xvs-notify",
        "./usr/lib/xvs/xvs-announce",
        "./usr/share/doc/xvs/examples/keepalived-nat.conf",
        "./usr/share/doc/xvs/examples/bird-director.conf",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(&format!(" {path}"))),
            "{path} is not in the package:\n{listing}"
        );
    }
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with(" ./usr/sbin/xvs")),
        "{listing}"
    );
    // Not shipped: ipvsadm's own paths belong to the alternative (and to
    // Debian's ipvsadm package), the rules file to the administrator.
    for path in [
        "./usr/sbin/ipvsadm",
        "./usr/share/man/man8/ipvsadm.8.gz",
        "./etc/ipvsadm.rules",
    ] {
        assert!(
            !listing.contains(path),
            "{path} is in the package:\n{listing}"
        );
    }
    let info = sh(&format!("dpkg-deb -I {}", deb.display()));
    for field in [
        " Package: xvs",
        " Section: net",
        "libelf1",
        " conffiles",
        " postinst",
        " prerm",
        " postrm",
    ] {
        assert!(info.contains(field), "no {field:?} in:\n{info}");
    }
    let conffiles = sh(&format!("dpkg-deb -I {} conffiles", deb.display()));
    assert_eq!(conffiles.trim(), "/etc/xvs/xvs.toml");
}

#[test]
fn the_installed_package_runs_the_director_as_its_unit_says() {
    if !root_or_skip("the_installed_package_runs_the_director_as_its_unit_says") {
        return;
    }
    let deb = package();
    let root = Root::new();
    root.install(deb);

    // /usr/sbin/ipvsadm is xvs, through the alternative; so is its man page.
    assert_eq!(
        root.sh("readlink -f /usr/sbin/ipvsadm").trim(),
        "/usr/sbin/xvs"
    );
    let query = root.sh("update-alternatives --query ipvsadm");
    assert!(query.contains("Value: /usr/sbin/xvs"), "{query}");
    assert_eq!(
        root.sh("readlink -f /usr/share/man/man8/ipvsadm.8.gz")
            .trim(),
        "/usr/share/man/man8/xvs-ipvsadm.8.gz"
    );
    assert_eq!(std::fs::read(root.file("/etc/ipvsadm.rules")).unwrap(), b"");

    // The unit, as systemd reads it in that root (Documentation= is looked
    // up by man, in the root's pages).
    let man = root.file("/usr/share/man");
    let verify = run(&format!(
        "MANPATH={} systemd-analyze verify --root={} xvs.service",
        man.display(),
        root.path.display()
    ));
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    // The man pages render, without a warning.
    for (page, says) in [
        ("xvs", "director"),
        ("xvs-director", "--check-config"),
        ("xvs-ipvsadm", "--add-service"),
    ] {
        let file = man.join(format!("man8/{page}.8.gz"));
        let out = run(&format!("MANWIDTH=80 man --warnings -l {}", file.display()));
        let text = String::from_utf8_lossy(&out.stdout);
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && warnings.is_empty(),
            "man -l {page}: {warnings}"
        );
        assert!(
            text.contains("NAME") && text.contains(says),
            "man -l {page}:\n{text}"
        );
    }

    // The director, started as the unit starts it.
    std::fs::write(root.file("/etc/ipvsadm.rules"), RULES).unwrap();
    let unit = std::fs::read_to_string(root.file("/lib/systemd/system/xvs.service")).unwrap();
    let exec = unit_value(&unit, "ExecStart");
    assert_eq!(exec, "/usr/sbin/xvs director --config /etc/xvs/xvs.toml");
    assert_eq!(unit_value(&unit, "Type"), "notify");
    let ambient = unit_value(&unit, "AmbientCapabilities");
    assert_eq!(unit_value(&unit, "CapabilityBoundingSet"), ambient);
    let caps: Vec<String> = ambient
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let caps = caps.join(",");
    let ns = Netns::new("pkg");
    ns.ip("link add d0 type veth peer name p0");
    ns.ip("link set d0 up");
    ns.ip("link set p0 up");
    ns.ip("addr add 192.0.2.1/24 dev d0");
    let mut director = Director::start(&ns, &root, exec, &caps);
    assert_eq!(director.notified(), "READY=1", "{}", director.log());

    let listed = ns.exec(&root.chroot("/usr/sbin/ipvsadm -L -n"));
    assert!(listed.contains("TCP  192.0.2.10:80 rr"), "{listed}");
    assert!(listed.contains("-> 198.51.100.2:80"), "{listed}");
    assert!(listed.contains("-> 198.51.100.3:80"), "{listed}");
    // Saving, as the README says, gives the rules back as they were read.
    ns.exec(&root.chroot("ipvsadm -S -n > /etc/ipvsadm.rules.saved"));
    let saved = std::fs::read_to_string(root.file("/etc/ipvsadm.rules.saved")).unwrap();
    assert_eq!(saved, RULES);
    let status = std::fs::read_to_string(format!("/proc/{}/status", director.pid())).unwrap();
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap_or_default();
    assert!(
        uid.contains("65534"),
        "not the unit's unprivileged user: {uid}"
    );

    let (code, log) = director.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("xvs: stopping"), "{log}");

    // Removing the package takes the link away.
    root.sh("dpkg -r xvs");
    assert!(!root.file("/usr/sbin/ipvsadm").exists());
    assert!(!run(&root.chroot("update-alternatives --query ipvsadm"))
        .status
        .success());
}

#[test]
fn an_ipvsadm_another_package_installed_is_left_where_it_is() {
    if !root_or_skip("an_ipvsadm_another_package_installed_is_left_where_it_is") {
        return;
    }
    let deb = package();
    let root = Root::new();
    // As Debian's ipvsadm package leaves it: a real file at the path.
    let theirs = "#!/bin/sh\necho the kernel ipvsadm\n";
    let path = root.file("/usr/sbin/ipvsadm");
    std::fs::write(&path, theirs).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    root.install(deb);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), theirs);
    assert!(!path.is_symlink());
    assert!(root.sh("/usr/sbin/xvs ipvsadm -v").contains("xvs"));
    root.sh("dpkg -r xvs");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), theirs);
    // Once that package is gone, the README's one command links xvs.
    root.install(deb);
    std::fs::remove_file(&path).unwrap();
    root.sh("update-alternatives --auto ipvsadm");
    assert_eq!(
        root.sh("readlink -f /usr/sbin/ipvsadm").trim(),
        "/usr/sbin/xvs"
    );
}

/// `xvs director` in `ns`, chrooted into the installed root and run as the
/// unit runs it: an unprivileged user with only the unit's capabilities,
/// `$NOTIFY_SOCKET` a socket this test reads.
struct Director {
    child: Option<Child>,
    notify: UnixDatagram,
    log: PathBuf,
}

impl Director {
    fn start(ns: &Netns, root: &Root, exec: &str, caps: &str) -> Director {
        // What RuntimeDirectory=xvs makes for the unit's user.
        let run_dir = root.file("/run/xvs");
        std::fs::create_dir_all(&run_dir).unwrap();
        sh(&format!(
            "chown 65534:65534 {0} && chmod 0700 {0}",
            run_dir.display()
        ));
        let socket = root.file("/run/notify.sock");
        let notify = UnixDatagram::bind(&socket).expect("bind the notify socket");
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let r = root.path.display();
        let script = format!(
            "mount -t proc proc {r}/proc && mount -t sysfs sysfs {r}/sys && \
             exec chroot {r} setpriv --reuid=65534 --regid=65534 --clear-groups \
             --inh-caps={caps} --ambient-caps={caps} --bounding-set=-all,{caps} \
             {exec} -i d0"
        );
        let log = temp_path("pkg-director").with_extension("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "sh", "-c", &script])
            .env("NOTIFY_SOCKET", "/run/notify.sock")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("ip netns exec");
        Director {
            child: Some(child),
            notify,
            log,
        }
    }

    /// The next state the director told its manager.
    fn notified(&self) -> String {
        let mut buf = [0u8; 512];
        match self.notify.recv(&mut buf) {
            Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
            Err(e) => format!("nothing ({e})"),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The director's pid: every command before it execs in place.
    fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    /// SIGTERM, as `systemctl stop`: the exit status and the log, after
    /// checking it said STOPPING=1.
    fn stop(&mut self) -> (Option<i32>, String) {
        let mut child = self.child.take().expect("running");
        sh(&format!("kill -TERM {}", child.id()));
        let stopping = self.notified();
        let start = Instant::now();
        let code = loop {
            if let Ok(Some(s)) = child.try_wait() {
                break s.code();
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(stopping, "STOPPING=1", "{}", self.log());
        (code, self.log())
    }
}

impl Drop for Director {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}
