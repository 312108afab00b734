//! Round-trip latency of Marill's links on 127.0.0.1: what one 2PC round costs on top of the
//! computation when the parties are separate processes. A SmolLM2 decode step makes ~700
//! rounds, so every 100 µs of round trip adds ~70 ms to a token. Ping-pong of a small frame
//! (an opening of a few elements) and of a 64 KiB frame (a large opening), over
//! - a CURVE link (`Link`: zeromq over TCP, encrypted and authenticated), and
//! - one lane of a muxed link (`Mux`: the lane's thread hands frames to the link's pump
//!   thread and back, as the workers' peer and dealer links do).
//!
//! Run: `cargo bench -p marill-transport --bench round_trip`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use marill_transport::{Frames, KeyPair, Link, LinkConfig, Mux, Role};
use std::time::Duration;

/// A connected pair of CURVE links on a free loopback port.
fn links() -> (Link, Link) {
    let (server_keys, client_keys) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
    let mut cfg = LinkConfig::new("bench");
    cfg.timeout = Duration::from_secs(30);
    cfg.max_frame = 1 << 22;
    let server = Link::open(
        Role::Server {
            endpoint: "tcp://127.0.0.1:*".into(),
            allow: vec![client_keys.public.clone()],
        },
        &server_keys,
        cfg.clone(),
    )
    .unwrap();
    let client = Link::open(
        Role::Client {
            endpoint: server.endpoint().into(),
            server_public: server_keys.public.clone(),
        },
        &client_keys,
        cfg,
    )
    .unwrap();
    (server, client)
}

/// Echoes every frame on `end` until it receives an empty one.
fn echo<F: Frames + Send + 'static>(end: F) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || loop {
        let f = end.recv_frame().unwrap();
        if f.is_empty() {
            return;
        }
        end.send_frame(&f).unwrap();
    })
}

fn ping_pong<F: Frames>(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    near: &F,
    size: usize,
) {
    let frame = vec![7u8; size];
    c.throughput(Throughput::Bytes(2 * size as u64));
    c.bench_with_input(BenchmarkId::new(name, size), &frame, |b, frame| {
        b.iter(|| {
            near.send_frame(frame).unwrap();
            near.recv_frame().unwrap()
        })
    });
}

fn round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("round_trip");
    g.sample_size(30);
    for size in [64usize, 64 << 10] {
        let (server, client) = links();
        let far = echo(server);
        ping_pong(&mut g, "curve_link", &client, size);
        client.send_frame(&[]).unwrap();
        far.join().unwrap();

        let (server, client) = links();
        let (ms, mut far_lanes) = Mux::split(server, 1).unwrap();
        let (mc, mut near_lanes) = Mux::split(client, 1).unwrap();
        let far = echo(far_lanes.remove(0));
        let near = near_lanes.remove(0);
        ping_pong(&mut g, "muxed_lane", &near, size);
        near.send_frame(&[]).unwrap();
        far.join().unwrap();
        drop((ms, mc));
    }
    g.finish();
}

criterion_group!(benches, round_trip);
criterion_main!(benches);
