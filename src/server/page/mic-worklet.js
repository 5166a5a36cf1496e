// The microphone, resampled to the models' 24 kHz in the page: an AudioWorklet that turns the
// context's rate (48 kHz or 44.1 kHz, usually) into 24 kHz mono with windowed-sinc
// interpolation, and posts 1920-sample frames (80 ms, one model step) to the page.
//
// Each output sample at input time t is sum_k x[k] h(t - k), with h a sinc low-pass at the
// lower of the two Nyquist rates, shaped by a Blackman window of HALF input samples each side
// (scaled when downsampling, so that the filter's width is fixed in output samples). The input
// is kept as long as the filter still needs it; nothing is dropped between blocks.

const OUT_RATE = 24000;
const FRAME = 1920;
const HALF = 16; // filter half-width, in output samples

class Mic24k extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / OUT_RATE; // input samples per output sample
    this.cutoff = Math.min(1, OUT_RATE / sampleRate); // of the input's Nyquist rate
    this.half = Math.ceil(HALF / this.cutoff); // in input samples
    this.input = new Float32Array(0); // input kept, from index `base` on
    this.base = 0; // absolute index of this.input[0]
    this.next = 0; // absolute input time of the next output sample
    this.frame = new Float32Array(FRAME);
    this.filled = 0;
    this.port.onmessage = (event) => {
      if (event.data === 'flush') {
        // The last, partial frame (the microphone stopped).
        this.port.postMessage({ last: this.frame.slice(0, this.filled) });
        this.filled = 0;
      }
    };
  }

  kernel(x) {
    if (x === 0) return this.cutoff;
    if (Math.abs(x) >= this.half) return 0;
    const s = Math.sin(Math.PI * this.cutoff * x) / (Math.PI * x);
    const w = 0.42 + 0.5 * Math.cos((Math.PI * x) / this.half) + 0.08 * Math.cos((2 * Math.PI * x) / this.half);
    return s * w;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const n = channels[0].length;
    // Mix down to mono and append.
    const merged = new Float32Array(this.input.length + n);
    merged.set(this.input);
    for (let i = 0; i < n; i++) {
      let sum = 0;
      for (const channel of channels) sum += channel[i];
      merged[this.input.length + i] = sum / channels.length;
    }
    this.input = merged;
    const end = this.base + this.input.length; // absolute index after the last input sample
    // An output sample needs the input up to t + half.
    while (this.next + this.half < end) {
      const t = this.next;
      const first = Math.max(this.base, Math.ceil(t - this.half));
      const last = Math.floor(t + this.half);
      let acc = 0;
      for (let k = first; k <= last; k++) acc += this.input[k - this.base] * this.kernel(t - k);
      this.frame[this.filled++] = acc;
      if (this.filled === FRAME) {
        this.port.postMessage(this.frame.slice());
        this.filled = 0;
      }
      this.next += this.step;
    }
    // Keep what the next outputs still need.
    const keepFrom = Math.max(this.base, Math.floor(this.next - this.half) - 1);
    this.input = this.input.slice(keepFrom - this.base);
    this.base = keepFrom;
    return true;
  }
}

registerProcessor('mic-24k', Mic24k);
