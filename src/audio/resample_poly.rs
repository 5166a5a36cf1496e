//! Polyphase resampling exactly as SciPy's `resample_poly` does it (default Kaiser window,
//! beta 5, constant padding): the filter Pocket TTS's reference uses on a voice prompt that is
//! not at 24 kHz (`convert_audio`).
//!
//! The crate's streaming resampler (rubato's FFT resampler, [`super::resample`]) is the better
//! tool for live audio, but its filter is not SciPy's, so a cloned voice would start from
//! different samples than the reference's. This is the same FIR design (`firwin` with
//! `2 * 10 * max(up, down) + 1` taps, cutoff `1 / max(up, down)`, scaled to unit DC gain, times
//! `up`) and the same `upfirdn` alignment, in f64 like SciPy's, on a whole prompt at once.

/// The modified Bessel function of the first kind, order 0 (its power series; converges fast
/// for the window's arguments, at most 5).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let half = x / 2.0;
    for k in 1..200 {
        term *= (half / k as f64).powi(2);
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let px = std::f64::consts::PI * x;
        px.sin() / px
    }
}

/// `firwin(taps, cutoff, window=('kaiser', 5.0))`: a windowed-sinc low-pass, unit gain at DC.
fn firwin(taps: usize, cutoff: f64) -> Vec<f64> {
    let alpha = 0.5 * (taps - 1) as f64;
    let beta = 5.0;
    let i0_beta = bessel_i0(beta);
    let mut h: Vec<f64> = (0..taps)
        .map(|n| {
            let m = n as f64 - alpha;
            let r = 2.0 * n as f64 / (taps - 1) as f64 - 1.0;
            let window = bessel_i0(beta * (1.0 - r * r).max(0.0).sqrt()) / i0_beta;
            cutoff * sinc(cutoff * m) * window
        })
        .collect();
    let sum: f64 = h.iter().sum();
    for v in &mut h {
        *v /= sum;
    }
    h
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// `((n_in - 1) * up + len_h - 1) / down + 1`: the length of `upfirdn`'s output.
fn upfirdn_len(len_h: usize, n_in: usize, up: usize, down: usize) -> usize {
    ((n_in - 1) * up + len_h - 1) / down + 1
}

/// `scipy.signal.resample_poly(x, to / g, from / g)`, `g = gcd(from, to)`.
pub fn resample_poly(x: &[f32], from: u32, to: u32) -> Vec<f32> {
    let g = gcd(from as usize, to as usize);
    let (up, down) = (to as usize / g, from as usize / g);
    if (up == 1 && down == 1) || x.is_empty() {
        return x.to_vec();
    }
    let n_in = x.len();
    let n_out = (n_in * up).div_ceil(down);
    let max_rate = up.max(down);
    let half_len = 10 * max_rate;
    let mut h = firwin(2 * half_len + 1, 1.0 / max_rate as f64);
    for v in &mut h {
        *v *= up as f64;
    }
    let n_pre_pad = down - half_len % down;
    let mut n_post_pad = 0;
    let n_pre_remove = (half_len + n_pre_pad) / down;
    while upfirdn_len(h.len() + n_pre_pad + n_post_pad, n_in, up, down) < n_out + n_pre_remove {
        n_post_pad += 1;
    }
    let mut padded = vec![0.0; n_pre_pad];
    padded.extend(&h);
    padded.extend(std::iter::repeat_n(0.0, n_post_pad));
    let h = padded;
    // upfirdn: y[j] = sum_k h[k] * up(x)[j * down - k], where up(x)[i * up] = x[i] and the
    // other samples are zero; only output samples n_pre_remove.. are kept.
    (n_pre_remove..n_pre_remove + n_out)
        .map(|j| {
            let t = j * down; // position in the upsampled signal
            let mut acc = 0.0f64;
            // k = t - i * up for input samples i with 0 <= k < len(h).
            let i_max = (t / up).min(n_in - 1);
            let i_min = (t + 1).saturating_sub(h.len()).div_ceil(up);
            for (i, &xi) in x.iter().enumerate().take(i_max + 1).skip(i_min) {
                let k = t - i * up;
                if k < h.len() {
                    acc += h[k] * xi as f64;
                }
            }
            acc as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_constant_stays_constant_away_from_the_edges_and_lengths_are_scipys() {
        let x = vec![0.5f32; 1600];
        let y = resample_poly(&x, 16000, 24000);
        assert_eq!(y.len(), 2400);
        for v in &y[100..2300] {
            assert!((v - 0.5).abs() < 1e-3, "{v}");
        }
        assert_eq!(resample_poly(&x, 48000, 24000).len(), 800);
        assert_eq!(resample_poly(&[1.0; 7], 44100, 24000).len(), 4);
        assert_eq!(resample_poly(&x, 24000, 24000), x);
    }

    #[test]
    fn the_window_is_kaisers() {
        // scipy.signal.firwin(5, 0.5, window=('kaiser', 5.0)).
        let h = firwin(5, 0.5);
        let sum: f64 = h.iter().sum();
        assert!((sum - 1.0).abs() < 1e-12);
        assert!((h[0] - h[4]).abs() < 1e-15 && (h[1] - h[3]).abs() < 1e-15);
        assert!((bessel_i0(5.0) - 27.239871823604442).abs() < 1e-9);
    }
}
