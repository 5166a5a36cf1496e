//! The hot path after initialization: reaching the process-wide engine through `Kyutai`, against
//! a bare `OnceCell::get` measured in the same run. Target: within 2x.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use fluent_voice_kyutai::{Kyutai, KyutaiModelConfig};
use futures::FutureExt;

fn hot_path(c: &mut Criterion) {
    let cache = tempfile::tempdir().unwrap();
    // Offline and with an empty cache: creating the engine touches no network.
    Kyutai::configure(
        KyutaiModelConfig::default()
            .cache_dir(cache.path())
            .offline(true),
    )
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(Kyutai::engine()).unwrap();

    let baseline = once_cell::sync::OnceCell::new();
    baseline
        .set(runtime.block_on(Kyutai::engine()).unwrap().clone())
        .unwrap();

    let mut group = c.benchmark_group("reach_engine");
    group.bench_function("bare OnceCell::get (baseline)", |b| {
        b.iter(|| black_box(baseline.get()).is_some())
    });
    group.bench_function("Kyutai::get", |b| {
        b.iter(|| black_box(Kyutai::get()).is_some())
    });
    // The async form against an async baseline: the same future machinery around a bare get.
    group.bench_function("async OnceCell::get (baseline)", |b| {
        b.iter(|| black_box(async { baseline.get() }.now_or_never()).is_some())
    });
    group.bench_function("async Result<_, MoshiError> (baseline)", |b| {
        b.iter(|| {
            black_box(
                async {
                    baseline
                        .get()
                        .ok_or(fluent_voice_kyutai::MoshiError::InvalidInput(String::new()))
                }
                .now_or_never(),
            )
            .is_some()
        })
    });
    group.bench_function("Kyutai::engine().await (ready)", |b| {
        b.iter(|| black_box(Kyutai::engine().now_or_never()).is_some())
    });
    group.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
