//! A network namespace joined to the host by a veth pair, for partition tests: a worker
//! started inside it (`Cluster::add_worker_in`) reaches the control plane only over the pair,
//! so taking the host's end down cuts it off (its packets are dropped silently, as in a real
//! partition) while the test keeps talking to the control plane on loopback.
//!
//! Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2's `ip`. CI runs as root; without
//! them, creating the namespace panics with what to do, so the test fails rather than skips.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Namespaces made by this test process so far (names and addresses stay unique in it).
static CREATED: AtomicU32 = AtomicU32::new(0);

/// `ip netns add NAME` with a veth pair: `HOST_IF` on the host with `.1/30`, `NS_IF` inside
/// with `.2/30`. Removed on drop (also when the test panics).
pub struct NetworkNamespace {
    name: String,
    host_if: String,
    ns_if: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
    /// What was set up so far, undone in reverse on drop.
    namespace_added: bool,
    pair_added: bool,
}

impl NetworkNamespace {
    /// Creates the namespace and the pair, addresses them and brings both ends up. Panics with
    /// the failing command and what to do when it cannot (not root, no `ip`).
    pub fn create() -> Self {
        let n = CREATED.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // Interface names have at most 15 characters: "pw" + pid in hex (≤ 6) + n + one letter.
        let tag = format!("pw{pid:x}{n}");
        // A /30 per namespace in 10.213.0.0/16, chosen by pid and counter: distinct within a
        // test process; test binaries run one after another.
        let block = (pid.wrapping_mul(31).wrapping_add(n)) % (1 << 14);
        let base = u32::from(Ipv4Addr::new(10, 213, 0, 0)) + block * 4;
        let mut netns = NetworkNamespace {
            name: format!("{tag}-ns"),
            host_if: format!("{tag}h"),
            ns_if: format!("{tag}n"),
            host_ip: Ipv4Addr::from(base + 1),
            ns_ip: Ipv4Addr::from(base + 2),
            namespace_added: false,
            pair_added: false,
        };
        netns.run(&["netns", "add", &netns.name.clone()]);
        netns.namespace_added = true;
        let (name, host_if, ns_if) = (
            netns.name.clone(),
            netns.host_if.clone(),
            netns.ns_if.clone(),
        );
        netns.run(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        netns.pair_added = true;
        netns.run(&["link", "set", &ns_if, "netns", &name]);
        netns.run(&[
            "addr",
            "add",
            &format!("{}/30", netns.host_ip),
            "dev",
            &host_if,
        ]);
        netns.run(&["link", "set", &host_if, "up"]);
        let ns_addr = format!("{}/30", netns.ns_ip);
        netns.run(&[
            "netns", "exec", &name, "ip", "addr", "add", &ns_addr, "dev", &ns_if,
        ]);
        netns.run(&["netns", "exec", &name, "ip", "link", "set", &ns_if, "up"]);
        netns.run(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
        netns
    }

    /// The name to give `ip netns exec`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host's address on the pair: where processes inside reach the host.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.host_ip
    }

    /// The namespace's own address on the pair.
    pub fn namespace_ip(&self) -> Ipv4Addr {
        self.ns_ip
    }

    /// Cuts the namespace off: the host's end goes down, so whatever either side sends over
    /// the pair is dropped without an answer (no reset, no error: a partition).
    pub fn cut(&self) {
        self.run(&["link", "set", &self.host_if, "down"]);
    }

    /// Joins the namespace to the host again after [`NetworkNamespace::cut`].
    pub fn heal(&self) {
        self.run(&["link", "set", &self.host_if, "up"]);
    }

    fn run(&self, args: &[&str]) {
        if let Err(why) = ip(args) {
            panic!(
                "`ip {}` failed: {why}\npartition tests put a worker in a network namespace: they need root \
                 (CAP_NET_ADMIN, CAP_SYS_ADMIN) and iproute2's `ip`; run them as root, as CI does (.ci/run)",
                args.join(" ")
            );
        }
    }
}

impl Drop for NetworkNamespace {
    fn drop(&mut self) {
        // Best effort, and never a second panic: deleting one end removes the pair.
        if self.pair_added
            && let Err(why) = ip(&["link", "del", &self.host_if])
        {
            eprintln!("could not remove veth {}: {why}", self.host_if);
        }
        if self.namespace_added
            && let Err(why) = ip(&["netns", "del", &self.name])
        {
            eprintln!("could not remove network namespace {}: {why}", self.name);
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` ({e}); install iproute2"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
