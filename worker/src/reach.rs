//! What jobs may reach from this worker: the hosts of HTTP sources and deliveries
//! (`--allow-hosts`), the directories of file sources, SQLite files and directory deliveries
//! (`--data-dir`, `--allow-dirs`), and whether an SQL source may run as a privileged
//! PostgreSQL role (`--allow-privileged-sql-roles`).
//!
//! The defaults are closed: HTTP reaches public addresses only (no loopback, private,
//! link-local or cloud metadata address, checked after DNS resolution for every connection,
//! redirects included); files are read under the data directory and written under the output
//! directory only; the built-in reports' `input=PATH` is refused when no data directory is set.

use std::net::{IpAddr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use ipnet::IpNet;

/// What jobs may reach (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reach {
    /// `--data-dir`: where the built-in reports' `input=PATH` and file sources read.
    pub data_dir: Option<PathBuf>,
    /// `--allow-dirs`: more directories file sources may read and deliveries may write.
    pub allow_dirs: Vec<PathBuf>,
    /// `--allow-hosts`: hosts and networks HTTP may reach besides public addresses.
    pub allow_hosts: AllowedHosts,
    /// `--allow-privileged-sql-roles`: SQL sources may connect as a PostgreSQL superuser or a
    /// member of pg_read_server_files, pg_write_server_files or pg_execute_server_program.
    pub allow_privileged_sql_roles: bool,
}

impl Reach {
    /// The file a built-in report's `input=PATH` names: under `--data-dir` (a relative path is
    /// taken from there), without `..`, and still under it once symbolic links are resolved.
    pub async fn data_input(&self, path: &Path) -> Result<PathBuf, String> {
        let Some(data_dir) = &self.data_dir else {
            return Err(
                "parameter input is refused: this worker has no data directory; start it with --data-dir DIR (PRESSWORK_DATA_DIR) and give a path under DIR, or leave input out for the sample data"
                    .into(),
            );
        };
        refuse_parent_components(path, "parameter input")?;
        let joined = data_dir.join(path);
        resolve_within(&joined, path, std::slice::from_ref(data_dir), "--data-dir").await
    }

    /// A file a source reads (a CSV or JSON-lines file, an SQLite database): absolute, without
    /// `..`, and under `--data-dir` or one of `--allow-dirs` once symbolic links are resolved.
    pub async fn readable_file(&self, path: &Path) -> Result<PathBuf, String> {
        refuse_parent_components(path, "the path")?;
        let roots: Vec<PathBuf> = self
            .data_dir
            .iter()
            .chain(&self.allow_dirs)
            .cloned()
            .collect();
        resolve_within(path, path, &roots, "--data-dir or --allow-dirs").await
    }

    /// A directory a delivery writes to: without `..`, and the output directory or under one
    /// of `--allow-dirs` once symbolic links are resolved.
    pub async fn delivery_dir(&self, dir: &Path, output_dir: &Path) -> Result<PathBuf, String> {
        refuse_parent_components(dir, "the directory")?;
        let roots: Vec<PathBuf> = std::iter::once(output_dir.to_path_buf())
            .chain(self.allow_dirs.iter().cloned())
            .collect();
        resolve_within(dir, dir, &roots, "--output-dir or --allow-dirs").await
    }
}

fn refuse_parent_components(path: &Path, what: &str) -> Result<(), String> {
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(format!(
            "{what} `{}` contains `..`; give the path without it",
            path.display()
        ));
    }
    Ok(())
}

/// `path` with its symbolic links resolved, when that is under one of `roots` (themselves
/// resolved). `shown` is how the path is named in errors; `flags` the settings that allow.
async fn resolve_within(
    path: &Path,
    shown: &Path,
    roots: &[PathBuf],
    flags: &str,
) -> Result<PathBuf, String> {
    let resolved = tokio::fs::canonicalize(path)
        .await
        .map_err(|e| format!("cannot resolve `{}`: {e}", shown.display()))?;
    let mut allowed = Vec::new();
    for root in roots {
        // A root that does not exist allows nothing.
        if let Ok(root) = tokio::fs::canonicalize(root).await {
            if resolved.starts_with(&root) {
                return Ok(resolved);
            }
            allowed.push(root.display().to_string());
        }
    }
    let allowed = if allowed.is_empty() {
        "none is configured".to_string()
    } else {
        allowed.join(", ")
    };
    Err(format!(
        "`{}` is outside the directories this worker allows ({allowed}); move it there or add its directory with {flags}",
        shown.display()
    ))
}

/// `--allow-hosts`: host names and networks HTTP sources and deliveries and SQL sources may
/// reach besides public addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    /// Lowercase host names, without a trailing dot: any address they resolve to is allowed.
    names: Vec<String>,
    networks: Vec<IpNet>,
}

impl AllowedHosts {
    /// Parses `--allow-hosts` entries: a CIDR (`10.1.0.0/16`), an address (`127.0.0.1`,
    /// `::1`) or a host name (`reports.internal`).
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut allowed = AllowedHosts::default();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            if let Ok(network) = IpNet::from_str(entry) {
                allowed.networks.push(network);
            } else if let Ok(address) = IpAddr::from_str(entry) {
                allowed.networks.push(IpNet::from(address));
            } else if entry.contains('/') || entry.contains(':') {
                return Err(format!(
                    "--allow-hosts (PRESSWORK_ALLOW_HOSTS): `{entry}` is neither a network (10.0.0.0/8), an address nor a host name"
                ));
            } else {
                allowed
                    .names
                    .push(entry.trim_end_matches('.').to_ascii_lowercase());
            }
        }
        Ok(allowed)
    }

    /// Whether a connection to `address` is allowed: a public address, or one in a listed
    /// network.
    pub fn allows_address(&self, address: IpAddr) -> bool {
        is_public(address) || self.networks.iter().any(|n| n.contains(&address))
    }

    /// Whether `host` is listed by name (then any address it resolves to is allowed).
    pub fn allows_name(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.names.contains(&host)
    }

    /// Checks a database server before a SQL source connects to it: `host` listed by name, or
    /// every address it resolves to allowed. A Unix-socket directory (a host starting with
    /// `/`) is a server on this machine: allowed when `localhost` is listed. The name is
    /// resolved again by the database driver; the check does not pin the address.
    pub async fn check_server(&self, host: &str, port: u16) -> Result<(), String> {
        if host.starts_with('/') {
            return if self.allows_name("localhost") {
                Ok(())
            } else {
                Err(format!(
                    "the worker may not connect to the local database socket in {host}; an operator can allow it by listing localhost in the worker's --allow-hosts"
                ))
            };
        }
        if self.allows_name(host) {
            return Ok(());
        }
        let addresses: Vec<IpAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("cannot resolve the database host {host}: {e}"))?
            .map(|a| a.ip())
            .collect();
        if addresses.is_empty() || addresses.iter().any(|a| !self.allows_address(*a)) {
            return Err(refused(host, &addresses));
        }
        Ok(())
    }

    /// Checks a URL whose host is an address (the client connects to it without resolving
    /// it); a host name is checked when it is resolved ([`CheckedResolver`]).
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), String> {
        // The URL parser writes an IPv4 host in its usual form (`http://2130706433/` is
        // 127.0.0.1) and an IPv6 one in brackets.
        let host = url.host_str().unwrap_or_default();
        let Ok(address) = IpAddr::from_str(host.trim_start_matches('[').trim_end_matches(']'))
        else {
            return Ok(());
        };
        if self.allows_address(address) {
            Ok(())
        } else {
            Err(refused(&address.to_string(), &[address]))
        }
    }
}

/// A connection the allowlist refused (the resolver's error, found again in the client's error
/// chain by [`is_refused`] so that a refused upload is not retried).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HostRefused(String);

/// Whether `error` or one of its causes is a [`HostRefused`].
pub fn is_refused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<HostRefused>() {
            return true;
        }
        next = error.source();
    }
    false
}

/// Why a host may not be reached, and what to do.
fn refused(host: &str, addresses: &[IpAddr]) -> String {
    let addresses: Vec<String> = addresses.iter().map(IpAddr::to_string).collect();
    format!(
        "the worker may not connect to {host} ({}): a loopback, private, link-local or otherwise non-public address; an operator can allow it with the worker's --allow-hosts",
        addresses.join(", ")
    )
}

/// The networks that are not public: loopback, private, link-local (with the cloud metadata
/// address 169.254.169.254), shared, unspecified, multicast, reserved and documentation ranges.
const NON_PUBLIC: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "64:ff9b:1::/48",
    "100::/64",
    "2001:db8::/32",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

/// Whether `address` is a public address. An IPv6 address that carries an IPv4 one (mapped,
/// compatible, NAT64) is judged by the IPv4 address.
pub fn is_public(address: IpAddr) -> bool {
    let address = match address {
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            if let Some(v4) = v6.to_ipv4_mapped() {
                IpAddr::V4(v4)
            } else if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || segments[..6] == [0; 6] {
                // NAT64 (64:ff9b::/96) and IPv4-compatible (::/96, which holds :: and ::1).
                let octets = v6.octets();
                let v4 = std::net::Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]);
                if segments[..6] == [0; 6] && u32::from(v4) <= 1 {
                    return false;
                }
                IpAddr::V4(v4)
            } else {
                address
            }
        }
        IpAddr::V4(_) => address,
    };
    !NON_PUBLIC
        .iter()
        .any(|network| IpNet::from_str(network).is_ok_and(|network| network.contains(&address)))
}

/// The DNS resolver of the worker's HTTP client: resolves with the system's resolver, then
/// keeps only the addresses [`AllowedHosts`] allows, so every connection — the first one and
/// each redirect's — goes to an allowed address.
pub struct CheckedResolver {
    allowed: Arc<AllowedHosts>,
}

impl CheckedResolver {
    pub fn new(allowed: Arc<AllowedHosts>) -> Self {
        CheckedResolver { allowed }
    }
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allowed = Arc::clone(&self.allowed);
        let host = name.as_str().to_string();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if allowed.allows_name(&host) {
                return Ok(Box::new(resolved.into_iter()) as reqwest::dns::Addrs);
            }
            let (kept, dropped): (Vec<SocketAddr>, Vec<SocketAddr>) = resolved
                .into_iter()
                .partition(|a| allowed.allows_address(a.ip()));
            if kept.is_empty() && !dropped.is_empty() {
                let addresses: Vec<IpAddr> = dropped.iter().map(SocketAddr::ip).collect();
                return Err(Box::new(HostRefused(refused(&host, &addresses))) as _);
            }
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The redirect policy of the worker's HTTP client: at most 10 hops, each to a URL
/// [`AllowedHosts::check_url`] allows (a host name is checked again when it is resolved).
pub fn redirect_policy(allowed: Arc<AllowedHosts>) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 10 {
            return attempt.error("more than 10 redirects");
        }
        match allowed.check_url(attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(problem) => attempt.error(format!("a redirect was refused: {problem}")),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_database_server_on_a_private_address_or_socket_needs_allowing() {
        let closed = AllowedHosts::default();
        for host in ["127.0.0.1", "localhost", "10.1.2.3", "/var/run/postgresql"] {
            let refused = closed.check_server(host, 5432).await.unwrap_err();
            assert!(refused.contains("--allow-hosts"), "{host}: {refused}");
        }
        let open = AllowedHosts::parse(&["127.0.0.0/8".into(), "::1".into()]).unwrap();
        open.check_server("127.0.0.1", 5432).await.unwrap();
        open.check_server("localhost", 5432).await.unwrap();
        assert!(
            open.check_server("/var/run/postgresql", 5432)
                .await
                .is_err()
        );
        let by_name = AllowedHosts::parse(&["localhost".into()]).unwrap();
        by_name.check_server("localhost", 5432).await.unwrap();
        by_name
            .check_server("/var/run/postgresql", 5432)
            .await
            .unwrap();
        assert!(by_name.check_server("10.1.2.3", 5432).await.is_err());
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn only_public_addresses_are_allowed_by_default() {
        let allowed = AllowedHosts::default();
        for public in [
            "93.184.215.14",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(allowed.allows_address(ip(public)), "{public}");
        }
        for private in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "::127.0.0.1",
        ] {
            assert!(!allowed.allows_address(ip(private)), "{private}");
        }
    }

    #[test]
    fn listed_networks_addresses_and_names_are_allowed() {
        let allowed = AllowedHosts::parse(&[
            "127.0.0.0/8".into(),
            "::1".into(),
            " Reports.Internal. ".into(),
            "".into(),
        ])
        .expect("valid");
        assert!(allowed.allows_address(ip("127.0.0.1")));
        assert!(allowed.allows_address(ip("::1")));
        assert!(!allowed.allows_address(ip("10.0.0.1")));
        assert!(allowed.allows_name("reports.internal"));
        assert!(!allowed.allows_name("other.internal"));
        let error = AllowedHosts::parse(&["10.0.0.0/99".into()]).expect_err("bad network");
        assert!(error.contains("--allow-hosts"), "{error}");
    }

    #[test]
    fn urls_with_an_address_are_checked_names_are_left_to_the_resolver() {
        let allowed = AllowedHosts::default();
        let url = |u: &str| reqwest::Url::parse(u).expect("a URL");
        let error = allowed
            .check_url(&url("http://127.0.0.1:7070/x"))
            .expect_err("loopback");
        assert!(error.contains("may not connect to 127.0.0.1"), "{error}");
        assert!(error.contains("--allow-hosts"), "{error}");
        assert!(allowed.check_url(&url("http://[::1]/")).is_err());
        assert!(allowed.check_url(&url("https://example.com/")).is_ok());
        assert!(allowed.check_url(&url("https://93.184.215.14/")).is_ok());
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_unless_listed() {
        use reqwest::dns::Resolve;
        let name = |n: &str| reqwest::dns::Name::from_str(n).expect("a name");
        let resolver = CheckedResolver::new(Arc::new(AllowedHosts::default()));
        let error = match resolver.resolve(name("localhost")).await {
            Ok(addresses) => panic!("allowed {:?}", addresses.collect::<Vec<_>>()),
            Err(error) => error.to_string(),
        };
        assert!(error.contains("may not connect to localhost"), "{error}");
        let resolver = CheckedResolver::new(Arc::new(
            AllowedHosts::parse(&["localhost".into()]).expect("valid"),
        ));
        let addresses: Vec<SocketAddr> = resolver
            .resolve(name("localhost"))
            .await
            .expect("listed")
            .collect();
        assert!(!addresses.is_empty());
    }

    #[tokio::test]
    async fn input_stays_under_the_data_directory() {
        let data = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(data.path().join("sales.csv"), "a\n").expect("write");
        std::fs::write(outside.path().join("secret.csv"), "a\n").expect("write");
        std::os::unix::fs::symlink(
            outside.path().join("secret.csv"),
            data.path().join("link.csv"),
        )
        .expect("symlink");
        let none = Reach::default();
        let error = none
            .data_input(Path::new("sales.csv"))
            .await
            .expect_err("no data dir");
        assert!(error.contains("--data-dir"), "{error}");

        let reach = Reach {
            data_dir: Some(data.path().to_path_buf()),
            ..Reach::default()
        };
        let resolved = reach
            .data_input(Path::new("sales.csv"))
            .await
            .expect("inside");
        assert!(resolved.ends_with("sales.csv"));
        let absolute = data.path().join("sales.csv");
        assert!(reach.data_input(&absolute).await.is_ok());
        for refused in ["../x", "/etc/passwd", "link.csv", "/dev/zero"] {
            let error = reach
                .data_input(Path::new(refused))
                .await
                .expect_err(refused);
            assert!(
                error.contains("`..`") || error.contains("outside the directories"),
                "{refused}: {error}"
            );
        }
    }

    #[tokio::test]
    async fn files_and_deliveries_stay_in_their_directories() {
        let data = tempfile::tempdir().expect("tempdir");
        let output = tempfile::tempdir().expect("tempdir");
        let other = tempfile::tempdir().expect("tempdir");
        std::fs::write(data.path().join("a.csv"), "a\n").expect("write");
        std::fs::write(other.path().join("b.csv"), "a\n").expect("write");
        let mut reach = Reach {
            data_dir: Some(data.path().to_path_buf()),
            ..Reach::default()
        };
        assert!(
            reach
                .readable_file(&data.path().join("a.csv"))
                .await
                .is_ok()
        );
        assert!(
            reach
                .readable_file(&other.path().join("b.csv"))
                .await
                .is_err()
        );
        assert!(reach.readable_file(Path::new("/etc/passwd")).await.is_err());
        assert!(
            reach
                .delivery_dir(output.path(), output.path())
                .await
                .is_ok()
        );
        assert!(
            reach
                .delivery_dir(other.path(), output.path())
                .await
                .is_err()
        );
        reach.allow_dirs.push(other.path().to_path_buf());
        assert!(
            reach
                .readable_file(&other.path().join("b.csv"))
                .await
                .is_ok()
        );
        assert!(
            reach
                .delivery_dir(other.path(), output.path())
                .await
                .is_ok()
        );
    }
}
