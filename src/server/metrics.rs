//! Prometheus metrics, served as text at `/metrics`: streams open, connections, model steps and
//! their spacing, real-time factor, first-audio latency, streams behind real time, errors.
//! Each server has its own registry, so that servers in one process (tests) do not mix.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The server's metrics, labelled by endpoint (`asr`, `tts`).
pub(crate) struct Metrics {
    registry: Registry,
    /// Connections accepted (after auth), slot or not.
    pub connections: IntCounterVec,
    /// Streams holding a slot now.
    pub open: IntGaugeVec,
    /// Model steps (80 ms frames) run for the streams.
    pub steps: IntCounterVec,
    /// Time between a stream's consecutive steps: the step time while the model has work
    /// queued, the audio's pace otherwise.
    pub step_interval: HistogramVec,
    /// Per stream, at its end: seconds of audio processed per second the stream was open.
    pub real_time_factor: HistogramVec,
    /// TTS: from the first text to the first audio frame.
    pub first_audio: HistogramVec,
    /// Streams that fell behind real time.
    pub behind: IntCounterVec,
    /// Errors answered, by kind.
    pub errors: IntCounterVec,
}

impl Metrics {
    /// Counts how a stream of `endpoint` ended, when it ended in an error: a refusal by its
    /// kind, a failure as `failed`.
    pub(crate) fn count_end(&self, endpoint: &str, end: &super::visit::End) {
        use super::visit::End;
        let kind = match end {
            End::Refused(_, _, kind) => *kind,
            End::Failed(_) => "failed",
            _ => return,
        };
        self.errors.with_label_values(&[endpoint, kind]).inc();
    }

    pub(crate) fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique");
            c
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets),
                &["endpoint"],
            )
            .expect("valid metric");
            registry.register(Box::new(h.clone())).expect("unique");
            h
        };
        let open = IntGaugeVec::new(
            Opts::new("kyutai_streams_open", "Streams holding a slot now."),
            &["endpoint"],
        )
        .expect("valid metric");
        registry.register(Box::new(open.clone())).expect("unique");
        Metrics {
            connections: counter(
                "kyutai_connections_total",
                "Connections accepted (after auth).",
                &["endpoint"],
            ),
            open,
            steps: counter(
                "kyutai_steps_total",
                "Model steps (80 ms frames) run for streams.",
                &["endpoint"],
            ),
            step_interval: histogram(
                "kyutai_step_interval_seconds",
                "Time between a stream's consecutive model steps.",
                vec![0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 1.0],
            ),
            real_time_factor: histogram(
                "kyutai_real_time_factor",
                "Per stream: seconds of audio processed per second open.",
                vec![0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.5, 2.0, 4.0, 8.0],
            ),
            first_audio: histogram(
                "kyutai_first_audio_seconds",
                "TTS: time from the first text to the first audio frame.",
                vec![0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0],
            ),
            behind: counter(
                "kyutai_streams_behind_total",
                "Streams that fell behind real time.",
                &["endpoint"],
            ),
            errors: counter(
                "kyutai_errors_total",
                "Errors answered to clients, by kind.",
                &["endpoint", "kind"],
            ),
            registry,
        }
    }

    /// Every endpoint's series from the start, at zero (so that a scraper sees them before
    /// the first stream).
    pub(crate) fn with_endpoints(self, endpoints: &[&str]) -> Metrics {
        for endpoint in endpoints {
            self.connections.with_label_values(&[endpoint]);
            self.open.with_label_values(&[endpoint]);
            self.steps.with_label_values(&[endpoint]);
            self.behind.with_label_values(&[endpoint]);
        }
        self
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}
