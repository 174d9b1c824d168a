//! The fleet task: runs chitchat, publishes this replica's reports (in its gossip state, and
//! at once to every peer in a bulletin), and applies the fleet's view to the live pools each
//! gossip round and whenever a bulletin arrives.

use super::bulletin::{self, Bulletin};
use super::transport::{AuthenticatedUdp, Traffic};
use super::verdict::{
    check_key, check_value, fleet_view, later_value, parse_check, Report, CHECK_PREFIX,
    CLOCK_TOLERANCE, KEY_PREFIX,
};
use super::{unix_ms, LocalReports};
use crate::app::metrics::Metrics;
use crate::health::CheckBoard;
use crate::routes::routing::LiveRouting;
use arc_swap::ArcSwap;
use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatId, FailureDetectorConfig};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use weir_balancer::Nanos;

/// How a replica joins its fleet (`--fleet-listen`, `--peers`, `--fleet-secret-file`).
#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// The UDP address gossip is received on.
    pub listen: SocketAddr,
    /// The address peers reach it on (the listen address unless it is unspecified).
    pub advertise: SocketAddr,
    /// Addresses (`host:port`) of some replicas to join through.
    pub peers: Vec<String>,
    /// The shared key every datagram is authenticated with.
    pub secret: Vec<u8>,
    /// This replica's name (unique in the fleet).
    pub node_id: String,
    /// Fleets with other ids ignore each other.
    pub cluster_id: String,
    pub gossip_interval: Duration,
}

/// The fleet as this replica sees it (`/debug/fleet`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct FleetStatus {
    pub node_id: String,
    /// Live replicas, this one included.
    pub members: Vec<String>,
    /// Endpoints some replica reports on, with the fleet's view of them.
    pub endpoints: Vec<EndpointStatus>,
}

#[derive(Clone, Debug, Serialize)]
pub struct EndpointStatus {
    pub addr: SocketAddr,
    pub failures: u32,
    pub reporters: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reported_until_unix_ms: Option<u64>,
}

/// Runs the fleet until `stop` resolves. Errors starting it (the UDP address taken) are
/// returned; the replica then serves alone.
pub async fn run(
    config: FleetConfig,
    reports: Arc<LocalReports>,
    checks: Arc<CheckBoard>,
    routing: Arc<LiveRouting>,
    metrics: Metrics,
    status: Arc<ArcSwap<FleetStatus>>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let traffic = Arc::new(Traffic::default());
    let (inbox_sender, mut inbox) = tokio::sync::mpsc::channel(INBOX);
    let transport = AuthenticatedUdp::new(&config.secret, Arc::clone(&traffic), inbox_sender);
    let postbox = transport.postbox();
    // A new generation per start: a restarted replica is a new member, not a stale one.
    let generation = unix_ms();
    let id = ChitchatId::new(config.node_id.clone(), generation, config.advertise);
    let chitchat_config = ChitchatConfig {
        chitchat_id: id,
        cluster_id: config.cluster_id.clone(),
        gossip_interval: config.gossip_interval,
        listen_addr: config.listen,
        seed_nodes: config.peers.clone(),
        failure_detector_config: FailureDetectorConfig {
            // Peers are declared dead within a few seconds of silence, and forgotten
            // after a minute.
            dead_node_grace_period: Duration::from_secs(60),
            initial_interval: config.gossip_interval,
            ..FailureDetectorConfig::default()
        },
        marked_for_deletion_grace_period: Duration::from_secs(60),
        catchup_callback: None,
        extra_liveness_predicate: None,
    };
    let handle = spawn_chitchat(chitchat_config, Vec::new(), &transport).await?;
    let chitchat = handle.chitchat();
    tracing::info!(listen = %config.listen, advertise = %config.advertise, peers = ?config.peers, "fleet gossip started");
    let mut tick = tokio::time::interval(config.gossip_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = [0u64; 5];
    // This replica's reports as last published, by endpoint.
    let mut own: HashMap<SocketAddr, Report> = HashMap::new();
    // This replica's check results as published: when each was made.
    let mut own_checks: HashMap<SocketAddr, u64> = HashMap::new();
    // Endpoints ejected on the fleet's view last round: their new state is published too.
    let mut ejected_here: HashSet<SocketAddr> = HashSet::new();
    // What peers' bulletins said, until gossip has surely caught up.
    let mut heard = Heard::default();
    // Each live replica's reports as last copied out of gossip, with the state's version then.
    let mut copied: HashMap<ChitchatId, (u64, Arc<BTreeMap<String, String>>)> = HashMap::new();
    let mut last_bulletin = Instant::now();
    let round = async {
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                // A change is told at once, with what else changed within a millisecond, and
                // bulletins go at most every BULLETIN_GAP.
                _ = reports.noted() => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    tokio::time::sleep_until(last_bulletin + BULLETIN_GAP).await;
                }
                _ = checks.recorded() => {}
                Some(b) = inbox.recv() => {
                    let now_ms = unix_ms();
                    heard.take(b, now_ms);
                    while let Ok(b) = inbox.try_recv() {
                        heard.take(b, now_ms);
                    }
                }
            }
            let now_ms = unix_ms();
            let now = Nanos::now();
            // Every endpoint this replica has told of, or that changed, read from its state.
            let mut look: HashSet<SocketAddr> = reports.take();
            look.extend(own.keys().copied());
            look.extend(ejected_here.drain());
            let mut set: Vec<(SocketAddr, Report)> = Vec::new();
            let mut delete: Vec<SocketAddr> = Vec::new();
            for addr in look {
                let Some(endpoint) = routing.registry().get(addr) else {
                    // No pool holds it any more.
                    if own.remove(&addr).is_some() {
                        delete.push(addr);
                    }
                    continue;
                };
                let failures = endpoint.consecutive_failures();
                let ends = endpoint.ejection_ends();
                let live_until = (ends.0 > now.0)
                    .then(|| now_ms.saturating_add(ends.since(now).as_millis() as u64));
                let before = own.get(&addr).copied().unwrap_or_default();
                let before_until =
                    (before.ejected_until_ms > now_ms).then_some(before.ejected_until_ms);
                // The same ejection, read again through two clocks, may differ by a little.
                let same_ejection = match (live_until, before_until) {
                    (None, None) => true,
                    (Some(a), Some(b)) => a.abs_diff(b) < 1_000,
                    _ => false,
                };
                let report = if failures == before.failures && same_ejection {
                    // Unchanged: it keeps its stamp (and its version in the gossip).
                    before
                } else {
                    Report {
                        failures,
                        // A streak keeps the time it began; a new one, or its end, is now.
                        // (One that shrank was reset by a success in between: new.)
                        since_ms: match before.failures > 0 && failures >= before.failures {
                            true => before.since_ms,
                            false => now_ms,
                        },
                        ejected_until_ms: live_until.unwrap_or(0),
                    }
                };
                if report.is_spent(now_ms, SPENT_AFTER) {
                    if own.remove(&addr).is_some() {
                        delete.push(addr);
                    }
                } else if own.get(&addr) != Some(&report) {
                    own.insert(addr, report);
                    set.push((addr, report));
                }
            }
            // The gossip keys this replica sets and deletes: reports, then check results.
            let mut told: Vec<(String, String)> = set
                .iter()
                .map(|(addr, report)| (Report::key(*addr), report.value()))
                .collect();
            let mut gone: Vec<String> = delete.iter().map(|addr| Report::key(*addr)).collect();
            for (addr, result) in checks.take_made_here() {
                own_checks.insert(addr, result.at_ms);
                told.push((check_key(addr), check_value(&result)));
            }
            own_checks.retain(|addr, at_ms| {
                let keep = now_ms.saturating_sub(*at_ms) < CHECKS_KEPT.as_millis() as u64;
                if !keep {
                    gone.push(check_key(*addr));
                }
                keep
            });
            heard.expire(Instant::now());
            let (members, peers, view) = {
                let mut chitchat = chitchat.lock().await;
                let state = chitchat.self_node_state();
                for (key, value) in &told {
                    state.set(key.clone(), value.clone());
                }
                for key in &gone {
                    if state.get(key).is_some() {
                        state.delete(key);
                    }
                }
                let self_id = chitchat.self_chitchat_id().clone();
                let live: Vec<ChitchatId> = chitchat.live_nodes().cloned().collect();
                // Each live replica's reports and checks: its gossip state (copied again only
                // when its version moved), or what its bulletins said where that is later.
                let nodes: Vec<(bool, Arc<BTreeMap<String, String>>)> = live
                    .iter()
                    .filter_map(|id| {
                        let state = chitchat.node_state(id)?;
                        let version = state.max_version();
                        let values = match copied.get(id) {
                            Some((seen, values)) if *seen == version => Arc::clone(values),
                            _ => {
                                let values: Arc<BTreeMap<String, String>> = Arc::new(
                                    state
                                        .key_values()
                                        .filter(|(k, _)| {
                                            k.starts_with(KEY_PREFIX) || k.starts_with(CHECK_PREFIX)
                                        })
                                        .map(|(k, v)| (k.to_string(), v.to_string()))
                                        .collect(),
                                );
                                copied.insert(id.clone(), (version, Arc::clone(&values)));
                                values
                            }
                        };
                        let values = if *id != self_id && heard.has(&id.node_id) {
                            let mut overlaid = (*values).clone();
                            heard.overlay(&id.node_id, &mut overlaid);
                            Arc::new(overlaid)
                        } else {
                            values
                        };
                        Some((*id == self_id, values))
                    })
                    .collect();
                copied.retain(|id, _| live.contains(id));
                let members: Vec<String> = live.iter().map(|id| id.node_id.clone()).collect();
                let peers: Vec<SocketAddr> = live
                    .iter()
                    .filter(|id| **id != self_id)
                    .map(|id| id.gossip_advertise_addr)
                    .collect();
                for (own, values) in &nodes {
                    let theirs = values.iter().filter(|_| !own);
                    for (addr, result) in theirs.filter_map(|(k, v)| parse_check(k, v)) {
                        if result.at_ms <= now_ms + CLOCK_TOLERANCE.as_millis() as u64 {
                            checks.hear(addr, result);
                        }
                    }
                }
                let borrowed = nodes
                    .iter()
                    .map(|(own, kv)| (*own, kv.iter().map(|(k, v)| (k.as_str(), v.as_str()))));
                (members, peers, fleet_view(borrowed, now_ms))
            };
            // What changed here goes to every peer at once, besides gossip.
            if !told.is_empty() && !peers.is_empty() {
                for body in bulletin::encode(&config.node_id, now_ms, &told) {
                    postbox.send(&peers, &body);
                }
                last_bulletin = Instant::now();
            }
            for (addr, endpoint) in &view {
                let reported = endpoint.reported_until_ms.map(|until| {
                    Nanos(
                        now.0
                            .saturating_add(until.saturating_sub(now_ms).saturating_mul(1_000_000)),
                    )
                });
                for (service, until, was_reported) in
                    routing.apply_fleet_view(*addr, endpoint.failures, reported, now)
                {
                    ejected_here.insert(*addr);
                    let source = if was_reported {
                        "reported"
                    } else {
                        "fleet_failures"
                    };
                    metrics
                        .fleet_ejections_total
                        .with_label_values(&[source])
                        .inc();
                    tracing::warn!(
                        endpoint = %addr,
                        service,
                        source,
                        ejected_for_secs = until.since(now).as_secs(),
                        "endpoint ejected on the fleet's view"
                    );
                }
            }
            metrics.fleet_members.set(members.len() as i64);
            let counters = [
                (
                    &traffic.bytes_sent,
                    &metrics.fleet_gossip_bytes_total,
                    "sent",
                ),
                (
                    &traffic.bytes_received,
                    &metrics.fleet_gossip_bytes_total,
                    "received",
                ),
                (
                    &traffic.bulletins_sent,
                    &metrics.fleet_bulletins_total,
                    "sent",
                ),
                (
                    &traffic.bulletins_received,
                    &metrics.fleet_bulletins_total,
                    "received",
                ),
            ];
            for (i, (counter, family, direction)) in counters.into_iter().enumerate() {
                let total = counter.load(Ordering::Relaxed);
                family
                    .with_label_values(&[direction])
                    .inc_by(total.saturating_sub(last[i]));
                last[i] = total;
            }
            let total_rejected = traffic.rejected.load(Ordering::Relaxed);
            metrics
                .fleet_rejected_datagrams_total
                .inc_by(total_rejected.saturating_sub(last[4]));
            last[4] = total_rejected;
            status.store(Arc::new(FleetStatus {
                node_id: config.node_id.clone(),
                members,
                // By address (the view is ordered).
                endpoints: view
                    .iter()
                    .map(|(addr, v)| EndpointStatus {
                        addr: *addr,
                        failures: v.failures,
                        reporters: v.reporters,
                        reported_until_unix_ms: v.reported_until_ms,
                    })
                    .collect(),
            }));
        }
    };
    let ended = handle.termination_watcher();
    let result = tokio::select! {
        _ = round => Ok(()),
        _ = stop => Ok(()),
        // Gossip stopped (its socket failed): this replica now decides alone.
        why = ended => Err(anyhow::anyhow!("fleet gossip stopped: {why:?}")),
    };
    metrics.fleet_members.set(0);
    let _ = handle.shutdown().await;
    result
}

/// Bulletins waiting for the fleet task; more are dropped (gossip carries them too).
const INBOX: usize = 1_024;

/// The least time between two bulletins of this replica: what they cost is bounded (at most
/// 100 a second to each peer, only while endpoints change).
const BULLETIN_GAP: Duration = Duration::from_millis(10);

/// How long what a bulletin said stands in for gossip: long enough for gossip to catch up, no
/// longer than a spent report stays in gossip (so a lost later bulletin cannot leave an old
/// report standing after gossip dropped the key).
const HEARD_FOR: Duration = SPENT_AFTER;

/// How long this replica's check results stay in its gossip state.
const CHECKS_KEPT: Duration = Duration::from_secs(60);

/// What peers' bulletins said, by node id and key, with when it was heard.
#[derive(Default)]
struct Heard {
    by_node: HashMap<String, HashMap<String, (String, Instant)>>,
}

impl Heard {
    /// Takes in a bulletin, unless it was sent long ago or far ahead (a replay, or a wrong
    /// clock).
    fn take(&mut self, b: Bulletin, now_ms: u64) {
        let tolerance = CLOCK_TOLERANCE.as_millis() as u64;
        if b.sent_ms > now_ms + tolerance || b.sent_ms + tolerance < now_ms {
            return;
        }
        let now = Instant::now();
        let node = self.by_node.entry(b.node_id).or_default();
        for (key, value) in b.entries {
            let later = match node.get(&key) {
                Some((known, _)) => later_value(&key, known, &value) == value,
                None => true,
            };
            if later {
                node.insert(key, (value, now));
            }
        }
    }

    fn has(&self, node: &str) -> bool {
        self.by_node.contains_key(node)
    }

    fn expire(&mut self, now: Instant) {
        for values in self.by_node.values_mut() {
            values.retain(|_, (_, at)| now.duration_since(*at) < HEARD_FOR);
        }
        self.by_node.retain(|_, values| !values.is_empty());
    }

    /// Puts what `node`'s bulletins said into `values` (its gossip state) where it is later.
    fn overlay(&self, node: &str, values: &mut BTreeMap<String, String>) {
        let Some(heard) = self.by_node.get(node) else {
            return;
        };
        for (key, (value, _)) in heard {
            match values.get_mut(key) {
                Some(known) => {
                    if later_value(key, known, value) == value.as_str() {
                        *known = value.clone();
                    }
                }
                None => {
                    values.insert(key.clone(), value.clone());
                }
            }
        }
    }
}

/// How long a report with nothing more to tell (a streak ended by a success) stays, so that
/// the other replicas see the success before it goes.
const SPENT_AFTER: Duration = Duration::from_secs(5);

/// The fleet as one of the process's background services (stops with the process).
pub struct FleetService {
    pub config: FleetConfig,
    pub reports: Arc<LocalReports>,
    pub checks: Arc<CheckBoard>,
    pub routing: Arc<LiveRouting>,
    pub metrics: Metrics,
    pub status: Arc<ArcSwap<FleetStatus>>,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for FleetService {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let stop = async move {
            let _ = shutdown.changed().await;
        };
        let ran = run(
            self.config.clone(),
            Arc::clone(&self.reports),
            Arc::clone(&self.checks),
            Arc::clone(&self.routing),
            self.metrics.clone(),
            Arc::clone(&self.status),
            stop,
        )
        .await;
        if let Err(e) = ran {
            // Without gossip each replica decides alone, as without a fleet.
            tracing::error!(error = %e, listen = %self.config.listen, "fleet gossip could not start; this replica decides alone");
        }
    }
}
