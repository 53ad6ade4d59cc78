//! Hot path of the per-target statistics window behind the `pingscope_window_*` gauges: one
//! settled probe pushed and the window's statistics computed, as the scheduler does after every
//! probe, at the default window of 60 probes.
//!
//! Run: `cargo bench --bench stats -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use pingscope::stats::Window;

const WINDOW: usize = 60;

/// Settled probes like a loopback target's: RTTs between 15 and 205 µs, one in 20 lost.
fn outcomes() -> Vec<Option<f64>> {
    (0..240_u32)
        .map(|i| (i % 20 != 7).then(|| 15e-6 + f64::from(i * 37 % 64) * 3e-6))
        .collect()
}

fn window(c: &mut Criterion) {
    let outcomes = outcomes();
    let mut full = Window::new(WINDOW);
    for o in &outcomes[..WINDOW] {
        full.push(*o);
    }
    let mut n = 0_usize;
    let mut group = c.benchmark_group("window 60");
    group.bench_function("push", |b| {
        b.iter(|| {
            full.push(black_box(outcomes[n % outcomes.len()]));
            n += 1;
        })
    });
    group.bench_function("push + stats", |b| {
        b.iter(|| {
            full.push(black_box(outcomes[n % outcomes.len()]));
            n += 1;
            black_box(full.stats())
        })
    });
    // What the probe path does since the gauges stopped sorting: one pass, no allocation.
    group.bench_function("push + gauges", |b| {
        b.iter(|| {
            full.push(black_box(outcomes[n % outcomes.len()]));
            n += 1;
            black_box(full.gauges())
        })
    });
    group.bench_function("stats", |b| b.iter(|| black_box(full.stats())));
    group.finish();
}

criterion_group!(benches, window);
criterion_main!(benches);
