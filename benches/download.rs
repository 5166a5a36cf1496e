//! Downloading a 256 MB file from the loopback hub with sha256 verification on and off, in the
//! same run. Target: verification adds at most 15% (it runs on a writer thread, overlapping the
//! transfer).

#[path = "../tests/support/hub.rs"]
mod hub;
#[path = "../tests/support/tiny.rs"]
mod tiny;

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fluent_voice_kyutai::KyutaiModelManager;
use fluent_voice_kyutai::models::{KyutaiModelConfig, ProgressMode};

const SIZE: usize = 256 << 20;

fn download(c: &mut Criterion) {
    let hub = hub::TestHub::start();
    let bytes: Arc<[u8]> = tiny::big_file(SIZE, 3).into();
    hub.publish_shared("bench/big", "main", &[("big.bin", bytes)]);
    let cache = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();

    let mut group = c.benchmark_group("download_256MB");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Bytes(SIZE as u64));
    for (name, verify) in [("verify off (baseline)", false), ("verify on", true)] {
        let config = KyutaiModelConfig::default()
            .endpoint(hub.endpoint())
            .cache_dir(cache.path())
            .progress(ProgressMode::Quiet)
            .force_download(true)
            .verify_downloads(verify);
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let manager = KyutaiModelManager::with_config(config.clone()).unwrap();
                    let fetched = manager
                        .fetch_file("bench/big", "main", "big.bin")
                        .await
                        .unwrap();
                    assert!(!fetched.from_cache);
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, download);
criterion_main!(benches);
