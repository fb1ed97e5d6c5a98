//! Limits per client address, for what one person could otherwise multiply
//! by making accounts: new accounts themselves, and comments on a channel.
//!
//! The services learn a client's address from whoever reached them:
//!
//! - through the gateway in the same process, from a request extension
//!   ([`ClientAddress`]) that only code can set;
//! - through a gateway (or a forwarding process) in another pod, from the
//!   `x-onair-client-address` metadata, believed only when the call comes
//!   from an address in `rpc.trusted_peers`;
//! - from any other gRPC caller, from the connection's own peer address.
//!
//! So an outside caller can't choose the address it is counted under:
//! metadata it sends is ignored (and the gateway drops it from REST
//! requests), and its connection's address is what counts.

use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock as _;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use tonic::metadata::{Ascii, MetadataKey, MetadataValue};

use crate::clock::Clock;

/// The metadata key that carries a client's address between onair processes.
pub const CLIENT_ADDRESS_METADATA: &str = "x-onair-client-address";

/// The address of the client a request is made for, set by the gateway on
/// calls that stay in its process. Being a type, not a header, nobody
/// outside the process can set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

/// Tells the service a request goes to which client it is made for: as an
/// extension for a service in this process, and as metadata for one in
/// another (which believes it only from a trusted peer). Whatever the
/// metadata said before is replaced.
pub fn tell_client_address<T>(request: &mut tonic::Request<T>, address: IpAddr) {
    // The key is parsed once, not on every request.
    static KEY: LazyLock<MetadataKey<Ascii>> =
        LazyLock::new(|| MetadataKey::from_static(CLIENT_ADDRESS_METADATA));
    request.extensions_mut().insert(ClientAddress(address));
    let metadata = request.metadata_mut();
    match MetadataValue::try_from(address.to_string()) {
        Ok(value) => {
            metadata.insert(KEY.clone(), value);
        }
        Err(_) => {
            metadata.remove(CLIENT_ADDRESS_METADATA);
        }
    }
}

/// Tells a service in this process which client a request is made for, by
/// the extension alone: such a service reads it before any metadata, so
/// the address is not written out as text for a request that never leaves
/// the process. A request for another process needs
/// [`tell_client_address`].
pub fn tell_local_client_address<T>(request: &mut tonic::Request<T>, address: IpAddr) {
    request.extensions_mut().insert(ClientAddress(address));
}

/// Removes a client address that a client claimed for itself.
pub fn forget_client_address(metadata: &mut tonic::metadata::MetadataMap) {
    // Every value of the key goes.
    metadata.remove(CLIENT_ADDRESS_METADATA);
}

/// The address a request is counted under, or `None` when it came from
/// this process without one (a service calling another, the demo audience).
pub fn client_address<T>(request: &tonic::Request<T>, trusted: &TrustedPeers) -> Option<IpAddr> {
    if let Some(ClientAddress(address)) = request.extensions().get::<ClientAddress>() {
        return Some(*address);
    }
    let peer = request.remote_addr()?.ip();
    if !trusted.contains(peer) {
        return Some(peer);
    }
    let told = request
        .metadata()
        .get(CLIENT_ADDRESS_METADATA)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<IpAddr>().ok());
    Some(told.unwrap_or(peer))
}

/// The address a client is counted under: an IPv4 address, or the /64 of
/// an IPv6 address (one household or phone usually has a whole /64, so a
/// limit per IPv6 address would be a limit per nothing).
pub fn address_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let segments = v6.segments();
            IpAddr::V6(Ipv6Addr::new(
                segments[0],
                segments[1],
                segments[2],
                segments[3],
                0,
                0,
                0,
                0,
            ))
        }
    }
}

/// The onair processes (gateways, processes that forward gRPC) whose word on
/// a client's address is believed: addresses or CIDR networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedPeers {
    networks: Vec<(IpAddr, u8)>,
}

impl TrustedPeers {
    /// Nobody: every caller is counted under its own address.
    pub fn none() -> TrustedPeers {
        TrustedPeers::default()
    }

    /// A comma-separated list such as `10.0.0.0/8,fd00::/8,192.0.2.7`;
    /// `None` if an entry is neither an address nor a network.
    pub fn parse(list: &str) -> Option<TrustedPeers> {
        let mut networks = Vec::new();
        for entry in list
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
        {
            let (address, prefix) = match entry.split_once('/') {
                Some((address, prefix)) => (address, Some(prefix)),
                None => (entry, None),
            };
            let address: IpAddr = address.parse().ok()?;
            let longest = if address.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                Some(prefix) => prefix.parse::<u8>().ok().filter(|bits| *bits <= longest)?,
                None => longest,
            };
            networks.push((address, prefix));
        }
        Some(TrustedPeers { networks })
    }

    /// Whether no address or network is trusted.
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    /// Whether `address` (an IPv4-mapped IPv6 address counting as its IPv4
    /// address) is one of the trusted addresses or inside a trusted network.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        self.networks
            .iter()
            .any(|(network, prefix)| in_network(address, *network, *prefix))
    }
}

fn in_network(address: IpAddr, network: IpAddr, prefix: u8) -> bool {
    match (address, network) {
        (IpAddr::V4(address), IpAddr::V4(network)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(address) & mask == u32::from(network) & mask
        }
        (IpAddr::V6(address), IpAddr::V6(network)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(address) & mask == u128::from(network) & mask
        }
        _ => false,
    }
}

/// How much one address may do: a steady rate and a burst on top. A rate
/// of 0 turns the limit off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddressRate {
    /// Actions one address may take per minute, refilled steadily; 0 turns
    /// the limit off.
    pub per_minute: u32,
    /// How many actions one address may take at once before the rate
    /// applies (0 counts as 1).
    pub burst: u32,
}

impl AddressRate {
    /// Whether the limit is off (a rate of 0 per minute).
    pub fn is_off(&self) -> bool {
        self.per_minute == 0
    }
}

/// How many checks pass between two sweeps of idle keys: at most this many
/// keys are added between sweeps, so the limiter holds the clients active
/// within one refill plus this many.
const SWEEP_EVERY: u64 = 10_000;

/// The station's clock as governor reads it: monotonic, and moved by hand
/// in tests.
#[derive(Clone)]
struct LimiterClock(Clock);

impl governor::clock::Clock for LimiterClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.0.monotonic())
    }
}

type KeyedLimiter<K> =
    RateLimiter<K, DefaultKeyedStateStore<K>, LimiterClock, NoOpMiddleware<Nanos>>;

/// Token buckets by key (an address, or an address and a channel).
pub struct AddressLimiter<K: Hash + Eq + Clone> {
    limiter: Option<KeyedLimiter<K>>,
    checks: AtomicU64,
    clock: LimiterClock,
}

impl<K: Hash + Eq + Clone> AddressLimiter<K> {
    /// A limiter giving every key `rate`, timed by `clock`; with the rate
    /// off, every check passes.
    pub fn new(rate: AddressRate, clock: &Clock) -> AddressLimiter<K> {
        let clock = LimiterClock(clock.clone());
        let limiter = NonZeroU32::new(rate.per_minute).and_then(|per_minute| {
            let period = Duration::from_secs(60) / per_minute.get();
            let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
            let quota = Quota::with_period(period)?.allow_burst(burst);
            Some(RateLimiter::new(
                quota,
                DefaultKeyedStateStore::default(),
                clock.clone(),
            ))
        });
        AddressLimiter {
            limiter,
            checks: AtomicU64::new(0),
            clock,
        }
    }

    /// Takes one token of `key`'s bucket, or says how long until one is back.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// How many keys the limiter holds now.
    pub fn len(&self) -> usize {
        self.limiter.as_ref().map_or(0, |limiter| limiter.len())
    }

    /// Whether the limiter holds no key now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whole seconds to wait, rounded up and at least one: what `Retry-After`
/// and messages for people say.
pub fn whole_seconds(wait: Duration) -> u64 {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    seconds.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_peers_are_addresses_and_networks() {
        let trusted = TrustedPeers::parse("10.0.0.0/8, 192.0.2.7,fd00::/8").expect("valid");
        for inside in ["10.1.2.3", "192.0.2.7", "fd12::1", "::ffff:10.9.9.9"] {
            assert!(trusted.contains(inside.parse().unwrap()), "{inside}");
        }
        for outside in ["11.0.0.1", "192.0.2.8", "fe80::1", "127.0.0.1"] {
            assert!(!trusted.contains(outside.parse().unwrap()), "{outside}");
        }
        assert!(TrustedPeers::parse("").expect("empty is valid").is_empty());
        for invalid in ["10.0.0.0/33", "nonsense", "10.0.0.0/x", "::/129"] {
            assert!(TrustedPeers::parse(invalid).is_none(), "{invalid}");
        }
        let everyone = TrustedPeers::parse("0.0.0.0/0").expect("valid");
        assert!(everyone.contains("203.0.113.9".parse().unwrap()));
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let one: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let same_home: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let neighbour: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(one), address_key(same_home));
        assert_ne!(address_key(one), address_key(neighbour));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(address_key(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn an_address_over_its_burst_waits_and_others_do_not() {
        let clock = Clock::manual(std::time::SystemTime::now());
        let limiter = AddressLimiter::new(
            AddressRate {
                per_minute: 6,
                burst: 3,
            },
            &clock,
        );
        let first: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.check(&first).is_ok());
        }
        let wait = limiter.check(&first).expect_err("the burst is 3");
        assert_eq!(wait, Duration::from_secs(10), "one a minute every 10 s");
        let second: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(limiter.check(&second).is_ok());
        clock.advance(wait);
        assert!(limiter.check(&first).is_ok(), "back after the wait");
        assert!(limiter.check(&first).is_err(), "one token came back");
        let off = AddressLimiter::new(AddressRate::default(), &clock);
        for _ in 0..100 {
            assert!(off.check(&first).is_ok());
        }
        assert!(off.is_empty());
    }

    #[test]
    fn only_code_and_trusted_peers_say_who_the_client_is() {
        let claimed: IpAddr = "198.51.100.1".parse().unwrap();
        let mut told = tonic::Request::new(());
        tell_client_address(&mut told, claimed);
        assert_eq!(client_address(&told, &TrustedPeers::none()), Some(claimed));
        let mut told_locally = tonic::Request::new(());
        tell_local_client_address(&mut told_locally, claimed);
        assert_eq!(
            client_address(&told_locally, &TrustedPeers::none()),
            Some(claimed)
        );
        assert!(told_locally.metadata().is_empty());

        // Metadata alone, with no peer (an in-process call) is not believed.
        let mut forged = tonic::Request::new(());
        forged
            .metadata_mut()
            .insert(CLIENT_ADDRESS_METADATA, "198.51.100.1".parse().unwrap());
        assert_eq!(client_address(&forged, &TrustedPeers::none()), None);
        forget_client_address(forged.metadata_mut());
        assert!(forged.metadata().get(CLIENT_ADDRESS_METADATA).is_none());

        // Over the network: the peer's own address, unless the peer is trusted.
        let over_the_network = |peer: &str| {
            let mut request = tonic::Request::new(());
            request
                .extensions_mut()
                .insert(tonic::transport::server::TcpConnectInfo {
                    local_addr: None,
                    remote_addr: Some(peer.parse().unwrap()),
                });
            request
                .metadata_mut()
                .insert(CLIENT_ADDRESS_METADATA, "198.51.100.1".parse().unwrap());
            request
        };
        let gateways = TrustedPeers::parse("10.0.0.0/8").unwrap();
        let outsider = over_the_network("203.0.113.5:4000");
        assert_eq!(
            client_address(&outsider, &gateways),
            Some("203.0.113.5".parse().unwrap())
        );
        let gateway = over_the_network("10.1.1.1:4000");
        assert_eq!(client_address(&gateway, &gateways), Some(claimed));
    }

    #[test]
    fn waits_round_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(2_001)), 3);
        assert_eq!(whole_seconds(Duration::from_secs(4)), 4);
        assert_eq!(whole_seconds(Duration::ZERO), 1);
    }
}
