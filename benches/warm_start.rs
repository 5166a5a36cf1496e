//! A warm start (everything cached and verified) must not grow with the model's size: a new
//! manager finding a verified 1 MB file and a verified 256 MB file, in the same run. Target: the
//! two within 1.2x of each other (a cache hit is a `stat` and a small record read, not a hash).

#[path = "../tests/support/hub.rs"]
mod hub;
#[path = "../tests/support/tiny.rs"]
mod tiny;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use fluent_voice_kyutai::KyutaiModelManager;
use fluent_voice_kyutai::models::{KyutaiModelConfig, ProgressMode};

fn warm_start(c: &mut Criterion) {
    let hub = hub::TestHub::start();
    let small: Arc<[u8]> = tiny::big_file(1 << 20, 1).into();
    let large: Arc<[u8]> = tiny::big_file(256 << 20, 2).into();
    hub.publish_shared("bench/small", "main", &[("model.bin", small)]);
    hub.publish_shared("bench/large", "main", &[("model.bin", large)]);
    let cache = tempfile::tempdir().unwrap();
    let config = KyutaiModelConfig::default()
        .endpoint(hub.endpoint())
        .cache_dir(cache.path())
        .progress(ProgressMode::Quiet);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Download and verify both once.
    runtime.block_on(async {
        let manager = KyutaiModelManager::with_config(config.clone()).unwrap();
        for repo in ["bench/small", "bench/large"] {
            manager.fetch_file(repo, "main", "model.bin").await.unwrap();
        }
    });

    let mut group = c.benchmark_group("warm_start");
    for (name, repo) in [("1 MB", "bench/small"), ("256 MB", "bench/large")] {
        // Offline: the cost of the cache itself (new manager, resolve ref, stat, record).
        let offline = config.clone().offline(true);
        group.bench_function(format!("{name} offline"), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let manager = KyutaiModelManager::with_config(offline.clone()).unwrap();
                    black_box(manager.fetch_file(repo, "main", "model.bin").await.unwrap())
                })
            })
        });
        // Online: plus one HEAD to see whether `main` moved.
        group.bench_function(format!("{name} online"), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let manager = KyutaiModelManager::with_config(config.clone()).unwrap();
                    let fetched = manager.fetch_file(repo, "main", "model.bin").await.unwrap();
                    assert!(fetched.from_cache);
                    black_box(fetched)
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, warm_start);
criterion_main!(benches);
