//! Activation ranges from a calibration set: an observer per tensor sees the activations of the
//! calibration faces and proposes a u8 scale and zero point by min-max, by percentile, or by
//! entropy (TensorRT's KL-divergence search for the clipping threshold that loses least
//! information when the histogram is squeezed into the quantized levels).

/// How a range is chosen.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Method {
    /// The smallest and largest value seen.
    MinMax,
    /// The `p` and `1 - p` quantiles, e.g. `p = 0.9999` keeps 99.99% of the values in range.
    Percentile(f64),
    /// The symmetric clipping threshold of least KL divergence (|x| histogram, 2048 bins, 128
    /// quantized levels), intersected with the observed range.
    Entropy,
}

/// u8 quantisation of one tensor: `real = scale * (q - zero)`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QuantParams {
    /// Real value of one step.
    pub scale: f32,
    /// The u8 that stands for real 0.
    pub zero: u8,
}

impl QuantParams {
    /// The u8 grid that covers `[lo, hi]` (widened to include 0, so real zero is exact).
    pub fn from_range(lo: f32, hi: f32) -> Self {
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
        let zero = (-lo / scale).round().clamp(0.0, 255.0) as u8;
        Self { scale, zero }
    }

    /// The u8 for a real value, saturating. Rounds half up (`floor(v + 0.5)` after the zero
    /// point), the rule every quantized layer uses: it is inlined, where `f32::round` is a libm
    /// call without SSE4.1, and differs from round-half-away only at exact ties below zero.
    pub fn quantize(&self, x: f32) -> u8 {
        crate::epilogue::to_u8(x / self.scale + self.zero as f32 + 0.5)
    }
}

/// Values kept per observer (a deterministic reservoir sample beyond that).
const RESERVOIR: usize = 1 << 20;

/// Watches one tensor's values over the calibration set.
#[derive(Debug, Clone)]
pub struct Observer {
    min: f32,
    max: f32,
    seen: u64,
    sample: Vec<f32>,
    rng: u64,
}

impl Default for Observer {
    fn default() -> Self {
        Self {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            seen: 0,
            sample: Vec::new(),
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }
}

impl Observer {
    /// Records finite values (non-finite ones are ignored: they carry no range).
    pub fn observe(&mut self, values: &[f32]) {
        for &v in values.iter().filter(|v| v.is_finite()) {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
            self.seen += 1;
            if self.sample.len() < RESERVOIR {
                self.sample.push(v);
            } else {
                // xorshift64*: Algorithm R's slot for the seen-th value.
                self.rng ^= self.rng >> 12;
                self.rng ^= self.rng << 25;
                self.rng ^= self.rng >> 27;
                let r = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) % self.seen;
                if (r as usize) < RESERVOIR {
                    self.sample[r as usize] = v;
                }
            }
        }
    }

    /// Values observed.
    pub fn count(&self) -> u64 {
        self.seen
    }

    /// The range `method` proposes; `None` before any value.
    pub fn range(&self, method: Method) -> Option<(f32, f32)> {
        if self.seen == 0 {
            return None;
        }
        Some(match method {
            Method::MinMax => (self.min, self.max),
            Method::Percentile(p) => {
                let mut s = self.sample.clone();
                s.sort_by(f32::total_cmp);
                let at = |q: f64| s[((q * (s.len() - 1) as f64).round() as usize).min(s.len() - 1)];
                let p = p.clamp(0.5, 1.0);
                (at(1.0 - p), at(p))
            }
            Method::Entropy => {
                let t = entropy_threshold(&self.sample);
                (self.min.max(-t), self.max.min(t))
            }
        })
    }

    /// The grid `method` picks from what was observed (None when nothing finite was).
    pub fn params(&self, method: Method) -> Option<QuantParams> {
        self.range(method)
            .map(|(lo, hi)| QuantParams::from_range(lo, hi))
    }
}

/// TensorRT's entropy calibration on |x|: a 2048-bin histogram up to max |x|; for every candidate
/// threshold bin i (128..=2048) the distribution P of the first i bins (the clipped mass added to
/// the last) is compared with Q, the same bins merged into 128 levels and spread back uniformly over
/// their non-empty bins; the threshold of least KL(P || Q).
pub fn entropy_threshold(values: &[f32]) -> f32 {
    const BINS: usize = 2048;
    const LEVELS: usize = 128;
    let max = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    if max <= 0.0 {
        return 0.0;
    }
    let width = max / BINS as f32;
    let mut hist = vec![0f64; BINS];
    for v in values {
        hist[((v.abs() / width) as usize).min(BINS - 1)] += 1.0;
    }
    let mut best = (f64::INFINITY, BINS);
    for i in LEVELS..=BINS {
        let mut p: Vec<f64> = hist[..i].to_vec();
        p[i - 1] += hist[i..].iter().sum::<f64>();
        // Q: merge into LEVELS groups, spread each group's mass over its non-empty bins.
        let mut q = vec![0f64; i];
        let per = i as f64 / LEVELS as f64;
        for level in 0..LEVELS {
            let start = (level as f64 * per).floor() as usize;
            let end = (((level + 1) as f64 * per).floor() as usize).min(i);
            let end = if level + 1 == LEVELS { i } else { end };
            let mass: f64 = hist[start..end].iter().sum();
            let nonempty = hist[start..end].iter().filter(|&&c| c > 0.0).count();
            if nonempty > 0 {
                for k in start..end {
                    if hist[k] > 0.0 {
                        q[k] = mass / nonempty as f64;
                    }
                }
            }
        }
        let (ps, qs) = (p.iter().sum::<f64>(), q.iter().sum::<f64>());
        if ps <= 0.0 || qs <= 0.0 {
            continue;
        }
        let mut kl = 0.0;
        for (a, b) in p.iter().zip(&q) {
            if *a > 0.0 {
                let (a, b) = (a / ps, b / qs);
                // A bin P has and Q lacks (the clipped mass in the last bin): a large finite cost.
                kl += a * (a / b.max(1e-12)).ln();
            }
        }
        if kl < best.0 {
            best = (kl, i);
        }
    }
    (best.1 as f32 + 0.5) * width
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_max_maps_the_range_and_zero_exactly() {
        let mut o = Observer::default();
        o.observe(&[-1.0, 0.5, 3.0, f32::NAN]);
        assert_eq!(o.count(), 3);
        assert_eq!(o.range(Method::MinMax), Some((-1.0, 3.0)));
        let p = o.params(Method::MinMax).unwrap();
        assert!((p.scale - 4.0 / 255.0).abs() < 1e-7);
        assert_eq!(p.zero, 64);
        assert_eq!(p.quantize(0.0), 64);
        assert_eq!(p.quantize(-1.0), 0);
        assert_eq!(p.quantize(3.0), 255);
        assert_eq!(p.quantize(99.0), 255);
        // A range that excludes 0 is widened to include it.
        assert_eq!(QuantParams::from_range(2.0, 4.0).zero, 0);
        assert_eq!(Observer::default().params(Method::MinMax), None);
    }

    #[test]
    fn percentile_and_entropy_ignore_rare_outliers_that_min_max_keeps() {
        // 100,000 values of a fixed bell-shaped sequence (sum of uniforms, sd about 1) and ten
        // outliers at 60.
        let mut state = 12345u64;
        let mut uniform = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32
        };
        let mut values: Vec<f32> = (0..100_000)
            .map(|_| (0..12).map(|_| uniform()).sum::<f32>() - 6.0)
            .collect();
        values.extend([60.0; 10]);
        let mut o = Observer::default();
        o.observe(&values);
        assert_eq!(o.range(Method::MinMax).unwrap().1, 60.0);
        let (lo, hi) = o.range(Method::Percentile(0.9999)).unwrap();
        assert!(hi > 3.0 && hi < 5.0 && lo < -3.0 && lo > -5.0, "{lo} {hi}");
        let (lo, hi) = o.range(Method::Entropy).unwrap();
        // 3.79 when written (TensorRT-like for a Gaussian), far below the outliers.
        assert!(
            hi > 2.0 && hi < 10.0 && lo < -2.0,
            "entropy range {lo} {hi}"
        );
    }
}
