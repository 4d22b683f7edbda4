//! Sign-in throttling, bounded in memory whatever clients send.
//!
//! Two limits, checked in this order before a password is verified:
//! - per client address: [`SOURCES_PER_MINUTE`] attempts a minute (governor), IPv6 counted
//!   per /64 (one host owns a whole /64);
//! - per (user name, client address): failures with backoff — [`FREE_FAILURES`] in a row,
//!   then the pair is locked for a minute, twice as long after each further failure, up to
//!   [`MAX_LOCK`]. A successful sign-in clears the pair. Failing from one address never
//!   locks the user out from another.
//!
//! Both tables are bounded: names are capped before they get here ([`super::MAX_USERNAME_BYTES`]),
//! only failures are stored per pair, idle entries are purged as calls come in, and each
//! table has a hard cap on its keys.
//!
//! The client address is the TCP peer's, or, when the peer is a trusted proxy
//! (`--trusted-proxy`), the right-most `X-Forwarded-For` entry that is not itself trusted.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;

/// Sign-in attempts allowed per minute from one client address (or IPv6 /64).
pub const SOURCES_PER_MINUTE: u32 = 30;
/// Failed sign-ins for one user from one address before the pair is locked.
pub const FREE_FAILURES: u32 = 10;
/// The first lock; each further failure doubles it, up to [`MAX_LOCK`].
pub const FIRST_LOCK: Duration = Duration::from_secs(60);
pub const MAX_LOCK: Duration = Duration::from_secs(15 * 60);
/// A pair's failures are forgotten this long after its last failure or lock ended.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Hard caps on the tables' keys (a few MB each at most).
pub const MAX_TRACKED_SOURCES: usize = 65_536;
pub const MAX_TRACKED_FAILURES: usize = 20_000;
/// The address table drops the addresses whose limit has fully recovered every this many
/// checks (and whenever it is full).
const PURGE_SOURCES_EVERY: u64 = 1024;
/// The failure table drops forgotten pairs every this many failures (and whenever it is full).
const PURGE_FAILURES_EVERY: u64 = 256;

/// Why a sign-in is refused before its password is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// This address tried more than [`SOURCES_PER_MINUTE`] times in a minute.
    SourceLimited,
    /// So many addresses tried within a minute that the table is full: new ones wait.
    TooManySources,
    /// This user failed too often from this address; locked for this much longer.
    Locked { remaining: Duration },
}

/// The throttling state of sign-ins: see the module's documentation.
pub struct SignInLimits {
    per_source: DefaultKeyedRateLimiter<IpAddr>,
    source_checks: AtomicU64,
    max_sources: usize,
    failures: Mutex<FailureTable>,
}

struct FailureTable {
    pairs: HashMap<(IpAddr, String), Failures>,
    max: usize,
    recorded: u64,
}

#[derive(Clone, Copy, Debug)]
struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

impl Failures {
    fn forget_at(&self) -> Instant {
        self.locked_until.map_or(self.last, |l| l.max(self.last)) + FORGET_AFTER
    }
}

impl Default for SignInLimits {
    fn default() -> Self {
        SignInLimits::with_caps(MAX_TRACKED_SOURCES, MAX_TRACKED_FAILURES)
    }
}

impl SignInLimits {
    /// Limits whose tables hold at most `max_sources` addresses and `max_failures` pairs.
    pub fn with_caps(max_sources: usize, max_failures: usize) -> Self {
        let per_minute = NonZeroU32::new(SOURCES_PER_MINUTE).unwrap_or(NonZeroU32::MIN);
        SignInLimits {
            per_source: RateLimiter::keyed(Quota::per_minute(per_minute)),
            source_checks: AtomicU64::new(0),
            max_sources: max_sources.max(1),
            failures: Mutex::new(FailureTable {
                pairs: HashMap::new(),
                max: max_failures.max(1),
                recorded: 0,
            }),
        }
    }

    /// Counts one attempt from `source` against its per-address limit.
    pub fn admit_source(&self, source: IpAddr) -> Result<(), Refusal> {
        let checks = self.source_checks.fetch_add(1, Ordering::Relaxed) + 1;
        if checks.is_multiple_of(PURGE_SOURCES_EVERY) || self.per_source.len() >= self.max_sources {
            self.per_source.retain_recent();
            self.per_source.shrink_to_fit();
            if self.per_source.len() >= self.max_sources {
                return Err(Refusal::TooManySources);
            }
        }
        self.per_source
            .check_key(&source_key(source))
            .map(|_| ())
            .map_err(|_| Refusal::SourceLimited)
    }

    /// Whether `username` may try a password from `source` now.
    pub fn check_pair(&self, username: &str, source: IpAddr, now: Instant) -> Result<(), Refusal> {
        let table = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match table
            .pairs
            .get(&(source_key(source), username.to_owned()))
            .and_then(|f| f.locked_until)
        {
            Some(until) if until > now => Err(Refusal::Locked {
                remaining: until - now,
            }),
            _ => Ok(()),
        }
    }

    /// Records a wrong password (or unknown user) for `username` from `source`; the lock it
    /// now has, if any.
    pub fn record_failure(&self, username: &str, source: IpAddr, now: Instant) -> Option<Duration> {
        let mut table = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        table.recorded += 1;
        let key = (source_key(source), username.to_owned());
        if !table.pairs.contains_key(&key)
            && (table.recorded.is_multiple_of(PURGE_FAILURES_EVERY)
                || table.pairs.len() >= table.max)
        {
            table.pairs.retain(|_, f| f.forget_at() > now);
            if table.pairs.len() >= table.max {
                // Full of pairs that failed within the last quarter hour: make room by dropping
                // the one that would be forgotten first. Each failure cost an Argon2 check and
                // an attempt of its address's budget, so this scan is rare and cheap beside it.
                let oldest = table
                    .pairs
                    .iter()
                    .min_by_key(|(_, f)| f.forget_at())
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    table.pairs.remove(&oldest);
                }
            }
            let max = table.max;
            table.pairs.shrink_to(max);
        }
        let failures = table.pairs.entry(key).or_insert(Failures {
            count: 0,
            last: now,
            locked_until: None,
        });
        failures.count = failures.count.saturating_add(1);
        failures.last = now;
        if failures.count >= FREE_FAILURES {
            let doublings = (failures.count - FREE_FAILURES).min(16);
            let lock = FIRST_LOCK.saturating_mul(1 << doublings).min(MAX_LOCK);
            failures.locked_until = Some(now + lock);
            Some(lock)
        } else {
            None
        }
    }

    /// A successful sign-in clears the pair's failures.
    pub fn record_success(&self, username: &str, source: IpAddr) {
        let mut table = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        table
            .pairs
            .remove(&(source_key(source), username.to_owned()));
    }

    /// Addresses the per-address limiter holds now.
    pub fn tracked_sources(&self) -> usize {
        self.per_source.len()
    }

    /// (user, address) pairs with failures held now.
    pub fn tracked_failures(&self) -> usize {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pairs
            .len()
    }
}

/// The key an address is counted under: IPv4 as is (an IPv4-mapped IPv6 address as its IPv4
/// address), IPv6 by its /64.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// The client's address: the TCP peer's, unless the peer is in `trusted`; then the right-most
/// entry of the `X-Forwarded-For` values (in the order received) that is not itself trusted.
/// When every entry is trusted, the left-most; an entry that is not an address ends the walk
/// at the last trusted hop (a trusted proxy appends what it saw, so anything left of an
/// unreadable entry is the client's own text).
pub fn client_address<'a>(
    peer: Option<IpAddr>,
    forwarded_for: impl DoubleEndedIterator<Item = Option<&'a str>>,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let mut client = peer;
    // A value that is not text is one unreadable entry.
    for entry in forwarded_for
        .rev()
        .flat_map(|value| value.unwrap_or("\u{0}").rsplit(','))
    {
        let Some(ip) = parse_forwarded(entry.trim()) else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    Some(client)
}

/// One `X-Forwarded-For` entry: an address, maybe with a port (`1.2.3.4:5`, `[::1]:5`, `[::1]`).
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .and_then(|e| e.parse().ok())
        })
        .map(|ip: IpAddr| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn resolve(peer: &str, headers: &[&str], trusted: &[&str]) -> IpAddr {
        client_address(
            Some(ip(peer)),
            headers.iter().map(|h| Some(*h)),
            &nets(trusted),
        )
        .unwrap()
    }

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_peer() {
        // Untrusted peer: the header is ignored whatever it says.
        assert_eq!(resolve("192.0.2.1", &["203.0.113.7"], &[]), ip("192.0.2.1"));
        assert_eq!(
            resolve("192.0.2.1", &["203.0.113.7"], &["10.0.0.0/8"]),
            ip("192.0.2.1")
        );
        // Trusted peer: the right-most entry not itself trusted, across headers.
        let trusted = ["10.0.0.0/8", "127.0.0.1/32"];
        assert_eq!(
            resolve("127.0.0.1", &["6.6.6.6, 203.0.113.7, 10.1.1.1"], &trusted),
            ip("203.0.113.7"),
            "a client-supplied entry on the left is not believed"
        );
        assert_eq!(
            resolve(
                "127.0.0.1",
                &["6.6.6.6", "203.0.113.7:4711,10.1.1.1"],
                &trusted
            ),
            ip("203.0.113.7")
        );
        assert_eq!(
            resolve("127.0.0.1", &["[2001:db8::1]:443"], &trusted),
            ip("2001:db8::1")
        );
        // No header: the proxy itself. All trusted: the left-most.
        assert_eq!(resolve("127.0.0.1", &[], &trusted), ip("127.0.0.1"));
        assert_eq!(
            resolve("127.0.0.1", &["10.2.2.2, 10.1.1.1"], &trusted),
            ip("10.2.2.2")
        );
        // Garbage stops the walk at the last trusted hop; a non-text value too.
        assert_eq!(
            resolve("127.0.0.1", &["203.0.113.7, garbage, 10.1.1.1"], &trusted),
            ip("10.1.1.1")
        );
        assert_eq!(
            client_address(
                Some(ip("127.0.0.1")),
                [Some("203.0.113.7"), None].into_iter(),
                &nets(&trusted)
            ),
            Some(ip("127.0.0.1"))
        );
        // An IPv4-mapped peer is its IPv4 address.
        assert_eq!(
            resolve("::ffff:127.0.0.1", &["203.0.113.7"], &trusted),
            ip("203.0.113.7")
        );
        assert_eq!(
            client_address(None, std::iter::empty(), &nets(&trusted)),
            None
        );
    }

    #[test]
    fn failures_lock_the_pair_only_and_back_off() {
        let limits = SignInLimits::default();
        let attacker = ip("203.0.113.7");
        let elsewhere = ip("198.51.100.9");
        let t0 = Instant::now();
        for n in 1..FREE_FAILURES {
            assert_eq!(
                limits.record_failure("admin", attacker, t0),
                None,
                "failure {n}"
            );
            assert_eq!(limits.check_pair("admin", attacker, t0), Ok(()));
        }
        assert_eq!(
            limits.record_failure("admin", attacker, t0),
            Some(FIRST_LOCK)
        );
        assert!(matches!(
            limits.check_pair("admin", attacker, t0),
            Err(Refusal::Locked { .. })
        ));
        // Another address, and another user from the attacker's address, are not locked.
        assert_eq!(limits.check_pair("admin", elsewhere, t0), Ok(()));
        assert_eq!(limits.check_pair("ada", attacker, t0), Ok(()));
        // After the lock, one more failure locks twice as long; the cap holds.
        let t1 = t0 + FIRST_LOCK;
        assert_eq!(limits.check_pair("admin", attacker, t1), Ok(()));
        assert_eq!(
            limits.record_failure("admin", attacker, t1),
            Some(FIRST_LOCK * 2)
        );
        let mut t = t1;
        for _ in 0..40 {
            t += MAX_LOCK;
            assert!(limits.record_failure("admin", attacker, t).unwrap() <= MAX_LOCK);
        }
        // Success clears the pair.
        limits.record_success("admin", attacker);
        assert_eq!(limits.check_pair("admin", attacker, t), Ok(()));
        assert_eq!(limits.tracked_failures(), 0);
    }

    #[test]
    fn ipv6_addresses_count_per_slash_64() {
        let limits = SignInLimits::default();
        let t0 = Instant::now();
        for n in 0..FREE_FAILURES {
            let host = ip(&format!("2001:db8:1:2::{:x}", n + 1));
            limits.record_failure("admin", host, t0);
        }
        assert!(matches!(
            limits.check_pair("admin", ip("2001:db8:1:2::ffff"), t0),
            Err(Refusal::Locked { .. })
        ));
        assert_eq!(
            limits.check_pair("admin", ip("2001:db8:1:3::1"), t0),
            Ok(())
        );
        assert_eq!(limits.tracked_failures(), 1);
    }

    #[test]
    fn the_tables_stay_bounded_whatever_names_and_addresses_arrive() {
        let limits = SignInLimits::with_caps(100, 50);
        let t0 = Instant::now();
        let mut refused = 0;
        for n in 0..5_000u32 {
            let source = IpAddr::from(n.to_be_bytes());
            if limits.admit_source(source).is_err() {
                refused += 1;
            }
            limits.record_failure(&format!("user-{n}"), source, t0);
            assert!(limits.tracked_sources() <= 100, "after {n}");
            assert!(limits.tracked_failures() <= 50, "after {n}");
        }
        assert!(refused > 0, "a full address table refuses new addresses");
        // Forgotten pairs are dropped as new failures come in.
        let later = t0 + FORGET_AFTER + Duration::from_secs(1);
        limits.record_failure("someone", ip("192.0.2.1"), later);
        assert_eq!(limits.tracked_failures(), 1);
    }

    #[test]
    fn an_address_is_limited_per_minute() {
        let limits = SignInLimits::default();
        let source = ip("192.0.2.1");
        for _ in 0..SOURCES_PER_MINUTE {
            assert_eq!(limits.admit_source(source), Ok(()));
        }
        assert_eq!(limits.admit_source(source), Err(Refusal::SourceLimited));
        assert_eq!(limits.admit_source(ip("192.0.2.2")), Ok(()));
    }
}
