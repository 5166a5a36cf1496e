// The page of `kyutai serve`: Speak (text to speech) and Listen (speech to text) over Kyutai's
// websocket endpoints, as any client of the server does. Plain JavaScript, no build step.
//
// For tests (tests/server_page.rs drives this page in headless Chromium), the page keeps what
// it did in `window.kyutai`:
//   kyutai.ready              the panels are shown (the key, if any, was accepted)
//   kyutai.keyError           the server refused the key given
//   kyutai.tts.received_samples, .words, .done, .error, .samples (Float32Array chunks)
//   kyutai.asr.sent_samples, .sent_pcm (the exact 24 kHz samples sent), .words, .ends (the
//             ends of turn marked), .steps (the model steps heard of), .done, .error
'use strict';

const RATE = 24000;
const FRAME = 1920;
const KEY_STORE = 'kyutai-api-key';

const kyutai = {
  ready: false,
  keyError: false,
  info: null,
  tts: { received_samples: 0, words: [], done: false, error: null, samples: [] },
  asr: { sent_samples: 0, sent_pcm: [], words: [], ends: 0, done: false, error: null },
};
window.kyutai = kyutai;

const $ = (id) => document.getElementById(id);

// ---- MessagePack: the subset Kyutai's protocol uses (maps, strings, arrays, numbers, bool,
// nil, bin). Written here rather than fetched, so that the page works offline.

function msgpackEncode(value) {
  const bytes = [];
  const view = new DataView(new ArrayBuffer(8));
  const push8 = (n) => bytes.push(n & 0xff);
  const pushN = (n, size) => {
    for (let i = size - 1; i >= 0; i--) bytes.push((n >>> (8 * i)) & 0xff);
  };
  const str = (s) => {
    const utf8 = new TextEncoder().encode(s);
    if (utf8.length < 32) push8(0xa0 | utf8.length);
    else if (utf8.length < 256) { push8(0xd9); push8(utf8.length); }
    else if (utf8.length < 65536) { push8(0xda); pushN(utf8.length, 2); }
    else { push8(0xdb); pushN(utf8.length, 4); }
    for (const b of utf8) bytes.push(b);
  };
  const enc = (v) => {
    if (v === null || v === undefined) push8(0xc0);
    else if (v === true) push8(0xc3);
    else if (v === false) push8(0xc2);
    else if (typeof v === 'string') str(v);
    else if (typeof v === 'number') {
      if (Number.isInteger(v) && v >= 0 && v < 2 ** 32) {
        if (v < 128) push8(v);
        else if (v < 256) { push8(0xcc); push8(v); }
        else if (v < 65536) { push8(0xcd); pushN(v, 2); }
        else { push8(0xce); pushN(v, 4); }
      } else if (Number.isInteger(v) && v < 0 && v >= -(2 ** 31)) {
        if (v >= -32) push8(v);
        else { push8(0xd2); pushN(v >>> 0, 4); }
      } else {
        push8(0xcb);
        view.setFloat64(0, v);
        for (let i = 0; i < 8; i++) bytes.push(view.getUint8(i));
      }
    } else if (v instanceof Float32Array) {
      // Audio: float32 samples, as Kyutai's clients send them.
      arrayHeader(v.length);
      for (const x of v) {
        push8(0xca);
        view.setFloat32(0, x);
        for (let i = 0; i < 4; i++) bytes.push(view.getUint8(i));
      }
    } else if (Array.isArray(v)) {
      arrayHeader(v.length);
      v.forEach(enc);
    } else if (typeof v === 'object') {
      const keys = Object.keys(v);
      if (keys.length < 16) push8(0x80 | keys.length);
      else { push8(0xde); pushN(keys.length, 2); }
      for (const k of keys) { str(k); enc(v[k]); }
    } else throw new Error('cannot encode ' + typeof v);
  };
  const arrayHeader = (n) => {
    if (n < 16) push8(0x90 | n);
    else if (n < 65536) { push8(0xdc); pushN(n, 2); }
    else { push8(0xdd); pushN(n, 4); }
  };
  enc(value);
  return new Uint8Array(bytes);
}

function msgpackDecode(buffer) {
  const view = new DataView(buffer);
  let at = 0;
  const u8 = () => view.getUint8(at++);
  const take = (n, f) => { const v = f(at); at += n; return v; };
  const str = (n) => {
    const s = new TextDecoder().decode(new Uint8Array(buffer, at, n));
    at += n;
    return s;
  };
  const arr = (n) => { const a = new Array(n); for (let i = 0; i < n; i++) a[i] = dec(); return a; };
  const map = (n) => { const m = {}; for (let i = 0; i < n; i++) { const k = dec(); m[k] = dec(); } return m; };
  const bin = (n) => { const b = new Uint8Array(buffer.slice(at, at + n)); at += n; return b; };
  function dec() {
    const t = u8();
    if (t < 0x80) return t;
    if (t < 0x90) return map(t & 0x0f);
    if (t < 0xa0) return arr(t & 0x0f);
    if (t < 0xc0) return str(t & 0x1f);
    if (t >= 0xe0) return t - 256;
    switch (t) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return bin(u8());
      case 0xc5: return bin(take(2, (o) => view.getUint16(o)));
      case 0xc6: return bin(take(4, (o) => view.getUint32(o)));
      case 0xca: return take(4, (o) => view.getFloat32(o));
      case 0xcb: return take(8, (o) => view.getFloat64(o));
      case 0xcc: return u8();
      case 0xcd: return take(2, (o) => view.getUint16(o));
      case 0xce: return take(4, (o) => view.getUint32(o));
      case 0xcf: return Number(take(8, (o) => view.getBigUint64(o)));
      case 0xd0: return take(1, (o) => view.getInt8(o));
      case 0xd1: return take(2, (o) => view.getInt16(o));
      case 0xd2: return take(4, (o) => view.getInt32(o));
      case 0xd3: return Number(take(8, (o) => view.getBigInt64(o)));
      case 0xd9: return str(u8());
      case 0xda: return str(take(2, (o) => view.getUint16(o)));
      case 0xdb: return str(take(4, (o) => view.getUint32(o)));
      case 0xdc: return arr(take(2, (o) => view.getUint16(o)));
      case 0xdd: return arr(take(4, (o) => view.getUint32(o)));
      case 0xde: return map(take(2, (o) => view.getUint16(o)));
      case 0xdf: return map(take(4, (o) => view.getUint32(o)));
      default: throw new Error('unsupported msgpack type 0x' + t.toString(16));
    }
  }
  return dec();
}

// ---- The key.

function key() {
  return localStorage.getItem(KEY_STORE) || '';
}

function socketUrl(path, params) {
  const url = new URL(path, location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  if (key()) url.searchParams.set('auth_id', key());
  return url.toString();
}

async function loadInfo() {
  const headers = key() ? { 'kyutai-api-key': key() } : {};
  const response = await fetch('/page/info', { headers });
  if (response.status === 401) {
    kyutai.keyError = Boolean(key());
    $('key-error').hidden = !kyutai.keyError;
    $('key-panel').hidden = false;
    $('panels').hidden = true;
    $('models').textContent = 'This server needs an API key.';
    $('key').focus();
    return;
  }
  if (!response.ok) {
    $('models').textContent = `The server answered ${response.status}.`;
    return;
  }
  const info = await response.json();
  kyutai.info = info;
  kyutai.keyError = false;
  $('key-panel').hidden = true;
  $('panels').hidden = false;
  $('speak-panel').hidden = !info.tts;
  $('listen-panel').hidden = !info.asr;
  $('models').textContent = [info.tts_model && `TTS: ${info.tts_model}`, info.stt_model && `STT: ${info.stt_model}`]
    .filter(Boolean).join(' · ');
  const select = $('voice');
  select.replaceChildren();
  for (const voice of info.voices) {
    const option = new Option(voice, voice, false, voice === info.default_voice);
    select.add(option);
  }
  kyutai.ready = true;
}

$('key-form').addEventListener('submit', (event) => {
  event.preventDefault();
  localStorage.setItem(KEY_STORE, $('key').value.trim());
  loadInfo();
});

// ---- Speak.

let player = null; // the AudioContext the speech plays in
let playAt = 0;

function play(samples) {
  if (!player) return;
  const buffer = player.createBuffer(1, samples.length, RATE);
  buffer.copyToChannel(samples, 0);
  const source = player.createBufferSource();
  source.buffer = buffer;
  source.connect(player.destination);
  playAt = Math.max(playAt, player.currentTime + 0.05);
  source.start(playAt);
  playAt += buffer.duration;
}

function wav(chunks) {
  const n = chunks.reduce((sum, c) => sum + c.length, 0);
  const view = new DataView(new ArrayBuffer(44 + 2 * n));
  const text = (at, s) => { for (let i = 0; i < s.length; i++) view.setUint8(at + i, s.charCodeAt(i)); };
  text(0, 'RIFF'); view.setUint32(4, 36 + 2 * n, true); text(8, 'WAVE');
  text(12, 'fmt '); view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, RATE, true); view.setUint32(28, 2 * RATE, true); view.setUint16(32, 2, true);
  view.setUint16(34, 16, true); text(36, 'data'); view.setUint32(40, 2 * n, true);
  let at = 44;
  for (const chunk of chunks) {
    for (const x of chunk) {
      view.setInt16(at, Math.max(-1, Math.min(1, x)) * 32767, true);
      at += 2;
    }
  }
  return new Blob([view], { type: 'audio/wav' });
}

function speak() {
  const text = $('text').value.trim();
  if (!text) return;
  const state = kyutai.tts;
  Object.assign(state, { received_samples: 0, words: [], done: false, error: null, samples: [] });
  $('spoken').textContent = '';
  $('download').hidden = true;
  $('speak').disabled = true;
  $('speak-status').textContent = 'Connecting…';
  try {
    player = player || new AudioContext();
    player.resume();
    playAt = 0;
  } catch (e) {
    player = null; // no audio output: the speech is still received and can be saved
  }
  const ws = new WebSocket(socketUrl('/api/tts_streaming', {
    format: 'PcmMessagePack',
    voice: $('voice').value,
    seed: $('seed').value || '0',
    temperature: $('temperature').value || '0',
  }));
  ws.binaryType = 'arraybuffer';
  ws.onmessage = (event) => {
    const message = msgpackDecode(event.data);
    if (message.type === 'Ready') {
      $('speak-status').textContent = 'Speaking…';
      for (const word of text.split(/\s+/)) ws.send(msgpackEncode({ type: 'Text', text: word }));
      ws.send(msgpackEncode({ type: 'Eos' }));
    } else if (message.type === 'Audio') {
      const samples = Float32Array.from(message.pcm);
      state.samples.push(samples);
      state.received_samples += samples.length;
      play(samples);
    } else if (message.type === 'Text') {
      state.words.push(message.text);
      $('spoken').textContent = state.words.join(' ');
    } else if (message.type === 'Error') {
      state.error = message.message;
      $('speak-status').textContent = 'Error: ' + message.message;
    }
  };
  ws.onclose = (event) => {
    state.done = true;
    $('speak').disabled = false;
    if (event.code !== 1000 && !state.error) state.error = `closed: ${event.code} ${event.reason}`;
    if (state.error) {
      $('speak-status').textContent = 'Error: ' + state.error;
    } else {
      const seconds = (state.received_samples / RATE).toFixed(2);
      $('speak-status').textContent = `${seconds} s of speech`;
    }
    if (state.received_samples > 0) {
      const link = $('download');
      if (link.href) URL.revokeObjectURL(link.href);
      link.href = URL.createObjectURL(wav(state.samples));
      link.hidden = false;
    }
  };
}

$('speak').addEventListener('click', speak);

// ---- Listen.

// End of turn, Unmute's rule (as src/stt/end_of_turn.rs): the pause probability of head 2,
// smoothed with a moving average of half-life 0.01 s up and down, skipping the first 12 steps;
// the turn ends when it passes 0.6 after a word.
const TURN = { head: 2, threshold: 0.6, halfLife: 0.01, skip: 12, step: 0.08 };

function turnRule() {
  let average = 1; // Unmute starts at 1 (a pause)
  let steps = 0;
  let speaking = false;
  return {
    word() { speaking = true; },
    // One step's pause probabilities; true when the turn ends at this step.
    step(prs) {
      steps += 1;
      const p = prs && prs[TURN.head];
      if (steps <= TURN.skip || typeof p !== 'number') return false;
      const alpha = 1 - Math.exp((-TURN.step / TURN.halfLife) * Math.LN2);
      average = (1 - alpha) * average + alpha * p;
      if (speaking && average > TURN.threshold) {
        speaking = false;
        return true;
      }
      return false;
    },
  };
}
kyutai.turnRule = turnRule;

let listening = null;

function showHeard() {
  const heard = $('heard');
  heard.replaceChildren();
  for (const item of kyutai.asr.transcript) {
    if (item === null) {
      const mark = document.createElement('span');
      mark.className = 'turn';
      mark.textContent = '⏎';
      mark.title = 'end of turn';
      heard.append(mark);
    } else {
      heard.append(document.createTextNode(item + ' '));
    }
  }
}

async function startListening() {
  const state = kyutai.asr;
  Object.assign(state, {
    sent_samples: 0, sent_pcm: [], words: [], ends: 0, steps: 0, done: false, error: null, transcript: [],
  });
  showHeard();
  const button = $('listen');
  button.disabled = true;
  $('listen-status').textContent = 'Starting the microphone…';
  const turn = turnRule();
  const session = { ws: null, ready: false, queue: [], stopping: false, context: null, stream: null, node: null };
  listening = session;
  try {
    session.stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1 },
    });
    session.context = new AudioContext();
    await session.context.audioWorklet.addModule('/page/mic-worklet.js');
  } catch (e) {
    state.error = String(e);
    state.done = true;
    $('listen-status').textContent = 'No microphone: ' + e;
    button.disabled = false;
    listening = null;
    return;
  }
  const send = (samples) => {
    if (session.ready) session.ws.send(msgpackEncode({ type: 'Audio', pcm: samples }));
    else session.queue.push(samples);
  };
  session.node = new AudioWorkletNode(session.context, 'mic-24k');
  session.node.port.onmessage = (event) => {
    // A frame, or `{last}`: the partial frame that ends the speech.
    const last = event.data.last;
    const samples = last || event.data;
    for (const x of samples) state.sent_pcm.push(x);
    state.sent_samples += samples.length;
    if (samples.length > 0) send(samples);
    if (last) finish(session);
  };
  const source = session.context.createMediaStreamSource(session.stream);
  source.connect(session.node);
  session.source = source;

  const ws = new WebSocket(socketUrl('/api/asr-streaming', {}));
  ws.binaryType = 'arraybuffer';
  session.ws = ws;
  ws.onmessage = (event) => {
    const message = msgpackDecode(event.data);
    if (message.type === 'Ready') {
      session.ready = true;
      for (const samples of session.queue) ws.send(msgpackEncode({ type: 'Audio', pcm: samples }));
      session.queue = [];
      $('listen-status').textContent = 'Listening…';
      button.disabled = false;
      if (session.finishWhenReady) finish(session);
    } else if (message.type === 'Word') {
      state.words.push(message.text);
      state.transcript.push(message.text);
      turn.word();
      showHeard();
    } else if (message.type === 'Step') {
      state.steps += 1;
      if (turn.step(message.prs)) {
        state.ends += 1;
        state.transcript.push(null);
        showHeard();
      }
    } else if (message.type === 'Marker') {
      // Everything sent before the marker is transcribed: the stream is done.
      clearInterval(session.silence);
      ws.close(1000);
    } else if (message.type === 'Error') {
      state.error = message.message;
      $('listen-status').textContent = 'Error: ' + message.message;
    }
  };
  ws.onclose = (event) => {
    clearInterval(session.silence);
    if (event.code !== 1000 && !state.error) state.error = `closed: ${event.code} ${event.reason}`;
    stopMicrophone(session);
    state.done = true;
    button.textContent = 'Start listening';
    button.setAttribute('aria-pressed', 'false');
    button.disabled = false;
    if (!state.error) $('listen-status').textContent = `${state.words.length} words heard`;
    if (listening === session) listening = null;
  };
  button.textContent = 'Stop listening';
  button.setAttribute('aria-pressed', 'true');
}

function stopMicrophone(session) {
  if (session.source) session.source.disconnect();
  if (session.stream) session.stream.getTracks().forEach((t) => t.stop());
  if (session.context && session.context.state !== 'closed') session.context.close();
}

// After the last frame: a marker, then silence (the model's delay) until the marker returns.
function finish(session) {
  const ws = session.ws;
  const go = () => {
    ws.send(msgpackEncode({ type: 'Marker', id: 1 }));
    const silence = new Float32Array(FRAME);
    session.silence = setInterval(() => {
      if (ws.readyState === WebSocket.OPEN) ws.send(msgpackEncode({ type: 'Audio', pcm: silence }));
    }, 80);
  };
  if (session.ready) go();
  else session.finishWhenReady = true;
}

function stopListening() {
  const session = listening;
  if (!session || session.stopping) return;
  session.stopping = true;
  $('listen').disabled = true;
  $('listen-status').textContent = 'Finishing…';
  if (session.source) session.source.disconnect();
  // The worklet's partial frame comes back as `{last}`, then `finish` runs.
  session.node.port.postMessage('flush');
}

$('listen').addEventListener('click', () => (listening ? stopListening() : startListening()));

loadInfo().catch((e) => {
  $('models').textContent = 'Could not reach the server: ' + e;
});
