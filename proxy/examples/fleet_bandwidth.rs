//! Measures fleet gossip traffic: N replicas in this process, each a chitchat node on
//! 127.0.0.1 with weir's authenticated UDP transport, gossiping every 200 ms (weir's
//! default). Prints the bytes per second one replica sends at rest, then while every replica
//! reports on E endpoints (the worst case: every endpoint failing everywhere), and how long
//! the fleet takes to converge on those reports.
//!
//! `cargo run --release -p weir-proxy --example fleet_bandwidth -- [REPLICAS] [ENDPOINTS]`
//! (default 100 and 1000).

use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatId, FailureDetectorConfig};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_proxy::fleet::transport::{AuthenticatedUdp, Traffic};
use weir_proxy::fleet::verdict::Report;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let replicas: usize = args.next().map_or(Ok(100), |a| a.parse())?;
    let endpoints: usize = args.next().map_or(Ok(1000), |a| a.parse())?;
    let interval = Duration::from_millis(200);
    let base_port = 27_000u16;
    let mut handles = Vec::new();
    let mut traffic = Vec::new();
    for i in 0..replicas {
        let port = base_port + i as u16;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let counters = Arc::new(Traffic::default());
        // Bulletins are not measured here (they go only while endpoints change): none arrive.
        let (inbox, _) = tokio::sync::mpsc::channel(1);
        let transport = AuthenticatedUdp::new(
            b"a shared key of the measured fleet",
            Arc::clone(&counters),
            inbox,
        );
        let config = ChitchatConfig {
            chitchat_id: ChitchatId::new(format!("weir-{i}"), 1, addr),
            cluster_id: "weir".to_string(),
            gossip_interval: interval,
            listen_addr: addr,
            seed_nodes: vec![format!("127.0.0.1:{base_port}")],
            failure_detector_config: FailureDetectorConfig {
                dead_node_grace_period: Duration::from_secs(60),
                initial_interval: interval,
                ..FailureDetectorConfig::default()
            },
            marked_for_deletion_grace_period: Duration::from_secs(60),
            catchup_callback: None,
            extra_liveness_predicate: None,
        };
        handles.push(spawn_chitchat(config, Vec::new(), &transport).await?);
        traffic.push(counters);
    }
    let live = |h: &chitchat::ChitchatHandle| {
        let h = h.chitchat();
        async move { h.lock().await.live_nodes().count() }
    };
    let started = Instant::now();
    loop {
        let mut all = true;
        for h in &handles {
            all &= live(h).await == replicas;
        }
        if all || started.elapsed() > Duration::from_secs(120) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "{replicas} replicas joined in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let sent = |i: usize| traffic[i].bytes_sent.load(Ordering::Relaxed);
    let measure = |label: &'static str, seconds: u64| {
        let traffic = &traffic;
        async move {
            let before: Vec<u64> = (0..replicas).map(sent).collect();
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            let total: u64 = (0..replicas).map(|i| sent(i) - before[i]).sum();
            let per_replica = total as f64 / replicas as f64 / seconds as f64;
            let _ = traffic;
            println!("{label}: {:.0} bytes/s sent per replica", per_replica);
        }
    };
    measure("at rest", 10).await;
    // Every replica reports on every endpoint (as if every endpoint failed everywhere).
    let now_ms = weir_proxy::fleet::unix_ms();
    for (i, h) in handles.iter().enumerate() {
        let chitchat = h.chitchat();
        let mut chitchat = chitchat.lock().await;
        let state = chitchat.self_node_state();
        for e in 0..endpoints {
            let addr =
                std::net::SocketAddr::from(([10, (e / 250) as u8, (e % 250) as u8, 1], 8080));
            let report = Report {
                failures: 1 + (i % 3) as u32,
                since_ms: now_ms,
                ejected_until_ms: 0,
            };
            state.set(Report::key(addr), report.value());
        }
    }
    let storm = Instant::now();
    let before: Vec<u64> = (0..replicas).map(sent).collect();
    let expected = replicas * endpoints;
    let mut converged = None;
    while storm.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        // One replica's view: how many reports it has from everyone.
        let chitchat = handles[replicas - 1].chitchat();
        let chitchat = chitchat.lock().await;
        let seen: usize = chitchat
            .node_states()
            .values()
            .map(|s| s.key_values().filter(|(k, _)| k.starts_with("ep:")).count())
            .sum();
        if seen >= expected {
            converged = Some(storm.elapsed());
            break;
        }
    }
    let seconds = storm.elapsed().as_secs_f64();
    let total: u64 = (0..replicas).map(|i| sent(i) - before[i]).sum();
    match converged {
        Some(t) => println!(
            "{endpoints} endpoints reported by every replica: converged in {:.1} s, {:.0} bytes/s sent per replica meanwhile",
            t.as_secs_f64(),
            total as f64 / replicas as f64 / seconds
        ),
        None => println!(
            "{endpoints} endpoints reported by every replica: not converged in {seconds:.0} s, {:.0} bytes/s sent per replica meanwhile",
            total as f64 / replicas as f64 / seconds
        ),
    }
    measure("after the reports", 10).await;
    for h in handles {
        let _ = h.shutdown().await;
    }
    Ok(())
}
