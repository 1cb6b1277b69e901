//! Which new traces are recorded: `tracing.sample_ratio`, decided on the
//! trace id as OpenTelemetry's `TraceIdRatioBased` does, so that every
//! service with the same ratio takes the same decision for a trace.

/// Samples a fixed share of new traces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    /// Trace ids whose low 63 bits are below this are sampled.
    threshold: u64,
    /// 1.0: all, whatever the id.
    all: bool,
}

impl Sampler {
    /// Samples `ratio` (0.0 to 1.0, clamped) of new traces.
    pub fn new(ratio: f64) -> Self {
        let ratio = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, 1.0)
        };
        Self {
            // 2^63 as f64 is exact; the cast saturates.
            threshold: (ratio * (1u64 << 63) as f64) as u64,
            all: ratio >= 1.0,
        }
    }

    /// Nothing is sampled (ratio 0).
    pub fn never(&self) -> bool {
        self.threshold == 0 && !self.all
    }

    /// Whether a new trace with `trace_id` is sampled.
    pub fn samples(&self, trace_id: &[u8; 16]) -> bool {
        if self.all {
            return true;
        }
        let mut low = [0u8; 8];
        low.copy_from_slice(&trace_id[8..]);
        (u64::from_be_bytes(low) >> 1) < self.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_sample_about_their_share() {
        assert!(Sampler::new(0.0).never());
        let mut id = [0u8; 16];
        let count = |ratio: f64| {
            let sampler = Sampler::new(ratio);
            (0u64..10_000)
                .filter(|n| {
                    let mut id = id;
                    id[8..].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
                    sampler.samples(&id)
                })
                .count()
        };
        assert_eq!(count(0.0), 0);
        assert_eq!(count(1.0), 10_000);
        let quarter = count(0.25);
        assert!((2_000..3_000).contains(&quarter), "{quarter}");
        id[8] = 0xff;
        assert!(Sampler::new(1.0).samples(&id));
    }
}
